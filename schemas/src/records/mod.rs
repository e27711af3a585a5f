//! The Rust side of every record in `schemas/avro/`: one struct per Avro record, field for
//! field, so serde through `apache-avro` maps them without glue code.
//!
//! Attribute maps are sorted ([`Attrs`]) so a record's encoding (and so its content hash)
//! does not depend on insertion order.

mod attrs;
mod derived;
mod events;
mod logs;
mod metrics;
mod spans;

pub use derived::{
    Alert, DeadLetter, MetricRollup, MetricRollupBatch, ServiceGraphEdge, TraceSummary,
    TraceSummaryBatch,
};
pub use events::{Event, EventBatch};
pub use logs::{LogBatch, LogRecord};
pub use metrics::{
    Exemplar, HistogramPoint, MetricBatch, MetricBatchView, MetricMetadata, MetricSeries,
    MetricSeriesView,
};
pub use spans::{Span, SpanBatch, SpanEvent, SpanLink, kind_number, status_number};

pub use attrs::Attrs;
