//! The Prometheus HTTP API over `metrics_series`, `metrics_samples` and `metrics_metadata`:
//! PromQL `query`/`query_range` (evaluated by `obs_promql`), `labels`,
//! `label/<name>/values`, `series`, `metadata` and `status/buildinfo`, GET and form POST,
//! with Prometheus's JSON and error shapes, scoped to the `X-Scope-OrgID` tenant.
//!
//! * `selector`: `match[]` selectors → SQL with bound values.
//! * `store`: the metrics tables as the PromQL evaluator's sample source (`obs_promql`).
//! * `series_labels`: labels of series by fingerprint, kept between queries.
//! * `params`: request parameters (repeated `match[]`, times).
//! * `api`, `query`: the handlers.
//! * `results_cache`: range-query answers kept per query and step, dropped by late data.
//! * `rules`: `/api/v1/rules` and `/api/v1/alerts`, forwarded to the rule processor.

mod api;
pub(crate) mod params;
mod query;
pub(crate) use query::limits_with;
pub mod results_cache;
mod rules;
pub mod selector;
pub mod series_labels;
pub mod store;

pub use api::routes;
