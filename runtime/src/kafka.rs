//! Kafka clients configured the way every stage needs them, and topic creation.
//!
//! Producers are idempotent with `acks=all` and lz4; consumers never auto-commit (a stage
//! commits only after its output is durable) and are assigned their partitions rather than
//! balanced by the broker (see [`consumer`]). The broker may not create topics on first
//! produce (tansu does not), so every stage calls [`ensure_topics`] at start-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use obs_schemas::Topic;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::ToBytes;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// The settings every client of the brokers starts from: where they are, and how to
/// authenticate and encrypt (`[kafka] security_protocol`, `ssl_ca_file`, `sasl_*`). Each
/// builder adds its own settings; `[kafka.properties]` are applied over all of them when
/// the client is created, as documented.
pub fn client_config(cfg: &KafkaConfig) -> Settings {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    if !cfg.security_protocol.is_empty() {
        c.set("security.protocol", &cfg.security_protocol);
    }
    if !cfg.ssl_ca_file.is_empty() {
        c.set("ssl.ca.location", &cfg.ssl_ca_file);
    }
    if !cfg.sasl_mechanism.is_empty() {
        c.set("sasl.mechanism", &cfg.sasl_mechanism);
        c.set("sasl.username", &cfg.sasl_username);
        c.set("sasl.password", &cfg.sasl_password);
    }
    Settings {
        own: c,
        properties: cfg.properties.clone(),
    }
}

/// A client's settings, with the user's `[kafka.properties]` kept apart so that they are
/// applied last however the builder orders its own calls.
///
/// Why a type: before it, each builder set its settings after the properties had been
/// applied, so a property such as `fetch.wait.max.ms` or `compression.type` was silently
/// reset by the stage's own value.
#[derive(Clone, Debug)]
pub struct Settings {
    own: ClientConfig,
    properties: std::collections::BTreeMap<String, String>,
}

impl Settings {
    /// Sets one of the builder's own settings (a property of the same name still wins).
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.own.set(key, value);
        self
    }

    /// The settings librdkafka is given: the builder's own, then `[kafka.properties]`.
    pub fn effective(&self) -> ClientConfig {
        let mut c = self.own.clone();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Creates the client from [`Settings::effective`].
    pub fn create<T: FromClientConfig>(&self) -> KafkaResult<T> {
        self.effective().create()
    }
}

/// An idempotent, `acks=all` producer compressing as `[kafka] compression` says; a message
/// not acknowledged within `produce_timeout_ms` fails instead of waiting forever.
pub fn producer(cfg: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    producer_config(cfg)
        .create()
        .context("creating the Kafka producer")
}

/// The settings of [`producer`].
fn producer_config(cfg: &KafkaConfig) -> Settings {
    let mut c = client_config(cfg);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", cfg.compression.as_str())
        .set("linger.ms", "5")
        .set("message.timeout.ms", cfg.produce_timeout_ms.to_string())
        .set("message.max.bytes", (8 << 20).to_string());
    c
}

/// An idempotent producer that is replaced by a fresh one after a failed delivery.
///
/// Why: once a message of an idempotent producer has timed out (broker down), librdkafka
/// bumps the producer epoch when the broker returns, and tansu 0.6 then refuses every later
/// produce of that producer ("Unknown broker error") until the process restarts. A new
/// producer session is accepted at once (checked with confluent-kafka 2.16 too). Messages of
/// the old session that were still queued fail, and their callers answer "retry later".
#[derive(Clone)]
pub struct SharedProducer {
    cfg: KafkaConfig,
    current: Arc<RwLock<(u64, Arc<Session>)>>,
}

/// The producer sessions alive in this process, by configuration (see
/// [`SharedProducer::for_process`]).
type Sessions = Vec<(KafkaConfig, Weak<RwLock<(u64, Arc<Session>)>>)>;

/// One producer session of a [`SharedProducer`]: its librdkafka producer, destroyed on a
/// thread of its own once [`SharedProducer::reset`] replaced it and its last user let go.
///
/// Why: destroying a producer purges it, flushes for up to 500 ms, stops its polling thread
/// and waits for librdkafka's threads; the last user of a replaced session is usually a
/// request still holding it, on the async runtime, whose answer would wait for all that
/// (and other tasks of that worker thread with it).
pub struct Session {
    producer: Option<FutureProducer>,
    retired: AtomicBool,
}

