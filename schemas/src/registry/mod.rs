//! A schema registry that speaks Confluent's REST API (the subset producers, consumers and
//! operators use): subjects, versions, global ids, compatibility checks and config.
//!
//! * [`store`]: the state and its durable, append-only log on disk.
//! * [`compat`]: compatibility levels and the Avro resolution check behind them.
//! * [`server`]: the HTTP routes and Confluent's error shapes.
//!
//! Only Avro schemas are accepted; other `schemaType`s get a 422 naming the limitation.

pub mod compat;
pub mod server;
pub mod store;

pub use compat::CompatibilityLevel;
pub use server::router;
pub use store::{RegistryError, SchemaStore};
