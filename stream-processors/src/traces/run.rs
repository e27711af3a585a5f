//! The trace processor on Kafka (part of `obs processor`).
//!
//! Start: each owned `obs.spans` partition's latest checkpoint is read from
//! `obs.processor.state`; the kept spans published after it (before a crash) are read from
//! `obs.spans.sampled` so they are not published twice; input is read again from the
//! oldest open trace of the checkpoint. A partition without a checkpoint starts at the
//! group's committed offset, else at the beginning.
//!
//! Loop: messages go to their partition's state machine; outputs are published at least
//! every 200 ms; a partition without input for `idle_partition_ms` lets its time go on at the wall clock's pace
//! (checkpointed first, so a restart moves the same way); every `checkpoint_interval_ms`
//! the outputs are published, then the changed partitions' checkpoints, then the group's
//! offsets (for lag; the checkpoints are what a restart reads).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_runtime::publish::{Outgoing, Publisher, partition_of};
use obs_runtime::{Config, ops, shutdown};
use obs_schemas::Topic;
use obs_schemas::records::{Span, SpanBatch, TraceSummary, TraceSummaryBatch};
use obs_schemas::wire::Codec;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::assembly::Limits;
use super::checkpoint;
use super::partition::{Outputs, Partition, Settings};
use super::sampling::Policies;
use super::servicegraph::ServiceGraph;
use super::spanmetrics::SpanMetrics;
use crate::processor::{self, Checkpointed, Input, Wiring};
use crate::state;

/// Series of span and service-graph metrics not updated for this long stop being written.
const STALE_MS: i64 = 15 * 60 * 1000;

/// Most spans a kept-spans message carries.
const SPANS_PER_MESSAGE: usize = 2_000;
/// Most trace summaries in one `obs.traces` message.
const SUMMARIES_PER_MESSAGE: usize = 2_000;

/// The partitions' settings from `[traces]`.
pub fn settings(cfg: &Config) -> anyhow::Result<Settings> {
    let tc = &cfg.traces;
    let policies = if tc.sampling_file.is_empty() {
        Policies::keep_all()
    } else {
        Policies::load(&tc.sampling_file)?
    };
    Ok(Settings {
        limits: Limits {
            decision_wait_ms: tc.decision_wait_ms as i64,
            max_age_ms: tc.max_trace_age_ms as i64,
            max_traces: tc.max_open_traces,
            max_bytes: tc.max_open_bytes,
        },
        metrics_interval_ms: tc.metrics_interval_ms as i64,
        stale_ms: STALE_MS,
        decision_cache_size: tc.decision_cache_size,
        spanmetrics: SpanMetrics::new(&tc.dimensions, tc.spanmetrics_buckets.clone()),
        servicegraph: ServiceGraph {
            buckets: tc.servicegraph_buckets.clone(),
            peer_attributes: tc.peer_attributes.clone(),
        },
        publish_sampled: publish_sampled(cfg, !policies.is_empty())?,
        policies,
    })
}

/// Whether kept traces' spans are published to `obs.spans.sampled` (`[traces]
/// publish_sampled`; `auto`: when policies choose them or something of this configuration
/// reads that topic).
fn publish_sampled(cfg: &Config, has_policies: bool) -> anyhow::Result<bool> {
    Ok(match cfg.traces.publish_sampled.as_str() {
        "always" => true,
        "never" => false,
        _ => {
            let sql_reads_it = !cfg.sql.queries_file.is_empty()
                && obs_runtime::sql_queries::load(&cfg.sql.queries_file)?
                    .iter()
                    .any(|q| q.topic == Topic::SpansSampled.name());
            has_policies || cfg.sink.traces_from == "sampled" || sql_reads_it
        }
    })
}

