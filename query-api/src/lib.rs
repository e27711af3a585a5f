//! The query API: what users, `obs sql` and Grafana talk to (DESIGN.md §5).
//!
//! Today it serves read-only ad-hoc SQL ([`sql`]); the PromQL, LogQL and trace APIs come
//! next and will share its listener and ClickHouse client.

pub mod server;
pub mod sql;

pub use server::run;
