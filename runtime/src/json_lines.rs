//! JSON lines that log agents publish straight to Kafka (`obs.logs.raw`: Fluent Bit's and
//! Vector's Kafka outputs with a JSON codec) as log records: what the raw-logs sink stores,
//! and what the log processor runs through pipelines when they are configured.
//!
//! A message holds one or more JSON objects, one per line. Fields are read the way those
//! agents name them:
//! * time: `timestamp`, `@timestamp`, `time`, `ts` or `date` — RFC 3339 text, or a number
//!   of seconds, ms, µs or ns since the epoch (told apart by size); missing: the time given;
//! * body: `message`, `msg`, `log` or `body`; missing: the whole object as JSON;
//! * severity: `level`, `severity`, `lvl` or `log.level`;
//! * service: `service.name`, `service`, `service_name`, `app` or `job`;
//! * trace context: `trace_id`/`traceId`, `span_id`/`spanId`;
//! * `host`/`hostname` become the `host.name` resource attribute, `tenant` the tenant
//!   (default `default`); every other field is an attribute (nested objects flattened with
//!   dots, values as text).

use obs_schemas::records::{Attrs, LogBatch, LogRecord};
use serde_json::{Map, Value};

/// Parses a message's JSON lines; `now_ns` is the time of records without one.
pub fn parse(payload: &[u8], now_ns: i64) -> Result<LogBatch, String> {
    let text = std::str::from_utf8(payload).map_err(|e| format!("message is not UTF-8: {e}"))?;
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => records.push(record(o, now_ns)),
            Ok(_) => return Err(format!("line {} is not a JSON object", n + 1)),
            Err(e) => return Err(format!("line {} is not valid JSON: {e}", n + 1)),
        }
    }
    Ok(LogBatch { records })
}

fn take_str(o: &mut Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match o.remove(*k) {
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    })
}

/// A time value: RFC 3339, or a number whose size tells its unit.
fn time_ns(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .or_else(|| s.parse::<f64>().ok().and_then(number_ns)),
        Value::Number(n) => n.as_f64().and_then(number_ns),
        _ => None,
    }
}

fn number_ns(n: f64) -> Option<i64> {
    if !n.is_finite() {
        return None;
    }
    let a = n.abs();
    let scale: i64 = if a < 1e11 {
        1_000_000_000
    } else if a < 1e14 {
        1_000_000
    } else if a < 1e17 {
        1_000
    } else {
        1
    };
    // Whole and fractional parts apart: `1795341601.25 * 1e9` is not exact in f64. A number
    // whose ns do not fit an i64 (past the year 2262) is no time (found by fuzzing).
    let whole = n.trunc();
    (whole as i64)
        .checked_mul(scale)?
        .checked_add(((n - whole) * scale as f64).round() as i64)
}

fn flatten(prefix: &str, v: Value, out: &mut Attrs) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s);
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn record(mut o: Map<String, Value>, now_ns: i64) -> LogRecord {
    let original = Value::Object(o.clone()).to_string();
    let time = ["timestamp", "@timestamp", "time", "ts", "date"]
        .iter()
        .find_map(|k| o.get(*k).and_then(time_ns).map(|t| (k.to_string(), t)));
    let timestamp_ns = match time {
        Some((k, t)) => {
            o.remove(&k);
            t
        }
        None => now_ns,
    };
    let body = take_str(&mut o, &["message", "msg", "log", "body"]).unwrap_or(original);
    let severity_text =
        take_str(&mut o, &["level", "severity", "lvl", "log.level"]).unwrap_or_default();
    let service = take_str(
        &mut o,
        &["service.name", "service", "service_name", "app", "job"],
    )
    .unwrap_or_else(|| "unknown_service".into());
    let trace_id = take_str(&mut o, &["trace_id", "traceId"]).unwrap_or_default();
    let span_id = take_str(&mut o, &["span_id", "spanId"]).unwrap_or_default();
    let tenant = take_str(&mut o, &["tenant"]).unwrap_or_else(|| "default".into());
    let mut resource_attrs = Attrs::from_iter([("service.name".to_string(), service.clone())]);
    if let Some(h) = take_str(&mut o, &["host", "hostname"]) {
        resource_attrs.insert("host.name".into(), h);
    }
    let mut attrs = Attrs::new();
    flatten("", Value::Object(o), &mut attrs);
    LogRecord {
        timestamp_ns,
        observed_timestamp_ns: now_ns,
        severity_number: severity_number(&severity_text),
        severity_text,
        body,
        service,
        trace_id,
        span_id,
        resource_attrs,
        attrs,
        tenant,
        ..Default::default()
    }
}

/// OpenTelemetry's severity number for the usual level names.
fn severity_number(level: &str) -> i32 {
    match level.to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" => 5,
        "info" | "information" | "notice" => 9,
        "warn" | "warning" => 13,
        "error" | "err" => 17,
        "fatal" | "critical" | "crit" | "emerg" | "alert" => 21,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_and_fluent_bit_shapes_are_normalised() {
        let payload = br#"{"message":"GET /a 200","timestamp":"2026-11-22T10:00:00.5Z","host":"web-1","level":"info","service":"api","http":{"status":200},"tenant":"t1"}
{"log":"disk full","date":1795341601.25,"kubernetes":{"pod_name":"db-0"},"level":"error"}"#;
        let b = parse(payload, 7).unwrap();
        let a = &b.records[0];
        assert_eq!(a.timestamp_ns, 1_795_341_600_500_000_000);
        assert_eq!(
            (a.body.as_str(), a.service.as_str(), a.tenant.as_str()),
            ("GET /a 200", "api", "t1")
        );
        assert_eq!((a.severity_text.as_str(), a.severity_number), ("info", 9));
        assert_eq!(a.resource_attrs["host.name"], "web-1");
        assert_eq!(a.attrs["http.status"], "200");
        let f = &b.records[1];
        assert_eq!(f.timestamp_ns, 1_795_341_601_250_000_000);
        assert_eq!(f.attrs["kubernetes.pod_name"], "db-0");
        assert_eq!(
            (f.service.as_str(), f.tenant.as_str()),
            ("unknown_service", "default")
        );
    }

    #[test]
    fn units_of_numeric_times_and_bad_lines() {
        assert_eq!(number_ns(1_795_341_600.0), Some(1_795_341_600_000_000_000));
        assert_eq!(
            number_ns(1_795_341_600_000.0),
            Some(1_795_341_600_000_000_000)
        );
        assert_eq!(
            number_ns(1_795_341_600_000_000.0),
            Some(1_795_341_600_000_000_000)
        );
        // Seconds whose ns overflow an i64 are no time.
        assert_eq!(number_ns(90_000_000_000.0), None);
        let e = parse(b"{\"a\":1}\nnot json\n", 0).unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
        let b = parse(br#"{"x":1}"#, 5).unwrap();
        assert_eq!(
            (b.records[0].body.as_str(), b.records[0].timestamp_ns),
            (r#"{"x":1}"#, 5)
        );
    }
}
