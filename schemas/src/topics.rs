//! The Kafka topics of DESIGN.md §3: names, value schemas and partition counts.

/// A topic of the pipeline. Every stage names topics through this enum, never by string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Raw metric samples ([`crate::records::MetricBatch`]), keyed by series fingerprint.
    Metrics,
    /// Log records ([`crate::records::LogBatch`]), keyed by stream fingerprint: what the
    /// log sink stores.
    Logs,
    /// Log records the collectors received when log pipelines are configured
    /// ([`crate::records::LogBatch`], partitioned as `obs.logs`): the log processor runs
    /// the pipelines on them and writes `obs.logs`, partition for partition.
    LogsIngest,
    /// Raw spans ([`crate::records::SpanBatch`]), keyed by trace id.
    Spans,
    /// The spans of the traces tail sampling keeps ([`crate::records::SpanBatch`]), in the
    /// partition their trace had in `obs.spans`.
    SpansSampled,
    /// JSON lines that log agents (Fluent Bit, Vector) publish directly: one JSON object
    /// per line, one or more lines per message; not Avro. Normalised into `otel_logs`.
    LogsRaw,
    /// Events ([`crate::records::EventBatch`]), keyed by source.
    Events,
    /// Windowed metric aggregates ([`crate::records::MetricRollupBatch`]), by series.
    MetricsRollup,
    /// Correlated traces ([`crate::records::TraceSummaryBatch`]), keyed by trace id.
    Traces,
    /// Service-graph edges ([`crate::records::ServiceGraphEdge`]).
    ServiceGraph,
    /// Alert state changes ([`crate::records::Alert`]).
    Alerts,
    /// Messages a stage could not process ([`crate::records::DeadLetter`]).
    Dlq,
    /// Checkpoints of the stream processors' state (JSON, not Avro), in the partition of
    /// the input partition they describe.
    ProcessorState,
}

impl Topic {
    /// Every topic, in the order they are created.
    pub const ALL: [Topic; 13] = [
        Topic::Metrics,
        Topic::Logs,
        Topic::LogsIngest,
        Topic::Spans,
        Topic::SpansSampled,
        Topic::LogsRaw,
        Topic::Events,
        Topic::MetricsRollup,
        Topic::Traces,
        Topic::ServiceGraph,
        Topic::Alerts,
        Topic::Dlq,
        Topic::ProcessorState,
    ];

    /// A topic by its name (`obs.logs`) or short form (`logs`); an error lists the topics.
    pub fn parse(s: &str) -> anyhow::Result<Topic> {
        Topic::ALL
            .into_iter()
            .find(|t| t.name() == s || t.name().strip_prefix("obs.") == Some(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
                anyhow::anyhow!("unknown topic {s:?}; topics: {}", names.join(", "))
            })
    }

    /// The topic's name on the broker.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Metrics => "obs.metrics",
            Topic::Logs => "obs.logs",
            Topic::LogsIngest => "obs.logs.ingest",
            Topic::Spans => "obs.spans",
            Topic::SpansSampled => "obs.spans.sampled",
            Topic::LogsRaw => "obs.logs.raw",
            Topic::Events => "obs.events",
            Topic::MetricsRollup => "obs.metrics.rollup",
            Topic::Traces => "obs.traces",
            Topic::ServiceGraph => "obs.servicegraph",
            Topic::Alerts => "obs.alerts",
            Topic::Dlq => "obs.dlq",
            Topic::ProcessorState => "obs.processor.state",
        }
    }

    /// Registry subject of the value schema (Confluent's TopicNameStrategy).
    pub fn value_subject(self) -> String {
        format!("{}-value", self.name())
    }

    /// The Avro schema of the topic's values, as registered; `None` for `obs.logs.raw`
    /// (plain JSON lines) and `obs.processor.state` (JSON checkpoints).
    pub fn value_schema(self) -> Option<&'static str> {
        Some(match self {
            Topic::Metrics => include_str!("../avro/metric_batch.avsc"),
            Topic::Logs | Topic::LogsIngest => include_str!("../avro/log_batch.avsc"),
            Topic::Spans | Topic::SpansSampled => include_str!("../avro/span_batch.avsc"),
            Topic::LogsRaw | Topic::ProcessorState => return None,
            Topic::Events => include_str!("../avro/event_batch.avsc"),
            Topic::MetricsRollup => include_str!("../avro/metric_rollup_batch.avsc"),
            Topic::Traces => include_str!("../avro/trace_summary_batch.avsc"),
            Topic::ServiceGraph => include_str!("../avro/servicegraph_edge.avsc"),
            Topic::Alerts => include_str!("../avro/alert.avsc"),
            Topic::Dlq => include_str!("../avro/dlq_record.avsc"),
        })
    }

    /// Default partition count: the raw topics carry the volume, the derived ones less;
    /// the sampled spans and the checkpoints follow the raw topics' partitions one to one.
    pub fn default_partitions(self) -> i32 {
        if self.is_raw() { 3 } else { 1 }
    }

    /// Whether the topic carries the pipeline's volume (records as collected, their
    /// processed forms, state): created with `[kafka] raw_partitions` and read with
    /// `[kafka] raw_fetch_wait_ms`.
    pub fn is_raw(self) -> bool {
        matches!(
            self,
            Topic::Metrics
                | Topic::Logs
                | Topic::LogsIngest
                | Topic::Spans
                | Topic::SpansSampled
                | Topic::LogsRaw
                | Topic::ProcessorState
        )
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
