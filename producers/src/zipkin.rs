//! Zipkin v2 JSON spans (`POST /api/v2/spans`, also on the Zipkin port 9411) → `obs.spans`.
//!
//! Mapped as the OpenTelemetry Zipkin exporter writes them, so a span survives the round
//! trip: `localEndpoint.serviceName` is the service, missing `kind` is `Internal`, tags
//! are attributes, `otel.status_code` / `error` give the status, `otel.scope.name` (or
//! `otel.library.name`) the scope, and annotations are events (an annotation holding a
//! JSON object `{"name": {attributes}}` becomes that event with its attributes).

use obs_schemas::records::{Attrs, Span, SpanEvent};
use serde::Deserialize;
use serde_json::Value;

use crate::error::CollectorError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    timestamp: Option<i64>,
    duration: Option<i64>,
    local_endpoint: Option<Endpoint>,
    remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<u16>,
}

#[derive(Deserialize)]
struct Annotation {
    timestamp: i64,
    value: String,
}

/// Parses a Zipkin v2 JSON body (an array of spans) into spans of `tenant`.
pub fn parse(body: &[u8], tenant: &str) -> Result<Vec<Span>, CollectorError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| CollectorError::BadRequest(format!("body is not valid UTF-8: {e}")))?;
    let spans: Vec<ZipkinSpan> = serde_json::from_str(text).map_err(|e| {
        CollectorError::BadRequest(format!("body is not a Zipkin v2 JSON span array: {e}"))
    })?;
    spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| convert(i, s, tenant))
        .collect()
}

