//! `obs sql --topic obs.logs --from -10m "SELECT …"`: DataFusion SQL over the records of a
//! topic whose own time is in a range, read from the broker (not from ClickHouse), for
//! checking a backfill or debugging a pipeline before the data lands.
//!
//! Which messages: per partition, from the first message produced at or after
//! `from − slack` (Kafka's timestamp lookup) to the partition's end when the query
//! starts, as `obs replay` reads; records are kept when their own time is in
//! `[from, to)`. The records are one table, `records` (see [`super::tables`]).

use std::time::Duration;

use anyhow::Context;
use datafusion::arrow::record_batch::RecordBatch;
use obs_runtime::Config;
use obs_schemas::Topic;

use super::tables::Rows;
use crate::state;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// What to query.
#[derive(Debug, Clone)]
pub struct TopicQuery {
    /// The topic to read.
    pub topic: Topic,
    /// Start of the record-time range, ns since the epoch (inclusive).
    pub from_ns: i64,
    /// End of the record-time range, ns since the epoch (exclusive).
    pub to_ns: i64,
    /// How far message times may be from record times.
    pub slack: Duration,
    /// The statement, over the table `records`.
    pub sql: String,
}

/// The answer and what was read for it.
#[derive(Debug)]
pub struct TopicAnswer {
    /// The statement's result.
    pub batches: Vec<RecordBatch>,
    /// Messages read.
    pub messages: u64,
    /// Records in the range (rows of `records`).
    pub records: u64,
    /// Records read but outside the range.
    pub outside_range: u64,
}

/// Reads the topic's records of the range and runs the statement over them.
pub async fn run(cfg: &Config, q: &TopicQuery) -> anyhow::Result<TopicAnswer> {
    anyhow::ensure!(q.from_ns < q.to_ns, "--from must be before --to");
    let mut rows = Rows::empty(q.topic)?;
    // Plan first: a statement that cannot run is refused before the topic is read.
    super::plan(rows.to_batch()?, &q.sql).await?;

    let brokers = cfg.kafka.clone();
    let topic = q.topic.name();
    let from_ms = q.from_ns / 1_000_000 - q.slack.as_millis() as i64;
    let payloads = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<u8>>> {
        let reader = state::reader(&brokers)?;
        let positions =
            obs_runtime::kafka::time_range_positions(&reader, topic, from_ms, KAFKA_TIMEOUT)?;
        let mut out = Vec::new();
        for (p, (start, end)) in positions {
            state::read_messages(&reader, topic, p, start, end, |_, _, payload| {
                if let Some(v) = payload {
                    out.push(v.to_vec());
                }
            })?;
        }
        Ok(out)
    })
    .await
    .context("reading task")??;
    let codec = obs_runtime::registry::codec(cfg);
    let mut outside = 0;
    for p in &payloads {
        outside += rows.add_message(&codec, p, (q.from_ns, q.to_ns)).await?;
    }
    let batches = super::plan(rows.to_batch()?, &q.sql)
        .await?
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("the statement {:?} failed: {e}", q.sql))?;
    Ok(TopicAnswer {
        batches,
        messages: payloads.len() as u64,
        records: rows.len() as u64,
        outside_range: outside as u64,
    })
}
