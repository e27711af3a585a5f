//! Metric rollups: every series of `obs.metrics` aggregated per event-time window (1m and
//! 1h by default) into `obs.metrics.rollup`, which the sink stores in `metrics_rollups`.
//!
//! * [`partition`]: one partition's windows (pure, deterministic, checkpointed).
//! * [`run`]: the processor on Kafka.

pub mod partition;
pub mod run;
