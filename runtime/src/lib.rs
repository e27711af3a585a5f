//! Runtime shared by every stage, so that no stage depends on another stage's internals:
//! configuration ([`config`]), Kafka clients and topic set-up ([`kafka`]), the ClickHouse
//! client ([`clickhouse`]), `/metrics` `/healthz` `/readyz` ([`ops`]), logging
//! ([`telemetry`]), publishing records to their topics ([`publish`]), label-name rules ([`labels`]), JSON lines from log agents as log records ([`json_lines`]), the request tenant ([`tenant`]), one read of a topic shared by a sink and a processor ([`tap`]) and a
//! clean stop on SIGTERM ([`shutdown`]).

pub mod auth;
pub mod clickhouse;
pub mod config;
pub mod json_lines;
pub mod kafka;
pub mod labels;
pub mod metric_help;
pub mod ops;
pub mod publish;
pub mod registry;
pub mod shutdown;
pub mod sql_queries;
pub mod tap;
pub mod telemetry;
pub mod tenant;
pub mod tls;

pub use config::Config;