/// Runs the trace processor until a shutdown is asked for. While it restores its
/// partitions, `ready` reports it as a problem (`/readyz` answers 503).
pub async fn run(
    cfg: Config,
    ready: ops::Readiness,
    joiner: Option<obs_runtime::tap::Joiner>,
) -> anyhow::Result<()> {
    if !cfg.traces.enabled {
        tracing::info!("[traces] enabled = false: spans are not correlated");
        return Ok(());
    }
    ready.report(
        "traces",
        Some("the trace processor is restoring its partitions".into()),
    );
    let settings = Arc::new(settings(&cfg)?);
    if !settings.publish_sampled {
        tracing::info!(
            "kept traces are not published to obs.spans.sampled: no tail-sampling policies and nothing here reads that topic, so every span is on obs.spans ([traces] publish_sampled = \"always\" publishes them)"
        );
    }
    let Wiring {
        counts,
        codec,
        publisher,
        owned,
        consumer,
    } = processor::connect(&cfg, "traces", Topic::Spans).await?;
    let partitions = restore(&cfg, &consumer, &owned, &counts, &codec, &settings).await?;
    let starts = partitions
        .values()
        .map(|p| (p.id(), p.read_from()))
        .collect();
    // Read along with the sinks' reader of obs.spans at most half an idle partition's
    // time behind it, so that waiting never moves a partition's time on.
    let patience = Duration::from_millis(cfg.traces.idle_partition_ms / 2);
    let mut input = Input::start(consumer, Topic::Spans, starts, joiner, patience).await?;
    tracing::info!(
        partitions = ?owned,
        policies = !settings.policies.is_empty(),
        reads_along_with_the_sinks = input.reads_along(),
        "trace processor started"
    );
    ready.report("traces", None);
    let mut t = Traces {
        idle: Duration::from_millis(cfg.traces.idle_partition_ms),
        checkpoint_every: Duration::from_millis(cfg.traces.checkpoint_interval_ms),
        last_heard: partitions.keys().map(|&p| (p, Instant::now())).collect(),
        partitions,
        publisher,
        codec,
        state_partitions: counts[&Topic::ProcessorState],
        state_part_bytes: cfg.processor.state_part_bytes,
        sampled_partitions: counts[&Topic::SpansSampled],
        out: Outputs::default(),
        dirty: HashSet::new(),
        last_publish: Instant::now(),
        last_checkpoint: Instant::now(),
    };
    processor::drive(&mut t, &mut input).await;
    tracing::info!("trace processor stopped");
    Ok(())
}

/// Where the consumer reads `obs.spans` partition `p` next (0 when not known yet).
fn position_of(consumer: &StreamConsumer, p: i32) -> i64 {
    consumer
        .position()
        .ok()
        .and_then(
            |tpl| match tpl.find_partition(Topic::Spans.name(), p)?.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            },
        )
        .unwrap_or(0)
}

/// Each owned partition as its latest checkpoint left it.
async fn restore(
    cfg: &Config,
    consumer: &StreamConsumer,
    owned: &[i32],
    counts: &HashMap<Topic, i32>,
    codec: &Codec,
    settings: &Arc<Settings>,
) -> anyhow::Result<BTreeMap<i32, Partition>> {
    let brokers = cfg.kafka.clone();
    let (state_n, sampled_n) = (counts[&Topic::ProcessorState], counts[&Topic::SpansSampled]);
    let wanted = owned.to_vec();
    // Blocking reads: the checkpoints, the kept spans after them, the ends of the topics.
    let (mut cps, mut raw, ends) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let cps = checkpoint::load_latest(&brokers, &wanted, state_n)?;
        let reader = state::reader(&brokers)?;
        let mut raw: HashMap<i32, Vec<Vec<u8>>> = HashMap::new();
        let mut ends = HashMap::new();
        for &p in &wanted {
            let sp = p % sampled_n;
            let (_, high) = reader
                .fetch_watermarks(Topic::SpansSampled.name(), sp, Duration::from_secs(10))
                .context("reading the end of obs.spans.sampled")?;
            let (low, _) = reader
                .fetch_watermarks(Topic::Spans.name(), p, Duration::from_secs(10))
                .context("reading the start of obs.spans")?;
            ends.insert(p, (high, low));
            if let Some(cp) = cps.get(&p) {
                let mut got = Vec::new();
                state::read_messages(
                    &reader,
                    Topic::SpansSampled.name(),
                    sp,
                    cp.sampled_end,
                    high,
                    |_, _, v| {
                        if let Some(v) = v {
                            got.push(v.to_vec());
                        }
                    },
                )?;
                raw.insert(p, got);
            }
        }
        Ok((cps, raw, ends))
    })
    .await
    .context("restore task")??;
    let committed = consumer
        .committed_offsets(
            {
                let mut tpl = TopicPartitionList::new();
                for &p in owned {
                    tpl.add_partition(Topic::Spans.name(), p);
                }
                tpl
            },
            Duration::from_secs(10),
        )
        .context("reading the committed offsets of obs.spans")?;
    let mut out = BTreeMap::new();
    for &p in owned {
        let (sampled_end, spans_low) = ends[&p];
        let partition = match cps.remove(&p) {
            Some(cp) => {
                let mut published = Vec::new();
                for bytes in raw.remove(&p).unwrap_or_default() {
                    let batch: SpanBatch = codec
                        .decode(&bytes)
                        .await
                        .context("decoding a kept-spans message")?;
                    published.extend(batch.spans.into_iter().map(|s| (s.trace_id, s.span_id)));
                }
                tracing::info!(
                    partition = p,
                    next_offset = cp.next_offset,
                    open_traces = cp.open.len(),
                    kept_spans_after_checkpoint = published.len(),
                    "restoring from checkpoint"
                );
                Partition::restore(cp, settings.clone(), published, sampled_end)
            }
            None => {
                let start = match committed
                    .find_partition(Topic::Spans.name(), p)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => o,
                    _ => spans_low,
                };
                tracing::info!(
                    partition = p,
                    start,
                    "no checkpoint: starting at the committed offset"
                );
                Partition::new(p, settings.clone(), start, sampled_end)
            }
        };
        out.insert(p, partition);
    }
    Ok(out)
}

