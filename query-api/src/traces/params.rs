//! Request parameters of the trace APIs: trace ids, Go-style durations (`1.5ms`, `2s`),
//! tags as logfmt (`http.status_code=200 error=true`, `key="a b"`) or a JSON object, and
//! the search they make up.

use std::collections::BTreeMap;

/// A trace id as stored: 32 lower-case hex digits (shorter ids, e.g. Jaeger's 64-bit ones
/// or ids with leading zeros dropped, are left-padded).
pub fn trace_id(raw: &str) -> Result<String, String> {
    let id = raw.trim().to_ascii_lowercase();
    if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid trace id {raw:?}: expected up to 32 hex digits"
        ));
    }
    Ok(format!("{id:0>32}"))
}

/// A Go duration (`300ms`, `1.5s`, `1m30s`, `250us`, `250µs`, `10ns`) in nanoseconds.
pub fn duration_ns(raw: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {raw:?}: use e.g. 250us, 1.5ms, 2s or 1m30s");
    let s = raw.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Ok(total.round() as u64)
}

/// Tags from a JSON object (`{"k":"v"}`, Grafana's Jaeger datasource) or logfmt
/// (`k=v k2="a b"`, the Jaeger UI and Tempo).
pub fn tags(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(BTreeMap::new());
    }
    if raw.starts_with('{') {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
            .map_err(|e| format!("invalid tags {raw:?}: not a JSON object ({e})"))?;
        return Ok(v
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect());
    }
    logfmt(raw)
}

fn logfmt(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut chars = raw.chars().peekable();
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
        if chars.next() != Some('=') || key.is_empty() {
            return Err(format!(
                "invalid tags {raw:?}: expected key=value pairs (logfmt) or a JSON object"
            ));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("invalid tags {raw:?}: unclosed quote"));
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
        out.insert(key, value);
    }
}

/// What a search's duration bounds measure.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub enum DurationOf {
    /// One span that meets the other conditions too (Jaeger).
    #[default]
    Span,
    /// The whole trace, first span start to last span end (Tempo).
    Trace,
}

/// A trace search: the span conditions must hold for one span of the trace; a service
/// searched alone is one of the trace's services.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Search {
    /// `service.name`.
    pub service: Option<String>,
    /// Span name.
    pub operation: Option<String>,
    /// Span or resource attributes (and `error`, `span.kind`, `status.code`).
    pub tags: BTreeMap<String, String>,
    /// Least duration, ns.
    pub min_duration_ns: Option<u64>,
    /// Greatest duration, ns.
    pub max_duration_ns: Option<u64>,
    /// Whether the durations are a span's or the trace's.
    pub duration_of: DurationOf,
    /// The trace ends at or after, and a matching span starts at or after, ns since the
    /// epoch.
    pub start_ns: Option<i64>,
    /// The trace and a matching span start at or before, ns since the epoch.
    pub end_ns: Option<i64>,
    /// Most traces returned.
    pub limit: u64,
}

/// Traces a search returns when it names no limit, and the most it may ask for.
pub const DEFAULT_LIMIT: u64 = 20;
/// The most traces one search returns.
pub const MAX_LIMIT: u64 = 1000;

/// A `limit` parameter: absent or 0 → the default, capped at [`MAX_LIMIT`].
pub fn limit(raw: Option<&str>) -> Result<u64, String> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => {
            let n: u64 = s
                .parse()
                .map_err(|_| format!("invalid limit {s:?}: not a positive integer"))?;
            Ok(if n == 0 {
                DEFAULT_LIMIT
            } else {
                n.min(MAX_LIMIT)
            })
        }
    }
}

/// An integer time parameter scaled to ns (`scale` = 1000 for µs, 1e9 for seconds).
pub fn time_ns(name: &str, raw: Option<&str>, scale: i64) -> Result<Option<i64>, String> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(|v| Some(v.saturating_mul(scale)))
            .map_err(|_| format!("invalid {name} {s:?}: not an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_normalised() {
        assert_eq!(
            trace_id("ABCDEF0123456789").unwrap(),
            "0000000000000000abcdef0123456789"
        );
        assert!(trace_id("xyz").is_err());
        assert!(trace_id(&"a".repeat(33)).is_err());
        assert!(trace_id("' OR 1=1").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(duration_ns("250us").unwrap(), 250_000);
        assert_eq!(duration_ns("250µs").unwrap(), 250_000);
        assert_eq!(duration_ns("1.5ms").unwrap(), 1_500_000);
        assert_eq!(duration_ns("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(duration_ns("7ns").unwrap(), 7);
        assert!(duration_ns("5").is_err());
        assert!(duration_ns("5 parsecs").is_err());
        assert!(duration_ns("").is_err());
    }

    #[test]
    fn tags_as_logfmt_or_json() {
        let t = tags(r#"http.status_code=200 error=true msg="a \"b\" c""#).unwrap();
        assert_eq!(t["http.status_code"], "200");
        assert_eq!(t["error"], "true");
        assert_eq!(t["msg"], r#"a "b" c"#);
        let t = tags(r#"{"db.rows":"3","n":4,"ok":true}"#).unwrap();
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            [
                ("db.rows".to_string(), "3".to_string()),
                ("n".into(), "4".into()),
                ("ok".into(), "true".into())
            ]
        );
        assert!(tags("novalue").is_err());
        assert!(tags("k=\"open").is_err());
        assert!(tags("{not json").is_err());
        assert!(tags("  ").unwrap().is_empty());
    }

    #[test]
    fn limits_and_times() {
        assert_eq!(limit(None).unwrap(), 20);
        assert_eq!(limit(Some("0")).unwrap(), 20);
        assert_eq!(limit(Some("5000")).unwrap(), 1000);
        assert!(limit(Some("-1")).is_err());
        assert_eq!(time_ns("start", Some("17"), 1000).unwrap(), Some(17_000));
        assert!(time_ns("start", Some("x"), 1).is_err());
    }
}
