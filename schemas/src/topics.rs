//! The Kafka topics of DESIGN.md §3: names, value schemas and partition counts.

/// A topic of the pipeline. Every stage names topics through this enum, never by string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Raw metric samples ([`crate::records::MetricBatch`]), keyed by series fingerprint.
    Metrics,
    /// Raw log records ([`crate::records::LogBatch`]), keyed by stream fingerprint.
    Logs,
    /// Raw spans ([`crate::records::SpanBatch`]), keyed by trace id.
    Spans,
    /// JSON lines that log agents (Fluent Bit, Vector) publish directly: one JSON object
    /// per line, one or more lines per message; not Avro. Normalised into `otel_logs`.
    LogsRaw,
    /// Events ([`crate::records::EventBatch`]), keyed by source.
    Events,
    /// Windowed metric aggregates ([`crate::records::MetricRollup`]).
    MetricsRollup,
    /// Correlated traces ([`crate::records::TraceSummary`]).
    Traces,
    /// Service-graph edges ([`crate::records::ServiceGraphEdge`]).
    ServiceGraph,
    /// Alert state changes ([`crate::records::Alert`]).
    Alerts,
    /// Messages a stage could not process ([`crate::records::DeadLetter`]).
    Dlq,
}

impl Topic {
    /// Every topic, in the order they are created.
    pub const ALL: [Topic; 10] = [
        Topic::Metrics,
        Topic::Logs,
        Topic::Spans,
        Topic::LogsRaw,
        Topic::Events,
        Topic::MetricsRollup,
        Topic::Traces,
        Topic::ServiceGraph,
        Topic::Alerts,
        Topic::Dlq,
    ];

    /// The topic's name on the broker.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Metrics => "obs.metrics",
            Topic::Logs => "obs.logs",
            Topic::Spans => "obs.spans",
            Topic::LogsRaw => "obs.logs.raw",
            Topic::Events => "obs.events",
            Topic::MetricsRollup => "obs.metrics.rollup",
            Topic::Traces => "obs.traces",
            Topic::ServiceGraph => "obs.servicegraph",
            Topic::Alerts => "obs.alerts",
            Topic::Dlq => "obs.dlq",
        }
    }

    /// Registry subject of the value schema (Confluent's TopicNameStrategy).
    pub fn value_subject(self) -> String {
        format!("{}-value", self.name())
    }

    /// The Avro schema of the topic's values, as registered; `None` for `obs.logs.raw`
    /// (plain JSON lines).
    pub fn value_schema(self) -> Option<&'static str> {
        Some(match self {
            Topic::Metrics => include_str!("../avro/metric_batch.avsc"),
            Topic::Logs => include_str!("../avro/log_batch.avsc"),
            Topic::Spans => include_str!("../avro/span_batch.avsc"),
            Topic::LogsRaw => return None,
            Topic::Events => include_str!("../avro/event_batch.avsc"),
            Topic::MetricsRollup => include_str!("../avro/metric_rollup.avsc"),
            Topic::Traces => include_str!("../avro/trace_summary.avsc"),
            Topic::ServiceGraph => include_str!("../avro/servicegraph_edge.avsc"),
            Topic::Alerts => include_str!("../avro/alert.avsc"),
            Topic::Dlq => include_str!("../avro/dlq_record.avsc"),
        })
    }

    /// Default partition count: the raw topics carry the volume, the derived ones less.
    pub fn default_partitions(self) -> i32 {
        match self {
            Topic::Metrics | Topic::Logs | Topic::Spans | Topic::LogsRaw => 3,
            _ => 1,
        }
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