impl Session {
    fn new(producer: FutureProducer) -> Arc<Self> {
        Arc::new(Session {
            producer: Some(producer),
            retired: AtomicBool::new(false),
        })
    }
}

impl std::ops::Deref for Session {
    type Target = FutureProducer;

    fn deref(&self) -> &FutureProducer {
        self.producer
            .as_ref()
            .expect("a session's producer lives as long as it")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(producer) = self.producer.take() else {
            return;
        };
        if !*self.retired.get_mut() {
            // The current session, dropped with the last stage: flushed here, as it
            // should be when the process ends.
            return drop(producer);
        }
        #[cfg(test)]
        let at = self as *const Session as usize;
        let spawned = std::thread::Builder::new()
            .name(RETIRED_SESSION_THREAD.into())
            .spawn(move || {
                let started = std::time::Instant::now();
                drop(producer);
                let took_ms = started.elapsed().as_millis() as u64;
                if took_ms >= 1_000 {
                    tracing::warn!(took_ms, "destroying a replaced Kafka producer took long");
                } else {
                    tracing::debug!(took_ms, "replaced Kafka producer destroyed");
                }
                #[cfg(test)]
                tests::retired_session_destroyed(at);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to destroy a replaced Kafka producer on; destroying it here");
        }
    }
}

/// How much longer than the produce timeout a delivery report is waited for: librdkafka
/// checks message timeouts about once a second.
pub const DELIVERY_GRACE: Duration = Duration::from_secs(2);

/// How long a send may wait for room in the producer's queue before it fails: the queue
/// being full means the broker is not keeping up.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a message sent with [`SharedProducer::send_all`] was not acknowledged.
#[derive(Debug, Clone)]
pub enum NotDelivered {
    /// librdkafka reported the failure.
    Kafka(KafkaError),
    /// No delivery report came within this wait ([`SharedProducer::delivery_wait`]).
    NoReport(Duration),
}

impl std::fmt::Display for NotDelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotDelivered::Kafka(e) => match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::MessageTimedOut) => {
                    f.write_str("the Kafka broker did not acknowledge in time")
                }
                Some(RDKafkaErrorCode::QueueFull) => {
                    f.write_str("the Kafka producer queue is full")
                }
                _ => write!(f, "Kafka: {e}"),
            },
            NotDelivered::NoReport(wait) => write!(
                f,
                "the Kafka broker did not acknowledge within {} ms",
                wait.as_millis()
            ),
        }
    }
}

impl std::error::Error for NotDelivered {}

/// The name of the threads that destroy replaced producer sessions.
const RETIRED_SESSION_THREAD: &str = "obs-kafka-retired-producer";

impl SharedProducer {
    /// The producer of this process for `cfg`: the stages of one process (every stage in
    /// `obs up`) publish through one librdkafka producer, which is made for concurrent use.
    /// Why: each idle producer's polling thread costs about 0.8% of a core; `obs up` had 18
    /// (one per sink's dead letters, per processor, the collector's), 15% of a core with no
    /// load. The producer lives while a stage holds it; the last one to drop it flushes it.
    pub fn for_process(cfg: &KafkaConfig) -> anyhow::Result<Self> {
        static SESSIONS: Mutex<Sessions> = Mutex::new(Vec::new());
        let mut sessions = SESSIONS.lock().expect("producer sessions lock");
        sessions.retain(|(_, weak)| weak.strong_count() > 0);
        let alive = sessions
            .iter()
            .find(|(c, _)| c == cfg)
            .and_then(|(_, weak)| weak.upgrade());
        let current = match alive {
            Some(current) => current,
            None => {
                let current = Arc::new(RwLock::new((0, Session::new(producer(cfg)?))));
                sessions.push((cfg.clone(), Arc::downgrade(&current)));
                current
            }
        };
        Ok(SharedProducer {
            cfg: cfg.clone(),
            current,
        })
    }

