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
    let codec = Arc::new(Codec::new(&cfg.registry.url));
    let publisher = Publisher::new(
        SharedProducer::new(&cfg.kafka)?,
        codec.clone(),
        counts.clone(),
    );
    let pc = &cfg.processor;
    let owned = kafka::partitions_of(pc.instance, pc.instances, counts[&input]);
    let consumer = kafka::consumer(
        &cfg.kafka,
        &format!("{}-{name}-{}", pc.group_prefix, pc.instance),
    )?;
    Ok(Wiring {
        counts,
        codec,
        publisher,
        owned,
        consumer,
    })
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
