//! Checkpoints of a partition's trace state on `obs.processor.state`: written after every
//! output before them was acknowledged, read back (the latest per partition) at start.
//!
//! A checkpoint holds what cannot be read again from the input: the counters, the
//! decisions remembered, the partition's time, and where each open trace began (its spans
//! are read again from `obs.spans`). It is JSON (the producer compresses it with lz4).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_schemas::Topic;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use serde::{Deserialize, Serialize};

use super::assembly::{OpenRef, TraceKey};
use super::registry;
use super::servicegraph::EdgeTotals;

/// Format version; a checkpoint of another version is not used (the partition starts over
/// from the group's committed offset).
pub const VERSION: u32 = 1;

/// The state of one `obs.spans` partition after every message below `next_offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`VERSION`].
    pub version: u32,
    /// The `obs.spans` partition.
    pub partition: i32,
    /// Every input message below this offset is reflected.
    pub next_offset: i64,
    /// The partition's event time (ms).
    pub time_ms: Option<i64>,
    /// The partition's time at its last input message (idle time goes on from there).
    #[serde(default)]
    pub input_time_ms: Option<i64>,
    /// The next event-time boundary at which metrics and edges are written (ms).
    pub next_flush_ms: Option<i64>,
    /// Where the current edge window began (ms).
    pub window_start_ms: Option<i64>,
    /// Open traces and where they began.
    pub open: Vec<OpenRef>,
    /// Recent decisions, oldest first.
    pub decisions: Vec<(TraceKey, bool)>,
    /// Span-metric and service-graph counters.
    pub registry: registry::Snapshot,
    /// Edges paired in the current window.
    pub edges: Vec<EdgeTotals>,
    /// Rate-limiting policies' budget state.
    pub sampling: super::sampling::State,
    /// Offset of `obs.spans.sampled` (same partition) after the outputs this checkpoint
    /// reflects.
    pub sampled_end: i64,
    /// Kept spans published after an earlier checkpoint and before a crash, not to publish
    /// again: `(trace id, span id)`.
    pub skip_sampled: Vec<(String, String)>,
}

/// The first bytes of an LZ4-compressed checkpoint (a plain one is JSON, starting `{`).
const LZ4_MAGIC: &[u8] = b"LZ4J";

impl Checkpoint {
    /// The checkpoint as stored: JSON compressed with LZ4 (a checkpoint lists every open
    /// trace; its trace ids and repeated field names compress several-fold).
    pub fn to_bytes(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("checkpoints serialise");
        let mut out = LZ4_MAGIC.to_vec();
        out.extend(lz4_flex::compress_prepend_size(&json));
        out
    }

    /// A stored checkpoint: compressed as [`Checkpoint::to_bytes`] writes it, or plain JSON
    /// (as earlier versions wrote it).
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Checkpoint> {
        match bytes.strip_prefix(LZ4_MAGIC) {
            Some(compressed) => {
                let json = lz4_flex::decompress_size_prepended(compressed)
                    .context("decompressing the checkpoint")?;
                Ok(serde_json::from_slice(&json)?)
            }
            None => Ok(serde_json::from_slice(bytes)?),
        }
    }

    /// The counters as JSON, for comparing two states in tests.
    pub fn registry_json(&self) -> String {
        serde_json::to_string(&self.registry).expect("serialises")
    }
}

/// The key of partition `p`'s checkpoints.
pub fn key(partition: i32) -> Vec<u8> {
    format!("traces/{partition}").into_bytes()
}

/// How many checkpoints back from the end of a state partition are read first.
const TAIL: i64 = 512;

/// The latest checkpoint of each of `partitions` (those with none are absent); the state
/// topic has `state_partitions` partitions and partition `p`'s checkpoints are in
/// `p % state_partitions`.
pub fn load_latest(
    brokers: &str,
    partitions: &[i32],
    state_partitions: i32,
) -> anyhow::Result<HashMap<i32, Checkpoint>> {
    let consumer = reader(brokers)?;
    let topic = Topic::ProcessorState.name();
    let mut found: HashMap<i32, Checkpoint> = HashMap::new();
    let mut by_state: HashMap<i32, Vec<i32>> = HashMap::new();
    for &p in partitions {
        by_state
            .entry(p % state_partitions.max(1))
            .or_default()
            .push(p);
    }
    for (sp, wanted) in by_state {
        let (low, high) = consumer
            .fetch_watermarks(topic, sp, Duration::from_secs(10))
            .with_context(|| format!("reading the end offset of {topic}/{sp}"))?;
        let mut start = (high - TAIL).max(low);
        loop {
            read_range(&consumer, topic, sp, start, high, &wanted, &mut found)?;
            if start == low || wanted.iter().all(|p| found.contains_key(p)) {
                break;
            }
            start = low;
        }
    }
    Ok(found)
}

fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    sp: i32,
    start: i64,
    end: i64,
    wanted: &[i32],
    found: &mut HashMap<i32, Checkpoint>,
) -> anyhow::Result<()> {
    let keys: HashMap<Vec<u8>, i32> = wanted.iter().map(|&p| (key(p), p)).collect();
    read_messages(consumer, topic, sp, start, end, |offset, k, v| {
        let (Some(k), Some(v)) = (k, v) else {
            return;
        };
        let Some(&p) = keys.get(k) else {
            return;
        };
        match Checkpoint::from_bytes(v) {
            Ok(cp) if cp.version == VERSION => {
                found.insert(p, cp);
            }
            Ok(cp) => tracing::warn!(
                partition = p,
                version = cp.version,
                "ignoring a checkpoint of another version"
            ),
            Err(e) => {
                tracing::warn!(partition = p, offset, error = %e, "ignoring an unreadable checkpoint")
            }
        }
    })
}

/// Calls `each(offset, key, payload)` for every message of `topic/partition` in
/// `[start, end)`.
pub fn read_messages(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    mut each: impl FnMut(i64, Option<&[u8]>, Option<&[u8]>),
) -> anyhow::Result<()> {
    read_messages_with(consumer, topic, partition, start, end, |m| {
        each(m.offset(), m.key(), m.payload())
    })
}

/// Calls `each(message)` for every message of `topic/partition` in `[start, end)` (when
/// the headers matter too).
pub fn read_messages_with(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    if start >= end {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning {topic}/{partition}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic}/{partition} did not reach offset {end} within 60 s"
        );
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.with_context(|| format!("reading {topic}/{partition}"))?;
        each(&m);
        if m.offset() + 1 >= end {
            return Ok(());
        }
    }
}

/// A consumer for reading ranges of a topic outside any group's commits.
pub fn reader(brokers: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "obs-processor-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka reader")
}