struct Traces {
    partitions: BTreeMap<i32, Partition>,
    last_heard: HashMap<i32, Instant>,
    idle: Duration,
    checkpoint_every: Duration,
    publisher: Publisher,
    codec: Arc<Codec>,
    state_partitions: i32,
    /// `[processor] state_part_bytes`.
    state_part_bytes: usize,
    sampled_partitions: i32,
    out: Outputs,
    dirty: HashSet<i32>,
    last_publish: Instant,
    last_checkpoint: Instant,
}

impl Checkpointed for Traces {
    async fn handle<M: Message + Sync>(&mut self, m: &M) {
        let (p, offset) = (m.partition(), m.offset());
        let spans: Vec<Span> = match m.payload() {
            Some(bytes) => {
                match obs_runtime::registry::decode::<SpanBatch>(&self.codec, bytes).await {
                    Ok(b) => b.spans,
                    Err(e) => {
                        metrics::counter!("obs_traces_undecodable_messages_total").increment(1);
                        tracing::warn!(partition = p, offset, error = %e, "undecodable obs.spans message skipped (the span sink sends it to obs.dlq)");
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        metrics::counter!("obs_traces_spans_total").increment(spans.len() as u64);
        if let Some(part) = self.partitions.get_mut(&p) {
            part.handle(offset, spans, &mut self.out);
            self.last_heard.insert(p, Instant::now());
            self.dirty.insert(p);
        }
    }

    /// Idle partitions, publishing and checkpointing; false when a shutdown interrupted.
    async fn step(&mut self, consumer: &StreamConsumer) -> bool {
        let ids: Vec<i32> = self.partitions.keys().copied().collect();
        for p in ids {
            let quiet = self.last_heard[&p].elapsed();
            if quiet < self.idle {
                continue;
            }
            let part = self.partitions.get_mut(&p).expect("owned");
            if part.replaying() {
                part.caught_up(position_of(consumer, p));
            }
            if !part.idle_advance(quiet.as_millis() as i64) {
                continue;
            }
            // The move is checkpointed before it takes effect: a restart moves the same way.
            if !self.publish().await {
                return false;
            }
            self.dirty.insert(p);
            if !self.checkpoint(consumer).await {
                return false;
            }
            let part = self.partitions.get_mut(&p).expect("owned");
            part.decide(&mut self.out);
        }
        let due = self.last_publish.elapsed() >= Duration::from_millis(200)
            || self.out.summaries.len() >= 10_000;
        if due && !self.publish().await {
            return false;
        }
        if self.last_checkpoint.elapsed() >= self.checkpoint_every
            && !self.dirty.is_empty()
            && !(self.publish().await && self.checkpoint(consumer).await)
        {
            return false;
        }
        true
    }

    /// Publishes every pending output until acknowledged; false when a shutdown
    /// interrupted it.
    async fn publish(&mut self) -> bool {
        self.last_publish = Instant::now();
        let out = std::mem::take(&mut self.out);
        for (kept, why) in &out.decided {
            metrics::counter!("obs_traces_decided_total", "kept" => kept.to_string(), "reason" => *why)
                .increment(1);
        }
        metrics::counter!("obs_traces_late_spans_total").increment(out.late_spans);
        if out.is_empty() {
            return true;
        }
        // Kept spans, per partition, each message's offset noted for the checkpoint.
        for (p, spans) in out.sampled {
            let messages: Vec<Outgoing<SpanBatch>> = spans
                .chunks(SPANS_PER_MESSAGE)
                .map(|c| Outgoing {
                    partition: p % self.sampled_partitions,
                    value: SpanBatch { spans: c.to_vec() },
                    headers: Vec::new(),
                })
                .collect();
            let Some(offsets) = self.publisher.deliver(Topic::SpansSampled, messages).await else {
                return false;
            };
            if let (Some(part), Some(end)) = (
                self.partitions.get_mut(&p),
                offsets.iter().map(|&(_, o)| o + 1).max(),
            ) {
                part.published_sampled(end);
            }
        }
        // Summaries batched per obs.traces partition (by trace id).
        let n = self.publisher.partitions(Topic::Traces);
        let mut by_partition: BTreeMap<i32, Vec<TraceSummary>> = BTreeMap::new();
        for s in out.summaries {
            let p = partition_of(xxhash_rust::xxh3::xxh3_64(s.trace_id.as_bytes()) as i64, n);
            by_partition.entry(p).or_default().push(s);
        }
        let summaries = by_partition
            .into_iter()
            .flat_map(|(partition, list)| {
                list.chunks(SUMMARIES_PER_MESSAGE)
                    .map(|c| Outgoing {
                        partition,
                        value: TraceSummaryBatch {
                            summaries: c.to_vec(),
                        },
                        headers: Vec::new(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        if self
            .publisher
            .deliver(Topic::Traces, summaries)
            .await
            .is_none()
        {
            return false;
        }
        let n = self.publisher.partitions(Topic::ServiceGraph);
        let edges = out
            .edges
            .into_iter()
            .map(|e| Outgoing {
                partition: partition_of(
                    xxhash_rust::xxh3::xxh3_64(format!("{}\u{1f}{}", e.client, e.server).as_bytes())
                        as i64,
                    n,
                ),
                value: e,
                headers: Vec::new(),
            })
            .collect();
        if self
            .publisher
            .deliver(Topic::ServiceGraph, edges)
            .await
            .is_none()
        {
            return false;
        }
        let mut backoff = Duration::from_millis(200);
        for batch in out.metrics {
            loop {
                match self
                    .publisher
                    .metrics(batch.series.clone(), batch.metadata.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "span metrics not acknowledged; sending them again");
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

    async fn checkpoint_all(&mut self, consumer: &StreamConsumer) {
        let all: Vec<i32> = self.partitions.keys().copied().collect();
        self.dirty.extend(all);
        self.checkpoint(consumer).await;
    }
}

impl Traces {
    /// Writes the changed partitions' checkpoints (every output before them is
    /// acknowledged), then commits the group's offsets; false when a shutdown interrupted.
    async fn checkpoint(&mut self, consumer: &StreamConsumer) -> bool {
        self.last_checkpoint = Instant::now();
        let mut messages = Vec::new();
        for &p in &self.dirty {
            let part = &self.partitions[&p];
            let cp = part.checkpoint();
            let (open, bytes) = part.load();
            let label = p.to_string();
            metrics::gauge!("obs_traces_open", "partition" => label.clone()).set(open as f64);
            metrics::gauge!("obs_traces_open_bytes", "partition" => label.clone())
                .set(bytes as f64);
            if let Some(t) = part.time_ms() {
                metrics::gauge!("obs_traces_partition_time_seconds", "partition" => label)
                    .set(t as f64 / 1000.0);
            }
            messages.push((p % self.state_partitions, checkpoint::key(p), cp.to_bytes()));
        }
        if !state::write(&self.publisher, &messages, self.state_part_bytes).await {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &self.dirty {
            let offset = self.partitions[&p].commit_offset();
            let _ = tpl.add_partition_offset(Topic::Spans.name(), p, Offset::Offset(offset));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "committing obs.spans offsets (informational)");
        }
        self.dirty.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_spans_are_published_only_where_something_reads_them() {
        let mut cfg = Config::default();
        assert!(!publish_sampled(&cfg, false).unwrap());
        assert!(publish_sampled(&cfg, true).unwrap());
        cfg.sink.traces_from = "sampled".into();
        assert!(publish_sampled(&cfg, false).unwrap());
        cfg.sink.traces_from = "all".into();
        let dir = tempfile::tempdir().unwrap();
        let queries = dir.path().join("queries.toml");
        let query = |topic: &str| {
            format!(
                "[[queries]]\nname = \"q\"\ntopic = \"{topic}\"\nwindow_ms = 60000\nsql = \"SELECT count(*) AS n FROM input\"\n"
            )
        };
        std::fs::write(&queries, query("obs.spans")).unwrap();
        cfg.sql.queries_file = queries.display().to_string();
        assert!(!publish_sampled(&cfg, false).unwrap());
        std::fs::write(&queries, query("obs.spans.sampled")).unwrap();
        assert!(publish_sampled(&cfg, false).unwrap());
        cfg.traces.publish_sampled = "never".into();
        assert!(!publish_sampled(&cfg, true).unwrap());
        cfg.sql.queries_file.clear();
        cfg.traces.publish_sampled = "always".into();
        assert!(publish_sampled(&cfg, false).unwrap());
    }
}