    /// How long a caller waits for a delivery report before it answers "retry later":
    /// `[kafka] produce_timeout_ms` (librdkafka's `message.timeout.ms`) and
    /// [`DELIVERY_GRACE`]. Why: librdkafka keeps messages that were in flight when the
    /// broker went away past their timeout (the idempotent producer retries them in
    /// sequence): with a 3 s timeout, their reports had not come 5 s after a broker stop.
    pub fn delivery_wait(&self) -> Duration {
        Duration::from_millis(self.cfg.produce_timeout_ms) + DELIVERY_GRACE
    }

    /// Sends `records` through the current session and waits for their delivery reports,
    /// at most [`SharedProducer::delivery_wait`]; one result per record, in order. When
    /// any record fails, the session is replaced ([`SharedProducer::reset`]).
    ///
    /// Why every send goes through here: the bounded wait and the reset after a failure
    /// are what keep a caller from hanging on a broker that went away, and from staying on
    /// a session the broker refuses (see [`SharedProducer`]).
    pub async fn send_all<'a, K, P>(
        &self,
        records: impl IntoIterator<Item = FutureRecord<'a, K, P>>,
    ) -> Vec<Result<Delivery, NotDelivered>>
    where
        K: ToBytes + ?Sized + 'a,
        P: ToBytes + ?Sized + 'a,
    {
        let (generation, session) = self.get();
        let wait = self.delivery_wait();
        let deadline = tokio::time::Instant::now() + wait;
        let sends = records.into_iter().map(|record| {
            let send = session.send(record, ENQUEUE_TIMEOUT);
            async move {
                match tokio::time::timeout_at(deadline, send).await {
                    Ok(Ok(delivery)) => Ok(delivery),
                    Ok(Err((e, _))) => Err(NotDelivered::Kafka(e)),
                    Err(_) => Err(NotDelivered::NoReport(wait)),
                }
            }
        });
        let results = futures::future::join_all(sends).await;
        if results.iter().any(Result::is_err) {
            self.reset(generation);
        }
        results
    }

    /// Sends one record as [`SharedProducer::send_all`] does.
    pub async fn send_one<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
    ) -> Result<Delivery, NotDelivered>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let mut results = self.send_all([record]).await;
        results.pop().expect("send_all answers once per record")
    }

    /// The current session and its generation (pass it to [`SharedProducer::reset`]).
    pub fn get(&self) -> (u64, Arc<Session>) {
        let guard = self.current.read().expect("producer lock");
        (guard.0, guard.1.clone())
    }

    /// Replaces session `generation` with a new one, unless another caller already did.
    pub fn reset(&self, generation: u64) {
        let fresh = match producer(&self.cfg) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a new Kafka producer");
                return;
            }
        };
        let old = {
            let mut guard = self.current.write().expect("producer lock");
            if guard.0 != generation {
                return;
            }
            tracing::info!(
                generation = generation + 1,
                "starting a new Kafka producer session after a failed delivery"
            );
            std::mem::replace(&mut *guard, (generation + 1, Session::new(fresh)))
        };
        // Whoever drops it last (often a request still waiting on it), it is destroyed
        // on a thread of its own.
        old.1.retired.store(true, Ordering::SeqCst);
    }
}

/// A consumer whose offsets are committed in `group`, only when the stage says so, starting
/// from the earliest offset where the group has none. It does not join the group: give it
/// its partitions with [`assign`]. A reader of a raw `topic` has the broker hold its
/// fetches at most `[kafka] raw_fetch_wait_ms`.
///
/// Why not the broker's group coordination: tansu 0.6 keeps a group's previous leader after
/// that member is gone (a restarted stage, a restarted broker), so every new member is
/// handed no partitions, forever; offsets committed by a consumer outside the group are
/// stored and read back normally, by tansu and by Kafka alike. Stages therefore take their
/// partitions themselves, as Arroyo's and Flink's Kafka sources do.
pub fn consumer(cfg: &KafkaConfig, group: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    consumer_config(cfg, group, topic)
        .create()
        .context("creating the Kafka consumer")
}

