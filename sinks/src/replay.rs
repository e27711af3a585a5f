//! `obs replay`: reads a topic's retained messages again and stores the records of a
//! record-time range into the sink tables, the live ones or fresh ones (`--into`,
//! `--database`) for rebuilding after a schema change.
//!
//! Where to start: per partition, the first message produced at or after `from - slack`
//! (Kafka's timestamp lookup): a record is produced after the time it carries, give or
//! take `slack` of clock skew. Where to stop: the partition's end as it was when the replay
//! started, because late records (produced long after their time, e.g. a backlog an agent
//! sends after an outage) can be anywhere after the start. Records are kept when their own
//! time is in `[from, to)`.
//!
//! Nothing twice: messages are read in chunks of fixed offset ranges, and before a chunk is
//! stored the target's rows of the chunk's time span are read back (through the table's
//! record-time column) and compared by content: only rows the target does not hold yet are
//! inserted, as a multiset (two equal records are stored twice only if sent twice). So a
//! range the live sink already stored adds nothing, a gap deleted from a table is filled
//! exactly, and a replay run twice, overlapping, or killed and run again stores each record
//! once. Into the live tables, a replay stops at the live sink's committed offsets: what
//! the sink has not stored yet it will store itself (counted as "left to the live sink").
//! Each chunk's insert carries a deduplication token of its offsets and of the rows it
//! inserts. `obs_replay_log` keeps a row per stored chunk (target, partition, offsets,
//! range): the history of what replays did.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clickhouse::Row;
use obs_runtime::{Config, clickhouse as ch};
use obs_schemas::Topic;
use obs_schemas::wire::{Codec, WireError};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::alerts::ObsAlerts;
use crate::derived_traces::{SampledTraces, ServiceGraphEdges, TraceSummaries};
use crate::driver::{Rows, insert_rows};
use crate::events::ObsEvents;
use crate::logs::OtelLogs;
use crate::metrics::{MetricExemplars, MetricMetadataTable, MetricSamples, MetricSeriesTable};
use crate::raw_logs::RawLogs;
use crate::rollups::MetricRollups;
use crate::stored::{fingerprint, missing};
use crate::table::TableSink;
use crate::traces::OtelTraces;

/// Messages per chunk: chunks start at multiples of this offset, so reruns line up.
const CHUNK: i64 = 2_000;
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// What to replay and where to.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The topic to read.
    pub topic: Topic,
    /// Start of the record-time range, ns since the epoch (inclusive).
    pub from_ns: i64,
    /// End of the record-time range, ns since the epoch (exclusive).
    pub to_ns: i64,
    /// A table to store into instead of the topic's table (topics with one table).
    pub into: Option<String>,
    /// A database to store into, with tables named as the topic's tables.
    pub database: Option<String>,
    /// How far message times may be from record times.
    pub slack: Duration,
    /// Print progress to stderr.
    pub progress: bool,
}

/// What a replay did, per target table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSummary {
    /// The table written.
    pub target: String,
    /// Messages read.
    pub messages: u64,
    /// Rows stored.
    pub stored: u64,
    /// Rows skipped because the target already holds them (stored by the live sink, or by
    /// an earlier replay).
    pub already_stored: u64,
    /// Messages after the live sink's committed offsets, left for it to store (replays into
    /// the live tables only).
    pub left_to_sink: u64,
    /// Rows whose record time is outside the range.
    pub outside_range: u64,
    /// Messages that could not be decoded (left out; the live sink sent them to the DLQ).
    pub undecodable: u64,
}

/// Replays `opts.topic` into every table it feeds; one summary per table.
pub async fn replay(cfg: &Config, opts: &ReplayOptions) -> anyhow::Result<Vec<TableSummary>> {
    if opts.from_ns >= opts.to_ns {
        bail!("--from must be before --to");
    }
    if opts.into.is_some() && opts.database.is_some() {
        bail!("give --into or --database, not both");
    }
    Ok(match opts.topic {
        Topic::Logs => vec![replay_table::<OtelLogs>(cfg, opts).await?],
        Topic::LogsRaw => vec![replay_table::<RawLogs>(cfg, opts).await?],
        Topic::Spans => vec![replay_table::<OtelTraces>(cfg, opts).await?],
        Topic::Events => vec![replay_table::<ObsEvents>(cfg, opts).await?],
        Topic::Alerts => vec![replay_table::<ObsAlerts>(cfg, opts).await?],
        Topic::Traces => vec![replay_table::<TraceSummaries>(cfg, opts).await?],
        Topic::ServiceGraph => vec![replay_table::<ServiceGraphEdges>(cfg, opts).await?],
        Topic::SpansSampled => vec![replay_table::<SampledTraces>(cfg, opts).await?],
        Topic::MetricsRollup => vec![replay_table::<MetricRollups>(cfg, opts).await?],
        Topic::Metrics => {
            if opts.into.is_some() {
                bail!(
                    "obs.metrics feeds four tables (metrics_samples, metrics_series, metrics_metadata, metrics_exemplars): use --database to replay into fresh ones"
                );
            }
            vec![
                replay_table::<MetricSeriesTable>(cfg, opts).await?,
                replay_table::<MetricMetadataTable>(cfg, opts).await?,
                replay_table::<MetricSamples>(cfg, opts).await?,
                replay_table::<MetricExemplars>(cfg, opts).await?,
            ]
        }
        other => bail!("{other} has no sink table to replay into"),
    })
}

