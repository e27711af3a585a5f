//! Exceptions into `obs_error_events`, one row per occurrence with the fingerprint that
//! groups it ([`fingerprint`]): from span events named `exception` on `obs.spans` (what the
//! OpenTelemetry SDKs' `record_exception` writes) and from error logs on `obs.logs` that
//! carry `exception.type` or `exception.message` (what their logging handlers write for
//! `logger.exception`). The query API's `/api/v1/errors` groups the rows.

pub mod fingerprint;

use std::borrow::Cow;

use clickhouse::Row;
use obs_schemas::Topic;
use obs_schemas::records::{Attrs, LogBatch, SpanBatch};
use serde::{Deserialize, Serialize};

use crate::table::{TableSink, TimeColumn};

/// One exception occurrence.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorEventRow {
    /// Tenant.
    pub tenant: String,
    /// Group key (hex).
    pub fingerprint: String,
    /// When it happened, ns.
    pub timestamp: i64,
    /// `span` or `log`.
    pub source: String,
    /// `service.name`.
    pub service_name: String,
    /// `service.version` of the resource, the release.
    pub release: String,
    /// `exception.type`.
    pub exception_type: String,
    /// `exception.message`.
    pub exception_message: String,
    /// The message with variable parts replaced.
    pub normalized_message: String,
    /// Innermost frames, `file:function`.
    pub top_frames: Vec<String>,
    /// `exception.stacktrace`.
    pub stacktrace: String,
    /// Trace of the span or log record, if any.
    pub trace_id: String,
    /// Span, if any.
    pub span_id: String,
    /// What makes the occurrence unique (span id and event index, or log record hash).
    pub occurrence: String,
}

struct Occurrence<'a> {
    tenant: &'a str,
    timestamp: i64,
    source: &'a str,
    service: &'a str,
    resource: &'a Attrs,
    attrs: &'a Attrs,
    trace_id: &'a str,
    span_id: &'a str,
    occurrence: String,
}

/// What every exception's attributes hold: an exception row needs `exception.type` or
/// `exception.message`, and Avro writes attribute keys as their UTF-8 bytes, so a message
/// without these bytes has no exception and is not decoded.
const EXCEPTION_KEY_PREFIX: &[u8] = b"exception.";

/// Whether an encoded batch may hold an exception (see [`EXCEPTION_KEY_PREFIX`]).
fn may_hold_exception(payload: &[u8]) -> bool {
    memchr::memmem::find(payload, EXCEPTION_KEY_PREFIX).is_some()
}

fn row(o: Occurrence<'_>) -> Option<ErrorEventRow> {
    let get = |k: &str| o.attrs.get(k).cloned().unwrap_or_default();
    let (ty, message, stack) = (
        get("exception.type"),
        get("exception.message"),
        get("exception.stacktrace"),
    );
    if ty.is_empty() && message.is_empty() {
        return None;
    }
    let g = fingerprint::group(&ty, &message, &stack);
    Some(ErrorEventRow {
        tenant: o.tenant.to_string(),
        fingerprint: g.fingerprint,
        timestamp: o.timestamp,
        source: o.source.to_string(),
        service_name: o.service.to_string(),
        release: o
            .resource
            .get("service.version")
            .cloned()
            .unwrap_or_default(),
        exception_type: ty,
        exception_message: message,
        normalized_message: g.normalized_message,
        top_frames: g.top_frames,
        stacktrace: stack,
        trace_id: o.trace_id.to_string(),
        span_id: o.span_id.to_string(),
        occurrence: o.occurrence,
    })
}

/// Exceptions recorded on spans.
#[derive(Default)]
pub struct ErrorsFromSpans;

impl TableSink for ErrorsFromSpans {
    type Message = SpanBatch;
    type Row = ErrorEventRow;
    const TOPIC: Topic = Topic::Spans;
    const TABLE: &'static str = "obs_error_events";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Nanos("Timestamp"));
    const NAME: &'static str = "obs_error_events_spans";
    const DEAD_LETTERS_UNDECODABLE: bool = false;

    fn may_have_rows(payload: &[u8]) -> bool {
        may_hold_exception(payload)
    }

    fn rows(&mut self, message: Cow<'_, SpanBatch>, out: &mut Vec<ErrorEventRow>) {
        for s in &message.spans {
            for (i, e) in s.events.iter().enumerate() {
                if e.name != "exception" {
                    continue;
                }
                out.extend(row(Occurrence {
                    tenant: &s.tenant,
                    timestamp: e.timestamp_ns,
                    source: "span",
                    service: &s.service,
                    resource: &s.resource_attrs,
                    attrs: &e.attrs,
                    trace_id: &s.trace_id,
                    span_id: &s.span_id,
                    occurrence: format!("{}/{}/{i}", s.trace_id, s.span_id),
                }));
            }
        }
    }