/// The settings of [`consumer`].
fn consumer_config(cfg: &KafkaConfig, group: &str, topic: &str) -> Settings {
    let mut client = client_config(cfg);
    if !cfg.debug.is_empty() {
        client.set("debug", &cfg.debug);
    }
    if Topic::parse(topic).is_ok_and(Topic::is_raw) {
        client.set("fetch.wait.max.ms", cfg.raw_fetch_wait_ms.to_string());
    }
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // What librdkafka prefetches while the stage is not consuming: bounded.
        .set("queued.max.messages.kbytes", "65536")
        .set("fetch.max.bytes", (32 << 20).to_string())
        .set("max.partition.fetch.bytes", (8 << 20).to_string());
    client
}

/// The offsets `client`'s consumer group has committed on `partitions` of `topic` (a
/// partition without a commit is absent): for lag, replay's hand-over and the tests' waits.
pub fn committed(
    client: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> rdkafka::error::KafkaResult<std::collections::BTreeMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let got = client.committed_offsets(tpl, timeout)?;
    Ok(partitions
        .iter()
        .filter_map(|&p| match got.find_partition(topic, p)?.offset() {
            Offset::Offset(o) => Some((p, o)),
            _ => None,
        })
        .collect())
}

/// The partitions of a topic with `count` partitions that instance `instance` of
/// `instances` reads: every `p` with `p % instances == instance`.
pub fn partitions_of(instance: u32, instances: u32, count: i32) -> Vec<i32> {
    let instances = instances.max(1) as i32;
    (0..count)
        .filter(|p| p % instances == instance as i32)
        .collect()
}

/// Assigns `topic`'s partitions of this instance (see [`partitions_of`]) to `consumer`,
/// each starting at the group's committed offset (the earliest where there is none).
/// Returns the partitions assigned.
pub fn assign(
    consumer: &StreamConsumer,
    topic: &str,
    instance: u32,
    instances: u32,
) -> anyhow::Result<Vec<i32>> {
    let mine = my_partitions(consumer, topic, instance, instances)?;
    let stored = mine.iter().map(|&p| (p, Offset::Stored)).collect();
    assign_at(consumer, topic, &stored)?;
    Ok(mine)
}

/// The partitions of `topic` that instance `instance` of `instances` reads (see
/// [`partitions_of`]), from the broker's metadata.
pub fn my_partitions<C: Consumer>(
    consumer: &C,
    topic: &str,
    instance: u32,
    instances: u32,
) -> anyhow::Result<Vec<i32>> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading the partitions of {topic}"))?;
    let count = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32);
    anyhow::ensure!(count > 0, "topic {topic} has no partitions");
    Ok(partitions_of(instance, instances, count))
}

/// Assigns `consumer` the partitions of `topic` in `positions`, each starting where its
/// entry says.
pub fn assign_at(
    consumer: &StreamConsumer,
    topic: &str,
    positions: &std::collections::BTreeMap<i32, Offset>,
) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &offset) in positions {
        tpl.add_partition_offset(topic, p, offset)
            .with_context(|| format!("assigning {topic}/{p}"))?;
    }
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning the partitions of {topic}"))
}

/// A client that commits offsets for `group` and reads nothing: for a stage whose
/// messages come from a consumer shared with other groups (the sinks' topic readers).
pub fn committer(cfg: &KafkaConfig, group: &str) -> anyhow::Result<BaseConsumer> {
    client_config(cfg)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .with_context(|| format!("creating the offset committer of group {group}"))
}