/// Lower-case hex of `width` characters (a 64-bit trace id is padded to 128 bits).
fn hex_id(
    i: usize,
    field: &str,
    v: Option<&str>,
    widths: &[usize],
) -> Result<String, CollectorError> {
    let v = v.unwrap_or("").to_ascii_lowercase();
    let ok = widths.contains(&v.len()) && v.chars().all(|c| c.is_ascii_hexdigit());
    if !ok {
        return Err(CollectorError::BadRequest(format!(
            "span #{i}: {field} {v:?} is not {} hex characters",
            widths
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    Ok(format!("{v:0>width$}", width = widths[widths.len() - 1]))
}

fn convert(i: usize, s: ZipkinSpan, tenant: &str) -> Result<Span, CollectorError> {
    let trace_id = hex_id(i, "traceId", s.trace_id.as_deref(), &[16, 32])?;
    let span_id = hex_id(i, "id", s.id.as_deref(), &[16])?;
    let parent_span_id = match s.parent_id.as_deref() {
        None | Some("") => String::new(),
        p => hex_id(i, "parentId", p, &[16])?,
    };
    let start_us = s.timestamp.ok_or_else(|| {
        CollectorError::BadRequest(format!("span #{i} ({span_id}) has no timestamp"))
    })?;
    let kind = match s.kind.as_deref() {
        None => "Internal",
        Some("SERVER") => "Server",
        Some("CLIENT") => "Client",
        Some("PRODUCER") => "Producer",
        Some("CONSUMER") => "Consumer",
        Some(other) => {
            return Err(CollectorError::BadRequest(format!(
                "span #{i}: unknown kind {other:?} (CLIENT, SERVER, PRODUCER or CONSUMER)"
            )));
        }
    };
    let mut tags = s.tags;
    let error = tags.remove("error");
    let (status_code, status_message) = match tags.remove("otel.status_code").as_deref() {
        Some("ERROR") => ("Error", error.clone().unwrap_or_default()),
        Some("OK") => ("Ok", String::new()),
        _ if error.is_some() => ("Error", error.clone().unwrap_or_default()),
        _ => ("Unset", String::new()),
    };
    tags.remove("otel.status_description");
    let scope_name = tags
        .remove("otel.scope.name")
        .or_else(|| tags.remove("otel.library.name"))
        .unwrap_or_default();
    let scope_version = tags
        .remove("otel.scope.version")
        .or_else(|| tags.remove("otel.library.version"))
        .unwrap_or_default();
    let local = s.local_endpoint.unwrap_or_default();
    let service = local
        .service_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "unknown_service".into());
    let mut resource_attrs = Attrs::from_iter([("service.name".to_string(), service.clone())]);
    if let Some(ip) = local.ipv4.or(local.ipv6) {
        resource_attrs.insert("host.ip".into(), ip);
    }
    let mut attrs: Attrs = tags.into_iter().collect();
    if let Some(r) = s.remote_endpoint {
        if let Some(n) = r.service_name {
            attrs.insert("peer.service".into(), n);
        }
        if let Some(ip) = r.ipv4.or(r.ipv6) {
            attrs.insert("net.sock.peer.addr".into(), ip);
        }
        if let Some(p) = r.port {
            attrs.insert("net.peer.port".into(), p.to_string());
        }
    }
    let events = s
        .annotations
        .into_iter()
        .map(|a| {
            let (name, attrs) = event_of(&a.value);
            SpanEvent {
                timestamp_ns: a.timestamp.saturating_mul(1000),
                name,
                attrs,
            }
        })
        .collect();
    let start_ns = start_us.checked_mul(1000).ok_or_else(|| {
        CollectorError::BadRequest(format!(
            "span #{i} ({span_id}) has timestamp {start_us} µs, past what ns since the epoch can hold"
        ))
    })?;
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: String::new(),
        name: s.name.unwrap_or_default(),
        kind: kind.into(),
        service,
        start_ns,
        // (Found by fuzzing: a start near the end of the range overflowed here.)
        end_ns: start_ns.saturating_add(s.duration.unwrap_or(0).max(0).saturating_mul(1000)),
        status_code: status_code.into(),
        status_message,
        attrs,
        resource_attrs,
        scope_name,
        scope_version,
        events,
        links: vec![],
        tenant: tenant.to_string(),
    })
}

/// An annotation as an event: `{"name": {attributes}}` (the OTel exporter's encoding) or a
/// plain value as the event name.
fn event_of(value: &str) -> (String, Attrs) {
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(value)
        && o.len() == 1
        && let Some((name, Value::Object(attrs))) = o.into_iter().next()
    {
        let attrs = attrs
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
        return (name, attrs);
    }
    (value.to_string(), Attrs::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipkin_spans_map_to_ours() {
        let body = br#"[{"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312","parentId":"0020000000000001",
            "name":"get /api","kind":"SERVER","timestamp":1700000000000000,"duration":1500,
            "localEndpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"},
            "remoteEndpoint":{"ipv4":"10.0.0.2","port":8080},
            "annotations":[{"timestamp":1700000000000100,"value":"{\"retry\": {\"attempt\": 2}}"},{"timestamp":1700000000000200,"value":"ws"}],
            "tags":{"http.method":"GET","otel.status_code":"ERROR","error":"boom","otel.scope.name":"lib"}}]"#;
        let s = &parse(body, "t").unwrap()[0];
        assert_eq!(s.trace_id, "0000000000000000463ac35c9f6413ad");
        assert_eq!(s.parent_span_id, "0020000000000001");
        assert_eq!(
            (s.kind.as_str(), s.service.as_str()),
            ("Server", "frontend")
        );
        assert_eq!(
            (s.start_ns, s.end_ns),
            (1_700_000_000_000_000_000, 1_700_000_000_001_500_000)
        );
        assert_eq!(
            (s.status_code.as_str(), s.status_message.as_str()),
            ("Error", "boom")
        );
        assert_eq!(s.scope_name, "lib");
        assert_eq!(s.attrs["http.method"], "GET");
        assert_eq!(s.attrs["net.peer.port"], "8080");
        assert!(!s.attrs.contains_key("otel.status_code"));
        assert_eq!(s.events[0].name, "retry");
        assert_eq!(s.events[0].attrs["attempt"], "2");
        assert_eq!(s.events[1].name, "ws");
    }

    #[test]
    fn bad_ids_and_missing_timestamps_are_named() {
        let e = parse(
            br#"[{"traceId":"xyz","id":"a2fb4a1d1a96d312","timestamp":1}]"#,
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("traceId"), "{e}");
        let e = parse(
            br#"[{"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312"}]"#,
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no timestamp"), "{e}");
        assert!(parse(b"{}", "t").is_err());
    }
}
