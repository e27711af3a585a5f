//! `obs.logs` → `otel_logs` (the OpenTelemetry Collector ClickHouse exporter's shape).

use std::borrow::Cow;

use clickhouse::Row;
use obs_schemas::Topic;
use obs_schemas::records::LogBatch;
use serde::{Deserialize, Serialize};

use crate::table::{TableSink, TimeColumn, pairs};

/// The `otel_logs` sink.
#[derive(Default)]
pub struct OtelLogs;

/// One `otel_logs` row (`TimestampTime` is left to its DEFAULT).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OtelLogRow {
    /// DateTime64(9) as ns.
    pub timestamp: i64,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// W3C flags.
    pub trace_flags: u8,
    /// Severity text.
    pub severity_text: String,
    /// OTel severity number.
    pub severity_number: u8,
    /// `service.name`.
    pub service_name: String,
    /// The message.
    pub body: String,
    /// Resource schema URL.
    pub resource_schema_url: String,
    /// Resource attributes.
    pub resource_attributes: Vec<(String, String)>,
    /// Scope schema URL.
    pub scope_schema_url: String,
    /// Scope name.
    pub scope_name: String,
    /// Scope version.
    pub scope_version: String,
    /// Scope attributes.
    pub scope_attributes: Vec<(String, String)>,
    /// Record attributes.
    pub log_attributes: Vec<(String, String)>,
    /// OTel event name.
    pub event_name: String,
    /// Tenant.
    pub tenant: String,
}

impl TableSink for OtelLogs {
    type Message = LogBatch;
    type Row = OtelLogRow;
    const TOPIC: Topic = Topic::Logs;
    const TABLE: &'static str = "otel_logs";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Nanos("Timestamp"));

    fn rows(&mut self, message: Cow<'_, LogBatch>, out: &mut Vec<OtelLogRow>) {
        let message = message.into_owned();
        out.extend(message.records.into_iter().map(|r| OtelLogRow {
            timestamp: r.timestamp_ns,
            trace_id: r.trace_id,
            span_id: r.span_id,
            trace_flags: r.trace_flags.clamp(0, 255) as u8,
            severity_text: r.severity_text,
            severity_number: r.severity_number.clamp(0, 255) as u8,
            service_name: r.service,
            body: r.body,
            resource_schema_url: r.resource_schema_url,
            resource_attributes: pairs(r.resource_attrs),
            scope_schema_url: r.scope_schema_url,
            scope_name: r.scope_name,
            scope_version: r.scope_version,
            scope_attributes: pairs(r.scope_attrs),
            log_attributes: pairs(r.attrs),
            event_name: r.event_name,
            tenant: r.tenant,
        }));
    }

    fn row_time_ns(row: &Self::Row) -> Option<i64> {
        Some(row.timestamp)
    }
}
