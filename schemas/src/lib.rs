//! The data contracts of the pipeline, and the only place a record's shape is defined.
//!
//! * [`records`]: Rust types for every Avro record in `schemas/avro/`.
//! * [`topics`]: the Kafka topics, their keys, partition counts and value schemas.
//! * [`wire`]: Confluent wire format (magic byte, schema id, Avro datum) through a registry.
//! * [`registry`]: a schema registry speaking Confluent's REST API.
//! * [`migrations`]: versioned, idempotent ClickHouse DDL.
//! * [`cluster`]: that DDL for a ClickHouse cluster (replicated, sharded, distributed).
//! * [`sql_output`]: the records and tables of streaming SQL queries, shaped by their output.
//! * [`fingerprint`]: the stable series/stream hash used for Kafka keys and table keys.
//! * [`late_writes`]: the record of sink batches older than a results cache may hold.

pub mod cluster;
pub mod fingerprint;
pub mod late_writes;
pub mod migrations;
pub mod records;
pub mod registry;
pub mod sql_output;
pub mod topics;
pub mod wire;

pub use fingerprint::{series_fingerprint, stream_fingerprint};
pub use topics::Topic;
