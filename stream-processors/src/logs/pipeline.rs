//! A log pipeline: an ordered chain of stages applied to the log records of the streams it
//! selects (a tenant and services), configured in TOML as `[[logs.pipelines]]`.
//!
//! Stages: parse (`json`, `logfmt`, `regex` with named captures, `grok`) into attributes; extract
//! (`timestamp`, `severity`, `trace_context` from text); shape (`set`, `rename`,
//! `drop_fields`, `keep_fields`); enrich (`lookup` in a CSV table); reduce (`drop` records
//! whose field equals or matches a value, `sample` a stable share, `route` to another topic); `redact` (the body and (resource) attributes,
//! with [`super::redact`]'s detectors, except allow-listed attributes). A stage that cannot
//! process a record fails it with a [`StageError`] naming the pipeline, the stage and the
//! reason (the record goes to `obs.dlq`, never silently away).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

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
    /// The source matches a grok pattern (Logstash's `%{IP:client} %{WORD:method}`, with
    /// the standard pattern library and `patterns` of one's own); the named fields become
    /// attributes. A record that does not match fails the stage unless `optional`.
    Grok {
        /// Field parsed.
        #[serde(default = "body")]
        source: String,
        /// The grok pattern.
        pattern: String,
        /// Own patterns, by name, usable as `%{NAME}`.
        #[serde(default)]
        patterns: BTreeMap<String, String>,
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
    /// Sends records whose field equals `equals` or matches `matches` to `topic` (log
    /// batches with `obs.logs`'s schema) instead of `obs.logs`; later stages do not run on
    /// them (put `redact` first to route redacted records).
    Route {
        /// Field tested.
        field: String,
        /// Exact value.
        #[serde(default)]
        equals: Option<String>,
        /// Regex.
        #[serde(default)]
        matches: Option<String>,
        /// The topic (not one of the pipeline's own `obs.*` topics).
        topic: String,
    },
    /// The record's time from a field: `rfc3339`, `unix` (seconds, fractions allowed),
    /// `unix_ms`, `unix_ns`, or a strftime format (chrono's; without a zone, UTC).
    Timestamp {
        /// Field read.
        field: String,
        /// How the time is written.
        format: String,
    },
    /// Trace and span ids from a field's text, when it holds them: a W3C `traceparent`
    /// (`00-<trace id>-<span id>-<flags>`), or `trace_id`/`span_id` as `key=value` or
    /// JSON (`traceId`, `trace-id` too).
    TraceContext {
        /// Field read.
        #[serde(default = "body")]
        source: String,
    },
    /// Attributes from a CSV table by a field's value: the header names the columns, the
    /// first column is the key, the others are added (`host` → `team`, `owner`). A path
    /// is relative to the pipelines file.
    Lookup {
        /// The CSV file.
        file: String,
        /// Field whose value is looked up.
        field: String,
    },
    /// Keeps a share of the records, the same ones every time (a restart decides alike):
    /// those whose field hashes below `rate` of the hash range.
    Sample {
        /// Share kept, in (0, 1].
        rate: f64,
        /// Field hashed.
        #[serde(default = "body")]
        by: String,
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
    Grok {
        source: String,
        pattern: std::sync::Arc<grok::Pattern>,
        optional: bool,
    },
    Set(String, String),
    Rename(String, String),
    DropFields(Vec<String>),
    KeepFields(Vec<String>),
    Severity(String),
    Drop(Condition),
    Route(Condition, String),
    Redact {
        redactor: Redactor,
        allow: Vec<String>,
    },
    Timestamp(String, String),
    TraceContext(String),
    Lookup {
        field: String,
        table: HashMap<String, Vec<(String, String)>>,
    },
    Sample {
        rate: f64,
        by: String,
    },
}

impl Stage {
    fn name(&self) -> &'static str {
        match self {
            Stage::Json(_) => "json",
            Stage::Logfmt(_) => "logfmt",
            Stage::Regex { .. } => "regex",
            Stage::Grok { .. } => "grok",
            Stage::Set(..) => "set",
            Stage::Rename(..) => "rename",
            Stage::DropFields(_) => "drop_fields",
            Stage::KeepFields(_) => "keep_fields",
            Stage::Severity(_) => "severity",
            Stage::Drop(_) => "drop",
            Stage::Route(..) => "route",
            Stage::Redact { .. } => "redact",
            Stage::Timestamp(..) => "timestamp",
            Stage::TraceContext(_) => "trace_context",
            Stage::Lookup { .. } => "lookup",
            Stage::Sample { .. } => "sample",
        }
    }
}

