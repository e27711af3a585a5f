//! `obs.spans` → `otel_traces` (the OpenTelemetry Collector ClickHouse exporter's shape; the
//! table's materialized view fills `otel_traces_trace_id_ts`).

use std::borrow::Cow;

use clickhouse::Row;
use obs_schemas::Topic;
use obs_schemas::records::SpanBatch;
use serde::{Deserialize, Serialize};

use crate::table::{TableSink, TimeColumn, pairs};

/// The `otel_traces` sink.
#[derive(Default)]
pub struct OtelTraces;

/// One `otel_traces` row; `Events.*` and `Links.*` are the Nested columns' arrays.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OtelTraceRow {
    /// Span start, ns.
    pub timestamp: i64,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id, empty for roots.
    pub parent_span_id: String,
    /// W3C trace state.
    pub trace_state: String,
    /// Operation name.
    pub span_name: String,
    /// `Server`, `Client`, ...
    pub span_kind: String,
    /// `service.name`.
    pub service_name: String,
    /// Resource attributes.
    pub resource_attributes: Vec<(String, String)>,
    /// Scope name.
    pub scope_name: String,
    /// Scope version.
    pub scope_version: String,
    /// Span attributes.
    pub span_attributes: Vec<(String, String)>,
    /// End minus start, ns.
    pub duration: u64,
    /// `Unset`, `Ok` or `Error`.
    pub status_code: String,
    /// Status description.
    pub status_message: String,
    /// Event times, ns.
    #[serde(rename = "Events.Timestamp")]
    pub events_timestamp: Vec<i64>,
    /// Event names.
    #[serde(rename = "Events.Name")]
    pub events_name: Vec<String>,
    /// Event attributes.
    #[serde(rename = "Events.Attributes")]
    pub events_attributes: Vec<Vec<(String, String)>>,
    /// Linked trace ids.
    #[serde(rename = "Links.TraceId")]
    pub links_trace_id: Vec<String>,
    /// Linked span ids.
    #[serde(rename = "Links.SpanId")]
    pub links_span_id: Vec<String>,
    /// Linked trace states.
    #[serde(rename = "Links.TraceState")]
    pub links_trace_state: Vec<String>,
    /// Link attributes.
    #[serde(rename = "Links.Attributes")]
    pub links_attributes: Vec<Vec<(String, String)>>,
    /// Tenant.
    pub tenant: String,
}

impl TableSink for OtelTraces {
    type Message = SpanBatch;
    type Row = OtelTraceRow;
    const TOPIC: Topic = Topic::Spans;
    const TABLE: &'static str = "otel_traces";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Nanos("Timestamp"));

    fn rows(&mut self, message: Cow<'_, SpanBatch>, out: &mut Vec<OtelTraceRow>) {
        let message = message.into_owned();
        out.extend(message.spans.into_iter().map(|s| {
            let (events_timestamp, events_name, events_attributes) = s
                .events
                .into_iter()
                .map(|e| (e.timestamp_ns, e.name, pairs(e.attrs)))
                .fold((vec![], vec![], vec![]), |mut acc, (t, n, a)| {
                    acc.0.push(t);
                    acc.1.push(n);
                    acc.2.push(a);
                    acc
                });
            let mut links = (vec![], vec![], vec![], vec![]);
            for l in s.links {
                links.0.push(l.trace_id);
                links.1.push(l.span_id);
                links.2.push(l.trace_state);
                links.3.push(pairs(l.attrs));
            }
            OtelTraceRow {
                timestamp: s.start_ns,
                trace_id: s.trace_id,
                span_id: s.span_id,
                parent_span_id: s.parent_span_id,
                trace_state: s.trace_state,
                span_name: s.name,
                span_kind: s.kind,
                service_name: s.service,
                resource_attributes: pairs(s.resource_attrs),
                scope_name: s.scope_name,
                scope_version: s.scope_version,
                span_attributes: pairs(s.attrs),
                duration: s.end_ns.saturating_sub(s.start_ns).max(0) as u64,
                status_code: s.status_code,
                status_message: s.status_message,
                events_timestamp,
                events_name,
                events_attributes,
                links_trace_id: links.0,
                links_span_id: links.1,
                links_trace_state: links.2,
                links_attributes: links.3,
                tenant: s.tenant,
            }
        }));
    }

    fn row_time_ns(row: &Self::Row) -> Option<i64> {
        Some(row.timestamp)
    }
}
