//! The Prometheus HTTP API over `metrics_series`, `metrics_samples` and `metrics_metadata`:
//! `labels`, `label/<name>/values`, `series`, `metadata` and `status/buildinfo`, GET and
//! form POST, with Prometheus's JSON and error shapes, scoped to the `X-Scope-OrgID` tenant.
//! (PromQL `query`/`query_range` are not served yet and answer so.)
//!
//! * `selector`: `match[]` selectors → SQL with bound values.
//! * `params`: request parameters (repeated `match[]`, times).
//! * `api`: the handlers.

mod api;
pub(crate) mod params;
mod query;
pub mod selector;

pub use api::routes;
