//! JSON events (deployments, incidents, Kubernetes events) → `obs.events`.
//!
//! `POST /api/v1/events` takes one event object, an array of them, or `{"events": [...]}`.
//! An event is either our shape —
//! `{"type", "source", "title", "timestamp"?, "id"?, "severity"?, "body"?, "attributes"?}`
//! with `timestamp` as RFC 3339 text or ns since the epoch — or a Kubernetes `Event` object
//! (`kind: Event`, as `kubectl get events -o json` prints it), mapped to type `k8s`.
//! Events without an id get a content hash, so a resent event keeps its identity.

use obs_schemas::records::{Attrs, Event};
use serde_json::{Map, Value};

use crate::error::CollectorError;

/// Parses a request body into events of `tenant`; `now_ns` fills a missing timestamp.
pub fn parse(body: &[u8], tenant: &str, now_ns: i64) -> Result<Vec<Event>, CollectorError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| CollectorError::BadRequest(format!("body is not valid UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| CollectorError::BadRequest(format!("body is not valid JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut o) if o.contains_key("events") && !o.contains_key("type") => {
            match o.remove("events") {
                Some(Value::Array(items)) => items,
                _ => return Err(bad(0, "\"events\" must be an array")),
            }
        }
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(CollectorError::BadRequest(
                "body must be an event object, an array of events or {\"events\": [...]}".into(),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(o) if o.get("kind").and_then(Value::as_str) == Some("Event") => {
                kubernetes(i, o, tenant, now_ns)
            }
            Value::Object(o) => ours(i, o, tenant, now_ns),
            _ => Err(bad(i, "is not a JSON object")),
        })
        .collect()
}

fn bad(i: usize, what: &str) -> CollectorError {
    CollectorError::BadRequest(format!("event #{i} {what}"))
}

fn text(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_string)
}

fn required(i: usize, o: &Map<String, Value>, key: &str) -> Result<String, CollectorError> {
    match text(o, key) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(bad(i, &format!("has no \"{key}\" (a non-empty string)"))),
    }
}

/// RFC 3339 text or an integer of ns since the epoch.
fn timestamp(i: usize, v: Option<&Value>, now_ns: i64) -> Result<i64, CollectorError> {
    match v {
        None | Some(Value::Null) => Ok(now_ns),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad(i, "has a \"timestamp\" that is not a whole number of ns")),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| {
                bad(
                    i,
                    &format!("has \"timestamp\" {s:?}, not RFC 3339 (e.g. 2026-11-22T10:00:00Z)"),
                )
            }),
        Some(_) => Err(bad(
            i,
            "has a \"timestamp\" that is neither text nor a number",
        )),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn attributes(i: usize, v: Option<&Value>) -> Result<Attrs, CollectorError> {
    match v {
        None | Some(Value::Null) => Ok(Attrs::new()),
        Some(Value::Object(o)) => Ok(o.iter().map(|(k, v)| (k.clone(), scalar(v))).collect()),
        Some(_) => Err(bad(i, "has \"attributes\" that is not an object")),
    }
}

/// Content hash of an event without an id.
fn content_id(e: &Event) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        &e.tenant,
        &e.kind,
        &e.source,
        &e.title,
        &e.body,
        &e.severity,
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(&e.timestamp_ns.to_le_bytes());
    for (k, v) in &e.attrs {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    format!("{:032x}", h.digest128())
}

fn finish(mut e: Event) -> Event {
    if e.id.is_empty() {
        e.id = content_id(&e);
    }
    e
}

fn ours(
    i: usize,
    o: Map<String, Value>,
    tenant: &str,
    now_ns: i64,
) -> Result<Event, CollectorError> {
    Ok(finish(Event {
        id: text(&o, "id").unwrap_or_default(),
        timestamp_ns: timestamp(i, o.get("timestamp"), now_ns)?,
        kind: required(i, &o, "type")?,
        source: required(i, &o, "source")?,
        severity: text(&o, "severity").unwrap_or_else(|| "info".into()),
        title: required(i, &o, "title")?,
        body: text(&o, "body").unwrap_or_default(),
        attrs: attributes(i, o.get("attributes"))?,
        tenant: tenant.to_string(),
    }))
}

