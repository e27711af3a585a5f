//! What the trace processor derives, into tables: `obs.traces` → `obs_trace_summaries`,
//! `obs.servicegraph` → `obs_servicegraph_edges`, and `obs.spans.sampled` → `otel_traces`
//! when `[sink] traces_from = "sampled"` (only the traces tail sampling keeps).

use std::borrow::Cow;

use clickhouse::Row;
use obs_schemas::Topic;
use obs_schemas::records::{ServiceGraphEdge, SpanBatch, TraceSummaryBatch};
use serde::{Deserialize, Serialize};

use crate::table::{TableSink, TimeColumn};
use crate::traces::{OtelTraceRow, OtelTraces};

/// The `obs_trace_summaries` sink.
#[derive(Default)]
pub struct TraceSummaries;

/// One decided trace.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TraceSummaryRow {
    /// Tenant.
    pub tenant: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Service of the root span.
    pub root_service: String,
    /// Name of the root span.
    pub root_name: String,
    /// Earliest span start, ns.
    pub start: i64,
    /// Latest span end, ns.
    pub end: i64,
    /// `End - Start`.
    pub duration_ns: i64,
    /// Spans.
    pub span_count: i32,
    /// Spans with status Error.
    pub error_count: i32,
    /// Services taking part.
    pub services: Vec<String>,
    /// Whether tail sampling kept it.
    pub kept: bool,
    /// Partition event time of the decision, ms.
    pub decided_at_ms: i64,
}

impl TableSink for TraceSummaries {
    type Message = TraceSummaryBatch;
    type Row = TraceSummaryRow;
    const TOPIC: Topic = Topic::Traces;
    const TABLE: &'static str = "obs_trace_summaries";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Nanos("Start"));

    fn rows(&mut self, batch: Cow<'_, TraceSummaryBatch>, out: &mut Vec<TraceSummaryRow>) {
        let batch = batch.into_owned();
        out.extend(batch.summaries.into_iter().map(|s| TraceSummaryRow {
            tenant: s.tenant,
            trace_id: s.trace_id,
            root_service: s.root_service,
            root_name: s.root_name,
            start: s.start_ns,
            end: s.end_ns,
            duration_ns: s.end_ns - s.start_ns,
            span_count: s.span_count,
            error_count: s.error_count,
            services: s.services,
            kept: s.kept,
            decided_at_ms: s.decided_at_ms,
        }));
    }

    fn row_time_ns(row: &TraceSummaryRow) -> Option<i64> {
        Some(row.start)
    }
}

/// The `obs_servicegraph_edges` sink.
#[derive(Default)]
pub struct ServiceGraphEdges;

/// Requests between two services in one window of one input partition.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceGraphEdgeRow {
    /// Tenant.
    pub tenant: String,
    /// Calling service.
    pub client: String,
    /// Called service.
    pub server: String,
    /// Tempo's connection type (empty when plain).
    pub connection_type: String,
    /// The `obs.spans` partition.
    pub partition: i32,
    /// Window start, ms.
    pub window_start_ms: i64,
    /// Window end, ms.
    pub window_end_ms: i64,
    /// Requests.
    pub request_count: i64,
    /// Failed requests.
    pub error_count: i64,
    /// Sum of server durations, ns.
    pub server_latency_sum_ns: i64,
    /// Sum of client durations, ns.
    pub client_latency_sum_ns: i64,
}

impl TableSink for ServiceGraphEdges {
    type Message = ServiceGraphEdge;
    type Row = ServiceGraphEdgeRow;
    const TOPIC: Topic = Topic::ServiceGraph;
    const TABLE: &'static str = "obs_servicegraph_edges";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Millis("WindowStartMs"));

    fn rows(&mut self, e: Cow<'_, ServiceGraphEdge>, out: &mut Vec<ServiceGraphEdgeRow>) {
        let e = e.into_owned();
        out.push(ServiceGraphEdgeRow {
            tenant: e.tenant,
            client: e.client,
            server: e.server,
            connection_type: e.connection_type,
            partition: e.partition,
            window_start_ms: e.window_start_ms,
            window_end_ms: e.window_end_ms,
            request_count: e.request_count,
            error_count: e.error_count,
            server_latency_sum_ns: e.latency_sum_ns,
            client_latency_sum_ns: e.client_latency_sum_ns,
        });
    }

    fn row_time_ns(row: &ServiceGraphEdgeRow) -> Option<i64> {
        Some(row.window_start_ms.saturating_mul(1_000_000))
    }
}

/// `otel_traces` from `obs.spans.sampled`: the same rows as [`OtelTraces`], only the kept
/// traces' spans.
#[derive(Default)]
pub struct SampledTraces(OtelTraces);

impl TableSink for SampledTraces {
    type Message = SpanBatch;
    type Row = OtelTraceRow;
    const TOPIC: Topic = Topic::SpansSampled;
    const TABLE: &'static str = "otel_traces";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Nanos("Timestamp"));
    const NAME: &'static str = "otel_traces_sampled";

    fn rows(&mut self, message: Cow<'_, SpanBatch>, out: &mut Vec<OtelTraceRow>) {
        self.0.rows(message, out);
    }

    fn row_time_ns(row: &OtelTraceRow) -> Option<i64> {
        OtelTraces::row_time_ns(row)
    }
}
