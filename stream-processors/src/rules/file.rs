//! Rule files: the YAML Prometheus reads (`rule_files:`), loaded strictly (an unknown field
//! is an error, as in Prometheus) and checked rule by rule. The checks and their wording
//! follow Prometheus's `rulefmt` (what `promtool check rules` prints), so a file refused
//! there is refused here with the same reason, prefixed by the file, group and rule.
//!
//! Accepted beyond Prometheus 2.42: a group's `query_offset` (Prometheus 2.53) and `labels`
//! (Prometheus 3.0).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use obs_runtime::labels::{valid_label_name, valid_metric_name};
use serde::Deserialize;

/// A rule file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Its groups, evaluated independently.
    #[serde(default)]
    pub groups: Vec<GroupDef>,
}

/// A group as written: rules evaluated together, in order, at one interval.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    /// Unique in its file.
    pub name: String,
    /// How often the group is evaluated (Prometheus duration); the global default if unset.
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// At most this many series per rule and evaluation (0 = no limit).
    #[serde(default)]
    pub limit: u64,
    /// Evaluate this long in the past (for late data).
    #[serde(default, deserialize_with = "opt_duration")]
    pub query_offset: Option<Duration>,
    /// Labels added to every rule's output (a rule's own labels win).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The rules, in evaluation order.
    #[serde(default)]
    pub rules: Vec<RuleDef>,
}

/// A rule as written: `record` or `alert`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// Name of the series a recording rule writes.
    #[serde(default)]
    pub record: Option<String>,
    /// Name of an alerting rule's alert.
    #[serde(default)]
    pub alert: Option<String>,
    /// The PromQL expression.
    #[serde(default)]
    pub expr: String,
    /// How long an alert's condition must hold before it fires.
    #[serde(default, rename = "for", deserialize_with = "opt_duration")]
    pub for_: Option<Duration>,
    /// How long an alert keeps firing after its condition stopped.
    #[serde(default, deserialize_with = "opt_duration")]
    pub keep_firing_for: Option<Duration>,
    /// Labels added to the output (templates for alerts).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An alert's annotations (templates).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl RuleDef {
    /// The rule's name: its `alert` or its `record` (Prometheus names it so in errors).
    pub fn name(&self) -> &str {
        self.alert
            .as_deref()
            .or(self.record.as_deref())
            .unwrap_or("")
    }
}

/// Prometheus's duration units and their length in ms, largest first.
pub const DURATION_UNITS: [(&str, u64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// A duration as Prometheus's configuration writes it (`model.ParseDuration`): units
/// `y w d h m s ms`, each at most once and in that order, or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match s {
        "0" => return Ok(Duration::ZERO),
        "" => return Err("empty duration string".into()),
        _ => {}
    }
    let bad = || format!("not a valid duration string: {s:?}");
    let mut rest = s;
    let mut next_unit = 0;
    let mut ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        // `ms` before `m`, so that "5ms" is not read as minutes followed by "s".
        let (i, len) = DURATION_UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .map(|(i, (u, _))| (i, u.len()))
            .max_by_key(|&(_, len)| len)
            .ok_or_else(bad)?;
        ms = n
            .checked_mul(DURATION_UNITS[i].1)
            .and_then(|v| v.checked_add(ms))
            .filter(|&v| v <= i64::MAX as u64)
            .ok_or_else(|| "duration out of range".to_string())?;
        rest = &rest[len..];
        next_unit = i + 1;
    }
    Ok(Duration::from_millis(ms))
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// Reads and checks a rule file; `Err` lists every problem, one per line, each naming the
/// file (and the group and rule where there is one).
pub fn load(path: &Path) -> Result<RuleFile, Vec<String>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: {e}")])?;
    parse(&name, &text)
}

/// Parses and checks rule-file text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<RuleFile, Vec<String>> {
    let rf: RuleFile = serde_yaml_ng::from_str(text).map_err(|e| vec![format!("{file}: {e}")])?;
    let problems = check(&rf);
    if problems.is_empty() {
        Ok(rf)
    } else {
        Err(problems
            .into_iter()
            .map(|p| format!("{file}: {p}"))
            .collect())
    }
}

/// Every problem of a parsed rule file, in file order (as `promtool check rules` reports
/// them, without line numbers).
pub fn check(rf: &RuleFile) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for g in &rf.groups {
        if g.name.is_empty() {
            out.push("Groupname must not be empty".to_string());
        }
        if !seen.insert(g.name.as_str()) {
            out.push(format!(
                "groupname: {:?} is repeated in the same file",
                g.name
            ));
        }
        for (k, v) in &g.labels {
            if let Some(p) = label_problem(k, v) {
                out.push(format!("group {:?}: {p}", g.name));
            }
        }
        for (i, r) in g.rules.iter().enumerate() {
            for p in rule_problems(r) {
                out.push(format!(
                    "group {:?}, rule {}, {:?}: {p}",
                    g.name,
                    i + 1,
                    r.name()
                ));
            }
        }
    }
    out
}

