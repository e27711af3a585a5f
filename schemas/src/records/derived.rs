use serde::{Deserialize, Serialize};

use super::Attrs;

/// Value of `obs.metrics.rollup`: windows of series of one `obs.metrics` partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MetricRollupBatch {
    /// The windows.
    pub rollups: Vec<MetricRollup>,
}

/// One series aggregated over one event-time window (Thanos's downsampling aggregates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MetricRollup {
    /// Tenant.
    pub tenant: String,
    /// Series fingerprint (as in `obs.metrics` and `metrics_series`).
    pub fingerprint: i64,
    /// Metric name.
    pub name: String,
    /// Labels except `__name__`.
    pub labels: Attrs,
    /// Window length, ms.
    pub resolution_ms: i64,
    /// Window start, ms since the Unix epoch (a multiple of the resolution).
    pub window_start_ms: i64,
    /// Samples in the window.
    pub count: i64,
    /// Sum of the samples.
    pub sum: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Earliest sample.
    pub first: f64,
    /// Time of the earliest sample.
    pub first_timestamp_ms: i64,
    /// Latest sample.
    pub last: f64,
    /// Time of the latest sample.
    pub last_timestamp_ms: i64,
    /// Counter increase over each pair of consecutive samples whose later one is in the
    /// window (the later value after a reset); no extrapolation.
    pub increase: f64,
}

/// Value of `obs.traces`: summaries of traces whose ids hash to one partition (batched, as
/// every topic's records are: one message per trace would bound the broker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TraceSummaryBatch {
    /// The summaries.
    pub summaries: Vec<TraceSummary>,
}

/// One correlated trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TraceSummary {
    /// Tenant.
    pub tenant: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Service of the root span.
    pub root_service: String,
    /// Name of the root span.
    pub root_name: String,
    /// Earliest span start, ns.
    pub start_ns: i64,
    /// Latest span end, ns.
    pub end_ns: i64,
    /// Spans seen.
    pub span_count: i32,
    /// Spans with status Error.
    pub error_count: i32,
    /// Services taking part.
    pub services: Vec<String>,
    /// Whether tail sampling kept the trace.
    pub kept: bool,
    /// Partition event time of the decision, ms.
    pub decided_at_ms: i64,
}

/// Value of `obs.servicegraph`: calls between two services paired in one input partition
/// within one event-time window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ServiceGraphEdge {
    /// Tenant.
    pub tenant: String,
    /// Calling service.
    pub client: String,
    /// Called service.
    pub server: String,
    /// Tempo's `connection_type`: empty, `virtual_node`, `messaging_system` or `database`.
    pub connection_type: String,
    /// The `obs.spans` partition the calls were paired in.
    pub partition: i32,
    /// Window start, ms.
    pub window_start_ms: i64,
    /// Window end, ms.
    pub window_end_ms: i64,
    /// Calls.
    pub request_count: i64,
    /// Failed calls.
    pub error_count: i64,
    /// Sum of the server side's durations, ns.
    pub latency_sum_ns: i64,
    /// Sum of the client side's durations, ns.
    pub client_latency_sum_ns: i64,
}

/// Value of `obs.alerts`: a state change of one alert instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Alert {
    /// Tenant.
    pub tenant: String,
    /// Rule group.
    pub group: String,
    /// Alerting rule name.
    pub rule: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// The alert's labels.
    pub labels: Attrs,
    /// Annotations after templating.
    pub annotations: Attrs,
    /// The expression's value.
    pub value: f64,
    /// When the condition first held, ms.
    pub active_at_ms: i64,
    /// When this state was evaluated, ms.
    pub evaluated_at_ms: i64,
}

/// Value of `obs.dlq`: a message a stage gave up on, with where it came from and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeadLetter {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Original key bytes.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub key: Option<Vec<u8>>,
    /// Original value bytes.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub value: Option<Vec<u8>>,
    /// Stage that gave up, e.g. `sink:otel_logs`.
    pub stage: String,
    /// Why.
    pub error: String,
    /// When, ms since the Unix epoch.
    pub failed_at_ms: i64,
}