/// A field's test of `drop` and `route`: equal to a value or matching a regex.
#[derive(Debug, Clone)]
struct Condition {
    field: String,
    equals: Option<String>,
    matches: Option<Regex>,
}

impl Condition {
    fn new(
        what: &str,
        field: &str,
        equals: &Option<String>,
        matches: &Option<String>,
    ) -> Result<Condition, String> {
        if equals.is_none() == matches.is_none() {
            return Err(format!("{what} needs exactly one of equals or matches"));
        }
        let matches = match matches {
            Some(m) => Some(Regex::new(m).map_err(|e| format!("regex {m:?}: {e}"))?),
            None => None,
        };
        Ok(Condition {
            field: field.to_string(),
            equals: equals.clone(),
            matches,
        })
    }

    fn hits(&self, r: &LogRecord) -> bool {
        let v = get(r, &self.field).unwrap_or("");
        match (&self.equals, &self.matches) {
            (Some(e), _) => v == e,
            (_, Some(m)) => m.is_match(v),
            _ => false,
        }
    }
}

/// What a pipeline made of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored in `obs.logs`.
    Keep(LogRecord),
    /// Dropped by `drop` or `sample`.
    Drop,
    /// Sent to another topic by `route`.
    Route(String, LogRecord),
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

/// A time in `format` (see [`StageConfig::Timestamp`]) as ns since the epoch.
pub fn parse_time(text: &str, format: &str) -> Result<i64, String> {
    let text = text.trim();
    // A decimal number of units of 10^digits ns, exactly (no float rounding).
    let number = |digits: u32| -> Result<i64, String> {
        let bad = || format!("{text:?} is not a number");
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        if frac.len() > digits as usize || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        let frac: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<width$}", width = digits as usize)
                .parse()
                .map_err(|_| bad())?
        };
        let scale = 10i64.pow(digits);
        whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(if text.starts_with('-') { -frac } else { frac }))
            .ok_or_else(|| format!("{text:?} is out of range"))
    };
    let ns = match format {
        "rfc3339" => chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("{text:?} is not RFC 3339: {e}"))?
            .timestamp_nanos_opt(),
        "unix" => Some(number(9)?),
        "unix_ms" => Some(number(6)?),
        "unix_ns" => Some(
            text.parse::<i64>()
                .map_err(|_| format!("{text:?} is not an integer"))?,
        ),
        f => match chrono::DateTime::parse_from_str(text, f) {
            Ok(t) => t.timestamp_nanos_opt(),
            Err(_) => chrono::NaiveDateTime::parse_from_str(text, f)
                .map_err(|e| format!("{text:?} does not match {f:?}: {e}"))?
                .and_utc()
                .timestamp_nanos_opt(),
        },
    };
    ns.ok_or_else(|| format!("{text:?} is out of range"))
}

/// The patterns a `trace_context` stage looks for: traceparent, then key/value forms.
struct TracePatterns {
    traceparent: Regex,
    trace_id: Regex,
    span_id: Regex,
}

fn trace_patterns() -> &'static TracePatterns {
    static P: std::sync::OnceLock<TracePatterns> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("built-in pattern compiles");
        TracePatterns {
            traceparent: re(r"\b00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}\b"),
            trace_id: re(r#"(?i)\btrace[_-]?id"?\s*[:=]\s*"?([0-9a-f]{32})\b"#),
            span_id: re(r#"(?i)\bspan[_-]?id"?\s*[:=]\s*"?([0-9a-f]{16})\b"#),
        }
    })
}

/// A CSV lookup table: first column → the other columns as (header, value).
fn load_table(path: &Path) -> Result<HashMap<String, Vec<(String, String)>>, String> {
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| format!("reading lookup table {}: {e}", path.display()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("lookup table {}: {e}", path.display()))?
        .iter()
        .map(String::from)
        .collect();
    if headers.len() < 2 {
        return Err(format!(
            "lookup table {} needs a key column and at least one more",
            path.display()
        ));
    }
    let mut table = HashMap::new();
    for row in reader.records() {
        let row = row.map_err(|e| format!("lookup table {}: {e}", path.display()))?;
        let key = row.get(0).unwrap_or("").to_string();
        let values = headers[1..]
            .iter()
            .zip(row.iter().skip(1))
            .map(|(h, v)| (h.clone(), v.to_string()))
            .collect();
        table.insert(key, values);
    }
    Ok(table)
}