/// A Kubernetes `Event` (core/v1 or events.k8s.io/v1).
fn kubernetes(
    i: usize,
    o: Map<String, Value>,
    tenant: &str,
    now_ns: i64,
) -> Result<Event, CollectorError> {
    let empty = Map::new();
    let object = o
        .get("involvedObject")
        .or_else(|| o.get("regarding"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let meta = o
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let field = |m: &Map<String, Value>, k: &str| text(m, k).unwrap_or_default();
    let when = ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .filter_map(|k| o.get(*k))
        .find(|v| !v.is_null());
    let severity = match text(&o, "type").as_deref() {
        Some("Warning") => "warning",
        _ => "info",
    };
    let mut attrs = Attrs::new();
    for (k, v) in [
        ("k8s.namespace", field(object, "namespace")),
        ("k8s.object.kind", field(object, "kind")),
        ("k8s.object.name", field(object, "name")),
        ("k8s.reason", field(&o, "reason")),
        ("k8s.count", o.get("count").map(scalar).unwrap_or_default()),
    ] {
        if !v.is_empty() {
            attrs.insert(k.into(), v);
        }
    }
    let reason = field(&o, "reason");
    if reason.is_empty() {
        return Err(bad(i, "is a Kubernetes Event without \"reason\""));
    }
    Ok(finish(Event {
        id: field(meta, "uid"),
        timestamp_ns: timestamp(i, when, now_ns)?,
        kind: "k8s".into(),
        source: format!(
            "k8s/{}/{}/{}",
            field(object, "namespace"),
            field(object, "kind"),
            field(object, "name")
        ),
        severity: severity.into(),
        title: reason,
        body: text(&o, "message")
            .or_else(|| text(&o, "note"))
            .unwrap_or_default(),
        attrs,
        tenant: tenant.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_shape_with_defaults_and_content_ids() {
        let body = br#"[{"type":"deploy","source":"ci","title":"api v2","timestamp":"2026-11-22T10:00:00Z","attributes":{"version":"2","canary":true}},
                        {"type":"incident","source":"pager","title":"down","id":"INC-1","timestamp":5}]"#;
        let ev = parse(body, "t", 99).unwrap();
        assert_eq!(ev[0].timestamp_ns, 1_795_341_600_000_000_000);
        assert_eq!(ev[0].severity, "info");
        assert_eq!(ev[0].attrs["canary"], "true");
        assert_eq!(ev[0].id.len(), 32);
        assert_eq!(ev[0].id, parse(body, "t", 99).unwrap()[0].id);
        assert_eq!(ev[1].id, "INC-1");
        assert_eq!(ev[1].timestamp_ns, 5);
    }

    #[test]
    fn kubernetes_events_are_mapped() {
        let body = br#"{"kind":"Event","apiVersion":"v1","metadata":{"uid":"u-1"},"involvedObject":{"kind":"Pod","namespace":"shop","name":"api-7"},"reason":"BackOff","message":"Back-off restarting","type":"Warning","count":3,"lastTimestamp":"2026-11-22T10:00:01Z"}"#;
        let e = &parse(body, "t", 0).unwrap()[0];
        assert_eq!(e.kind, "k8s");
        assert_eq!(e.source, "k8s/shop/Pod/api-7");
        assert_eq!(e.severity, "warning");
        assert_eq!(e.title, "BackOff");
        assert_eq!(e.id, "u-1");
        assert_eq!(e.attrs["k8s.count"], "3");
    }

    #[test]
    fn errors_name_the_event_and_field() {
        let e = parse(br#"{"events":[{"type":"deploy","source":"ci","title":"x"},{"type":"deploy","title":"y"}]}"#, "t", 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "event #1 has no \"source\" (a non-empty string)"
        );
        let e = parse(
            br#"{"type":"d","source":"s","title":"t","timestamp":"yesterday"}"#,
            "t",
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("RFC 3339"), "{e}");
        assert!(parse(b"[1]", "t", 0).is_err());
        assert!(parse(b"\xff", "t", 0).is_err());
    }
}
