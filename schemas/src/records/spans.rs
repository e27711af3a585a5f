use serde::{Deserialize, Serialize};

use super::Attrs;

/// Value of `obs.spans`: spans whose trace ids hash to one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SpanBatch {
    /// The spans.
    pub spans: Vec<Span>,
}

/// One span, normalised from OTLP or Zipkin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Span {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// Parent span id, empty for a root span.
    pub parent_span_id: String,
    /// W3C trace state.
    pub trace_state: String,
    /// Operation name.
    pub name: String,
    /// `Unspecified`, `Internal`, `Server`, `Client`, `Producer` or `Consumer`.
    pub kind: String,
    /// `service.name` of the resource.
    pub service: String,
    /// Start, ns since the Unix epoch.
    pub start_ns: i64,
    /// End, ns since the Unix epoch.
    pub end_ns: i64,
    /// `Unset`, `Ok` or `Error`.
    pub status_code: String,
    /// Status description.
    pub status_message: String,
    /// Span attributes.
    pub attrs: Attrs,
    /// Resource attributes.
    pub resource_attrs: Attrs,
    /// Instrumentation scope name.
    pub scope_name: String,
    /// Instrumentation scope version.
    pub scope_version: String,
    /// Timed events within the span.
    pub events: Vec<SpanEvent>,
    /// Links to other spans.
    pub links: Vec<SpanLink>,
    /// Tenant the span belongs to.
    pub tenant: String,
}

/// A timed event within a span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SpanEvent {
    /// ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// Event name.
    pub name: String,
    /// Event attributes.
    pub attrs: Attrs,
}

/// A link from a span to another span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SpanLink {
    /// Linked trace id, hex.
    pub trace_id: String,
    /// Linked span id, hex.
    pub span_id: String,
    /// Linked span's trace state.
    pub trace_state: String,
    /// Link attributes.
    pub attrs: Attrs,
}

/// OTLP's span kind number for a stored kind name (`Server` → 2).
pub fn kind_number(kind: &str) -> i32 {
    match kind {
        "Internal" => 1,
        "Server" => 2,
        "Client" => 3,
        "Producer" => 4,
        "Consumer" => 5,
        _ => 0,
    }
}

/// OTLP's status code number for a stored status name (`Error` → 2).
pub fn status_number(code: &str) -> i32 {
    match code {
        "Ok" => 1,
        "Error" => 2,
        _ => 0,
    }
}
