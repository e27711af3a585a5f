//! Span metrics with Grafana Tempo's names and labels, counted from every span as it
//! arrives (before sampling, so rates are exact whatever is kept):
//! `traces_spanmetrics_calls_total`, `traces_spanmetrics_latency` (seconds, classic
//! histogram) and `traces_spanmetrics_size_total` (bytes of the span's OTLP protobuf
//! encoding), labelled `service`, `span_name`, `span_kind` (`SPAN_KIND_SERVER`, ...),
//! `status_code` (`STATUS_CODE_ERROR`, ...) and the configured dimensions.

use std::borrow::Cow;

use obs_schemas::records::Span;
use prost::encoding::{encoded_len_varint, key_len};

use super::registry::{Registry, SeriesRef};

/// Tempo's built-in span-metric labels (a dimension with one of these names gets `__`).
const INTRINSIC: [&str; 5] = [
    "service",
    "span_name",
    "span_kind",
    "status_code",
    "status_message",
];

/// The span-metrics configuration.
#[derive(Debug, Clone)]
pub struct SpanMetrics {
    /// `(attribute, label name)` of each configured dimension.
    pub dimensions: Vec<(String, String)>,
    /// Latency histogram upper bounds (s).
    pub buckets: Vec<f64>,
}

impl SpanMetrics {
    /// Span metrics with the configured dimension attributes and buckets.
    pub fn new(dimensions: &[String], buckets: Vec<f64>) -> SpanMetrics {
        let dimensions = dimensions
            .iter()
            .map(|d| {
                let label = obs_runtime::labels::sanitize_label_name(d);
                let label = if INTRINSIC.contains(&label.as_str()) {
                    format!("__{label}")
                } else {
                    label
                };
                (d.clone(), label)
            })
            .collect();
        SpanMetrics {
            dimensions,
            buckets,
        }
    }

    /// Counts one span at partition time `now_ms` (its labels are borrowed from the span:
    /// strings are copied only for a new series).
    pub fn observe(&self, registry: &mut Registry, span: &Span, now_ms: i64) {
        let kind = span_kind_label(&span.kind);
        let status = status_code_label(&span.status_code);
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(4 + self.dimensions.len());
        labels.extend([
            ("service", span.service.as_str()),
            ("span_name", span.name.as_str()),
            ("span_kind", &*kind),
            ("status_code", &*status),
        ]);
        for (attr, label) in &self.dimensions {
            let value = span
                .resource_attrs
                .get(attr)
                .or_else(|| span.attrs.get(attr));
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                labels.retain(|(l, _)| l != label);
                labels.push((label, v));
            }
        }
        labels.retain(|(_, v)| !v.is_empty());
        labels.sort_unstable();
        let mut key = SeriesRef {
            tenant: &span.tenant,
            name: "traces_spanmetrics_calls_total",
            labels: &labels,
        };
        registry.add(&key, 1.0, now_ms);
        key.name = "traces_spanmetrics_size_total";
        registry.add(&key, otlp_size(span) as f64, now_ms);
        key.name = "traces_spanmetrics_latency";
        registry.observe(&key, &self.buckets, latency_seconds(span), now_ms);
    }
}

/// A span's duration in seconds, 0 when it ends before it starts (as Tempo).
pub fn latency_seconds(span: &Span) -> f64 {
    if span.end_ns > span.start_ns {
        (span.end_ns - span.start_ns) as f64 / 1e9
    } else {
        0.0
    }
}

/// `Server` → `SPAN_KIND_SERVER` (the OTLP enum's name, as Tempo labels it); the kinds
/// the collectors store are constants, so only an unknown kind allocates.
pub fn span_kind_label(kind: &str) -> Cow<'static, str> {
    match kind {
        "" | "Unspecified" => "SPAN_KIND_UNSPECIFIED".into(),
        "Internal" => "SPAN_KIND_INTERNAL".into(),
        "Server" => "SPAN_KIND_SERVER".into(),
        "Client" => "SPAN_KIND_CLIENT".into(),
        "Producer" => "SPAN_KIND_PRODUCER".into(),
        "Consumer" => "SPAN_KIND_CONSUMER".into(),
        k => format!("SPAN_KIND_{}", k.to_ascii_uppercase()).into(),
    }
}

/// `Error` → `STATUS_CODE_ERROR`; only an unknown code allocates.
pub fn status_code_label(code: &str) -> Cow<'static, str> {
    match code {
        "" | "Unset" => "STATUS_CODE_UNSET".into(),
        "Ok" => "STATUS_CODE_OK".into(),
        "Error" => "STATUS_CODE_ERROR".into(),
        c => format!("STATUS_CODE_{}", c.to_ascii_uppercase()).into(),
    }
}

