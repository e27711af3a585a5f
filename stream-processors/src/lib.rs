//! Stream processors: event-time windows over the raw topics that emit the derived topics
//! (`obs.metrics.rollup`, `obs.traces`, `obs.servicegraph`, `obs.alerts`).
//!
//! Nothing is implemented here yet, and nothing pretends to be: `obs processor` says so and
//! exits with an error. The derived records' shapes already live in `obs_schemas::records`.
