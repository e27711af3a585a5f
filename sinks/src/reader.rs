//! One Kafka consumer per topic, shared by every table sink of the topic.
//!
//! Why: a consumer per table fetched `obs.metrics` from the broker four times (samples,
//! series, metadata, exemplars) and `obs.logs` and `obs.spans` twice or three times; the
//! broker's fetch work is most of its CPU under load. Now each topic is fetched once and
//! every message (shared, not copied) goes to each of its tables through a bounded channel:
//! a table that is slow (ClickHouse retrying) holds the reader back, so nothing is dropped
//! and memory stays bounded. Tables that only read from a message (the four of
//! `obs.metrics`) also share its decode: the first of them to reach it decodes it, the
//! others read that value.
//!
//! Each table keeps its own consumer group and commits: the reader starts each partition
//! at the lowest offset its tables have committed (the beginning where one has none), and
//! each table skips the messages below its own committed offset.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use obs_runtime::config::KafkaConfig;
use obs_runtime::{Config, kafka, shutdown};
use obs_schemas::Topic;
use obs_schemas::wire::SharedDecode;
use rdkafka::Offset;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;

/// Messages a table may have waiting before its topic's reader waits for it.
const QUEUE: usize = 16;

/// What a table receives: one message of its topic, shared with the topic's other tables.
pub type Delivery = Arc<Delivered>;

/// One message of a topic as its tables share it.
pub struct Delivered {
    /// The message as read.
    pub message: OwnedMessage,
    /// The message decoded by the first table that shares decodes
    /// ([`crate::table::TableSink::SHARES_DECODE`]), for the others to read.
    pub decoded: OnceLock<SharedDecode>,
}

/// One table of a topic, as its reader knows it.
struct Subscriber {
    sender: mpsc::Sender<Delivery>,
    /// The offsets its consumer group has committed, by partition.
    committed: BTreeMap<i32, i64>,
}

/// The tables of one topic and the partitions they read.
struct TopicTables {
    partitions: Vec<i32>,
    tables: Vec<Subscriber>,
}

/// The readers of every topic some table sink reads: tables register with
/// [`Readers::add_table`], then [`Readers::run`] reads.
pub struct Readers {
    kafka: KafkaConfig,
    group_prefix: String,
    topics: HashMap<Topic, TopicTables>,
}

impl Readers {
    /// No topic read yet.
    pub fn new(cfg: &Config) -> Self {
        Readers {
            kafka: cfg.kafka.clone(),
            group_prefix: cfg.sink.group_prefix.clone(),
            topics: HashMap::new(),
        }
    }

    /// Registers a table reading `partitions` of `topic` whose group has committed
    /// `committed`; returns where its messages arrive (from offset
    /// `committed[p]` or lower: the table skips what it has stored).
    pub fn add_table(
        &mut self,
        topic: Topic,
        partitions: &[i32],
        committed: BTreeMap<i32, i64>,
    ) -> mpsc::Receiver<Delivery> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let entry = self.topics.entry(topic).or_insert_with(|| TopicTables {
            partitions: Vec::new(),
            tables: Vec::new(),
        });
        for &p in partitions {
            if !entry.partitions.contains(&p) {
                entry.partitions.push(p);
            }
        }
        entry.tables.push(Subscriber { sender, committed });
        receiver
    }

    /// Reads every registered topic until a shutdown is asked for (a topic's reader also
    /// stops once all its tables have); fails only when a consumer cannot be set up.
    pub async fn run(self) -> anyhow::Result<()> {
        let readers = self.topics.into_iter().map(|(topic, tables)| {
            let group = format!("{}-reader-{}", self.group_prefix, topic.name());
            read(&self.kafka, group, topic, tables)
        });
        futures::future::try_join_all(readers).await.map(|_| ())
    }
}

/// Where the reader of a topic starts each partition: the lowest offset its tables have
/// committed there, or the beginning when one of them has committed none.
fn start_positions(partitions: &[i32], committed: &[&BTreeMap<i32, i64>]) -> BTreeMap<i32, Offset> {
    partitions
        .iter()
        .map(|p| {
            let lowest = committed
                .iter()
                .map(|c| c.get(p).copied())
                .try_fold(i64::MAX, |low, c| c.map(|c| low.min(c)));
            (*p, lowest.map_or(Offset::Beginning, Offset::Offset))
        })
        .collect()
}

/// The loop of one topic's reader.
async fn read(
    cfg: &KafkaConfig,
    group: String,
    topic: Topic,
    tables: TopicTables,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = kafka::consumer(cfg, &group, topic.name())?;
    let committed: Vec<&BTreeMap<i32, i64>> = tables.tables.iter().map(|t| &t.committed).collect();
    let positions = start_positions(&tables.partitions, &committed);
    kafka::assign_at(&consumer, topic.name(), &positions)?;
    tracing::info!(%topic, tables = tables.tables.len(), ?positions, "topic reader started");
    let mut senders: Vec<mpsc::Sender<Delivery>> =
        tables.tables.into_iter().map(|t| t.sender).collect();
    loop {
        let next = tokio::select! {
            m = consumer.recv() => m,
            _ = shutdown::wait() => return Ok(()),
        };
        let message = match next {
            Ok(m) => Arc::new(Delivered {
                message: m.detach(),
                decoded: OnceLock::new(),
            }),
            Err(e) => {
                tracing::warn!(%topic, error = %e, "Kafka consumer error; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut i = 0;
        while i < senders.len() {
            // A full queue waits: the slowest table sets the pace.
            let sent = tokio::select! {
                r = senders[i].send(message.clone()) => r.is_ok(),
                _ = shutdown::wait() => return Ok(()),
            };
            if sent {
                i += 1;
            } else {
                senders.swap_remove(i); // that table stopped
            }
        }
        if senders.is_empty() {
            tracing::info!(%topic, "every table of the topic stopped; its reader stops");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_starts_at_its_tables_lowest_commit_or_the_beginning_where_one_has_none() {
        let a = BTreeMap::from([(0, 10), (1, 5), (2, 7)]);
        let b = BTreeMap::from([(0, 4), (1, 9)]);
        let got = start_positions(&[0, 1, 2, 3], &[&a, &b]);
        assert_eq!(
            got,
            BTreeMap::from([
                (0, Offset::Offset(4)),
                (1, Offset::Offset(5)),
                (2, Offset::Beginning),
                (3, Offset::Beginning),
            ])
        );
        let only = start_positions(&[0], &[&a]);
        assert_eq!(only, BTreeMap::from([(0, Offset::Offset(10))]));
    }
}
