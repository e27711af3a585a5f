//! The log processor: reads `obs.logs.ingest` (what the collectors received while log
//! pipelines are configured) and `obs.logs.raw` (JSON lines from log agents, normalised by
//! `obs_runtime::json_lines`), runs each record through the first pipeline that selects its
//! stream, and writes `obs.logs` partition for partition; records a stage cannot process go
//! to `obs.dlq` with the pipeline, stage and reason; records a `route` stage selects go to
//! its topic.
//!
//! Exactly once without transactions: input partition `p` (of either input) is written to
//! `obs.logs` partition `p` only by this processor, one output message per input message
//! (empty when every record was dropped or failed), in order, each carrying the last offset
//! of each input it reflects in the headers `obs-ingest-offset` and `obs-raw-offset`. At
//! start, the last message of each owned `obs.logs` partition says where each input
//! resumes; where it says nothing, the group's committed offset (else the beginning).
//! Dead letters and routed records are written before their message's output, so a crash
//! between the two writes them again (they are at least once).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use obs_runtime::publish::Outgoing;
use obs_runtime::{Config, ops, shutdown};
use obs_schemas::Topic;
use obs_schemas::records::{DeadLetter, LogBatch, LogRecord};
use obs_schemas::wire::DynamicWriter;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use super::pipeline::{Outcome, Pipeline, PipelineConfig};
use crate::processor::{self, Wiring};
use crate::state;

/// The header naming the last `obs.logs.ingest` offset an `obs.logs` message reflects.
pub const INGEST_OFFSET_HEADER: &str = "obs-ingest-offset";
/// The header naming the last `obs.logs.raw` offset an `obs.logs` message reflects.
pub const RAW_OFFSET_HEADER: &str = "obs-raw-offset";

/// The inputs of the log processor: what the collectors received, and JSON lines from log
/// agents; each with the header its outputs carry.
const INPUTS: [(Topic, &str); 2] = [
    (Topic::LogsIngest, INGEST_OFFSET_HEADER),
    (Topic::LogsRaw, RAW_OFFSET_HEADER),
];

/// The pipelines file: `[[pipelines]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelinesFile {
    pipelines: Vec<PipelineConfig>,
}

/// The configured pipelines, in order; errors name the file, pipeline and stage.
pub fn load(path: &str, key: &str) -> anyhow::Result<Vec<Pipeline>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading [logs] pipelines_file {path}"))?;
    let file: PipelinesFile =
        toml::from_str(&text).with_context(|| format!("{path}: not a valid pipelines file"))?;
    let dir = std::path::Path::new(path)
        .parent()
        .unwrap_or(std::path::Path::new("."));
    file.pipelines
        .iter()
        .map(|p| Pipeline::new(p, key.as_bytes(), dir).map_err(|e| anyhow::anyhow!("{path}: {e}")))
        .collect()
}

/// Where input partition `p` of each input resumes: after the offsets the last
/// `obs.logs` message of partition `p` names, where it names them (`None`: the group's
/// committed offset).
fn resume_offsets(
    brokers: &obs_runtime::config::KafkaConfig,
    p: i32,
) -> anyhow::Result<[Option<i64>; 2]> {
    let consumer = state::reader(brokers)?;
    let topic = Topic::Logs.name();
    let (low, high) = consumer
        .fetch_watermarks(topic, p, Duration::from_secs(10))
        .with_context(|| format!("reading the end offset of {topic}/{p}"))?;
    let mut found = [None, None];
    state::read_messages_with(&consumer, topic, p, (high - 1).max(low), high, |m| {
        for (i, (_, header)) in INPUTS.iter().enumerate() {
            found[i] = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == *header)
                    .and_then(|h| h.value)
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(|b| i64::from_be_bytes(b) + 1)
            });
        }
    })?;
    Ok(found)
}

/// Where `obs.logs.raw` partition `p` starts when no output names it: the processor
/// group's committed offset, else where the raw-logs sink (which stores `obs.logs.raw`
/// while no pipelines are configured) left off, so turning pipelines on stores no line
/// twice; else the beginning.
fn raw_start(cfg: &Config, consumer: &StreamConsumer, p: i32) -> anyhow::Result<Offset> {
    let topic = Topic::LogsRaw.name();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, p);
    let committed = |c: &StreamConsumer| -> anyhow::Result<Option<i64>> {
        let got = c
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .with_context(|| format!("reading the committed offset of {topic}/{p}"))?;
        Ok(match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
    };
    if let Some(o) = committed(consumer)? {
        return Ok(Offset::Offset(o));
    }
    let sink = obs_runtime::kafka::consumer(
        &cfg.kafka,
        &format!("{}-otel_logs_raw", cfg.sink.group_prefix),
        topic,
    )?;
    Ok(committed(&sink)?.map_or(Offset::Beginning, Offset::Offset))
}

