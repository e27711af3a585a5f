//! Checkpoints of the stream processors' partitions on `obs.processor.state`: each one
//! written after every output before it was acknowledged, keyed `<processor>/<partition>`
//! on state partition `partition % state partitions`, the latest read back at start. A
//! checkpoint is JSON compressed with LZ4 (its repeated field names and ids compress
//! several-fold); plain JSON, as earlier versions wrote it, is still read. A checkpoint
//! larger than `[processor] state_part_bytes` (4 MiB; a rollup partition holding many series, a trace partition
//! many open traces) is written as parts under the same key, read back only when every
//! part of it is there: the producer refuses messages over 8 MiB, and one refused
//! checkpoint used to stop its processor for good, retrying.

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

/// The first bytes of one part of a checkpoint written in parts, followed by the write's
/// id (u64), the part's index and the number of parts (u32 each, big-endian).
const PART_MAGIC: &[u8] = b"LZ4P";

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
/// backing off; false when a shutdown interrupted. A checkpoint over `part_bytes` goes in
/// parts (see [`parts`]).
pub async fn write(
    publisher: &obs_runtime::publish::Publisher,
    messages: &[(i32, Vec<u8>, Vec<u8>)],
    part_bytes: usize,
) -> bool {
    if messages.iter().all(|(_, _, v)| v.len() <= part_bytes) {
        return publisher
            .deliver_encoded(Topic::ProcessorState.name(), messages)
            .await;
    }
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let large = messages.iter().filter(|(_, _, v)| v.len() > part_bytes);
    metrics::counter!("obs_processor_state_split_total").increment(large.count() as u64);
    let split: Vec<(i32, Vec<u8>, Vec<u8>)> = messages
        .iter()
        .flat_map(|(sp, k, v)| {
            parts(v, id, part_bytes)
                .into_iter()
                .map(move |part| (*sp, k.clone(), part))
        })
        .collect();
    publisher
        .deliver_encoded(Topic::ProcessorState.name(), &split)
        .await
}

/// `bytes` as one message (when it fits in `part_bytes`) or as parts of write `id`, each
/// framed with [`PART_MAGIC`].
pub fn parts(bytes: &[u8], id: u64, part_bytes: usize) -> Vec<Vec<u8>> {
    if bytes.len() <= part_bytes {
        return vec![bytes.to_vec()];
    }
    let chunks: Vec<&[u8]> = bytes.chunks(part_bytes.max(1)).collect();
    let count = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut part = PART_MAGIC.to_vec();
            part.extend(id.to_be_bytes());
            part.extend((i as u32).to_be_bytes());
            part.extend(count.to_be_bytes());
            part.extend(chunk);
            part
        })
        .collect()
}

/// Puts a key's checkpoint parts back together as they are read, in offset order.
#[derive(Default)]
pub struct Assembly {
    /// The write being assembled: its id and its parts so far.
    current: Option<(u64, Vec<Option<Vec<u8>>>)>,
}

impl Assembly {
    /// Takes one message of the key; returns a whole checkpoint's bytes when this message
    /// is one (a checkpoint in one message, or the last missing part of one). A part of
    /// another write drops the parts gathered so far (that write never finished).
    pub fn add(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        let Some(framed) = message.strip_prefix(PART_MAGIC) else {
            self.current = None;
            return Some(message.to_vec());
        };
        let header = framed.get(..16)?;
        let id = u64::from_be_bytes(header[..8].try_into().ok()?);
        let index = u32::from_be_bytes(header[8..12].try_into().ok()?) as usize;
        let count = u32::from_be_bytes(header[12..16].try_into().ok()?) as usize;
        if index >= count {
            return None;
        }
        if self
            .current
            .as_ref()
            .is_none_or(|(at, parts)| *at != id || parts.len() != count)
        {
            self.current = Some((id, vec![None; count]));
        }
        let (_, parts) = self.current.as_mut().expect("set above");
        parts[index] = Some(framed[16..].to_vec());
        if parts.iter().any(Option::is_none) {
            return None;
        }
        let (_, parts) = self.current.take().expect("set above");
        Some(parts.into_iter().flatten().flatten().collect())
    }
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
            let mut assembling: HashMap<i32, Assembly> = HashMap::new();
            read_messages(&consumer, topic, sp, start, high, |offset, k, v| {
                let (Some(k), Some(v)) = (k, v) else {
                    return;
                };
                let Some(&p) = keys.get(k) else {
                    return;
                };
                let Some(v) = assembling.entry(p).or_default().add(v) else {
                    return; // a part of a checkpoint not yet whole
                };
                match from_bytes::<T>(&v) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_that_fits_is_one_message_as_before() {
        let bytes = to_bytes(&serde_json::json!({"next_offset": 7}));
        assert_eq!(parts(&bytes, 1, 4 << 20), vec![bytes.clone()]);
        assert_eq!(Assembly::default().add(&bytes), Some(bytes));
    }

    #[test]
    fn a_large_checkpoint_goes_in_parts_and_is_whole_only_with_its_last_part() {
        let big: Vec<u64> = (0..50_000).map(|i| i * 7919 % 100_003).collect();
        let bytes = to_bytes(&big);
        let split = parts(&bytes, 42, 1000);
        assert_eq!(split.len(), bytes.len().div_ceil(1000));
        assert!(split.iter().all(|p| p.len() <= 1000 + 20));
        let mut a = Assembly::default();
        for p in &split[..split.len() - 1] {
            assert_eq!(a.add(p), None);
        }
        let whole = a.add(split.last().unwrap()).expect("whole");
        assert_eq!(from_bytes::<Vec<u64>>(&whole).unwrap(), big);
    }

    #[test]
    fn an_unfinished_write_is_never_read_and_does_not_spoil_the_next() {
        let values =
            |seed: u64| -> Vec<u64> { (0..3000).map(|i| (i * 7919 + seed) % 100_003).collect() };
        let (old, new) = (to_bytes(&values(1)), to_bytes(&values(2)));
        let (old, new) = (parts(&old, 1, 100), parts(&new, 2, 100));
        assert!(old.len() > 2 && new.len() > 2);
        let mut a = Assembly::default();
        // Write 1 stopped after two parts (a crash); write 2 finished.
        assert_eq!(a.add(&old[0]), None);
        assert_eq!(a.add(&old[1]), None);
        let mut got = None;
        for p in &new {
            got = a.add(p);
        }
        assert_eq!(from_bytes::<Vec<u64>>(&got.unwrap()).unwrap(), values(2));
        // Parts read from the middle of a write (the tail of a partition) never add up.
        let mut b = Assembly::default();
        assert!(new[1..].iter().all(|p| b.add(p).is_none()));
        // A checkpoint in one message after unfinished parts is read as it is.
        let single = to_bytes(&vec![3u32]);
        assert_eq!(b.add(&single), Some(single));
    }
}