/// Commits `offsets` in `consumer`'s group and waits for the broker's answer, on the
/// blocking pool. Why: librdkafka's synchronous commit waits without limit while the
/// group's coordinator is unreachable; on an async worker thread it stalled every task
/// queued behind it, so with the broker stopped the collectors answered after 10–30 s
/// instead of within their produce timeout.
pub async fn commit_sync<C>(consumer: &Arc<C>, offsets: &TopicPartitionList) -> KafkaResult<()>
where
    C: Consumer + Send + Sync + 'static,
{
    let (consumer, offsets) = (consumer.clone(), offsets.clone());
    tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

/// Creates every pipeline topic that does not exist yet (raw topics with
/// `raw_partitions`), and waits until the broker reports them.
pub async fn ensure_topics(cfg: &KafkaConfig) -> anyhow::Result<()> {
    let topics: Vec<(String, i32)> = Topic::ALL
        .iter()
        .map(|&t| {
            let n = if t.is_raw() {
                cfg.raw_partitions
            } else {
                t.default_partitions()
            };
            (t.name().to_string(), n)
        })
        .collect();
    ensure_named_topics(cfg, &topics).await
}

/// Creates the topics `(name, partitions)` that do not exist yet (also topics made at run
/// time, such as the SQL queries' outputs).
pub async fn ensure_named_topics(
    cfg: &KafkaConfig,
    topics: &[(String, i32)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg)
        .create()
        .context("creating the Kafka admin client")?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .with_context(|| format!("creating topics on {}", cfg.brokers))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// The partition count of every pipeline topic, as the broker reports it.
pub async fn partition_counts(cfg: &KafkaConfig) -> anyhow::Result<HashMap<Topic, i32>> {
    let brokers = cfg.brokers.clone();
    let client = client_config(cfg);
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = client
            .create()
            .context("creating a Kafka metadata client")?;
        let mut out = HashMap::new();
        for t in Topic::ALL {
            let md = client
                .fetch_metadata(Some(t.name()), Duration::from_secs(10))
                .with_context(|| format!("reading the metadata of {t} from {brokers}"))?;
            let n = md
                .topics()
                .iter()
                .find(|m| m.name() == t.name())
                .map(|m| m.partitions().len() as i32)
                .unwrap_or(0);
            anyhow::ensure!(n > 0, "topic {t} has no partitions on {brokers}");
            out.insert(t, n);
        }
        Ok(out)
    })
    .await
    .context("metadata task")?
}

