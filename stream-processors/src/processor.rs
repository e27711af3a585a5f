//! What the partitioned processors (traces, rollups, logs) share on Kafka: connecting
//! (topics, partition counts, codec, publisher, the owned input partitions, a consumer
//! of their own group) and, for the checkpointing ones, the consume → step loop with its
//! clean stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use obs_runtime::kafka::{self, SharedProducer};
use obs_runtime::publish::Publisher;
use obs_runtime::{Config, shutdown};
use obs_schemas::Topic;
use obs_schemas::wire::Codec;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::BorrowedMessage;

/// A processor's connections, from [`connect`].
pub struct Wiring {
    /// Partitions of every topic.
    pub counts: HashMap<Topic, i32>,
    /// The registry-backed codec.
    pub codec: Arc<Codec>,
    /// The publisher of its outputs.
    pub publisher: Publisher,
    /// The input partitions this instance owns (`p % instances == instance`).
    pub owned: Vec<i32>,
    /// A consumer of group `<group_prefix>-<name>-<instance>` (partitions assigned by the caller).
    pub consumer: StreamConsumer,
}

/// Creates the topics if missing and connects processor `name` reading `input`.
pub async fn connect(cfg: &Config, name: &str, input: Topic) -> anyhow::Result<Wiring> {
    kafka::ensure_topics(&cfg.kafka).await?;
    let counts = kafka::partition_counts(&cfg.kafka).await?;
    let codec = Arc::new(obs_runtime::registry::codec(cfg));
    let publisher = Publisher::new(
        SharedProducer::for_process(&cfg.kafka)?,
        codec.clone(),
        counts.clone(),
    );
    let pc = &cfg.processor;
    let owned = kafka::partitions_of(pc.instance, pc.instances, counts[&input]);
    let consumer = kafka::consumer(
        &cfg.kafka,
        &format!("{}-{name}-{}", pc.group_prefix, pc.instance),
        input.name(),
    )?;
    Ok(Wiring {
        counts,
        codec,
        publisher,
        owned,
        consumer,
    })
}

/// Milliseconds since the epoch by the wall clock (what idle partitions move to).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where a processor without a checkpoint starts reading `partitions` of `topic`: the
/// group's committed offset, else the partition's earliest.
pub async fn committed_or_earliest(
    cfg: &Config,
    consumer: &StreamConsumer,
    topic: Topic,
    partitions: &[i32],
) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
    use anyhow::Context;
    use rdkafka::consumer::Consumer;
    use rdkafka::{Offset, TopicPartitionList};
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic.name(), p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .with_context(|| format!("reading the committed offsets of {topic}"))?;
    let brokers = cfg.kafka.clone();
    let wanted = partitions.to_vec();
    let lows = tokio::task::spawn_blocking(move || -> anyhow::Result<HashMap<i32, i64>> {
        let reader = crate::state::reader(&brokers)?;
        let mut lows = HashMap::new();
        for p in wanted {
            let (low, _) = reader
                .fetch_watermarks(topic.name(), p, Duration::from_secs(10))
                .with_context(|| format!("reading the start of {topic}"))?;
            lows.insert(p, low);
        }
        Ok(lows)
    })
    .await
    .context("reading the start of the input")??;
    Ok(partitions
        .iter()
        .map(|&p| {
            let at = match committed
                .find_partition(topic.name(), p)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o,
                _ => lows[&p],
            };
            (p, at)
        })
        .collect())
}

/// A processor whose partitions checkpoint their state (traces, rollups).
pub trait Checkpointed {
    /// Handles one input message.
    fn handle(&mut self, m: &BorrowedMessage<'_>) -> impl Future<Output = ()> + Send;
    /// Idle partitions, publishing and checkpointing; false when a shutdown interrupted.
    fn step(&mut self, consumer: &StreamConsumer) -> impl Future<Output = bool> + Send;
    /// Publishes every pending output; false when a shutdown interrupted.
    fn publish(&mut self) -> impl Future<Output = bool> + Send;
    /// Checkpoints every partition (after a clean stop nothing is read again).
    fn checkpoint_all(&mut self, consumer: &StreamConsumer) -> impl Future<Output = ()> + Send;
}

/// Reads `input` and steps `p` at least every 100 ms until a shutdown is asked for (or a
/// step is interrupted by one); then publishes what is pending and checkpoints.
pub async fn drive(p: &mut impl Checkpointed, consumer: &StreamConsumer, input: Topic) {
    loop {
        let message = tokio::select! {
            m = consumer.recv() => Some(m),
            _ = tokio::time::sleep(Duration::from_millis(100)) => None,
            _ = shutdown::wait() => break,
        };
        match message {
            Some(Ok(m)) => p.handle(&m).await,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading {}", input.name());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            None => {}
        }
        if !p.step(consumer).await {
            break;
        }
    }
    if !shutdown::requested() || p.publish().await {
        p.checkpoint_all(consumer).await;
    }
}
