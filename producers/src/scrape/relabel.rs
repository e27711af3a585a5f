//! Prometheus relabelling: `replace` (the default), `keep`, `drop`, `labelmap`,
//! `labeldrop`, `labelkeep`, `hashmod`, with Prometheus's defaults (separator `;`, regex
//! `(.*)` anchored at both ends, replacement `$1`).

use anyhow::bail;
use obs_schemas::records::Attrs;
use regex::Regex;
use serde::Deserialize;

/// One relabelling rule, as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` and matched.
    #[serde(default)]
    pub source_labels: Vec<String>,
    /// Joins the source values (default `;`).
    #[serde(default = "semicolon")]
    pub separator: String,
    /// Matched against the joined value, anchored (default `(.*)`).
    #[serde(default = "any")]
    pub regex: String,
    /// Label written by `replace` and `hashmod`.
    #[serde(default)]
    pub target_label: String,
    /// `replace` output, with `$1`/`${name}` groups (default `$1`).
    #[serde(default = "first_group")]
    pub replacement: String,
    /// Modulus of `hashmod`.
    #[serde(default)]
    pub modulus: u64,
    /// The action (default `replace`).
    #[serde(default = "replace")]
    pub action: String,
}

fn semicolon() -> String {
    ";".into()
}
fn any() -> String {
    "(.*)".into()
}
fn first_group() -> String {
    "$1".into()
}
fn replace() -> String {
    "replace".into()
}

impl RelabelConfig {
    /// Checks the action and the regex.
    pub fn check(&self) -> anyhow::Result<()> {
        self.compiled()?;
        match self.action.as_str() {
            "replace" | "hashmod" if self.target_label.is_empty() => {
                bail!("relabel action {} needs target_label", self.action)
            }
            "hashmod" if self.modulus == 0 => bail!("relabel action hashmod needs modulus"),
            "replace" | "keep" | "drop" | "labelmap" | "labeldrop" | "labelkeep" | "hashmod" => {
                Ok(())
            }
            other => bail!(
                "relabel action {other:?} is not supported (replace, keep, drop, labelmap, labeldrop, labelkeep, hashmod)"
            ),
        }
    }

    fn compiled(&self) -> anyhow::Result<Regex> {
        Ok(Regex::new(&format!("^(?:{})$", self.regex))?)
    }
}

/// Rules with their regexes compiled.
#[derive(Debug, Clone)]
pub struct Relabeller {
    rules: Vec<(RelabelConfig, Regex)>,
}

impl Relabeller {
    /// Compiles checked rules.
    pub fn new(rules: &[RelabelConfig]) -> anyhow::Result<Self> {
        Ok(Relabeller {
            rules: rules
                .iter()
                .map(|r| Ok((r.clone(), r.compiled()?)))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies the rules in order; `None` when a rule drops the label set.
    pub fn apply(&self, mut labels: Attrs) -> Option<Attrs> {
        for (r, re) in &self.rules {
            let value = || {
                r.source_labels
                    .iter()
                    .map(|l| labels.get(l).map(String::as_str).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(&r.separator)
            };
            match r.action.as_str() {
                "keep" if !re.is_match(&value()) => return None,
                "drop" if re.is_match(&value()) => return None,
                "replace" => {
                    let v = value();
                    if let Some(caps) = re.captures(&v) {
                        let mut target = String::new();
                        caps.expand(&r.target_label, &mut target);
                        let mut out = String::new();
                        caps.expand(&r.replacement, &mut out);
                        if out.is_empty() {
                            labels.remove(&target);
                        } else if !target.is_empty() {
                            labels.insert(target, out);
                        }
                    }
                }
                "hashmod" => {
                    let h = xxhash_rust::xxh3::xxh3_64(value().as_bytes()) % r.modulus;
                    labels.insert(r.target_label.clone(), h.to_string());
                }
                "labelmap" => {
                    let mapped: Vec<(String, String)> = labels
                        .iter()
                        .filter_map(|(k, v)| {
                            let caps = re.captures(k)?;
                            let mut name = String::new();
                            caps.expand(&r.replacement, &mut name);
                            Some((name, v.clone()))
                        })
                        .collect();
                    labels.extend(mapped);
                }
                "labeldrop" => labels.retain(|k, _| !re.is_match(k)),
                "labelkeep" => labels.retain(|k, _| re.is_match(k)),
                _ => {}
            }
        }
        Some(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> RelabelConfig {
        let r: RelabelConfig = serde_yaml_ng::from_str(yaml).unwrap();
        r.check().unwrap();
        r
    }

    fn labels(p: &[(&str, &str)]) -> Attrs {
        Attrs::from_pairs(p)
    }

    #[test]
    fn the_common_actions_behave_as_in_prometheus() {
        let r = Relabeller::new(&[
            rule("{source_labels: [__address__], regex: '(.*):9100', target_label: host, replacement: 'node-$1'}"),
            rule("{regex: '__meta_(.+)', action: labelmap}"),
            rule("{source_labels: [env], regex: 'dev', action: drop}"),
            rule("{regex: '__meta_.*', action: labeldrop}"),
        ])
        .unwrap();
        let out = r
            .apply(labels(&[
                ("__address__", "10.0.0.1:9100"),
                ("__meta_zone", "a"),
                ("env", "prod"),
            ]))
            .unwrap();
        assert_eq!(
            out,
            labels(&[
                ("__address__", "10.0.0.1:9100"),
                ("env", "prod"),
                ("host", "node-10.0.0.1"),
                ("zone", "a")
            ])
        );
        assert!(
            r.apply(labels(&[("__address__", "x:1"), ("env", "dev")]))
                .is_none()
        );
        let keep = Relabeller::new(&[rule(
            "{source_labels: [__name__], regex: 'node_.*', action: keep}",
        )])
        .unwrap();
        assert!(keep.apply(labels(&[("__name__", "go_gc")])).is_none());
        assert!(keep.apply(labels(&[("__name__", "node_load1")])).is_some());
    }

    #[test]
    fn bad_rules_are_refused() {
        let r: RelabelConfig = serde_yaml_ng::from_str("{action: explode}").unwrap();
        assert!(r.check().is_err());
        let r: RelabelConfig = serde_yaml_ng::from_str("{regex: '(', action: drop}").unwrap();
        assert!(r.check().is_err());
    }
}