/// What the pipelines made of one input message.
#[derive(Debug, Default, PartialEq)]
pub struct Processed {
    /// Records to store.
    pub kept: Vec<LogRecord>,
    /// Records a `drop` or `sample` stage dropped.
    pub dropped: usize,
    /// Records a `route` stage sent elsewhere, with their topic.
    pub routed: Vec<(String, LogRecord)>,
    /// Records a stage failed, with the error.
    pub failed: Vec<(LogRecord, String)>,
}

/// Runs each record through the first pipeline that selects it (records no pipeline
/// selects are kept as they are).
pub fn process(pipelines: &[Pipeline], records: Vec<LogRecord>) -> Processed {
    let mut out = Processed::default();
    for r in records {
        let Some(p) = pipelines.iter().find(|p| p.selects(&r)) else {
            out.kept.push(r);
            continue;
        };
        match p.apply(r.clone()) {
            Ok(Outcome::Keep(r)) => out.kept.push(r),
            Ok(Outcome::Drop) => out.dropped += 1,
            Ok(Outcome::Route(topic, r)) => out.routed.push((topic, r)),
            Err(e) => out.failed.push((r, e.to_string())),
        }
    }
    out
}

/// Sends the records of `route` stages to their topics, each made (with `raw_partitions`
/// partitions) and given `obs.logs`'s value schema on first use. Like dead letters, they
/// are written before their input message's `obs.logs` output: at least once.
struct Routes {
    kafka: obs_runtime::config::KafkaConfig,
    codec: std::sync::Arc<obs_schemas::wire::Codec>,
    writers: HashMap<String, DynamicWriter>,
}

