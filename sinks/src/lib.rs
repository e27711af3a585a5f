//! Sinks: Kafka topics into ClickHouse tables.
//!
//! In: wire-format batches from a raw topic (a consumer group per table). Out: rows in the
//! table, inserted through the `clickhouse` crate. Offsets are committed only after
//! ClickHouse accepted the insert, and each insert carries an
//! `insert_deduplication_token` naming the offsets it holds, so a retried insert is stored
//! once. Messages that cannot be decoded go to `obs.dlq` with the reason.
//!
//! * [`table`]: what a table sink must say (topic, table, row shape, conversion).
//! * [`logs`]: `obs.logs` → `otel_logs`.
//! * [`traces`]: `obs.spans` → `otel_traces`.
//! * [`driver`]: the consume → batch → insert → commit loop shared by every table.

pub mod driver;
pub mod logs;
pub mod table;
pub mod traces;

use obs_runtime::{Config, kafka, ops};

/// Runs every table sink until one fails.
pub async fn run(cfg: Config, ready: ops::Readiness) -> anyhow::Result<()> {
    kafka::ensure_topics(&cfg.kafka).await?;
    let logs = driver::SinkDriver::<logs::OtelLogs>::new(&cfg)?;
    let traces = driver::SinkDriver::<traces::OtelTraces>::new(&cfg)?;
    ready.set(true);
    tokio::try_join!(logs.run(), traces.run()).map(|_| ())
}
