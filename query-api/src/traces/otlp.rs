//! Stored spans as OTLP `TracesData` (resource → scope → spans), for Tempo's trace-by-id
//! answer: protobuf (what Grafana's Tempo datasource asks for) or OTLP/JSON.
//!
//! Attribute values come back as strings: `otel_traces` keeps them as `Map(String, String)`.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, TracesData};
use serde_json::{Value as Json, json};

use super::store::SpanRow;

fn attrs(pairs: &[(String, String)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.clone())),
            }),
            ..Default::default()
        })
        .collect()
}

pub use obs_schemas::records::{kind_number, status_number};

fn id_bytes(hex_id: &str) -> Vec<u8> {
    hex::decode(hex_id).unwrap_or_default()
}

fn span(r: &SpanRow) -> Span {
    Span {
        trace_id: id_bytes(&r.trace_id),
        span_id: id_bytes(&r.span_id),
        trace_state: r.trace_state.clone(),
        parent_span_id: id_bytes(&r.parent_span_id),
        flags: 0,
        name: r.span_name.clone(),
        kind: kind_number(&r.span_kind),
        start_time_unix_nano: r.timestamp as u64,
        end_time_unix_nano: r.timestamp as u64 + r.duration,
        attributes: attrs(&r.span_attributes),
        dropped_attributes_count: 0,
        events: r
            .events_timestamp
            .iter()
            .zip(&r.events_name)
            .zip(&r.events_attributes)
            .map(|((t, n), a)| Event {
                time_unix_nano: *t as u64,
                name: n.clone(),
                attributes: attrs(a),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: r
            .links_trace_id
            .iter()
            .zip(&r.links_span_id)
            .zip(&r.links_trace_state)
            .zip(&r.links_attributes)
            .map(|(((t, s), st), a)| Link {
                trace_id: id_bytes(t),
                span_id: id_bytes(s),
                trace_state: st.clone(),
                attributes: attrs(a),
                dropped_attributes_count: 0,
                flags: 0,
            })
            .collect(),
        dropped_links_count: 0,
        status: Some(Status {
            message: r.status_message.clone(),
            code: status_number(&r.status_code),
        }),
    }
}

/// The resource of a span: its attributes, with `service.name` added when missing.
fn resource_attrs(r: &SpanRow) -> Vec<(String, String)> {
    let mut a = r.resource_attributes.clone();
    if !a.iter().any(|(k, _)| k == "service.name") {
        a.push(("service.name".into(), r.service_name.clone()));
    }
    a.sort();
    a
}

/// The spans grouped by resource, then scope, in first-seen order of start time.
pub fn traces_data(spans: &[SpanRow]) -> TracesData {
    type Pairs = Vec<(String, String)>;
    type Scopes = Vec<((String, String), Vec<Span>)>;
    let mut resources: Vec<(Pairs, Scopes)> = Vec::new();
    for r in spans {
        let res = resource_attrs(r);
        let i = match resources.iter().position(|(a, _)| *a == res) {
            Some(i) => i,
            None => {
                resources.push((res, Vec::new()));
                resources.len() - 1
            }
        };
        let scopes = &mut resources[i].1;
        let key = (r.scope_name.clone(), r.scope_version.clone());
        match scopes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(span(r)),
            None => scopes.push((key, vec![span(r)])),
        }
    }
    TracesData {
        resource_spans: resources
            .into_iter()
            .map(|(res, scopes)| ResourceSpans {
                resource: Some(Resource {
                    attributes: attrs(&res),
                    dropped_attributes_count: 0,
                    entity_refs: Vec::new(),
                }),
                scope_spans: scopes
                    .into_iter()
                    .map(|((name, version), spans)| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name,
                            version,
                            attributes: Vec::new(),
                            dropped_attributes_count: 0,
                        }),
                        spans,
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn attrs_json(pairs: &[KeyValue]) -> Json {
    Json::Array(
        pairs
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    _ => String::new(),
                };
                json!({"key": kv.key, "value": {"stringValue": v}})
            })
            .collect(),
    )
}

/// OTLP/JSON of `data` as the OTLP specification writes it: hex ids, 64-bit integers as
/// strings, enums as numbers, lowerCamelCase names.
pub fn to_json(data: &TracesData) -> Json {
    let spans = |ss: &ScopeSpans| -> Vec<Json> {
        ss.spans
            .iter()
            .map(|s| {
                let mut o = json!({
                    "traceId": hex::encode(&s.trace_id),
                    "spanId": hex::encode(&s.span_id),
                    "name": s.name,
                    "kind": s.kind,
                    "startTimeUnixNano": s.start_time_unix_nano.to_string(),
                    "endTimeUnixNano": s.end_time_unix_nano.to_string(),
                    "attributes": attrs_json(&s.attributes),
                    "events": s.events.iter().map(|e| json!({
                        "timeUnixNano": e.time_unix_nano.to_string(),
                        "name": e.name,
                        "attributes": attrs_json(&e.attributes),
                    })).collect::<Vec<_>>(),
                    "links": s.links.iter().map(|l| json!({
                        "traceId": hex::encode(&l.trace_id),
                        "spanId": hex::encode(&l.span_id),
                        "traceState": l.trace_state,
                        "attributes": attrs_json(&l.attributes),
                    })).collect::<Vec<_>>(),
                    "status": s.status.as_ref().map(|st| json!({"code": st.code, "message": st.message})).unwrap_or(json!({})),
                });
                if !s.parent_span_id.is_empty() {
                    o["parentSpanId"] = json!(hex::encode(&s.parent_span_id));
                }
                if !s.trace_state.is_empty() {
                    o["traceState"] = json!(s.trace_state);
                }
                o
            })
            .collect()
    };
    let resource_spans: Vec<Json> = data
        .resource_spans
        .iter()
        .map(|rs| {
            json!({
                "resource": {"attributes": rs.resource.as_ref().map(|r| attrs_json(&r.attributes)).unwrap_or(json!([]))},
                "scopeSpans": rs.scope_spans.iter().map(|ss| json!({
                    "scope": ss.scope.as_ref().map(|s| json!({"name": s.name, "version": s.version})).unwrap_or(json!({})),
                    "spans": spans(ss),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn spans_group_by_resource_and_scope_and_round_trip() {
        let spans = crate::traces::jaeger::tests::sample();
        let data = traces_data(&spans);
        assert_eq!(data.resource_spans.len(), 2);
        let decoded = TracesData::decode(data.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, data);
        let child = &data.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(child.kind, 3);
        assert_eq!(child.status.as_ref().unwrap().code, 2);
        assert_eq!(
            child.end_time_unix_nano - child.start_time_unix_nano,
            2_000_000
        );
        let j = to_json(&data);
        let span = &j["resourceSpans"][1]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(span["parentSpanId"], "b7ad6b7169203331");
        assert_eq!(span["startTimeUnixNano"], "1700000000124456789");
        assert_eq!(span["events"][0]["name"], "retry");
        assert_eq!(span["links"][0]["spanId"], "2222222222222222");
        assert_eq!(
            j["resourceSpans"][0]["resource"]["attributes"],
            json!([
                {"key": "host.name", "value": {"stringValue": "h1"}},
                {"key": "service.name", "value": {"stringValue": "api"}},
            ])
        );
        assert!(
            j["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
                .get("parentSpanId")
                .is_none()
        );
    }
}