fn label_problem(name: &str, _value: &str) -> Option<String> {
    (!valid_label_name(name) || name == "__name__").then(|| format!("invalid label name: {name}"))
}

/// What `rulefmt`'s `RuleNode.Validate` and template check find wrong with one rule.
fn rule_problems(r: &RuleDef) -> Vec<String> {
    let mut out = Vec::new();
    match (&r.record, &r.alert) {
        (Some(_), Some(_)) => out.push("only one of 'record' and 'alert' must be set".into()),
        (None, None) => out.push("one of 'record' or 'alert' must be set".into()),
        _ => {}
    }
    if r.expr.is_empty() {
        out.push("field 'expr' must be set in rule".into());
    } else if let Err(e) = obs_promql::parse(&r.expr) {
        let reason = e.trim_start_matches("invalid parameter \"query\": ");
        out.push(format!("could not parse expression: {reason}"));
    }
    if let Some(record) = &r.record {
        if !r.annotations.is_empty() {
            out.push("invalid field 'annotations' in recording rule".into());
        }
        if r.for_.is_some() {
            out.push("invalid field 'for' in recording rule".into());
        }
        if r.keep_firing_for.is_some() {
            out.push("invalid field 'keep_firing_for' in recording rule".into());
        }
        if !valid_metric_name(record) {
            out.push(format!("invalid recording rule name: {record}"));
        }
    }
    for (k, v) in &r.labels {
        if let Some(p) = label_problem(k, v) {
            out.push(p);
        }
    }
    for k in r.annotations.keys() {
        if !valid_label_name(k) {
            out.push(format!("invalid annotation name: {k}"));
        }
    }
    if let Some(alert) = &r.alert {
        let name = format!("__alert_{alert}");
        for (k, v) in &r.labels {
            if let Err(e) = super::template::check(&name, v) {
                out.push(format!("label {k:?}: {e}"));
            }
        }
        for (k, v) in &r.annotations {
            if let Err(e) = super::template::check(&name, v) {
                out.push(format!("annotation {k:?}: {e}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_loads_with_its_durations() {
        let rf = parse(
            "good.yml",
            "groups:\n- name: g\n  interval: 30s\n  query_offset: 1m\n  labels: {team: a}\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    keep_firing_for: 1m30s\n    annotations: {summary: 'x {{ $labels.job }}'}\n",
        )
        .unwrap();
        let g = &rf.groups[0];
        assert_eq!(g.interval, Some(Duration::from_secs(30)));
        assert_eq!(g.query_offset, Some(Duration::from_secs(60)));
        assert_eq!(g.rules[0].for_, Some(Duration::from_secs(300)));
        assert_eq!(g.rules[0].keep_firing_for, Some(Duration::from_secs(90)));
    }

    #[test]
    fn problems_are_named_with_group_and_rule() {
        let e = parse(
            "bad.yml",
            "groups:\n- name: a\n  rules:\n  - record: job:up:sum\n    expr: sum(up)\n    for: 5m\n  - alert: X\n    record: y\n    expr: up\n  - alert: Y\n    expr: sum(\n- name: a\n  rules: []\n",
        )
        .unwrap_err();
        assert_eq!(
            e[0],
            "bad.yml: group \"a\", rule 1, \"job:up:sum\": invalid field 'for' in recording rule"
        );
        assert_eq!(
            e[1],
            "bad.yml: group \"a\", rule 2, \"X\": only one of 'record' and 'alert' must be set"
        );
        assert!(
            e[2].starts_with("bad.yml: group \"a\", rule 3, \"Y\": could not parse expression: "),
            "{}",
            e[2]
        );
        assert_eq!(
            e[3],
            "bad.yml: groupname: \"a\" is repeated in the same file"
        );
    }

    #[test]
    fn durations_parse_as_prometheus_parses_them() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis() as u64);
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("0m"), Ok(0));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("5ms"), Ok(5));
        assert_eq!(ms("1m5ms"), Ok(60_005));
        assert_eq!(ms("2w1d"), Ok(15 * 86_400_000));
        assert!(ms("30m1h").is_err(), "units in order");
        assert!(ms("1.5h").is_err());
        assert!(ms("").is_err());
        assert!(ms("5").is_err());
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_refused() {
        let e = parse(
            "f.yml",
            "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    unknown: 1\n",
        )
        .unwrap_err();
        assert!(e[0].contains("unknown field `unknown`"), "{e:?}");
        let e = parse("f.yml", "groups:\n- name: a\n  interval: 1x\n  rules: []\n").unwrap_err();
        assert!(
            e[0].contains("not a valid duration string: \"1x\""),
            "{e:?}"
        );
    }
}
