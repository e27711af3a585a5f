//! Runtime shared by every stage, so that no stage depends on another stage's internals:
//! configuration ([`config`]), Kafka clients and topic set-up ([`kafka`]), the ClickHouse
//! client ([`clickhouse`]), `/metrics` `/healthz` `/readyz` ([`ops`]) and logging
//! ([`telemetry`]).

pub mod clickhouse;
pub mod config;
pub mod kafka;
pub mod ops;
pub mod telemetry;

pub use config::Config;
