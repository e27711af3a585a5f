use serde::{Deserialize, Serialize};

use super::Attrs;

/// Value of `obs.logs`: the records of one stream, sent as one Kafka message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LogBatch {
    /// The records, in the order the client sent them.
    pub records: Vec<LogRecord>,
}

/// One log record, normalised from whichever protocol carried it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LogRecord {
    /// Event time, ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// When a collector first saw the record, ns since the Unix epoch.
    pub observed_timestamp_ns: i64,
    /// Severity as the source wrote it (`INFO`, `warn`, ...).
    pub severity_text: String,
    /// OTel severity number (1-24), 0 when unspecified.
    pub severity_number: i32,
    /// The message; structured bodies are JSON.
    pub body: String,
    /// `service.name` of the resource.
    pub service: String,
    /// Lower-case hex trace id, empty when absent.
    pub trace_id: String,
    /// Lower-case hex span id, empty when absent.
    pub span_id: String,
    /// W3C trace flags.
    pub trace_flags: i32,
    /// OTel event name, empty for plain logs.
    pub event_name: String,
    /// Schema URL of the resource.
    pub resource_schema_url: String,
    /// Resource attributes (including `service.name`).
    pub resource_attrs: Attrs,
    /// Instrumentation scope name.
    pub scope_name: String,
    /// Instrumentation scope version.
    pub scope_version: String,
    /// Schema URL of the scope.
    pub scope_schema_url: String,
    /// Instrumentation scope attributes.
    pub scope_attrs: Attrs,
    /// The record's own attributes.
    pub attrs: Attrs,
    /// Tenant the record belongs to (`X-Scope-OrgID`).
    pub tenant: String,
}
