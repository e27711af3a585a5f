//! A log pipeline: an ordered chain of stages applied to the log records of the streams it
//! selects (a tenant and services), configured in TOML as `[[logs.pipelines]]`.
//!
//! Stages: parse (`json`, `logfmt`, `regex` with named captures) into attributes; shape
//! (`set`, `rename`, `drop_fields`, `keep_fields`, `severity` from a field); reduce (`drop`
//! records whose field equals or matches a value); `redact` (the body and (resource) attributes,
//! with [`super::redact`]'s detectors, except allow-listed attributes). A stage that cannot
//! process a record fails it with a [`StageError`] naming the pipeline, the stage and the
//! reason (the record goes to `obs.dlq`, never silently away).

use std::collections::BTreeMap;

use obs_schemas::records::LogRecord;
use regex::Regex;
use serde::Deserialize;

use super::redact::{Action, Detector, Redactor};

/// One pipeline as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name, for errors and metrics.
    pub name: String,
    /// Only this tenant's records (absent: every tenant's).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only these services' records (empty: every service's).
    #[serde(default)]
    pub services: Vec<String>,
    /// The stages, in order.
    pub stages: Vec<StageConfig>,
}

/// A regex with a name, for `redact`'s own patterns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedPattern {
    /// Shown in masks and hashes.
    pub name: String,
    /// The regex.
    pub regex: String,
}

/// One stage as configured (`type = "..."`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    /// The source (default the body) is a JSON object: its fields become attributes,
    /// nested objects flattened with dots, other values as JSON text.
    Json {
        /// Field parsed (`body` or an attribute).
        #[serde(default = "body")]
        source: String,
    },
    /// The source is `key=value key2="quoted value"` pairs: each becomes an attribute.
    Logfmt {
        /// Field parsed.
        #[serde(default = "body")]
        source: String,
    },
    /// The source matches a regex; its named captures become attributes. A record that
    /// does not match fails the stage unless `optional`.
    Regex {
        /// Field parsed.
        #[serde(default = "body")]
        source: String,
        /// The regex, with `(?P<name>...)` captures.
        pattern: String,
        /// A non-matching record passes unchanged instead of failing.
        #[serde(default)]
        optional: bool,
    },
    /// Sets a field to a value.
    Set {
        /// Field set.
        field: String,
        /// Value.
        value: String,
    },
    /// Renames an attribute (absent: nothing happens).
    Rename {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// Removes attributes.
    DropFields {
        /// Names removed.
        fields: Vec<String>,
    },
    /// Removes every attribute but these.
    KeepFields {
        /// Names kept.
        fields: Vec<String>,
    },
    /// Severity text and number from a field (`debug`, `info`, `warn`, `error`, `fatal` and
    /// the usual spellings, any case).
    Severity {
        /// Field read.
        field: String,
    },
    /// Drops records whose field equals `equals` or matches `matches`.
    Drop {
        /// Field tested.
        field: String,
        /// Exact value.
        #[serde(default)]
        equals: Option<String>,
        /// Regex.
        #[serde(default)]
        matches: Option<String>,
    },
    /// Redacts the body and every attribute and resource attribute not allow-listed.
    Redact {
        /// Built-in detectors: `email`, `ipv4`, `ipv6`, `card`, `ssn`, `bearer`, `jwt`.
        #[serde(default)]
        detectors: Vec<String>,
        /// Own patterns.
        #[serde(default)]
        patterns: Vec<NamedPattern>,
        /// `mask`, `hash` or `drop`.
        action: String,
        /// Attributes left as they are.
        #[serde(default)]
        allow_fields: Vec<String>,
    },
}

fn body() -> String {
    "body".into()
}

/// A stage ready to run.
#[derive(Debug, Clone)]
enum Stage {
    Json(String),
    Logfmt(String),
    Regex {
        source: String,
        regex: Regex,
        optional: bool,
    },
    Set(String, String),
    Rename(String, String),
    DropFields(Vec<String>),
    KeepFields(Vec<String>),
    Severity(String),
    Drop {
        field: String,
        equals: Option<String>,
        matches: Option<Regex>,
    },
    Redact {
        redactor: Redactor,
        allow: Vec<String>,
    },
}

