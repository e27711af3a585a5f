//! Checkpoints of the stream processors' partitions on `obs.processor.state`: each one
//! written after every output before it was acknowledged, keyed `<processor>/<partition>`
//! on state partition `partition % state partitions`, the latest read back at start. A
//! checkpoint is JSON compressed with LZ4 (its repeated field names and ids compress
//! several-fold); plain JSON, as earlier versions wrote it, is still read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_schemas::Topic;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first bytes of an LZ4-compressed checkpoint (a plain one is JSON, starting `{`).
const LZ4_MAGIC: &[u8] = b"LZ4J";

/// How many messages back from the end of a state partition are read first.
const TAIL: i64 = 512;

/// A checkpoint as stored: JSON compressed with LZ4.
pub fn to_bytes<T: Serialize>(checkpoint: &T) -> Vec<u8> {
    let json = serde_json::to_vec(checkpoint).expect("checkpoints serialise");
    let mut out = LZ4_MAGIC.to_vec();
    out.extend(lz4_flex::compress_prepend_size(&json));
    out
}

/// A stored checkpoint: compressed as [`to_bytes`] writes it, or plain JSON.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    match bytes.strip_prefix(LZ4_MAGIC) {
        Some(compressed) => {
            let json = lz4_flex::decompress_size_prepended(compressed)
                .context("decompressing the checkpoint")?;
            Ok(serde_json::from_slice(&json)?)
        }
        None => Ok(serde_json::from_slice(bytes)?),
    }
}

/// The key of `processor`'s checkpoints of input partition `partition`.
pub fn key(processor: &str, partition: i32) -> Vec<u8> {
    format!("{processor}/{partition}").into_bytes()
}

/// Writes `(state partition, key, checkpoint)` messages until the broker acknowledges them,
/// backing off; false when a shutdown interrupted.
pub async fn write(
    publisher: &obs_runtime::publish::Publisher,
    messages: &[(i32, Vec<u8>, Vec<u8>)],
) -> bool {
    publisher
        .deliver_encoded(Topic::ProcessorState.name(), messages)
        .await
}

/// The latest readable checkpoint of `processor` for each of `partitions` whose
/// `version_of` is `version` (partitions with none are absent); the state topic has
/// `state_partitions` partitions.
pub fn load_latest<T: DeserializeOwned>(
    brokers: &obs_runtime::config::KafkaConfig,
    processor: &str,
    partitions: &[i32],
    state_partitions: i32,
    version_of: impl Fn(&T) -> u32,
    version: u32,
) -> anyhow::Result<HashMap<i32, T>> {
    let consumer = reader(brokers)?;
    let topic = Topic::ProcessorState.name();
    let mut found: HashMap<i32, T> = HashMap::new();
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
        let keys: HashMap<Vec<u8>, i32> = wanted.iter().map(|&p| (key(processor, p), p)).collect();
        let mut start = (high - TAIL).max(low);
        loop {
            read_messages(&consumer, topic, sp, start, high, |offset, k, v| {
                let (Some(k), Some(v)) = (k, v) else {
                    return;
                };
                let Some(&p) = keys.get(k) else {
                    return;
                };
                match from_bytes::<T>(v) {
                    Ok(cp) if version_of(&cp) == version => {
                        found.insert(p, cp);
                    }
                    Ok(cp) => tracing::warn!(
                        processor,
                        partition = p,
                        version = version_of(&cp),
                        "ignoring a checkpoint of another version"
                    ),
                    Err(e) => {
                        tracing::warn!(processor, partition = p, offset, error = %e, "ignoring an unreadable checkpoint")
                    }
                }
            })?;
            if start == low || wanted.iter().all(|p| found.contains_key(p)) {
                break;
            }
            start = low;
        }
    }
    Ok(found)
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
pub fn reader(brokers: &obs_runtime::config::KafkaConfig) -> anyhow::Result<BaseConsumer> {
    obs_runtime::kafka::client_config(brokers)
        .set("group.id", "obs-processor-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka reader")
}
