//! The rollup processor on Kafka (part of `obs processor`).
//!
//! Start: each owned `obs.metrics` partition's latest checkpoint is read from
//! `obs.processor.state` and input is read from where it left off; a partition without one
//! starts at the group's committed offset, else at the beginning.
//!
//! Loop: messages go to their partition's state machine; written windows are published at
//! least every 200 ms to `obs.metrics.rollup` (same partition number, modulo its count); a
//! partition without input for `idle_partition_ms` moves its time on towards the wall
//! clock, far enough to write the windows of the samples it has (checkpointed first, so a
//! restart moves the same way; see [`Partition::idle_advance`]); every `checkpoint_interval_ms`
//! the windows are published, then the changed partitions' checkpoints, then the group's
//! offsets (for lag; the checkpoints are what a restart reads).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_runtime::publish::{Outgoing, Publisher};
use obs_runtime::{Config, ops};
use obs_schemas::Topic;
use obs_schemas::records::{MetricBatchView, MetricRollup, MetricRollupBatch};
use obs_schemas::wire::Codec;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::partition::{Checkpoint, Partition, Settings, VERSION};
use crate::processor::{self, Checkpointed, Wiring};
use crate::state;

/// Name of the processor's checkpoints on `obs.processor.state`.
const PROCESSOR: &str = "rollups";

/// Most windows in one `obs.metrics.rollup` message.
const ROLLUPS_PER_MESSAGE: usize = 5_000;

/// The partitions' settings from `[rollups]`.
pub fn settings(cfg: &Config) -> anyhow::Result<Settings> {
    let rc = &cfg.rollups;
    Settings::new(
        rc.resolutions_ms.iter().map(|&r| r as i64).collect(),
        rc.allowed_lateness_ms as i64,
    )
}

/// Runs the rollup processor until a shutdown is asked for.
pub async fn run(cfg: Config, ready: ops::Readiness) -> anyhow::Result<()> {
    if !cfg.rollups.enabled {
        tracing::info!("[rollups] enabled = false: obs.metrics is not rolled up");
        return Ok(());
    }
    ready.report(
        "rollups",
        Some("the rollup processor is restoring its partitions".into()),
    );
    let settings = Arc::new(settings(&cfg)?);
    let Wiring {
        counts,
        codec,
        publisher,
        owned,
        consumer,
    } = processor::connect(&cfg, "rollups", Topic::Metrics).await?;
    let partitions = restore(&cfg, &consumer, &owned, &counts, &settings).await?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions.values() {
        tpl.add_partition_offset(
            Topic::Metrics.name(),
            p.id(),
            Offset::Offset(p.next_offset()),
        )?;
    }
    consumer
        .assign(&tpl)
        .context("assigning the obs.metrics partitions")?;
    tracing::info!(partitions = ?owned, resolutions_ms = ?settings.resolutions_ms, "rollup processor started");
    ready.report("rollups", None);
    let mut r = Rollups {
        idle: Duration::from_millis(cfg.rollups.idle_partition_ms),
        checkpoint_every: Duration::from_millis(cfg.rollups.checkpoint_interval_ms),
        last_heard: partitions.keys().map(|&p| (p, Instant::now())).collect(),
        partitions,
        publisher,
        codec,
        state_partitions: counts[&Topic::ProcessorState],
        state_part_bytes: cfg.processor.state_part_bytes,
        out_partitions: counts[&Topic::MetricsRollup],
        out: BTreeMap::new(),
        dirty: HashSet::new(),
        last_publish: Instant::now(),
        last_checkpoint: Instant::now(),
    };
    processor::drive(
        &mut r,
        &mut processor::Input::assigned(consumer, Topic::Metrics),
    )
    .await;
    tracing::info!("rollup processor stopped");
    Ok(())
}

/// Each owned partition as its latest checkpoint left it.
async fn restore(
    cfg: &Config,
    consumer: &StreamConsumer,
    owned: &[i32],
    counts: &HashMap<Topic, i32>,
    settings: &Arc<Settings>,
) -> anyhow::Result<BTreeMap<i32, Partition>> {
    let brokers = cfg.kafka.clone();
    let state_n = counts[&Topic::ProcessorState];
    let wanted = owned.to_vec();
    let mut cps = tokio::task::spawn_blocking(move || {
        state::load_latest(
            &brokers,
            PROCESSOR,
            &wanted,
            state_n,
            |c: &Checkpoint| c.version,
            VERSION,
        )
    })
    .await
    .context("restore task")??;
    let starts = processor::committed_or_earliest(cfg, consumer, Topic::Metrics, owned).await?;
    let mut out = BTreeMap::new();
    for &p in owned {
        let partition = match cps.remove(&p) {
            Some(cp) => {
                tracing::info!(
                    partition = p,
                    next_offset = cp.next_offset,
                    "restoring from checkpoint"
                );
                Partition::restore(cp, settings.clone())
            }
            None => {
                let start = starts[&p];
                tracing::info!(
                    partition = p,
                    start,
                    "no checkpoint: starting at the committed offset"
                );
                Partition::new(p, settings.clone(), start)
            }
        };
        out.insert(p, partition);
    }
    Ok(out)
}

