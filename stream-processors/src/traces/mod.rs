//! The trace processor: spans of `obs.spans` correlated per trace in the stream.
//!
//! In: the partitions of `obs.spans` this instance owns (spans are keyed by trace id, so a
//! trace is whole in one partition). Out:
//! * span metrics and service-graph metrics (Tempo's names) as cumulative samples on
//!   `obs.metrics` every event-time interval ([`spanmetrics`], [`servicegraph`],
//!   [`registry`]);
//! * one summary per decided trace on `obs.traces` ([`summary`]);
//! * service-graph edge windows on `obs.servicegraph`;
//! * the spans of the traces tail sampling keeps on `obs.spans.sampled` ([`sampling`]);
//! * checkpoints on `obs.processor.state` ([`checkpoint`]).
//!
//! [`assembly`] holds a partition's open traces, [`partition`] is the deterministic state
//! machine of one partition, [`run`] the Kafka loop around them.

pub mod assembly;
pub mod checkpoint;
pub mod partition;
pub mod registry;
pub mod run;
pub mod sampling;
pub mod servicegraph;
pub mod spanmetrics;
pub mod summary;
