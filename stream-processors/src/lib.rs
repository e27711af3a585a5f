//! Stream processors: event-time windows over the raw topics that emit the derived topics
//! (`obs.metrics.rollup`, `obs.traces`, `obs.servicegraph`, `obs.alerts`).
//!
//! Built so far: [`rules`], Prometheus rule files read and checked as `promtool check
//! rules` checks them (`obs rules check`). The window runtime and the processors that run
//! rules, correlate traces and roll up metrics are not built yet: `obs processor` says so
//! and exits with an error. The derived records' shapes live in `obs_schemas::records`.

pub mod rules;