/// Bytes of the span's OTLP protobuf encoding (the span alone, without resource and scope,
/// as Tempo's `traces_spanmetrics_size_total`), counted field by field as prost encodes
/// them (proto3: empty and zero fields take no bytes) without building the message: this
/// runs for every span. Attribute values are encoded as the strings the pipeline keeps
/// them as, span flags are not kept and the status is always there (SDKs send it even when
/// unset), so a span whose attributes were numbers or booleans counts a few bytes
/// differently than at its source.
pub fn otlp_size(span: &Span) -> usize {
    let status = string(2, &span.status_message)
        + enumeration(3, obs_schemas::records::status_number(&span.status_code));
    bytes(1, hex_len(&span.trace_id))
        + bytes(2, hex_len(&span.span_id))
        + string(3, &span.trace_state)
        + bytes(4, hex_len(&span.parent_span_id))
        + string(5, &span.name)
        + enumeration(6, obs_schemas::records::kind_number(&span.kind))
        + fixed64(7, span.start_ns)
        + fixed64(8, span.end_ns)
        + attributes(9, &span.attrs)
        + span
            .events
            .iter()
            .map(|e| {
                let len = fixed64(1, e.timestamp_ns) + string(2, &e.name) + attributes(3, &e.attrs);
                delimited(11, len)
            })
            .sum::<usize>()
        + span
            .links
            .iter()
            .map(|l| {
                let len = bytes(1, hex_len(&l.trace_id))
                    + bytes(2, hex_len(&l.span_id))
                    + string(3, &l.trace_state)
                    + attributes(4, &l.attrs);
                delimited(13, len)
            })
            .sum::<usize>()
        + delimited(15, status)
}

/// A length-delimited field (string, bytes, message) of `len` bytes.
fn delimited(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A string field: nothing when empty.
fn string(tag: u32, s: &str) -> usize {
    bytes(tag, s.len())
}

/// A bytes field of `len` bytes: nothing when empty.
fn bytes(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { delimited(tag, len) }
}

/// An enum field (int32 varint; negative values take ten bytes): nothing when zero.
fn enumeration(tag: u32, v: i32) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(i64::from(v) as u64)
    }
}

/// A fixed64 field: nothing when zero.
fn fixed64(tag: u32, v: i64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + 8 }
}

/// Repeated `KeyValue`s with string values (the oneof value is encoded even when empty).
fn attributes(tag: u32, attrs: &obs_schemas::records::Attrs) -> usize {
    attrs
        .iter()
        .map(|(k, v)| delimited(tag, string(1, k) + delimited(2, delimited(1, v.len()))))
        .sum()
}

