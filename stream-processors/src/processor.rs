//! What the partitioned processors (traces, rollups, logs) share on Kafka: connecting
//! (topics, partition counts, codec, publisher, the owned input partitions, a consumer
//! of their own group), their input (that consumer, or a sink's reader they read along
//! with) and, for the checkpointing ones, the consume → step loop with its clean stop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use obs_runtime::kafka::{self, SharedProducer};
use obs_runtime::publish::Publisher;
use obs_runtime::tap::{Delivery, Joiner};
use obs_runtime::{Config, shutdown};
use obs_schemas::Topic;
use obs_schemas::wire::Codec;
use rdkafka::Offset;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};

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
    use rdkafka::TopicPartitionList;
    use rdkafka::consumer::Consumer;
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

/// Where a processor's input messages come from: its own consumer, or a sink's reader of
/// the same topic in this process (`obs up`), until that reader lets it go.
pub struct Input {
    consumer: StreamConsumer,
    topic: Topic,
    along: Option<Along>,
}

/// Reading along with a sink's reader.
struct Along {
    messages: tokio::sync::mpsc::Receiver<Delivery>,
    /// Per owned partition, the next offset wanted (what is below is skipped).
    next: BTreeMap<i32, i64>,
}

/// One input message.
pub enum Next<'a> {
    /// Read by the processor's own consumer.
    Read(BorrowedMessage<'a>),
    /// Handed on by the sink's reader.
    Along(Delivery),
}

impl Input {
    /// Reads `topic` from `starts` (offset per owned partition): along with the sink's
    /// reader when `joiner` admits it, else with `consumer`.
    pub async fn start(
        consumer: StreamConsumer,
        topic: Topic,
        starts: BTreeMap<i32, i64>,
        joiner: Option<Joiner>,
        patience: Duration,
    ) -> anyhow::Result<Input> {
        let along = match joiner {
            Some(j) if j.topic() == topic => j.join(starts.clone(), patience).await,
            _ => None,
        };
        let mut input = Input {
            consumer,
            topic,
            along: None,
        };
        match along {
            Some(messages) => {
                input.along = Some(Along {
                    messages,
                    next: starts,
                })
            }
            None => input.assign(&starts)?,
        }
        Ok(input)
    }

    /// Reads `topic` with `consumer`, which the caller has assigned.
    pub fn assigned(consumer: StreamConsumer, topic: Topic) -> Input {
        Input {
            consumer,
            topic,
            along: None,
        }
    }

    /// Whether messages come from a sink's reader.
    pub fn reads_along(&self) -> bool {
        self.along.is_some()
    }

    /// The processor's own consumer (for its group's commits, and its position when it
    /// reads with it).
    pub fn consumer(&self) -> &StreamConsumer {
        &self.consumer
    }

    fn assign(&self, starts: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        let at = starts
            .iter()
            .map(|(&p, &o)| (p, Offset::Offset(o)))
            .collect();
        kafka::assign_at(&self.consumer, self.topic.name(), &at)
    }

    /// The next message from the sink's reader at or past where the processor is on its
    /// partition; `None` once the reader let the processor go (its own consumer then reads
    /// on from where the reader stopped).
    async fn next_along(&mut self) -> Option<Delivery> {
        let along = self.along.as_mut()?;
        while let Some(d) = along.messages.recv().await {
            let (p, offset) = (d.message.partition(), d.message.offset());
            if let Some(next) = along.next.get_mut(&p)
                && offset >= *next
            {
                *next = offset + 1;
                return Some(d);
            }
        }
        let next = self.along.take().expect("read along above").next;
        if shutdown::requested() {
            return None; // the reader stopped for the shutdown
        }
        tracing::info!(topic = %self.topic, ?next, "reading on with the processor's own consumer");
        if let Err(e) = self.assign(&next) {
            // Without input the processor would stall silently; the process stops instead.
            tracing::error!(error = %e, "cannot read on with the processor's own consumer");
            shutdown::request();
        }
        None
    }

    /// The next input message.
    pub async fn next(&mut self) -> KafkaResult<Next<'_>> {
        if let Some(d) = self.next_along().await {
            return Ok(Next::Along(d));
        }
        self.consumer.recv().await.map(Next::Read)
    }
}

/// A processor whose partitions checkpoint their state (traces, rollups).
pub trait Checkpointed {
    /// Handles one input message.
    fn handle<M: Message + Sync>(&mut self, m: &M) -> impl Future<Output = ()> + Send;
    /// Idle partitions, publishing and checkpointing; false when a shutdown interrupted.
    fn step(&mut self, consumer: &StreamConsumer) -> impl Future<Output = bool> + Send;
    /// Publishes every pending output; false when a shutdown interrupted.
    fn publish(&mut self) -> impl Future<Output = bool> + Send;
    /// Checkpoints every partition (after a clean stop nothing is read again).
    fn checkpoint_all(&mut self, consumer: &StreamConsumer) -> impl Future<Output = ()> + Send;
}

/// Reads `input` and steps `p` at least every 100 ms until a shutdown is asked for (or a
/// step is interrupted by one); then publishes what is pending and checkpoints.
pub async fn drive(p: &mut impl Checkpointed, input: &mut Input) {
    loop {
        let message = tokio::select! {
            m = input.next() => Some(m),
            _ = tokio::time::sleep(Duration::from_millis(100)) => None,
            _ = shutdown::wait() => break,
        };
        match message {
            Some(Ok(Next::Read(m))) => p.handle(&m).await,
            Some(Ok(Next::Along(d))) => p.handle(&d.message).await,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading {}", input.topic.name());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            None => {}
        }
        if !p.step(input.consumer()).await {
            break;
        }
    }
    if !shutdown::requested() || p.publish().await {
        p.checkpoint_all(input.consumer()).await;
    }
}