impl Routes {
    /// Sends `routed` (from input partition `p`) until acknowledged; false when a shutdown
    /// interrupted.
    async fn send(
        &mut self,
        publisher: &obs_runtime::publish::Publisher,
        p: i32,
        routed: Vec<(String, LogRecord)>,
    ) -> bool {
        let mut by_topic: BTreeMap<String, Vec<LogRecord>> = BTreeMap::new();
        for (topic, r) in routed {
            by_topic.entry(topic).or_default().push(r);
        }
        let mut backoff = Duration::from_millis(200);
        for (topic, records) in by_topic {
            let batch = LogBatch { records };
            loop {
                match self.try_send(publisher, p, &topic, &batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(topic, error = %format!("{e:#}"), "routed records not written; trying again");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown::wait() => return false,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        true
    }

    async fn try_send(
        &mut self,
        publisher: &obs_runtime::publish::Publisher,
        p: i32,
        topic: &str,
        batch: &LogBatch,
    ) -> anyhow::Result<()> {
        if !self.writers.contains_key(topic) {
            let n = self.kafka.raw_partitions;
            obs_runtime::kafka::ensure_named_topics(&self.kafka, &[(topic.to_string(), n)]).await?;
            let schema = Topic::Logs.value_schema().expect("obs.logs is Avro");
            let writer = self.codec.register(topic, schema).await?;
            self.writers.insert(topic.to_string(), writer);
        }
        let bytes = self.writers[topic].encode_ser(batch)?;
        let partition = p % self.kafka.raw_partitions.max(1);
        publisher
            .publish_encoded(topic, &[(partition, Vec::new(), bytes)])
            .await?;
        Ok(())
    }
}

/// Runs the log processor until a shutdown is asked for; returns at once when no
/// pipelines are configured.
pub async fn run(cfg: Config, ready: ops::Readiness) -> anyhow::Result<()> {
    if cfg.logs.pipelines_file.is_empty() {
        tracing::info!("[logs] pipelines_file is empty: no log pipelines");
        return Ok(());
    }
    ready.report(
        "logs",
        Some("the log processor is finding where to resume".into()),
    );
    let pipelines = load(&cfg.logs.pipelines_file, &cfg.logs.redact_key)?;
    let Wiring {
        counts,
        codec,
        publisher,
        owned,
        consumer,
    } = processor::connect(&cfg, "logs", Topic::LogsIngest).await?;
    for (input, _) in INPUTS {
        anyhow::ensure!(
            counts[&input] == counts[&Topic::Logs],
            "{input} has {} partitions and obs.logs {}: the log processor writes partition for partition, so they must be equal",
            counts[&input],
            counts[&Topic::Logs]
        );
    }
    let mut tpl = TopicPartitionList::new();
    // Per owned partition, the last offset of each input reflected in obs.logs.
    let mut last: HashMap<i32, [Option<i64>; 2]> = HashMap::new();
    for &p in &owned {
        let brokers = cfg.kafka.clone();
        let from = tokio::task::spawn_blocking(move || resume_offsets(&brokers, p)).await??;
        for (i, (input, _)) in INPUTS.iter().enumerate() {
            let offset = match from[i] {
                Some(o) => Offset::Offset(o),
                None if *input == Topic::LogsRaw => raw_start(&cfg, &consumer, p)?,
                None => Offset::Stored,
            };
            tpl.add_partition_offset(input.name(), p, offset)?;
        }
        last.insert(p, from.map(|o| o.map(|next| next - 1)));
    }
    consumer
        .assign(&tpl)
        .context("assigning the obs.logs.ingest and obs.logs.raw partitions")?;
    let mut routes = Routes {
        kafka: cfg.kafka.clone(),
        codec: codec.clone(),
        writers: HashMap::new(),
    };
    tracing::info!(partitions = ?owned, pipelines = pipelines.len(), "log processor started");
    ready.report("logs", None);
    loop {
        let m = tokio::select! {
            m = consumer.recv() => m,
            _ = shutdown::wait() => break,
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading the log processor's input");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let (p, offset) = (m.partition(), m.offset());
        let raw = m.topic() == Topic::LogsRaw.name();
        let input = if raw {
            Topic::LogsRaw
        } else {
            Topic::LogsIngest
        };
        let (records, undecodable) = match m.payload() {
            // JSON lines without a time of their own take the message's, so a record read
            // again after a restart is the same record.
            Some(bytes) if raw => {
                let now_ns = m.timestamp().to_millis().map_or_else(
                    || chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
                    |ms| ms * 1_000_000,
                );
                match obs_runtime::json_lines::parse(bytes, now_ns) {
                    Ok(b) => (b.records, None),
                    Err(e) => (Vec::new(), Some((bytes.to_vec(), e))),
                }
            }
            Some(bytes) => match obs_runtime::registry::decode::<LogBatch>(&codec, bytes).await {
                Ok(b) => (b.records, None),
                Err(e) => (Vec::new(), Some((bytes.to_vec(), e.to_string()))),
            },
            None => (Vec::new(), None),
        };
        let processed = process(&pipelines, records);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let letter = |value: Vec<u8>, error: String| Outgoing {
            partition: 0,
            value: DeadLetter {
                topic: input.name().into(),
                partition: p,
                offset,
                key: m.key().map(<[u8]>::to_vec),
                value: Some(value),
                stage: "log pipeline".into(),
                error,
                failed_at_ms: now_ms,
            },
            headers: Vec::new(),
        };
        let mut letters: Vec<Outgoing<DeadLetter>> = processed
            .failed
            .iter()
            .map(|(r, e)| letter(serde_json::to_vec(r).expect("records serialise"), e.clone()))
            .collect();
        if let Some((bytes, e)) = undecodable {
            letters.push(letter(bytes, format!("undecodable {input} message: {e}")));
        }
        metrics::counter!("obs_logs_pipeline_records_total", "outcome" => "stored")
            .increment(processed.kept.len() as u64);
        metrics::counter!("obs_logs_pipeline_records_total", "outcome" => "dropped")
            .increment(processed.dropped as u64);
        metrics::counter!("obs_logs_pipeline_records_total", "outcome" => "failed")
            .increment(processed.failed.len() as u64);
        if !letters.is_empty() && publisher.deliver(Topic::Dlq, letters).await.is_none() {
            break;
        }
        metrics::counter!("obs_logs_pipeline_records_total", "outcome" => "routed")
            .increment(processed.routed.len() as u64);
        if !processed.routed.is_empty() && !routes.send(&publisher, p, processed.routed).await {
            break;
        }
        let positions = last.entry(p).or_default();
        positions[usize::from(raw)] = Some(offset);
        let headers = INPUTS
            .iter()
            .zip(positions.iter())
            .filter_map(|((_, header), o)| {
                o.map(|o| (header.to_string(), o.to_be_bytes().to_vec()))
            })
            .collect();
        let out = Outgoing {
            partition: p,
            value: LogBatch {
                records: processed.kept,
            },
            headers,
        };
        if publisher.deliver(Topic::Logs, vec![out]).await.is_none() {
            break;
        }
        // Informational (lag); where to resume is read from obs.logs.
        let mut commit = TopicPartitionList::new();
        commit.add_partition_offset(input.name(), p, Offset::Offset(offset + 1))?;
        if let Err(e) = consumer.commit(&commit, CommitMode::Async) {
            tracing::debug!(error = %e, "committing input offsets (informational)");
        }
    }
    tracing::info!("log processor stopped");
    Ok(())
}