impl Stage {
    fn name(&self) -> &'static str {
        match self {
            Stage::Json(_) => "json",
            Stage::Logfmt(_) => "logfmt",
            Stage::Regex { .. } => "regex",
            Stage::Set(..) => "set",
            Stage::Rename(..) => "rename",
            Stage::DropFields(_) => "drop_fields",
            Stage::KeepFields(_) => "keep_fields",
            Stage::Severity(_) => "severity",
            Stage::Drop { .. } => "drop",
            Stage::Redact { .. } => "redact",
        }
    }
}

/// Why a record failed a stage.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("log pipeline {pipeline:?}, stage {stage} ({kind}): {reason}")]
pub struct StageError {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage position, from 1.
    pub stage: usize,
    /// Stage type.
    pub kind: &'static str,
    /// What was wrong with the record.
    pub reason: String,
}

/// A pipeline ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    name: String,
    tenant: Option<String>,
    services: Vec<String>,
    stages: Vec<Stage>,
}

/// A field of a record by name: `body`, `service`, `severity_text`, `trace_id`, `span_id`,
/// else an attribute.
fn get<'a>(r: &'a LogRecord, field: &str) -> Option<&'a str> {
    match field {
        "body" => Some(&r.body),
        "service" => Some(&r.service),
        "severity_text" => Some(&r.severity_text),
        "trace_id" => Some(&r.trace_id),
        "span_id" => Some(&r.span_id),
        _ => r.attrs.get(field).map(String::as_str),
    }
}

fn set(r: &mut LogRecord, field: &str, value: String) {
    match field {
        "body" => r.body = value,
        "service" => r.service = value,
        "severity_text" => r.severity_text = value,
        "trace_id" => r.trace_id = value,
        "span_id" => r.span_id = value,
        _ => {
            r.attrs.insert(field.to_string(), value);
        }
    }
}

/// Flattens a JSON object into `prefix.key` → text.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        serde_json::Value::Null => {
            out.insert(prefix.to_string(), String::new());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// `key=value` pairs; values may be double-quoted with `\"` and `\\` escapes. Written here
/// because the logfmt crates on crates.io are unmaintained and lenient about errors.
pub fn logfmt(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            // A bare key is a flag: `key` alone means `key=true`.
            out.push((key, "true".into()));
            continue;
        }
        chars.next();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some(e) => value.push(e),
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("unterminated quoted value of {key:?}"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if key.is_empty() {
            return Err("a value without a key".into());
        }
        out.push((key, value));
    }
}

/// OTLP severity number and text for a level spelling.
fn severity(level: &str) -> Option<(i32, &'static str)> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => (1, "TRACE"),
        "debug" | "dbug" => (5, "DEBUG"),
        "info" | "information" | "notice" => (9, "INFO"),
        "warn" | "warning" => (13, "WARN"),
        "error" | "err" => (17, "ERROR"),
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => (21, "FATAL"),
        _ => return None,
    })
}

