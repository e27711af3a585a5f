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
//!
//! In `obs up` the trace processor may read `obs.spans` along with the tables (see
//! [`obs_runtime::tap`]): it gets each message first, the reader starts each partition at
//! the lower of the tables' and the processor's starts, and the processor is let go to its
//! own consumer when it, or a table, holds the other back past its patience.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use obs_runtime::config::KafkaConfig;
pub use obs_runtime::tap::{Delivered, Delivery};
use obs_runtime::tap::{Host, JoinRequest};
use obs_runtime::{Config, kafka, shutdown};
use obs_schemas::Topic;
use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::mpsc;

/// Messages a table may have waiting before its topic's reader waits for it.
const QUEUE: usize = 16;

/// Messages a processor reading along may have waiting (it reads in bursts between its
/// publishes).
const JOINER_QUEUE: usize = 64;

/// How long a reader waits, at its start, for the processor that may read along to ask.
const JOIN_WAIT: Duration = Duration::from_secs(60);

/// How far (in messages) the tables may start below a joining processor on a partition:
/// the processor gets nothing until the reader has passed those, so further behind (a
/// sink catching up after an outage) it reads with its own consumer instead.
const JOIN_SLACK: i64 = 1_000;

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
/// [`Readers::add_table`], a processor that may read along with [`Readers::host`], then
/// [`Readers::run`] reads.
pub struct Readers {
    kafka: KafkaConfig,
    group_prefix: String,
    topics: HashMap<Topic, TopicTables>,
    hosts: HashMap<Topic, Host>,
}

impl Readers {
    /// No topic read yet.
    pub fn new(cfg: &Config) -> Self {
        Readers {
            kafka: cfg.kafka.clone(),
            group_prefix: cfg.sink.group_prefix.clone(),
            topics: HashMap::new(),
            hosts: HashMap::new(),
        }
    }