    fn row_time_ns(row: &ErrorEventRow) -> Option<i64> {
        Some(row.timestamp)
    }
}

/// Exceptions logged at ERROR or above.
#[derive(Default)]
pub struct ErrorsFromLogs;

/// OTLP severity number of ERROR.
const SEVERITY_ERROR: i32 = 17;

impl TableSink for ErrorsFromLogs {
    type Message = LogBatch;
    type Row = ErrorEventRow;
    const TOPIC: Topic = Topic::Logs;
    const TABLE: &'static str = "obs_error_events";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Nanos("Timestamp"));
    const NAME: &'static str = "obs_error_events_logs";
    const DEAD_LETTERS_UNDECODABLE: bool = false;

    fn may_have_rows(payload: &[u8]) -> bool {
        may_hold_exception(payload)
    }

    fn rows(&mut self, message: Cow<'_, LogBatch>, out: &mut Vec<ErrorEventRow>) {
        for r in &message.records {
            let error = r.severity_number >= SEVERITY_ERROR
                || matches!(
                    r.severity_text.to_ascii_uppercase().as_str(),
                    "ERROR" | "FATAL" | "CRITICAL"
                );
            if !error {
                continue;
            }
            let key = format!(
                "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                r.timestamp_ns, r.service, r.body, r.span_id
            );
            out.extend(row(Occurrence {
                tenant: &r.tenant,
                timestamp: r.timestamp_ns,
                source: "log",
                service: &r.service,
                resource: &r.resource_attrs,
                attrs: &r.attrs,
                trace_id: &r.trace_id,
                span_id: &r.span_id,
                occurrence: format!("log/{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes())),
            }));
        }
    }

    fn row_time_ns(row: &ErrorEventRow) -> Option<i64> {
        Some(row.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use obs_schemas::records::{LogRecord, Span, SpanEvent};

    /// `value` in Confluent wire format under the topic's schema, as the collectors write it.
    fn encoded<T: Serialize>(topic: Topic, value: &T) -> Vec<u8> {
        obs_schemas::wire::encode_unregistered(topic, 1, value).unwrap()
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        Attrs::from_pairs(pairs)
    }

    fn error_log(attributes: Attrs) -> LogBatch {
        LogBatch {
            records: vec![LogRecord {
                severity_text: "ERROR".into(),
                severity_number: 17,
                body: "payment failed".into(),
                service: "checkout".into(),
                attrs: attributes,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_log_message_with_an_exception_is_decoded_and_one_without_is_not() {
        let with = error_log(attrs(&[("exception.type", "ValueError")]));
        let without = error_log(attrs(&[("http.method", "GET")]));
        assert!(ErrorsFromLogs::may_have_rows(&encoded(Topic::Logs, &with)));
        assert!(!ErrorsFromLogs::may_have_rows(&encoded(
            Topic::Logs,
            &without
        )));
        // The skipped message had no row to give; the kept one has exactly one.
        let mut rows = Vec::new();
        ErrorsFromLogs.rows(Cow::Owned(without), &mut rows);
        assert!(rows.is_empty());
        ErrorsFromLogs.rows(Cow::Owned(with), &mut rows);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].exception_type, "ValueError");
    }

    #[test]
    fn a_span_message_with_an_exception_event_is_decoded_and_one_without_is_not() {
        let batch = |event_attrs: Attrs| SpanBatch {
            spans: vec![Span {
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: "b7ad6b7169203331".into(),
                service: "checkout".into(),
                events: vec![SpanEvent {
                    timestamp_ns: 1,
                    name: "exception".into(),
                    attrs: event_attrs,
                }],
                ..Default::default()
            }],
        };
        let with = batch(attrs(&[("exception.message", "timeout after 5s")]));
        let without = batch(attrs(&[("retry", "1")]));
        assert!(ErrorsFromSpans::may_have_rows(&encoded(
            Topic::Spans,
            &with
        )));
        assert!(!ErrorsFromSpans::may_have_rows(&encoded(
            Topic::Spans,
            &without
        )));
        let mut rows = Vec::new();
        ErrorsFromSpans.rows(Cow::Owned(without), &mut rows);
        assert!(rows.is_empty());
        ErrorsFromSpans.rows(Cow::Owned(with), &mut rows);
        assert_eq!(rows.len(), 1);
    }
}
