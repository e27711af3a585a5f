//! Stream processors: event-time windows over the raw topics that emit the derived topics
//! (`obs.metrics.rollup`, `obs.traces`, `obs.servicegraph`, `obs.alerts`).
//!
//! * [`window`]: event time over partitions (watermarks, idle partitions) and the offsets
//!   a processor may commit.
//! * [`rules`]: Prometheus rule files (`obs rules check`, `obs rules test`) and the rule
//!   processor ([`rules::run`]) that evaluates them on `obs.metrics`.
//!
//! Trace correlation and rollups are not built yet. The derived records' shapes live in
//! `obs_schemas::records`.

pub mod rules;
pub mod window;

pub use rules::api::RulesView;
pub use rules::run::run;
