//! The query API: what users, `obs sql` and Grafana talk to (DESIGN.md §5).
//!
//! * [`sql`]: read-only ad-hoc SQL, scoped to the request's tenant.
//! * [`prom`]: the Prometheus HTTP API (query, query_range, labels, series, metadata,
//!   explain).
//! * [`logql`]: LogQL → ClickHouse SQL behind the Loki HTTP API ([`logql::explain`] shows
//!   the SQL a query becomes).
//! * [`traces`]: the Jaeger query API and Tempo's trace-by-id and search endpoints.
//! * [`errors`]: `/api/v1/errors`, error groups from `obs_error_events`.
//! * [`tenant`]: the request's tenant.

pub mod errors;
pub mod fuzzing;
pub mod logql;
pub mod prom;
pub mod server;
pub mod sql;
pub mod status;
pub mod tenant;
pub mod traces;

pub use server::run;