/// Bytes of an id given as hex: its valid hex pairs, as the decoded id would hold.
fn hex_len(hex: &str) -> usize {
    (0..hex.len() / 2)
        .filter(|i| {
            hex.get(2 * i..2 * i + 2)
                .is_some_and(|p| u8::from_str_radix(p, 16).is_ok())
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use obs_schemas::records::{SpanEvent, SpanLink};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1 as otlp;
    use prost::Message;

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    }

    fn kvs(attrs: &obs_schemas::records::Attrs) -> Vec<KeyValue> {
        attrs
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(v.clone())),
                }),
                ..KeyValue::default()
            })
            .collect()
    }

    /// The size by building the OTLP message and asking prost: the oracle of `otlp_size`.
    fn encoded_size(span: &Span) -> usize {
        otlp::Span {
            trace_id: hex_bytes(&span.trace_id),
            span_id: hex_bytes(&span.span_id),
            trace_state: span.trace_state.clone(),
            parent_span_id: hex_bytes(&span.parent_span_id),
            flags: 0,
            name: span.name.clone(),
            kind: obs_schemas::records::kind_number(&span.kind),
            start_time_unix_nano: span.start_ns as u64,
            end_time_unix_nano: span.end_ns as u64,
            attributes: kvs(&span.attrs),
            dropped_attributes_count: 0,
            events: span
                .events
                .iter()
                .map(|e| otlp::span::Event {
                    time_unix_nano: e.timestamp_ns as u64,
                    name: e.name.clone(),
                    attributes: kvs(&e.attrs),
                    dropped_attributes_count: 0,
                })
                .collect(),
            dropped_events_count: 0,
            links: span
                .links
                .iter()
                .map(|l| otlp::span::Link {
                    trace_id: hex_bytes(&l.trace_id),
                    span_id: hex_bytes(&l.span_id),
                    trace_state: l.trace_state.clone(),
                    attributes: kvs(&l.attrs),
                    dropped_attributes_count: 0,
                    flags: 0,
                })
                .collect(),
            dropped_links_count: 0,
            status: Some(otlp::Status {
                message: span.status_message.clone(),
                code: obs_schemas::records::status_number(&span.status_code),
            }),
        }
        .encoded_len()
    }

    #[test]
    fn otlp_size_is_prosts_encoded_length() {
        let long = "x".repeat(300);
        let mut full = Span {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: "00f067aa0ba902b7".into(),
            trace_state: "vendor=1".into(),
            name: long.clone(),
            kind: "Consumer".into(),
            status_code: "Error".into(),
            status_message: "boom".into(),
            start_ns: 1_700_000_000_000_000_000,
            end_ns: -5,
            ..Span::default()
        };
        full.attrs.insert("http.method".into(), "GET".into());
        full.attrs.insert("empty".into(), String::new());
        full.attrs.insert(String::new(), long.clone());
        let mut ev = SpanEvent {
            timestamp_ns: 7,
            name: "exception".into(),
            ..SpanEvent::default()
        };
        ev.attrs.insert("exception.message".into(), long.repeat(3));
        full.events = vec![ev, SpanEvent::default()];
        full.links = vec![
            SpanLink {
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: "zz".into(),
                trace_state: "a=b".into(),
                ..SpanLink::default()
            },
            SpanLink::default(),
        ];
        let odd_ids = Span {
            trace_id: "abc".into(),
            span_id: "0g12".into(),
            kind: "Server".into(),
            status_code: "Unset".into(),
            ..Span::default()
        };
        for span in [Span::default(), full, odd_ids] {
            assert_eq!(otlp_size(&span), encoded_size(&span), "{span:?}");
        }
    }

    #[test]
    fn labels_follow_tempo() {
        for (kind, label) in [
            ("", "SPAN_KIND_UNSPECIFIED"),
            ("Unspecified", "SPAN_KIND_UNSPECIFIED"),
            ("Internal", "SPAN_KIND_INTERNAL"),
            ("Server", "SPAN_KIND_SERVER"),
            ("Client", "SPAN_KIND_CLIENT"),
            ("Producer", "SPAN_KIND_PRODUCER"),
            ("Consumer", "SPAN_KIND_CONSUMER"),
            ("Gateway", "SPAN_KIND_GATEWAY"),
        ] {
            assert_eq!(span_kind_label(kind), label, "{kind:?}");
        }
        for (code, label) in [
            ("", "STATUS_CODE_UNSET"),
            ("Unset", "STATUS_CODE_UNSET"),
            ("Ok", "STATUS_CODE_OK"),
            ("Error", "STATUS_CODE_ERROR"),
            ("Weird", "STATUS_CODE_WEIRD"),
        ] {
            assert_eq!(status_code_label(code), label, "{code:?}");
        }
        let m = SpanMetrics::new(
            &["service".into(), "http.method".into(), "9x".into()],
            vec![],
        );
        let labels: Vec<&str> = m.dimensions.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, vec!["__service", "http_method", "_9x"]);
    }

    #[test]
    fn counts_calls_latency_and_dimensions_resource_first() {
        let m = SpanMetrics::new(&["env".into()], vec![0.01, 0.1]);
        let mut r = Registry::default();
        let mut span = Span {
            tenant: "t".into(),
            service: "api".into(),
            name: "GET".into(),
            kind: "Server".into(),
            status_code: "Unset".into(),
            start_ns: 0,
            end_ns: 50_000_000,
            ..Span::default()
        };
        span.attrs.insert("env".into(), "span-level".into());
        span.resource_attrs.insert("env".into(), "prod".into());
        m.observe(&mut r, &span, 1);
        m.observe(&mut r, &span, 2);
        // Labels sorted by name, as every series stores them.
        let key = SeriesRef {
            tenant: "t",
            name: "traces_spanmetrics_calls_total",
            labels: &[
                ("env", "prod"),
                ("service", "api"),
                ("span_kind", "SPAN_KIND_SERVER"),
                ("span_name", "GET"),
                ("status_code", "STATUS_CODE_UNSET"),
            ],
        };
        assert_eq!(r.counter(&key), Some(2.0));
        assert_eq!(latency_seconds(&span), 0.05);
    }
}