/// Where reading a topic for records of time `from_ms` on starts and stops, per partition
/// with such messages: the first message produced at or after `from_ms` (Kafka's timestamp
/// lookup; callers subtract their clock-skew slack first), up to the partition's end as it
/// is now (`[start, end)`). Blocks; call it off the async runtime's threads.
pub fn time_range_positions<C: Consumer>(
    consumer: &C,
    topic: &str,
    from_ms: i64,
    timeout: Duration,
) -> anyhow::Result<std::collections::BTreeMap<i32, (i64, i64)>> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut lookup = TopicPartitionList::new();
    for &p in &partitions {
        lookup.add_partition_offset(topic, p, Offset::Offset(from_ms))?;
    }
    let found = consumer
        .offsets_for_times(lookup, timeout)
        .context("looking up offsets by time")?;
    let mut out = std::collections::BTreeMap::new();
    for &p in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if let Some(Offset::Offset(o)) = found.find_partition(topic, p).map(|e| e.offset())
            && o < high
        {
            out.insert(p, (o, high));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{
        NotDelivered, RETIRED_SESSION_THREAD, SharedProducer, client_config, commit_sync,
        consumer_config, partitions_of, producer, producer_config,
    };
    use crate::config::{Compression, KafkaConfig};
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::error::KafkaError;
    use rdkafka::producer::FutureRecord;
    use rdkafka::types::RDKafkaErrorCode;
    use rdkafka::{Offset, TopicPartitionList};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn the_producer_compresses_as_configured_and_properties_come_last() {
        let c = producer_config(&KafkaConfig::default()).effective();
        assert_eq!(c.get("compression.type"), Some("none"));
        let lz4 = KafkaConfig {
            compression: Compression::Lz4,
            ..KafkaConfig::default()
        };
        assert_eq!(
            producer_config(&lz4).effective().get("compression.type"),
            Some("lz4")
        );
        let overridden = KafkaConfig {
            properties: [
                ("compression.type".to_string(), "zstd".to_string()),
                ("linger.ms".to_string(), "50".to_string()),
            ]
            .into(),
            ..lz4
        };
        let c = producer_config(&overridden).effective();
        assert_eq!(c.get("compression.type"), Some("zstd"));
        assert_eq!(c.get("linger.ms"), Some("50"));
        assert_eq!(c.get("acks"), Some("all"));
    }

    #[test]
    fn properties_override_the_consumers_own_settings_and_those_set_after_them() {
        let cfg = KafkaConfig {
            properties: [
                ("fetch.max.bytes".to_string(), "1048576".to_string()),
                ("fetch.wait.max.ms".to_string(), "20".to_string()),
                ("group.id".to_string(), "theirs".to_string()),
            ]
            .into(),
            ..KafkaConfig::default()
        };
        let c = consumer_config(&cfg, "obs-sink-logs", "obs.logs").effective();
        assert_eq!(c.get("fetch.max.bytes"), Some("1048576"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("20"));
        assert_eq!(c.get("group.id"), Some("theirs"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        // A builder's setting made after `client_config` returned still yields to them.
        let mut later = client_config(&cfg);
        later.set("fetch.max.bytes", "999");
        assert_eq!(later.effective().get("fetch.max.bytes"), Some("1048576"));
        let plain =
            consumer_config(&KafkaConfig::default(), "obs-sink-logs", "obs.logs").effective();
        assert_eq!(plain.get("fetch.max.bytes"), Some("33554432"));
        assert_eq!(plain.get("group.id"), Some("obs-sink-logs"));
        assert_eq!(plain.get("fetch.wait.max.ms"), Some("100"));
        // A topic that is not raw keeps librdkafka's wait.
        let alerts = consumer_config(&KafkaConfig::default(), "obs-sink-alerts", "obs.alerts");
        assert_eq!(alerts.effective().get("fetch.wait.max.ms"), None);
    }

    #[test]
    fn security_settings_reach_librdkafka_and_its_build_supports_them() {
        let cfg = KafkaConfig {
            security_protocol: "sasl_ssl".into(),
            ssl_ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: "obs".into(),
            sasl_password: "secret".into(),
            properties: [("client.id".to_string(), "obs-test".to_string())].into(),
            ..KafkaConfig::default()
        };
        let c = client_config(&cfg).effective();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("obs"));
        assert_eq!(c.get("client.id"), Some("obs-test"));
        // librdkafka refuses at creation a protocol or mechanism its build lacks (no
        // OpenSSL: "recompile librdkafka with ... support"); creating connects to nothing.
        let _created = producer(&cfg).expect("librdkafka built with TLS and SCRAM");
        let bad = KafkaConfig {
            sasl_mechanism: "NOPE".into(),
            ..cfg
        };
        let e = producer(&bad)
            .err()
            .expect("an unknown mechanism is refused");
        assert!(
            format!("{e:#}").contains("Unsupported SASL mechanism: NOPE"),
            "{e:#}"
        );
    }

    #[test]
    fn the_stages_of_a_process_share_one_producer_per_configuration() {
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        };
        let a = SharedProducer::for_process(&cfg).unwrap();
        let b = SharedProducer::for_process(&cfg).unwrap();
        assert!(Arc::ptr_eq(&a.current, &b.current));
        let other = KafkaConfig {
            brokers: "127.0.0.1:2".into(),
            ..KafkaConfig::default()
        };
        let c = SharedProducer::for_process(&other).unwrap();
        assert!(!Arc::ptr_eq(&a.current, &c.current));
        // A reset by one stage is the next session for all of them.
        a.reset(0);
        assert_eq!(b.get().0, 1);
        // Once no stage holds it, the producer is gone and the next stage gets a new one.
        let weak = Arc::downgrade(&a.current);
        drop((a, b));
        assert_eq!(weak.strong_count(), 0);
        assert_eq!(SharedProducer::for_process(&cfg).unwrap().get().0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_without_a_delivery_report_fails_after_the_delivery_wait_and_replaces_the_session()
     {
        // No broker listens there, and librdkafka's own timeout is far away: only the
        // delivery wait (produce timeout + grace) ends the wait, on tokio's paused clock.
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:4".into(),
            produce_timeout_ms: 60_000,
            ..KafkaConfig::default()
        };
        let shared = SharedProducer::for_process(&cfg).unwrap();
        assert_eq!(shared.delivery_wait(), Duration::from_millis(62_000));
        let started = tokio::time::Instant::now();
        let records = ["a", "b"].map(|p| FutureRecord::<(), _>::to("obs.logs").payload(p));
        let results = shared.send_all(records).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(62_000) && waited < Duration::from_millis(62_100),
            "{waited:?}"
        );
        assert_eq!(results.len(), 2);
        for r in results {
            match r {
                Err(e @ NotDelivered::NoReport(_)) => assert_eq!(
                    e.to_string(),
                    "the Kafka broker did not acknowledge within 62000 ms"
                ),
                other => panic!("expected no report, got {other:?}"),
            }
        }
        assert_eq!(shared.get().0, 1, "the session is replaced");
    }

    #[tokio::test]
    async fn a_send_librdkafka_refuses_fails_at_once_with_its_reason_and_replaces_the_session() {
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:5".into(),
            ..KafkaConfig::default()
        };
        let shared = SharedProducer::for_process(&cfg).unwrap();
        // Over `message.max.bytes` (8 MiB): refused when it is queued.
        let payload = vec![0u8; 9 << 20];
        let r = shared
            .send_one(FutureRecord::<(), _>::to("obs.logs").payload(&payload))
            .await;
        match r {
            Err(NotDelivered::Kafka(e)) => assert_eq!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::MessageSizeTooLarge),
                "{e}"
            ),
            other => panic!("expected librdkafka's refusal, got {other:?}"),
        }
        assert_eq!(shared.get().0, 1, "the session is replaced");
    }

    #[test]
    fn the_usual_delivery_failures_read_as_what_the_user_can_do_about_them() {
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(
            NotDelivered::Kafka(timed_out).to_string(),
            "the Kafka broker did not acknowledge in time"
        );
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(
            NotDelivered::Kafka(full).to_string(),
            "the Kafka producer queue is full"
        );
    }

    #[test]
    fn a_commit_waiting_for_an_unreachable_broker_leaves_the_async_worker_free() {
        // One worker thread: were the commit on it, the timer below could not fire.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:6".into(),
            ..KafkaConfig::default()
        };
        let consumer: Arc<BaseConsumer> = Arc::new(
            consumer_config(&cfg, "obs-test", "obs.logs")
                .create()
                .unwrap(),
        );
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("obs.logs", 0, Offset::Offset(5))
            .unwrap();
        rt.block_on(async {
            let commit = tokio::spawn(async move { commit_sync(&consumer, &offsets).await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !commit.is_finished(),
                "the commit should still wait for the coordinator: {:?}",
                commit.await
            );
        });
        // The commit still waits on the blocking pool: leave it there.
        rt.shutdown_background();
    }

    /// Replaced sessions destroyed so far: where each was, and the thread that did it.
    static RETIRED_DESTROYED: std::sync::Mutex<Vec<(usize, Option<String>)>> =
        std::sync::Mutex::new(Vec::new());

    /// Called by the thread that destroyed the replaced session that was at `at`.
    pub(super) fn retired_session_destroyed(at: usize) {
        let name = std::thread::current().name().map(str::to_string);
        RETIRED_DESTROYED.lock().unwrap().push((at, name));
    }

    /// The threads that destroyed the replaced session that was at `at`.
    fn destroyers(at: usize) -> Vec<Option<String>> {
        let done = RETIRED_DESTROYED.lock().unwrap();
        done.iter()
            .filter(|(a, _)| *a == at)
            .map(|(_, n)| n.clone())
            .collect()
    }

    #[test]
    fn a_replaced_session_is_destroyed_on_a_thread_of_its_own_when_its_last_user_lets_go() {
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:3".into(),
            ..KafkaConfig::default()
        };
        let shared = SharedProducer::for_process(&cfg).unwrap();
        let (generation, in_use) = shared.get();
        let at = Arc::as_ptr(&in_use) as usize;
        shared.reset(generation);
        // A caller still holds the old session: it is not destroyed yet.
        assert!(destroyers(at).is_empty());
        drop(in_use);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while destroyers(at).is_empty() {
            assert!(std::time::Instant::now() < deadline, "never destroyed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            destroyers(at),
            vec![Some(RETIRED_SESSION_THREAD.to_string())]
        );
        // The current session is not retired: the last stage's drop destroys it in place.
        let current = Arc::as_ptr(&shared.get().1) as usize;
        drop(shared);
        assert!(destroyers(current).is_empty());
    }

    #[test]
    fn instances_split_partitions_without_overlap() {
        assert_eq!(partitions_of(0, 1, 3), vec![0, 1, 2]);
        assert_eq!(partitions_of(0, 2, 5), vec![0, 2, 4]);
        assert_eq!(partitions_of(1, 2, 5), vec![1, 3]);
        assert_eq!(partitions_of(3, 4, 3), Vec::<i32>::new());
    }
}
