//! The query API: what users, `obs sql` and Grafana talk to (DESIGN.md §5).
//!
//! * [`sql`]: read-only ad-hoc SQL.
//! * [`prom`]: the Prometheus HTTP API's labels, series and metadata endpoints (PromQL
//!   evaluation is not there yet and says so).
//! * [`logql`]: LogQL → ClickHouse SQL behind the Loki HTTP API ([`logql::explain`] shows
//!   the SQL a query becomes).
//!
//! The trace APIs come next and share the listener and ClickHouse client.

pub mod logql;
pub mod prom;
pub mod promql;
pub mod server;
pub mod sql;

pub use server::run;