impl Pipeline {
    /// A pipeline from its configuration; `key` keys `redact`'s hashes. Errors name the
    /// pipeline and stage.
    pub fn new(cfg: &PipelineConfig, key: &[u8]) -> Result<Pipeline, String> {
        let mut stages = Vec::new();
        for (i, s) in cfg.stages.iter().enumerate() {
            let bad = |e: String| format!("log pipeline {:?}, stage {}: {e}", cfg.name, i + 1);
            let regex = |p: &str| Regex::new(p).map_err(|e| bad(format!("invalid regex: {e}")));
            stages.push(match s {
                StageConfig::Json { source } => Stage::Json(source.clone()),
                StageConfig::Logfmt { source } => Stage::Logfmt(source.clone()),
                StageConfig::Regex {
                    source,
                    pattern,
                    optional,
                } => {
                    let re = regex(pattern)?;
                    if re.capture_names().flatten().next().is_none() {
                        return Err(bad("the regex has no named captures (?P<name>...)".into()));
                    }
                    Stage::Regex {
                        source: source.clone(),
                        regex: re,
                        optional: *optional,
                    }
                }
                StageConfig::Set { field, value } => Stage::Set(field.clone(), value.clone()),
                StageConfig::Rename { from, to } => Stage::Rename(from.clone(), to.clone()),
                StageConfig::DropFields { fields } => Stage::DropFields(fields.clone()),
                StageConfig::KeepFields { fields } => Stage::KeepFields(fields.clone()),
                StageConfig::Severity { field } => Stage::Severity(field.clone()),
                StageConfig::Drop {
                    field,
                    equals,
                    matches,
                } => {
                    if equals.is_none() == matches.is_none() {
                        return Err(bad("drop needs exactly one of equals or matches".into()));
                    }
                    Stage::Drop {
                        field: field.clone(),
                        equals: equals.clone(),
                        matches: matches.as_deref().map(regex).transpose()?,
                    }
                }
                StageConfig::Redact {
                    detectors,
                    patterns,
                    action,
                    allow_fields,
                } => {
                    let action = Action::parse(action).map_err(bad)?;
                    if action == Action::Hash && key.is_empty() {
                        return Err(bad(
                            "redact with action hash needs a key: set [logs] redact_key (OBS_LOGS__REDACT_KEY)".into(),
                        ));
                    }
                    let mut rules = Vec::new();
                    for d in detectors {
                        rules.push((Detector::builtin(d).map_err(bad)?, action));
                    }
                    for p in patterns {
                        rules.push((
                            Detector::Pattern {
                                name: p.name.clone(),
                                regex: regex(&p.regex)?,
                            },
                            action,
                        ));
                    }
                    if rules.is_empty() {
                        return Err(bad("redact names no detectors or patterns".into()));
                    }
                    Stage::Redact {
                        redactor: Redactor::new(rules, key),
                        allow: allow_fields.clone(),
                    }
                }
            });
        }
        Ok(Pipeline {
            name: cfg.name.clone(),
            tenant: cfg.tenant.clone(),
            services: cfg.services.clone(),
            stages,
        })
    }