impl Pipeline {
    /// A pipeline from its configuration; `key` keys `redact`'s hashes, `dir` is where
    /// relative lookup tables are. Errors name the pipeline and stage.
    pub fn new(cfg: &PipelineConfig, key: &[u8], dir: &Path) -> Result<Pipeline, String> {
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
                StageConfig::Grok {
                    source,
                    pattern,
                    patterns,
                    optional,
                } => {
                    let mut g = grok::Grok::with_default_patterns();
                    for (name, p) in patterns {
                        g.add_pattern(name.clone(), p.clone());
                    }
                    let compiled = g
                        .compile(pattern, true)
                        .map_err(|e| bad(format!("invalid grok pattern: {e}")))?;
                    if compiled.capture_names().next().is_none() {
                        return Err(bad(
                            "the grok pattern names no fields (%{PATTERN:field})".into(),
                        ));
                    }
                    Stage::Grok {
                        source: source.clone(),
                        pattern: std::sync::Arc::new(compiled),
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
                } => Stage::Drop(Condition::new("drop", field, equals, matches).map_err(bad)?),
                StageConfig::Route {
                    field,
                    equals,
                    matches,
                    topic,
                } => {
                    let valid = !topic.is_empty()
                        && topic
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                    if !valid {
                        return Err(bad(format!(
                            "route topic {topic:?} is not a Kafka topic name (letters, digits, . _ -)"
                        )));
                    }
                    if obs_schemas::Topic::ALL.iter().any(|t| t.name() == topic) {
                        return Err(bad(format!(
                            "route topic {topic} is one of the pipeline's own topics: route to a topic of your own (kept records go to obs.logs anyway)"
                        )));
                    }
                    Stage::Route(
                        Condition::new("route", field, equals, matches).map_err(bad)?,
                        topic.clone(),
                    )
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
                StageConfig::Timestamp { field, format } => {
                    Stage::Timestamp(field.clone(), format.clone())
                }
                StageConfig::TraceContext { source } => Stage::TraceContext(source.clone()),
                StageConfig::Lookup { file, field } => Stage::Lookup {
                    field: field.clone(),
                    table: load_table(&dir.join(file)).map_err(bad)?,
                },
                StageConfig::Sample { rate, by } => {
                    if !(*rate > 0.0 && *rate <= 1.0) {
                        return Err(bad(format!("sample rate {rate} is not in (0, 1]")));
                    }
                    Stage::Sample {
                        rate: *rate,
                        by: by.clone(),
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

    /// How many stages it runs.
    pub fn stage_count(&self) -> usize {
        self.stages.len()
    }

    /// Whether the pipeline applies to `r`'s stream.
    pub fn selects(&self, r: &LogRecord) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == r.tenant)
            && (self.services.is_empty() || self.services.contains(&r.service))
    }

    /// Runs every stage on `r`: what becomes of it, or the first stage's failure.
    pub fn apply(&self, mut r: LogRecord) -> Result<Outcome, StageError> {
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
                Stage::Grok {
                    source,
                    pattern,
                    optional,
                } => {
                    let text = get(&r, source).unwrap_or("").to_string();
                    match pattern.match_against(&text) {
                        Some(m) => {
                            let found: Vec<(String, String)> = m
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect();
                            r.attrs.extend(found);
                        }
                        None if *optional => {}
                        None => {
                            return Err(fail(format!("{source} does not match the grok pattern")));
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
                Stage::Drop(condition) => {
                    if condition.hits(&r) {
                        return Ok(Outcome::Drop);
                    }
                }
                Stage::Route(condition, topic) => {
                    if condition.hits(&r) {
                        return Ok(Outcome::Route(topic.clone(), r));
                    }
                }
                Stage::Timestamp(field, format) => {
                    let text = get(&r, field).unwrap_or("");
                    r.timestamp_ns =
                        parse_time(text, format).map_err(|e| fail(format!("{field}: {e}")))?;
                }
                Stage::TraceContext(source) => {
                    let text = get(&r, source).unwrap_or("");
                    let p = trace_patterns();
                    let (trace, span) = match p.traceparent.captures(text) {
                        Some(c) => (Some(c[1].to_string()), Some(c[2].to_string())),
                        None => (
                            p.trace_id.captures(text).map(|c| c[1].to_ascii_lowercase()),
                            p.span_id.captures(text).map(|c| c[1].to_ascii_lowercase()),
                        ),
                    };
                    if let Some(t) = trace {
                        r.trace_id = t;
                    }
                    if let Some(s) = span {
                        r.span_id = s;
                    }
                }
                Stage::Lookup { field, table } => {
                    if let Some(values) = get(&r, field).and_then(|v| table.get(v)) {
                        r.attrs.extend(values.iter().cloned());
                    }
                }
                Stage::Sample { rate, by } => {
                    let h = xxhash_rust::xxh3::xxh3_64(get(&r, by).unwrap_or("").as_bytes());
                    if (h as f64) >= *rate * u64::MAX as f64 {
                        return Ok(Outcome::Drop);
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
        Ok(Outcome::Keep(r))
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
        Pipeline::new(&f.pipelines[0], b"key", Path::new("."))
    }

    fn record(body: &str) -> LogRecord {
        LogRecord {
            body: body.into(),
            service: "checkout".into(),
            tenant: "acme".into(),
            ..LogRecord::default()
        }
    }

    impl Outcome {
        /// The kept record; panics on anything else.
        fn kept(self) -> LogRecord {
            match self {
                Outcome::Keep(r) => r,
                other => panic!("expected a kept record, got {other:?}"),
            }
        }
    }

    #[test]
    fn route_sends_matching_records_to_their_topic_before_later_stages() {
        let p = pipeline(
            r#"
            [[pipelines]]
            name = "audit"
            [[pipelines.stages]]
            type = "json"
            [[pipelines.stages]]
            type = "route"
            field = "kind"
            equals = "audit"
            topic = "acme.audit"
            [[pipelines.stages]]
            type = "set"
            field = "stored"
            value = "yes"
            "#,
        )
        .unwrap();
        match p.apply(record(r#"{"kind":"audit","who":"ann"}"#)).unwrap() {
            Outcome::Route(topic, r) => {
                assert_eq!(topic, "acme.audit");
                assert_eq!(r.attrs["who"], "ann");
                assert!(!r.attrs.contains_key("stored"), "later stages did not run");
            }
            other => panic!("{other:?}"),
        }
        let kept = p.apply(record(r#"{"kind":"web"}"#)).unwrap().kept();
        assert_eq!(kept.attrs["stored"], "yes");
        for (topic, why) in [("obs.logs", "own topics"), ("a b", "not a Kafka topic")] {
            let e = pipeline(&format!(
                "[[pipelines]]\nname = \"p\"\n[[pipelines.stages]]\ntype = \"route\"\nfield = \"k\"\nequals = \"v\"\ntopic = \"{topic}\"\n"
            ))
            .unwrap_err();
            assert!(e.contains(why), "{e}");
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
        let out = p.apply(r).unwrap().kept();
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
        assert_eq!(p.apply(health).unwrap(), Outcome::Drop);
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
            .kept();
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
    fn timestamps_in_each_format() {
        let t = 1_796_119_200_000_000_000i64; // 2026-12-01T10:00:00Z
        assert_eq!(
            parse_time("2026-12-01T10:00:00.5Z", "rfc3339"),
            Ok(t + 500_000_000)
        );
        assert_eq!(parse_time("2026-12-01T11:00:00+01:00", "rfc3339"), Ok(t));
        assert_eq!(parse_time("1796119200.25", "unix"), Ok(t + 250_000_000));
        assert_eq!(parse_time("1796119200123", "unix_ms"), Ok(t + 123_000_000));
        assert_eq!(parse_time(&t.to_string(), "unix_ns"), Ok(t));
        assert_eq!(
            parse_time("01/Dec/2026:11:00:00 +0100", "%d/%b/%Y:%H:%M:%S %z"),
            Ok(t)
        );
        assert_eq!(
            parse_time("2026-12-01 10:00:00", "%Y-%m-%d %H:%M:%S"),
            Ok(t)
        );
        assert!(parse_time("yesterday", "rfc3339").is_err());
        assert!(parse_time("12x", "unix").is_err());
        assert_eq!(parse_time("-0.5", "unix"), Ok(-500_000_000));
        assert!(parse_time("1.0000000001", "unix").is_err(), "finer than ns");
        let p = pipeline(
            r#"
            [[pipelines]]
            name = "t"
            [[pipelines.stages]]
            type = "logfmt"
            [[pipelines.stages]]
            type = "timestamp"
            field = "ts"
            format = "rfc3339"
        "#,
        )
        .unwrap();
        let out = p
            .apply(record("ts=2026-12-01T10:00:00Z msg=hi"))
            .unwrap()
            .kept();
        assert_eq!(out.timestamp_ns, t);
        let e = p.apply(record("ts=soon")).unwrap_err();
        assert_eq!((e.stage, e.kind), (2, "timestamp"));
    }

    #[test]
    fn trace_context_from_text() {
        let p = pipeline(
            r#"
            [[pipelines]]
            name = "t"
            [[pipelines.stages]]
            type = "trace_context"
        "#,
        )
        .unwrap();
        let ids = |body: &str| {
            let r = p.apply(record(body)).unwrap().kept();
            (r.trace_id, r.span_id)
        };
        let (t, s) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        let both = (t.to_string(), s.to_string());
        assert_eq!(ids(&format!("traceparent: 00-{t}-{s}-01 GET /")), both);
        assert_eq!(
            ids(&format!("trace_id={} span_id={s} done", t.to_uppercase())),
            both
        );
        assert_eq!(
            ids(&format!(r#"{{"traceId": "{t}", "spanId": "{s}"}}"#)),
            both
        );
        assert_eq!(
            ids("no ids here, trace_id=123"),
            (String::new(), String::new())
        );
    }

    #[test]
    fn lookup_tables_and_stable_samples() {
        let dir = std::env::temp_dir().join(format!("obs-lookup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hosts.csv"),
            "host,team,owner\nweb-1,shop,ann\ndb-1,data,bob\n",
        )
        .unwrap();
        let f: File = toml::from_str(
            r#"
            [[pipelines]]
            name = "t"
            [[pipelines.stages]]
            type = "lookup"
            file = "hosts.csv"
            field = "host"
            [[pipelines.stages]]
            type = "sample"
            rate = 0.5
        "#,
        )
        .unwrap();
        let p = Pipeline::new(&f.pipelines[0], b"", &dir).unwrap();
        let mut kept = 0;
        for i in 0..1000 {
            let mut r = record(&format!("line {i}"));
            r.attrs.insert("host".into(), "web-1".into());
            let once = p.apply(r.clone()).unwrap();
            assert_eq!(once, p.apply(r).unwrap(), "the same decision every time");
            if let Outcome::Keep(out) = once {
                kept += 1;
                assert_eq!(out.attrs["team"], "shop");
                assert_eq!(out.attrs["owner"], "ann");
            }
        }
        assert!(
            (430..=570).contains(&kept),
            "kept {kept} of 1000 at rate 0.5"
        );
        let missing = PipelineConfig {
            name: "m".into(),
            tenant: None,
            services: Vec::new(),
            stages: vec![StageConfig::Lookup {
                file: "nope.csv".into(),
                field: "host".into(),
            }],
        };
        let e = Pipeline::new(&missing, b"", &dir).unwrap_err();
        assert!(e.contains("stage 1: reading lookup table"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn grok_with_the_standard_library_and_own_patterns() {
        let p = pipeline(
            r#"
            [[pipelines]]
            name = "apache"
            [[pipelines.stages]]
            type = "grok"
            pattern = '%{IPORHOST:client} %{USER:ident} %{USER:auth} \[%{HTTPDATE:when}\] "%{WORD:method} %{NOTSPACE:path} HTTP/%{NUMBER:http}" %{NUMBER:status} %{NUMBER:bytes} %{ORDER:order}'
            patterns = { ORDER = 'ord-[0-9]+' }
        "#,
        )
        .unwrap();
        let line = r#"10.1.2.3 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 ord-77"#;
        let out = p.apply(record(line)).unwrap().kept();
        let got: Vec<(&str, &str)> = out
            .attrs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("auth", "frank"),
                ("bytes", "2326"),
                ("client", "10.1.2.3"),
                ("http", "1.0"),
                ("ident", "-"),
                ("method", "GET"),
                ("order", "ord-77"),
                ("path", "/apache_pb.gif"),
                ("status", "200"),
                ("when", "10/Oct/2000:13:55:36 -0700"),
            ]
        );
        let e = p.apply(record("garbage")).unwrap_err();
        assert_eq!((e.stage, e.kind), (1, "grok"));
        let e = pipeline(
            "[[pipelines]]\nname = \"p\"\n[[pipelines.stages]]\ntype = \"grok\"\npattern = \"%{NOSUCHPATTERN:x}\"\n",
        )
        .unwrap_err();
        assert!(e.contains("stage 1: invalid grok pattern"), "{e}");
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