    /// Lets a processor of this process read along with the reader of `host.topic`
    /// (see [`obs_runtime::tap`]); without tables of that topic it is refused.
    pub fn host(&mut self, host: Host) {
        self.hosts.insert(host.topic, host);
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
        let Readers {
            kafka,
            group_prefix,
            topics,
            mut hosts,
        } = self;
        let readers: Vec<_> = topics
            .into_iter()
            .map(|(topic, tables)| {
                let group = format!("{group_prefix}-reader-{}", topic.name());
                let host = hosts.remove(&topic);
                read(&kafka, group, topic, tables, host)
            })
            .collect();
        // A processor asking to read along a topic no table reads is refused now.
        drop(hosts);
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

/// Where the tables and a joining processor read from together, or why the processor
/// should read on its own: `tables` are the tables' starts (resolved to offsets), `joiner`
/// the processor's.
fn admit(
    tables: &BTreeMap<i32, i64>,
    joiner: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, i64>, String> {
    let mut starts = tables.clone();
    for (&p, &at) in joiner {
        let Some(&table_at) = tables.get(&p) else {
            return Err(format!("the sinks do not read partition {p}"));
        };
        if table_at < at - JOIN_SLACK {
            return Err(format!(
                "the sinks start partition {p} at offset {table_at}, {} messages before the processor",
                at - table_at
            ));
        }
        starts.insert(p, table_at.min(at));
    }
    Ok(starts)
}

/// The starts of `positions`, the beginning of a partition read as its first offset.
async fn resolve(
    consumer: &Arc<StreamConsumer>,
    topic: Topic,
    positions: &BTreeMap<i32, Offset>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let (c, positions) = (consumer.clone(), positions.clone());
    tokio::task::spawn_blocking(move || {
        positions
            .into_iter()
            .map(|(p, at)| match at {
                Offset::Offset(o) => Ok((p, o)),
                _ => c
                    .fetch_watermarks(topic.name(), p, Duration::from_secs(10))
                    .map(|(low, _)| (p, low))
                    .map_err(|e| anyhow::anyhow!("reading the start of {topic}/{p}: {e}")),
            })
            .collect()
    })
    .await?
}

/// A processor reading along: where its messages go and how long it may hold the reader
/// (or be held).
struct Joined {
    sender: mpsc::Sender<Delivery>,
    patience: Duration,
}

/// Answers a processor's request to read along; the positions the reader starts at, and
/// the processor if admitted.
async fn answer(
    consumer: &Arc<StreamConsumer>,
    topic: Topic,
    positions: BTreeMap<i32, Offset>,
    request: JoinRequest,
) -> anyhow::Result<(BTreeMap<i32, Offset>, Option<Joined>)> {
    let resolved = resolve(consumer, topic, &positions).await?;
    match admit(&resolved, &request.starts) {
        Ok(starts) => {
            let (sender, receiver) = mpsc::channel(JOINER_QUEUE);
            if request.reply.send(Some(receiver)).is_err() {
                return Ok((positions, None)); // the processor stopped meanwhile
            }
            metrics::gauge!("obs_shared_reader_joined", "topic" => topic.name()).set(1.0);
            tracing::info!(%topic, "the processor reads along with the sinks' reader");
            let starts = starts.into_iter().map(|(p, o)| (p, Offset::Offset(o)));
            let joined = Joined {
                sender,
                patience: request.patience,
            };
            Ok((starts.collect(), Some(joined)))
        }
        Err(why) => {
            metrics::gauge!("obs_shared_reader_joined", "topic" => topic.name()).set(0.0);
            tracing::info!(%topic, %why, "the processor reads with its own consumer");
            let _ = request.reply.send(None);
            Ok((positions, None))
        }
    }
}

/// Lets the processor reading along go (it reads on with its own consumer).
fn let_go(joined: &mut Option<Joined>, topic: Topic, why: &str) {
    if joined.take().is_some() {
        metrics::gauge!("obs_shared_reader_joined", "topic" => topic.name()).set(0.0);
        tracing::warn!(%topic, why, "the processor now reads with its own consumer");
    }
}

/// The loop of one topic's reader.
async fn read(
    cfg: &KafkaConfig,
    group: String,
    topic: Topic,
    tables: TopicTables,
    host: Option<Host>,
) -> anyhow::Result<()> {
    let consumer = Arc::new(kafka::consumer(cfg, &group, topic.name())?);
    let committed: Vec<&BTreeMap<i32, i64>> = tables.tables.iter().map(|t| &t.committed).collect();
    let mut positions = start_positions(&tables.partitions, &committed);
    let mut joined = None;
    if let Some(host) = host {
        tracing::info!(%topic, "waiting for the processor that may read along");
        if let Some(request) = host.request(JOIN_WAIT).await {
            (positions, joined) = answer(&consumer, topic, positions, request).await?;
        }
    }
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
            Ok(m) => Delivered::new(m.detach()),
            Err(e) => {
                tracing::warn!(%topic, error = %e, "Kafka consumer error; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Some(j) = &joined {
            // The processor first: it must not wait on a sink for longer than its patience.
            let sent = tokio::select! {
                r = tokio::time::timeout(j.patience, j.sender.send(message.clone())) => r,
                _ = shutdown::wait() => return Ok(()),
            };
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => let_go(&mut joined, topic, "it stopped reading"),
                Err(_) => let_go(&mut joined, topic, "it held the reader back"),
            }
        }
        let mut i = 0;
        while i < senders.len() {
            // A full queue waits: the slowest table sets the pace (and a table that
            // keeps a processor reading along waiting past its patience lets it go).
            let send = senders[i].send(message.clone());
            let sent = match joined.as_ref().map(|j| j.patience) {
                None => tokio::select! {
                    r = send => r.is_ok(),
                    _ = shutdown::wait() => return Ok(()),
                },
                Some(patience) => {
                    tokio::pin!(send);
                    tokio::select! {
                        r = &mut send => r.is_ok(),
                        _ = tokio::time::sleep(patience) => {
                            let_go(&mut joined, topic, "a sink held the reader back");
                            tokio::select! {
                                r = &mut send => r.is_ok(),
                                _ = shutdown::wait() => return Ok(()),
                            }
                        }
                        _ = shutdown::wait() => return Ok(()),
                    }
                }
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

    #[tokio::test]
    async fn a_processor_asking_to_read_along_a_topic_no_table_reads_is_refused_at_once() {
        let mut cfg = Config::default();
        cfg.kafka.brokers = "127.0.0.1:1".into(); // never reached: nothing is fetched
        let mut readers = Readers::new(&cfg);
        let _logs = readers.add_table(Topic::Logs, &[0], BTreeMap::from([(0, 0)]));
        let (host, joiner) = obs_runtime::tap::pair(Topic::Spans);
        readers.host(host);
        let running = tokio::spawn(readers.run());
        let asked = joiner.join(BTreeMap::from([(0, 0)]), Duration::from_secs(1));
        let answer = tokio::time::timeout(Duration::from_secs(5), asked).await;
        running.abort();
        assert!(matches!(answer, Ok(None)), "refused, not left waiting");
    }

    #[test]
    fn a_processor_reads_along_from_the_lower_start_unless_the_sinks_are_far_behind_it() {
        let tables = BTreeMap::from([(0, 100), (1, 50), (2, 7)]);
        // The processor starts below the tables on 0 (its oldest open trace), above on 1.
        let got = admit(&tables, &BTreeMap::from([(0, 90), (1, 60)]));
        assert_eq!(got, Ok(BTreeMap::from([(0, 90), (1, 50), (2, 7)])));
        // Exactly JOIN_SLACK messages behind is admitted, one more is not.
        let edge = BTreeMap::from([(0, 100 + JOIN_SLACK)]);
        assert_eq!(admit(&tables, &edge).unwrap()[&0], 100);
        let far = BTreeMap::from([(0, 101 + JOIN_SLACK)]);
        assert_eq!(
            admit(&tables, &far),
            Err(format!(
                "the sinks start partition 0 at offset 100, {} messages before the processor",
                JOIN_SLACK + 1
            ))
        );
        assert_eq!(
            admit(&tables, &BTreeMap::from([(3, 0)])),
            Err("the sinks do not read partition 3".into())
        );
    }
}