/// Checks a `[db.]table` name: letters, digits and `_` only (it is spliced into DDL).
fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        })
}

#[derive(Debug, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LogRow {
    target: String,
    topic: String,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    from_ns: i64,
    to_ns: i64,
}

/// A chunk being read: one partition's offsets `[first, last]`.
struct Chunk<R> {
    first: i64,
    last: i64,
    rows: Vec<R>,
}

async fn replay_table<T: TableSink>(
    cfg: &Config,
    opts: &ReplayOptions,
) -> anyhow::Result<TableSummary> {
    let client = ch::client(&cfg.clickhouse);
    let target = match (&opts.into, &opts.database) {
        (Some(t), _) => t.clone(),
        (None, Some(db)) => format!("{db}.{}", T::TABLE),
        (None, None) => T::TABLE.to_string(),
    };
    if !valid_name(&target) {
        bail!("invalid target table {target:?}: use [database.]table with letters, digits and _");
    }
    if target != T::TABLE && !cfg.clickhouse.cluster.is_empty() {
        // `CREATE TABLE … AS` a distributed table would make a Distributed table over the
        // live tables' shards (or a plain table on one node): neither is a replay target.
        let exists: u8 = client
            .query(&format!("EXISTS TABLE {target}"))
            .fetch_one()
            .await
            .with_context(|| format!("checking that {target} exists"))?;
        if exists == 0 {
            bail!(
                "replay target {target} does not exist: on a cluster ([clickhouse] cluster = {:?}) \
                 create it first on every node, as `obs migrate --print` shows for {} (its _local \
                 table and a Distributed table over it)",
                cfg.clickhouse.cluster,
                T::TABLE
            );
        }
    } else if target != T::TABLE {
        if let Some((db, _)) = target.split_once('.') {
            client
                .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
                .execute()
                .await
                .with_context(|| format!("creating database {db}"))?;
        }
        client
            .query(&format!(
                "CREATE TABLE IF NOT EXISTS {target} AS {}",
                T::TABLE
            ))
            .execute()
            .await
            .with_context(|| format!("creating {target} like {}", T::TABLE))?;
    }
    let consumer: StreamConsumer = obs_runtime::kafka::client_config(&cfg.kafka)
        .set("group.id", "obs-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the replay consumer")?;
    let topic = T::TOPIC.name();
    let slack_ms = opts.slack.as_millis() as i64;
    let positions = tokio::task::block_in_place(|| {
        obs_runtime::kafka::time_range_positions(
            &consumer,
            topic,
            opts.from_ns / 1_000_000 - slack_ms,
            KAFKA_TIMEOUT,
        )
    })?;
    let mut summary = TableSummary {
        target: target.clone(),
        ..Default::default()
    };
    // Into the live table: only what the live sink has committed (it stores the rest).
    let live = (target == T::TABLE).then(|| format!("{}-{}", cfg.sink.group_prefix, T::NAME));
    let committed = match &live {
        Some(group) => {
            let partitions: Vec<i32> = positions.keys().copied().collect();
            Some(tokio::task::block_in_place(|| {
                committed_offsets(&cfg.kafka, group, topic, &partitions)
            })?)
        }
        None => None,
    };
    let mut start: BTreeMap<i32, i64> = BTreeMap::new();
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    for (&p, &(s, e)) in &positions {
        let stop = match &committed {
            Some(c) => e.min(c.get(&p).copied().unwrap_or(s)).max(s),
            None => e,
        };
        summary.left_to_sink += (e - stop) as u64;
        if s < stop {
            start.insert(p, s);
            end.insert(p, stop);
        }
    }
    if start.is_empty() {
        return Ok(summary);
    }
    let mut assign = TopicPartitionList::new();
    for (&p, &o) in &start {
        assign.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    consumer.assign(&assign)?;
    let total: i64 = start.iter().map(|(p, s)| end[p] - s).sum();

    let codec = Arc::new(obs_runtime::registry::codec(cfg));
    let mut table = T::default();
    let mut open: BTreeMap<i32, Chunk<T::Row>> = BTreeMap::new();
    let mut done: BTreeMap<i32, bool> = start.keys().map(|&p| (p, false)).collect();
    let mut last_progress = Instant::now();
    let mut scratch = Vec::new();
    while done.values().any(|d| !d) {
        let msg = tokio::time::timeout(KAFKA_TIMEOUT * 3, consumer.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no message from {topic} for 30 s; is the broker up?"))?
            .with_context(|| format!("reading {topic}"))?;
        let (p, o) = (msg.partition(), msg.offset());
        if done.get(&p).copied().unwrap_or(true) {
            continue;
        }
        let chunk_start = o - o.rem_euclid(CHUNK);
        if open.get(&p).is_some_and(|c| c.first < chunk_start) {
            let c = open.remove(&p).expect("checked");
            flush::<T>(&client, &target, p, c, opts, &mut summary).await?;
        }
        let chunk = open.entry(p).or_insert_with(|| Chunk {
            first: o,
            last: o,
            rows: Vec::new(),
        });
        chunk.last = o;
        summary.messages += 1;
        match decode::<T>(&codec, msg.payload().unwrap_or_default()).await? {
            None => summary.undecodable += 1,
            Some(m) => {
                scratch.clear();
                table.rows(Cow::Owned(m), &mut scratch);
                for row in scratch.drain(..) {
                    match T::row_time_ns(&row) {
                        Some(t) if t < opts.from_ns || t >= opts.to_ns => {
                            summary.outside_range += 1
                        }
                        _ => chunk.rows.push(row),
                    }
                }
            }
        }
        if o + 1 >= end[&p] {
            done.insert(p, true);
        }
        if done[&p]
            && let Some(c) = open.remove(&p)
        {
            flush::<T>(&client, &target, p, c, opts, &mut summary).await?;
        }
        if opts.progress && last_progress.elapsed() > Duration::from_secs(2) {
            last_progress = Instant::now();
            eprintln!(
                "replay {topic} → {target}: {}/{total} messages read, {} rows stored",
                summary.messages, summary.stored
            );
        }
    }
    Ok(summary)
}

/// The live sink's committed offset per partition (absent: it has committed none).
fn committed_offsets(
    kafka: &obs_runtime::config::KafkaConfig,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let client: rdkafka::consumer::BaseConsumer = obs_runtime::kafka::client_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a client for the live sink's offsets")?;
    obs_runtime::kafka::committed(&client, topic, partitions, KAFKA_TIMEOUT)
        .with_context(|| format!("reading the committed offsets of {group}"))
}

async fn decode<T: TableSink>(codec: &Codec, payload: &[u8]) -> anyhow::Result<Option<T::Message>> {
    if let Some(decoded) = T::decode_raw(payload) {
        return Ok(decoded.ok());
    }
    let mut backoff = Duration::from_millis(200);
    for _ in 0..8 {
        match codec.decode::<T::Message>(payload).await {
            Ok(m) => return Ok(Some(m)),
            Err(WireError::Malformed(_)) => return Ok(None),
            Err(e @ WireError::Registry(_)) => {
                tracing::warn!(error = %e, "schema registry unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
    bail!("the schema registry does not answer; check [registry] url")
}

/// Stores the chunk's rows that the target does not hold yet (deduplicated by a token of
/// its offsets and of those rows), then logs the chunk.
async fn flush<T: TableSink>(
    client: &clickhouse::Client,
    target: &str,
    partition: i32,
    mut chunk: Chunk<T::Row>,
    opts: &ReplayOptions,
    summary: &mut TableSummary,
) -> anyhow::Result<()> {
    let topic = T::TOPIC.name();
    // The crate quotes a table name as one identifier: the database goes on the client.
    let (db_client, table) = match target.split_once('.') {
        Some((db, table)) => (client.clone().with_database(db), table),
        None => (client.clone(), target),
    };
    let missing = missing::<T>(&db_client, table, &chunk.rows)
        .await
        .with_context(|| format!("reading {target}'s rows of the chunk's time span"))?;
    let before = chunk.rows.len();
    chunk.rows = chunk
        .rows
        .into_iter()
        .enumerate()
        .filter(|(i, _)| missing.binary_search(i).is_ok())
        .map(|(_, row)| row)
        .collect();
    summary.already_stored += (before - chunk.rows.len()) as u64;
    if !chunk.rows.is_empty() {
        let content = chunk
            .rows
            .iter()
            .fold(0u128, |acc, r| acc.rotate_left(7) ^ fingerprint(r));
        let token = format!(
            "replay:{target}/{topic}/{partition}:{}-{}@{}-{}:{content:032x}",
            chunk.first, chunk.last, opts.from_ns, opts.to_ns
        );
        insert_rows(&db_client, table, Rows::All(&chunk.rows), &token)
            .await
            .with_context(|| format!("inserting into {target}"))?;
        summary.stored += chunk.rows.len() as u64;
    }
    let log = LogRow {
        target: target.to_string(),
        topic: topic.to_string(),
        partition,
        first_offset: chunk.first,
        last_offset: chunk.last,
        from_ns: opts.from_ns,
        to_ns: opts.to_ns,
    };
    let mut insert = client.insert::<LogRow>("obs_replay_log").await?;
    insert.write(&log).await?;
    insert.end().await.context("writing obs_replay_log")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_are_plain_identifiers() {
        assert!(valid_name("otel_logs_v2"));
        assert!(valid_name("rebuild.otel_logs"));
        assert!(!valid_name("a.b.c"));
        assert!(!valid_name("x; DROP TABLE y"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name(""));
    }
}