struct Rollups {
    partitions: BTreeMap<i32, Partition>,
    last_heard: HashMap<i32, Instant>,
    idle: Duration,
    checkpoint_every: Duration,
    publisher: Publisher,
    codec: Arc<Codec>,
    state_partitions: i32,
    /// `[processor] state_part_bytes`.
    state_part_bytes: usize,
    out_partitions: i32,
    /// Windows written, by input partition, not published yet.
    out: BTreeMap<i32, Vec<MetricRollup>>,
    dirty: HashSet<i32>,
    last_publish: Instant,
    last_checkpoint: Instant,
}

impl Checkpointed for Rollups {
    async fn handle<M: Message + Sync>(&mut self, m: &M) {
        let (p, offset) = (m.partition(), m.offset());
        let batch: MetricBatchView = match m.payload() {
            Some(bytes) => {
                match obs_runtime::registry::decode::<MetricBatchView>(&self.codec, bytes).await {
                    Ok(b) => b,
                    Err(e) => {
                        metrics::counter!("obs_rollups_undecodable_messages_total").increment(1);
                        tracing::warn!(partition = p, offset, error = %e, "undecodable obs.metrics message skipped (the metrics sink sends it to obs.dlq)");
                        MetricBatchView::default()
                    }
                }
            }
            None => MetricBatchView::default(),
        };
        let samples: usize = batch.series.iter().map(|s| s.values.len()).sum();
        metrics::counter!("obs_rollups_samples_total").increment(samples as u64);
        if let Some(part) = self.partitions.get_mut(&p) {
            let (late, skipped) = (part.load().1, part.skipped());
            part.handle(offset, &batch, self.out.entry(p).or_default());
            metrics::counter!("obs_rollups_late_samples_total").increment(part.load().1 - late);
            metrics::counter!("obs_rollups_skipped_samples_total")
                .increment(part.skipped() - skipped);
            self.last_heard.insert(p, Instant::now());
            self.dirty.insert(p);
        }
    }

    /// Idle partitions, publishing and checkpointing; false when a shutdown interrupted.
    async fn step(&mut self, consumer: &StreamConsumer) -> bool {
        let ids: Vec<i32> = self.partitions.keys().copied().collect();
        for p in ids {
            if self.last_heard[&p].elapsed() < self.idle {
                continue;
            }
            let part = self.partitions.get_mut(&p).expect("owned");
            if !part.idle_advance(crate::processor::wall_ms()) {
                continue;
            }
            // The move is checkpointed before it takes effect: a restart moves the same way.
            self.dirty.insert(p);
            if !(self.publish().await && self.checkpoint(consumer).await) {
                return false;
            }
            let part = self.partitions.get_mut(&p).expect("owned");
            part.write_due(self.out.entry(p).or_default());
        }
        let pending: usize = self.out.values().map(Vec::len).sum();
        let due = self.last_publish.elapsed() >= Duration::from_millis(200) || pending >= 50_000;
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

    /// Publishes every written window until acknowledged; false when a shutdown
    /// interrupted it.
    async fn publish(&mut self) -> bool {
        self.last_publish = Instant::now();
        let out = std::mem::take(&mut self.out);
        let mut messages = Vec::new();
        let mut n = 0;
        for (p, rollups) in out {
            n += rollups.len();
            for chunk in rollups.chunks(ROLLUPS_PER_MESSAGE) {
                messages.push(Outgoing {
                    partition: p % self.out_partitions.max(1),
                    value: MetricRollupBatch {
                        rollups: chunk.to_vec(),
                    },
                    headers: Vec::new(),
                });
            }
        }
        if messages.is_empty() {
            return true;
        }
        if self
            .publisher
            .deliver(Topic::MetricsRollup, messages)
            .await
            .is_none()
        {
            return false;
        }
        metrics::counter!("obs_rollups_windows_total").increment(n as u64);
        true
    }

    async fn checkpoint_all(&mut self, consumer: &StreamConsumer) {
        let all: Vec<i32> = self.partitions.keys().copied().collect();
        self.dirty.extend(all);
        self.checkpoint(consumer).await;
    }
}

impl Rollups {
    /// Writes the changed partitions' checkpoints (every output before them is
    /// acknowledged), then commits the group's offsets; false when a shutdown interrupted.
    async fn checkpoint(&mut self, consumer: &StreamConsumer) -> bool {
        self.last_checkpoint = Instant::now();
        let mut messages = Vec::new();
        for &p in &self.dirty {
            let part = &self.partitions[&p];
            metrics::gauge!("obs_rollups_series", "partition" => p.to_string())
                .set(part.load().0 as f64);
            messages.push((
                p % self.state_partitions,
                state::key(PROCESSOR, p),
                state::to_bytes(&part.checkpoint()),
            ));
        }
        if !state::write(&self.publisher, &messages, self.state_part_bytes).await {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &self.dirty {
            let offset = self.partitions[&p].next_offset();
            let _ = tpl.add_partition_offset(Topic::Metrics.name(), p, Offset::Offset(offset));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "committing obs.metrics offsets (informational)");
        }
        self.dirty.clear();
        true
    }
}