    /// Whether the pipeline applies to `r`'s stream.
    pub fn selects(&self, r: &LogRecord) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == r.tenant)
            && (self.services.is_empty() || self.services.contains(&r.service))
    }

    /// Runs every stage on `r`: the record to store, `None` when a `drop` stage dropped it,
    /// or the first stage's failure.
    pub fn apply(&self, mut r: LogRecord) -> Result<Option<LogRecord>, StageError> {
        for (i, stage) in self.stages.iter().enumerate() {
            let fail = |reason: String| StageError {
                pipeline: self.name.clone(),
                stage: i + 1,
                kind: stage.name(),
                reason,
            };
            match stage {
                Stage::Json(source) => {
                    let text = get(&r, source).unwrap_or("");
                    let v: serde_json::Value = serde_json::from_str(text)
                        .map_err(|e| fail(format!("{source} is not JSON: {e}")))?;
                    if !v.is_object() {
                        return Err(fail(format!("{source} is JSON but not an object")));
                    }
                    let mut fields = BTreeMap::new();
                    flatten("", &v, &mut fields);
                    r.attrs.extend(fields);
                }
                Stage::Logfmt(source) => {
                    let pairs = logfmt(get(&r, source).unwrap_or(""))
                        .map_err(|e| fail(format!("{source} is not logfmt: {e}")))?;
                    r.attrs.extend(pairs);
                }
                Stage::Regex {
                    source,
                    regex,
                    optional,
                } => {
                    let text = get(&r, source).unwrap_or("");
                    match regex.captures(text) {
                        Some(c) => {
                            let found: Vec<(String, String)> = regex
                                .capture_names()
                                .flatten()
                                .filter_map(|n| {
                                    Some((n.to_string(), c.name(n)?.as_str().to_string()))
                                })
                                .collect();
                            r.attrs.extend(found);
                        }
                        None if *optional => {}
                        None => {
                            return Err(fail(format!(
                                "{source} does not match {}",
                                regex.as_str()
                            )));
                        }
                    }
                }
                Stage::Set(field, value) => set(&mut r, field, value.clone()),
                Stage::Rename(from, to) => {
                    if let Some(v) = r.attrs.remove(from) {
                        r.attrs.insert(to.clone(), v);
                    }
                }
                Stage::DropFields(fields) => {
                    for f in fields {
                        r.attrs.remove(f);
                    }
                }
                Stage::KeepFields(fields) => r.attrs.retain(|k, _| fields.contains(k)),
                Stage::Severity(field) => {
                    let level = get(&r, field).unwrap_or("").to_string();
                    let (number, text) = severity(&level)
                        .ok_or_else(|| fail(format!("{field} = {level:?} is not a known level")))?;
                    r.severity_number = number;
                    r.severity_text = text.into();
                }
                Stage::Drop {
                    field,
                    equals,
                    matches,
                } => {
                    let v = get(&r, field).unwrap_or("");
                    let hit = match (equals, matches) {
                        (Some(e), _) => v == e,
                        (_, Some(m)) => m.is_match(v),
                        _ => false,
                    };
                    if hit {
                        return Ok(None);
                    }
                }
                Stage::Redact { redactor, allow } => {
                    if let std::borrow::Cow::Owned(b) = redactor.redact(&r.body).text {
                        r.body = b;
                    }
                    for (k, v) in r.attrs.iter_mut().chain(r.resource_attrs.iter_mut()) {
                        if allow.contains(k) {
                            continue;
                        }
                        if let std::borrow::Cow::Owned(x) = redactor.redact(v).text {
                            *v = x;
                        }
                    }
                }
            }
        }
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        pipelines: Vec<PipelineConfig>,
    }

    fn pipeline(toml_text: &str) -> Result<Pipeline, String> {
        let f: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Pipeline::new(&f.pipelines[0], b"key")
    }

    fn record(body: &str) -> LogRecord {
        LogRecord {
            body: body.into(),
            service: "checkout".into(),
            tenant: "acme".into(),
            ..LogRecord::default()
        }
    }

    const CHECKOUT: &str = r#"
        [[pipelines]]
        name = "checkout"
        tenant = "acme"
        services = ["checkout"]
        [[pipelines.stages]]
        type = "json"
        [[pipelines.stages]]
        type = "severity"
        field = "level"
        [[pipelines.stages]]
        type = "rename"
        from = "usr.mail"
        to = "user"
        [[pipelines.stages]]
        type = "drop"
        field = "path"
        matches = "^/healthz"
        [[pipelines.stages]]
        type = "redact"
        detectors = ["email", "card"]
        action = "hash"
        allow_fields = ["order_id"]
        [[pipelines.stages]]
        type = "drop_fields"
        fields = ["level"]
    "#;

    #[test]
    fn parses_shapes_redacts_and_drops() {
        let p = pipeline(CHECKOUT).unwrap();
        let r = record(
            r#"{"level":"warn","path":"/pay","usr":{"mail":"ann@example.com"},"order_id":"4111111111111111","card":"4111 1111 1111 1111","n":3}"#,
        );
        assert!(p.selects(&r));
        let out = p.apply(r).unwrap().unwrap();
        let h =
            Redactor::new(vec![(Detector::Email, Action::Hash)], b"key").hash("ann@example.com");
        let card =
            Redactor::new(vec![(Detector::Card, Action::Hash)], b"key").hash("4111 1111 1111 1111");
        assert_eq!(
            (out.severity_number, out.severity_text.as_str()),
            (13, "WARN")
        );
        let attrs: Vec<(&str, &str)> = out
            .attrs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attrs,
            [
                ("card", format!("[card:{card}]").as_str()),
                ("n", "3"),
                // Allow-listed: an order id that happens to pass the Luhn check stays.
                ("order_id", "4111111111111111"),
                ("path", "/pay"),
                ("user", format!("[email:{h}]").as_str()),
            ]
        );
        assert!(!out.body.contains("ann@example.com"));
        assert!(!out.body.contains("4111 1111 1111 1111"));
        // A health check is dropped; another tenant's record is not selected.
        let health = record(r#"{"level":"info","path":"/healthz"}"#);
        assert_eq!(p.apply(health).unwrap(), None);
        let mut other = record("{}");
        other.tenant = "umbrella".into();
        assert!(!p.selects(&other));
    }

    #[test]
    fn stage_failures_name_pipeline_stage_and_reason() {
        let p = pipeline(CHECKOUT).unwrap();
        let e = p.apply(record("not json")).unwrap_err();
        assert_eq!((e.stage, e.kind), (1, "json"));
        assert!(
            e.to_string()
                .starts_with("log pipeline \"checkout\", stage 1 (json): body is not JSON"),
            "{e}"
        );
        let e = p.apply(record(r#"{"level":"loud"}"#)).unwrap_err();
        assert_eq!((e.stage, e.kind), (2, "severity"));
        assert!(e.reason.contains("\"loud\""), "{e}");
    }

    #[test]
    fn logfmt_and_regex_stages() {
        let p = pipeline(
            r#"
            [[pipelines]]
            name = "nginx"
            [[pipelines.stages]]
            type = "regex"
            pattern = '^(?P<method>[A-Z]+) (?P<path>\S+) (?P<rest>.*)$'
            [[pipelines.stages]]
            type = "logfmt"
            source = "rest"
            [[pipelines.stages]]
            type = "keep_fields"
            fields = ["method", "path", "status", "msg"]
            [[pipelines.stages]]
            type = "set"
            field = "service"
            value = "nginx"
        "#,
        )
        .unwrap();
        let out = p
            .apply(record(r#"GET /cart status=200 msg="took \"long\"" debug"#))
            .unwrap()
            .unwrap();
        assert_eq!(out.service, "nginx");
        assert_eq!(
            out.attrs.into_iter().collect::<Vec<_>>(),
            [
                ("method".to_string(), "GET".to_string()),
                ("msg".into(), r#"took "long""#.into()),
                ("path".into(), "/cart".into()),
                ("status".into(), "200".into()),
            ]
        );
        let e = p.apply(record("garbage")).unwrap_err();
        assert_eq!((e.stage, e.kind), (1, "regex"));
        assert_eq!(
            logfmt(r#"a=1 b="x"#),
            Err("unterminated quoted value of \"b\"".into())
        );
    }

    #[test]
    fn bad_configuration_is_refused_naming_the_stage() {
        let cases = [
            (
                r#"type = "regex"
                pattern = "(unclosed""#,
                "stage 1: invalid regex",
            ),
            (
                r#"type = "regex"
                pattern = "plain""#,
                "no named captures",
            ),
            (
                r#"type = "redact"
                action = "shred"
                detectors = ["email"]"#,
                "unknown redaction action",
            ),
            (
                r#"type = "redact"
                action = "mask""#,
                "names no detectors",
            ),
            (
                r#"type = "drop"
                field = "x""#,
                "exactly one of equals or matches",
            ),
            (r#"type = "sparkle""#, "unknown variant `sparkle`"),
            (
                r#"type = "json"
                sauce = "body""#,
                "unknown field `sauce`",
            ),
        ];
        for (stage, want) in cases {
            let text = format!("[[pipelines]]\nname = \"p\"\n[[pipelines.stages]]\n{stage}\n");
            let e = pipeline(&text).unwrap_err();
            assert!(e.contains(want), "{stage}: {e}");
        }
    }
}
