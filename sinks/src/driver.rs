//! The loop every table sink runs: take its topic's messages → decode → batch per
//! partition → record the batch's offsets → insert (deduplicated) → commit.
//!
//! Exactly-once effect: a batch holds consecutive offsets of one partition. The batches of
//! all the table's partitions are inserted together, as one insert carrying
//! `insert_deduplication_token = <topic>/<p>:<first>-<last>[,<p>:<first>-<last>...]`
//! (one part, one statement, where a statement per partition cost the engine a fixed ~6 ms
//! each and made more parts to merge). Before the insert, each batch's range is written to
//! `obs_sink_intents` with that token, all in one statement; when the sink (re)starts
//! reading a partition at offset `a` and an intent `[a, b]` exists, it closes that batch at
//! exactly `b`, whatever the size and time limits say, and inserts it under the recorded
//! token. So a batch re-read after a crash between insert and commit is deduplicated by
//! ClickHouse; a batch that shared its insert with other partitions' batches is then read
//! back (below), since its rows alone under the shared token would be taken for a repeat
//! of the whole insert. A partition whose Kafka committed offset is behind the newest
//! recorded batch (a commit lost or given up on) resumes at that batch rather than
//! re-reading the partition.
//!
//! The token alone is not enough: ClickHouse (26.9) writes a token to its deduplication log
//! before it commits the part, so a ClickHouse crash in between leaves the token without the
//! rows, and the retry is acknowledged without storing anything. So when an attempt got no
//! answer, and for every batch re-formed after a crash, the acknowledged batch is read back
//! (through the table's record-time column, compared by content) and missing rows are
//! stored again under a new token (`obs_sink_rows_restored_total`).
//! Otherwise the batches are flushed together when they hold `sink.batch_max_rows` rows or
//! `sink.batch_max_bytes` bytes of messages between them, or when the oldest one's first
//! message is `sink.batch_max_wait_ms` old.
//!
//! The insert is retried with backoff for as long as ClickHouse is unavailable; meanwhile
//! nothing is committed and nothing more is taken from the topic's reader (see
//! [`crate::reader`]), so Kafka holds the backlog (bounded memory: the reader's queue per
//! table and librdkafka's prefetch are capped). When ClickHouse refuses the data itself (a
//! parse or type error, a violated constraint), the batch is split by message, then by row,
//! and only the refused rows go to `obs.dlq` with ClickHouse's reason. Messages that cannot be decoded go
//! to `obs.dlq` too; both count as processed.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clickhouse::Row;
use obs_runtime::kafka::SharedProducer;
use obs_runtime::ops::Readiness;
use obs_runtime::{Config, clickhouse as ch, kafka, shutdown};
use obs_schemas::Topic;
use obs_schemas::late_writes::{self, LateWrite};
use obs_schemas::records::DeadLetter;
use obs_schemas::wire::Codec;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::reader::{Delivered, Delivery, Readers};
use crate::stored;
use crate::table::TableSink;

const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a shutdown waits for the batches in hand to be stored.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Crash-test failpoint, compiled only with the `failpoints` feature (the test command's
/// build): with `OBS_SINK_CRASH_AFTER_INSERTS=N` the process aborts right after its N-th
/// insert, before committing offsets: the worst moment for a crash, on demand.
#[cfg(feature = "failpoints")]
fn crash_after_insert() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static DONE: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var("OBS_SINK_CRASH_AFTER_INSERTS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(n) = limit
        && DONE.fetch_add(1, Ordering::SeqCst) + 1 >= *n
    {
        eprintln!("OBS_SINK_CRASH_AFTER_INSERTS reached: aborting before the offset commit");
        std::process::abort();
    }
}
const INTENTS_TABLE: &str = "obs_sink_intents";

/// A batch being filled: consecutive offsets of one partition.
struct Batch<R> {
    first: i64,
    last: i64,
    rows: Vec<R>,
    /// Payload bytes of the batch's messages.
    bytes: usize,
    /// `(offset, index of its first row)` per message with rows, in order.
    messages: Vec<(i64, usize)>,
    started: Instant,
    /// What an earlier run recorded for this batch before a crash: it is re-formed.
    recorded: Option<Recorded>,
}

/// A batch's intent, as an earlier run wrote it before its insert.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    /// Where the batch ends.
    last: i64,
    /// The token its insert carried.
    token: String,
}

impl<R> Batch<R> {
    /// Whether a re-formed batch has reached the end its intent recorded.
    fn complete(&self) -> bool {
        self.recorded.as_ref().is_some_and(|r| self.last >= r.last)
    }
}

/// Whether the batches being formed (not re-formed) are due, together: at a size limit
/// between them, or when the oldest is `max_wait` old.
fn fresh_due<R>(
    batches: &BTreeMap<i32, Batch<R>>,
    max_rows: usize,
    max_bytes: usize,
    max_wait: Duration,
) -> bool {
    let fresh = || batches.values().filter(|b| b.recorded.is_none());
    fresh().map(|b| b.rows.len()).sum::<usize>() >= max_rows
        || fresh().map(|b| b.bytes).sum::<usize>() >= max_bytes
        || fresh().any(|b| b.started.elapsed() >= max_wait)
}

/// The rows an insert carries.
pub(crate) enum Rows<'a, R> {
    /// All of them.
    All(&'a [R]),
    /// All the rows of several batches, in order.
    Chunks(&'a [&'a [R]]),
    /// Those at the given positions.
    Some(&'a [R], &'a [usize]),
}

// Not derived: a derive would ask `R: Copy`, but only references are copied.
impl<R> Clone for Rows<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Rows<'_, R> {}

/// How an insert that ClickHouse finally acknowledged went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged, with no attempt before it whose fate is unknown.
    Stored,
    /// Acknowledged after an attempt that got no answer (the connection failed): that
    /// attempt may have logged the token without storing the rows.
    AfterUnansweredAttempt,
}

/// Why a batch's rows are read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// ClickHouse acknowledged them under a token, but may not hold them.
    Acknowledged,
    /// A re-formed batch whose insert carried other partitions' batches too: whether that
    /// insert happened before the crash is not known.
    Unknown,
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[derive(Debug, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Intent {
    consumer_group: String,
    topic: String,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    /// The token of the insert carrying the batch (with other partitions' batches).
    token: String,
}

/// Writes `letter` to `obs.dlq`, retrying until the broker acknowledges it.
pub async fn send_dead_letter(codec: &Codec, dlq: &SharedProducer, letter: &DeadLetter) {
    let key = letter.key.clone().unwrap_or_default();
    retry("writing to the DLQ", || async {
        let bytes = codec
            .encode(Topic::Dlq, letter)
            .await
            .map_err(|e| e.to_string())?;
        let record = FutureRecord::to(Topic::Dlq.name())
            .key(&key)
            .payload(&bytes);
        dlq.send_one(record)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

/// Keeps `rows`, emptied, among `spares` when there is room and it is not too large.
fn keep_spare<R>(spares: &mut Vec<Vec<R>>, mut rows: Vec<R>) {
    rows.clear();
    let bytes = rows.capacity() * std::mem::size_of::<R>();
    if spares.len() < SPARE_ROW_BUFFERS && bytes > 0 && bytes <= SPARE_ROW_BUFFER_BYTES {
        spares.push(rows);
    }
}

/// A message decoded for one table: shared with the topic's other tables
/// ([`TableSink::SHARES_DECODE`]), or its own.
enum Decoded<M> {
    Shared(Arc<M>),
    Own(M),
}

/// Drives one [`TableSink`].
pub struct SinkDriver<T: TableSink> {
    /// The table's messages, from its topic's reader.
    messages: tokio::sync::mpsc::Receiver<Delivery>,
    /// Commits the table's offsets in its group.
    committer: Arc<BaseConsumer>,
    /// What the group had committed at start, by partition: the reader may start lower.
    committed: BTreeMap<i32, i64>,
    group: String,
    dlq: SharedProducer,
    codec: Arc<Codec>,
    client: clickhouse::Client,
    max_rows: usize,
    max_bytes: usize,
    max_wait: Duration,
    table: std::sync::Mutex<T>,
    /// Emptied row buffers of stored batches, for the next batches: a buffer grown anew
    /// for every batch (up to `max_rows` rows) was a tenth of the samples sink's CPU,
    /// most of it the kernel zeroing fresh pages.
    spare_rows: std::sync::Mutex<Vec<Vec<T::Row>>>,
}

/// How many emptied row buffers a table keeps: one per partition of a raw topic (three by
/// default), whose batches are flushed together.
const SPARE_ROW_BUFFERS: usize = 3;
/// The largest row buffer kept: a full batch of samples fits (up to 250,000 rows and the
/// last message's, in a buffer grown to 2^19 rows of 56 bytes), and so does a second of
/// one partition's spans at 100,000 spans/s over three partitions (2^16 rows of 520
/// bytes, 34 MB: at 32 MiB it was freed after every batch, and the next batch grew a new
/// one into fresh pages, the top cost of `obs` under spans), while what is held between
/// bursts stays bounded.
const SPARE_ROW_BUFFER_BYTES: usize = 64 << 20;

/// Retries `op` with backoff until it succeeds, logging `what` on each failure.
pub async fn retry<F, Fut, V, E>(what: &str, mut op: F) -> V
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<V, E>>,
    E: std::fmt::Display,
{
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                attempt += 1;
                tracing::warn!(attempt, error = %e, "{what} failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl<T: TableSink> SinkDriver<T> {
    /// Registers the table with its topic's reader in `readers` (offsets in group
    /// `<group_prefix>-<table>`, this instance's partitions), connects the DLQ producer and
    /// the ClickHouse client, and starts the progress monitor that reports stalls to
    /// `ready`.
    pub async fn new(
        cfg: &Config,
        ready: &Readiness,
        readers: &mut Readers,
    ) -> anyhow::Result<Self> {
        let group = format!("{}-{}", cfg.sink.group_prefix, T::NAME);
        // librdkafka's synchronous calls wait for the broker: on the blocking pool.
        let (kafka_cfg, sink, in_group) = (cfg.kafka.clone(), cfg.sink.clone(), group.clone());
        let (committer, partitions, committed) = tokio::task::spawn_blocking(move || {
            let committer = kafka::committer(&kafka_cfg, &in_group)?;
            let partitions =
                kafka::my_partitions(&committer, T::TOPIC.name(), sink.instance, sink.instances)?;
            let committed = committed_retrying(&committer, T::TOPIC, &partitions, &in_group)?;
            anyhow::Ok((committer, partitions, committed))
        })
        .await
        .context("starting the sink")??;
        let messages = readers.add_table(T::TOPIC, &partitions, committed.clone());
        tracing::info!(table = T::TABLE, topic = %T::TOPIC, ?partitions, "partitions assigned");
        let watch = crate::lag::Watch {
            group: group.clone(),
            topic: T::TOPIC,
            table: T::TABLE,
            partitions,
            stall_after: Duration::from_secs(cfg.sink.stall_after_secs.max(1)),
        };
        crate::lag::spawn(&cfg.kafka, watch, ready.clone());
        Ok(SinkDriver {
            messages,
            committer: Arc::new(committer),
            committed,
            group,
            dlq: SharedProducer::for_process(&cfg.kafka)?,
            codec: Arc::new(obs_runtime::registry::codec(cfg)),
            client: ch::client(&cfg.clickhouse),
            max_rows: cfg.sink.batch_max_rows.max(1),
            max_bytes: cfg.sink.batch_max_bytes.max(1),
            max_wait: Duration::from_millis(cfg.sink.batch_max_wait_ms),
            table: std::sync::Mutex::new(T::default()),
            spare_rows: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Runs until a shutdown is asked for (then inserts and commits the batches it holds,
    /// see [`SinkDriver::drain`]); Kafka and ClickHouse failures are retried.
    pub async fn run(mut self) -> anyhow::Result<()> {
        tracing::info!(topic = %T::TOPIC, table = T::TABLE, "sink started");
        let mut batches: BTreeMap<i32, Batch<T::Row>> = BTreeMap::new();
        let mut next_offset: HashMap<i32, i64> = HashMap::new();
        // The reader may start below what this table stored (another table of the topic
        // is behind): those messages are skipped.
        let mut skip_below: HashMap<i32, i64> =
            std::mem::take(&mut self.committed).into_iter().collect();
        // Per partition, the first offset of the newest batch recorded when reading began
        // at the current position: a batch starting after it has no intent to look up.
        let mut recorded_to: HashMap<i32, i64> = HashMap::new();
        loop {
            let wait = batches
                .values()
                .filter(|b| b.recorded.is_none())
                .map(|b| self.max_wait.saturating_sub(b.started.elapsed()))
                .min()
                .unwrap_or(Duration::from_secs(3600));
            let next = tokio::select! {
                r = tokio::time::timeout(wait, self.messages.recv()) => r,
                _ = shutdown::wait() => {
                    self.drain(batches).await;
                    return Ok(());
                }
            };
            match next {
                Ok(Some(delivered)) => {
                    let msg = &delivered.message;
                    let (p, offset) = (msg.partition(), msg.offset());
                    if skip_below.get(&p).is_some_and(|&s| offset < s) {
                        continue; // stored already
                    }
                    skip_below.remove(&p);
                    if next_offset.get(&p) != Some(&offset) {
                        // A new position (start, rebalance, rewind): an unfinished batch of
                        // this partition is re-read from Kafka, and an intent decides its end.
                        batches.remove(&p);
                        next_offset.remove(&p);
                        // Kafka's committed offset can be older than what is stored (a lost
                        // or failed commit): resume at the newest recorded batch instead of
                        // re-reading the partition.
                        let newest = self.newest_intent(p).await;
                        if let Some(newest) = newest
                            && newest > offset
                        {
                            tracing::info!(
                                table = T::TABLE,
                                partition = p,
                                offset = newest,
                                "the committed offset is behind the recorded batches; resuming at the newest one"
                            );
                            skip_below.insert(p, newest);
                            continue;
                        }
                        recorded_to.insert(p, newest.unwrap_or(-1));
                    }
                    if batches
                        .get(&p)
                        .is_some_and(|b| b.recorded.as_ref().is_some_and(|r| offset > r.last))
                    {
                        let b = batches.remove(&p).expect("checked above");
                        self.flush(vec![(p, b)]).await;
                    }
                    let batch = match batches.entry(p) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => {
                            let recorded = if recorded_to.get(&p).is_none_or(|&r| offset <= r) {
                                self.intent(p, offset).await
                            } else {
                                None
                            };
                            v.insert(Batch {
                                first: offset,
                                last: offset,
                                rows: self.spare_rows().unwrap_or_default(),
                                bytes: 0,
                                messages: Vec::new(),
                                started: Instant::now(),
                                recorded,
                            })
                        }
                    };
                    let before = batch.rows.len();
                    self.take(&delivered, &mut batch.rows).await;
                    if batch.rows.len() > before {
                        batch.messages.push((offset, before));
                    }
                    batch.last = offset;
                    batch.bytes += msg.payload().map_or(0, <[u8]>::len);
                    next_offset.insert(p, offset + 1);
                }
                Ok(None) => {
                    // The topic's reader stopped: a shutdown, or it failed (which the
                    // process reports).
                    self.drain(batches).await;
                    return Ok(());
                }
                Err(_) => {} // a batch is due
            }
            let complete: Vec<i32> = batches
                .iter()
                .filter(|(_, b)| b.complete())
                .map(|(&p, _)| p)
                .collect();
            for p in complete {
                let b = batches.remove(&p).expect("listed above");
                self.flush(vec![(p, b)]).await;
            }
            if fresh_due(&batches, self.max_rows, self.max_bytes, self.max_wait) {
                self.flush(take_fresh(&mut batches)).await;
            }
        }
    }

    /// At shutdown: each batch read since the last commit is inserted and committed, so
    /// the next start resumes after it. A batch being re-formed from an intent is left to
    /// the next start, which re-forms it whole (its token must cover exactly its recorded
    /// offsets). Bounded by [`DRAIN_LIMIT`]: with ClickHouse down nothing more is
    /// committed, and the next start re-reads what was not.
    async fn drain(&self, mut batches: BTreeMap<i32, Batch<T::Row>>) {
        let work = async {
            let fresh = take_fresh(&mut batches);
            if !fresh.is_empty() {
                self.flush(fresh).await;
            }
        };
        if tokio::time::timeout(DRAIN_LIMIT, work).await.is_err() {
            tracing::warn!(
                table = T::TABLE,
                "shutdown: batches not stored within {DRAIN_LIMIT:?}; the next start re-reads them"
            );
        }
    }

    /// The first offset of the newest batch recorded for `partition`, if any.
    async fn newest_intent(&self, partition: i32) -> Option<i64> {
        let newest: Option<i64> = retry("reading sink intents", || async {
            self.client
                .query(
                    "SELECT max(FirstOffset) FROM obs_sink_intents WHERE ConsumerGroup = ? \
                     AND Topic = ? AND Partition = ? HAVING count() > 0",
                )
                .bind(&self.group)
                .bind(T::TOPIC.name())
                .bind(partition)
                .fetch_optional::<i64>()
                .await
        })
        .await;
        newest
    }

    /// What an earlier run recorded for a batch starting at `first`, if anything.
    async fn intent(&self, partition: i32, first: i64) -> Option<Recorded> {
        let recorded: Option<(i64, String)> = retry("reading sink intents", || async {
            self.client
                .query(
                    "SELECT LastOffset, Token FROM obs_sink_intents WHERE ConsumerGroup = ? \
                     AND Topic = ? AND Partition = ? AND FirstOffset = ? \
                     ORDER BY CreatedAt DESC LIMIT 1",
                )
                .bind(&self.group)
                .bind(T::TOPIC.name())
                .bind(partition)
                .bind(first)
                .fetch_optional::<(i64, String)>()
                .await
        })
        .await;
        let (last, token) = recorded?;
        // Intents written before tokens were recorded name their own batch's token.
        let token = if token.is_empty() {
            dedup_token(T::TOPIC, &[(partition, first, last)])
        } else {
            token
        };
        tracing::info!(
            table = T::TABLE,
            partition,
            first,
            last,
            %token,
            "re-forming a batch recorded before a restart"
        );
        Some(Recorded { last, token })
    }

    /// Decodes one message into rows; a message that cannot be decoded goes to the DLQ.
    async fn take(&self, delivered: &Delivered, rows: &mut Vec<T::Row>) {
        let msg = &delivered.message;
        let payload = msg.payload().unwrap_or_default();
        if !T::may_have_rows(payload) {
            return;
        }
        if let Some(decoded) = T::decode_raw(payload) {
            match decoded {
                Ok(m) => self
                    .table
                    .lock()
                    .expect("table lock")
                    .rows(Cow::Owned(m), rows),
                Err(e) => {
                    let (key, value) = (msg.key().map(<[u8]>::to_vec), Some(payload.to_vec()));
                    self.dead_letter(msg.partition(), msg.offset(), key, value, &e)
                        .await;
                }
            }
            return;
        }
        let decoded = obs_runtime::registry::retry_unreachable(|| async {
            if T::SHARES_DECODE {
                self.codec
                    .decode_shared::<T::Message>(payload, &delivered.decoded)
                    .await
                    .map(Decoded::Shared)
            } else {
                self.codec
                    .decode::<T::Message>(payload)
                    .await
                    .map(Decoded::Own)
            }
        })
        .await;
        match decoded {
            Ok(Decoded::Shared(m)) => {
                let mut table = self.table.lock().expect("table lock");
                table.rows(Cow::Borrowed(&*m), rows);
            }
            Ok(Decoded::Own(m)) => {
                let mut table = self.table.lock().expect("table lock");
                table.rows(Cow::Owned(m), rows);
            }
            Err(_) if !T::DEAD_LETTERS_UNDECODABLE => {
                metrics::counter!("obs_sink_undecodable_skipped_total", "table" => T::NAME)
                    .increment(1);
            }
            Err(e) => {
                self.dead_letter(
                    msg.partition(),
                    msg.offset(),
                    msg.key().map(<[u8]>::to_vec),
                    msg.payload().map(<[u8]>::to_vec),
                    &e.to_string(),
                )
                .await;
            }
        }
    }

    /// Sends what could not be stored to `obs.dlq`, retrying until the broker takes it.
    async fn dead_letter(
        &self,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        error: &str,
    ) {
        let letter = DeadLetter {
            topic: T::TOPIC.name().to_string(),
            partition,
            offset,
            key,
            value,
            stage: format!("sink:{}", T::NAME),
            error: error.to_string(),
            failed_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        };
        tracing::warn!(
            topic = T::TOPIC.name(),
            partition,
            offset,
            error,
            "sent to the DLQ"
        );
        send_dead_letter(&self.codec, &self.dlq, &letter).await;
        metrics::counter!("obs_sink_dlq_total", "table" => T::TABLE).increment(1);
    }

    /// Inserts `batches` (the fresh batches of the table's partitions, or one re-formed
    /// batch) as one insert, after recording their ranges, retrying until ClickHouse
    /// accepts; then commits their partitions.
    async fn flush(&self, batches: Vec<(i32, Batch<T::Row>)>) {
        let filled: Vec<&(i32, Batch<T::Row>)> =
            batches.iter().filter(|(_, b)| !b.rows.is_empty()).collect();
        if !filled.is_empty() {
            let ranges: Vec<(i32, i64, i64)> =
                filled.iter().map(|(p, b)| (*p, b.first, b.last)).collect();
            let chunks: Vec<&[T::Row]> = filled.iter().map(|(_, b)| b.rows.as_slice()).collect();
            let own_token = dedup_token(T::TOPIC, &ranges);
            let reformed = filled.iter().find_map(|(_, b)| b.recorded.as_ref());
            debug_assert!(reformed.is_none() || batches.len() == 1, "re-formed alone");
            let started = Instant::now();
            match reformed {
                None => {
                    self.record_intents(&ranges, &own_token).await;
                    self.insert_checked(&filled, &chunks, &own_token, false)
                        .await;
                }
                Some(r) if r.token == own_token => {
                    self.insert_checked(&filled, &chunks, &own_token, true)
                        .await;
                }
                Some(r) => {
                    // Its insert carried other partitions' batches too: these rows alone
                    // under that token would be acknowledged as a repeat of that insert,
                    // stored or not. So what ClickHouse lacks of them is stored instead.
                    let (p, b) = filled[0];
                    let stored = self
                        .store_missing(&b.rows, &r.token, Missing::Unknown)
                        .await;
                    if let Err(rejected) = stored {
                        tracing::warn!(
                            table = T::TABLE,
                            partition = p,
                            error = %rejected,
                            "ClickHouse rejected a re-formed batch's data; isolating the rows it refuses"
                        );
                        self.isolate(*p, b).await;
                    }
                }
            }
            let rows: usize = chunks.iter().map(|c| c.len()).sum();
            let bytes: usize = filled.iter().map(|(_, b)| b.bytes).sum();
            self.mark_late(&chunks).await;
            #[cfg(feature = "failpoints")]
            crash_after_insert();
            metrics::counter!("obs_sink_rows_total", "table" => T::TABLE).increment(rows as u64);
            metrics::counter!("obs_sink_input_bytes_total", "table" => T::TABLE)
                .increment(bytes as u64);
            metrics::histogram!("obs_sink_batch_seconds", "table" => T::TABLE)
                .record(started.elapsed().as_secs_f64());
            tracing::debug!(table = T::TABLE, rows, token = %own_token, "batch inserted");
        }
        let next: Vec<(i32, i64)> = batches.iter().map(|(p, b)| (*p, b.last + 1)).collect();
        self.commit(&next).await;
        let mut spares = self.spare_rows.lock().expect("spare rows lock");
        for (_, b) in batches {
            keep_spare(&mut spares, b.rows);
        }
    }

    /// Writes the ranges of the batches about to be inserted under `token`, in one insert.
    async fn record_intents(&self, ranges: &[(i32, i64, i64)], token: &str) {
        let intents: Vec<Intent> = ranges
            .iter()
            .map(|&(partition, first, last)| Intent {
                consumer_group: self.group.clone(),
                topic: T::TOPIC.name().to_string(),
                partition,
                first_offset: first,
                last_offset: last,
                token: token.to_string(),
            })
            .collect();
        self.insert_bookkeeping("recording the batch intents", INTENTS_TABLE, &intents)
            .await;
    }

    /// Inserts bookkeeping `rows` (intents, late-write marks: a row written twice is
    /// harmless, so no token) into `table`, retrying until ClickHouse accepts them.
    async fn insert_bookkeeping<R>(&self, what: &str, table: &str, rows: &[R])
    where
        R: Row + for<'a> Row<Value<'a> = R> + Serialize + Send + Sync + 'static,
    {
        retry(what, || async {
            let mut insert = self.client.insert::<R>(table).await?;
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await
        })
        .await;
    }

    /// Inserts the `chunks` of the `filled` batches under `token`; reads them back when
    /// ClickHouse may have acknowledged them without storing them (`reformed`, or an
    /// attempt that got no answer), and isolates the refused rows when it refuses data.
    async fn insert_checked(
        &self,
        filled: &[&(i32, Batch<T::Row>)],
        chunks: &[&[T::Row]],
        token: &str,
        reformed: bool,
    ) {
        match self.insert_retrying(Rows::Chunks(chunks), token).await {
            Ok(Outcome::Stored) if !reformed => {}
            // Re-formed after a crash, or sent again after an answer that never came:
            // an earlier attempt may have left the token without the rows.
            Ok(_) => {
                for chunk in chunks {
                    let stored = self
                        .store_missing(chunk, token, Missing::Acknowledged)
                        .await;
                    self.refused_again(stored);
                }
            }
            Err(rejected) => {
                tracing::warn!(
                    table = T::TABLE,
                    %token,
                    error = %rejected,
                    "ClickHouse rejected the batch's data; isolating the rows it refuses"
                );
                for (p, b) in filled {
                    self.isolate(*p, b).await;
                }
            }
        }
    }

    /// An emptied row buffer of a stored batch, if one is kept.
    fn spare_rows(&self) -> Option<Vec<T::Row>> {
        self.spare_rows.lock().expect("spare rows lock").pop()
    }

    /// After a batch is stored, before its commit: records the tenants whose rows were late
    /// (`obs_schemas::late_writes`), so a results cache drops the answers they change. A
    /// crash before this is a batch read and inserted (deduplicated) again, then recorded.
    async fn mark_late(&self, chunks: &[&[T::Row]]) {
        let before_ms = (unix_nanos() / 1_000_000) as i64 - late_writes::LATE_AFTER_MS;
        let mut late: BTreeMap<String, i64> = BTreeMap::new();
        for chunk in chunks {
            for (tenant, from_ms) in T::late_from_ms(chunk, before_ms) {
                let earliest = late.entry(tenant).or_insert(from_ms);
                *earliest = (*earliest).min(from_ms);
            }
        }
        if late.is_empty() {
            return;
        }
        let marks: Vec<LateWrite> = late
            .into_iter()
            .map(|(tenant, from_ms)| LateWrite {
                tenant,
                table_name: T::TABLE.to_string(),
                from_ms,
            })
            .collect();
        self.insert_bookkeeping("recording a late write", late_writes::TABLE, &marks)
            .await;
    }

    /// Inserts, retrying every failure that can pass; `Err` when ClickHouse refuses the
    /// data itself (retrying would fail forever).
    async fn insert_retrying(
        &self,
        rows: Rows<'_, T::Row>,
        token: &str,
    ) -> Result<Outcome, String> {
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 0u32;
        let mut outcome = Outcome::Stored;
        loop {
            match insert_rows(&self.client, T::TABLE, rows, token).await {
                Ok(()) => return Ok(outcome),
                Err(e) if rejects_data(&e) => return Err(e.to_string()),
                Err(e) => {
                    if !matches!(e, clickhouse::error::Error::BadResponse(_)) {
                        outcome = Outcome::AfterUnansweredAttempt;
                    }
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, table = T::TABLE, "insert failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// After ClickHouse refused a batch's data: each message is inserted on its own (token
    /// `<topic>/<p>:<o>-<o>`), and in a refused message each row (token `...#<row>`); rows
    /// still refused go to the DLQ with ClickHouse's reason. The tokens depend only on
    /// offsets and row positions, so a re-run after a crash stores nothing twice.
    async fn isolate(&self, partition: i32, batch: &Batch<T::Row>) {
        for (n, &(offset, start)) in batch.messages.iter().enumerate() {
            let end = batch
                .messages
                .get(n + 1)
                .map_or(batch.rows.len(), |&(_, next)| next);
            let rows = &batch.rows[start..end];
            let token = dedup_token(T::TOPIC, &[(partition, offset, offset)]);
            match self.insert_retrying(Rows::All(rows), &token).await {
                Ok(Outcome::Stored) => continue,
                Ok(Outcome::AfterUnansweredAttempt) => {
                    let stored = self
                        .store_missing(rows, &token, Missing::Acknowledged)
                        .await;
                    self.refused_again(stored);
                    continue;
                }
                Err(_) => {}
            }
            for (i, row) in rows.iter().enumerate() {
                let row_token = format!("{token}#{i}");
                match self
                    .insert_retrying(Rows::All(std::slice::from_ref(row)), &row_token)
                    .await
                {
                    Ok(Outcome::Stored) => {}
                    Ok(Outcome::AfterUnansweredAttempt) => {
                        let stored = self
                            .store_missing(
                                std::slice::from_ref(row),
                                &row_token,
                                Missing::Acknowledged,
                            )
                            .await;
                        self.refused_again(stored);
                    }
                    Err(reason) => {
                        let value = serde_json::to_vec(row).ok();
                        let error = format!(
                            "ClickHouse refused row {i} of the message (the row is the value, as JSON): {reason}"
                        );
                        self.dead_letter(partition, offset, None, value, &error)
                            .await;
                    }
                }
            }
        }
    }

    /// Reads back what ClickHouse holds of `rows` and stores the missing ones again, under
    /// a token of their own, until nothing is missing. Needed because ClickHouse (26.9)
    /// records an insert's token in its deduplication log before it commits the part: a
    /// crash in between leaves the token without the rows, and a retry carrying it is
    /// acknowledged and stores nothing. `Err` is ClickHouse refusing the missing rows.
    async fn store_missing(
        &self,
        rows: &[T::Row],
        token: &str,
        why: Missing,
    ) -> Result<(), String> {
        let mut backoff = Duration::from_millis(200);
        for round in 1u32.. {
            let missing = match stored::missing::<T>(&self.client, T::TABLE, rows).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, table = T::TABLE, "reading back a batch failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if missing.is_empty() {
                return Ok(());
            }
            if T::TIME_COLUMN.is_none() {
                // A replacing table cannot be read back by record time: its batch is simply
                // written again under a new token (a row twice is one row after merges).
                tracing::debug!(
                    table = T::TABLE,
                    token,
                    rows = rows.len(),
                    "writing an uncertain batch of a replacing table again"
                );
            } else if why == Missing::Unknown {
                tracing::info!(
                    table = T::TABLE,
                    token,
                    missing = missing.len(),
                    rows = rows.len(),
                    "storing what ClickHouse lacks of a re-formed batch whose insert was shared \
                     with other partitions' batches"
                );
            } else {
                tracing::warn!(
                    table = T::TABLE,
                    token,
                    missing = missing.len(),
                    rows = rows.len(),
                    "ClickHouse acknowledged rows it does not hold (its deduplication log kept the \
                 token of an insert a crash cut short); storing them again"
                );
                metrics::counter!("obs_sink_rows_restored_total", "table" => T::TABLE)
                    .increment(missing.len() as u64);
            }
            // A token never used before: the old one is what ClickHouse wrongly remembers.
            let again = format!("{token}#restored-{round}-{}", unix_nanos());
            match self
                .insert_retrying(Rows::Some(rows, &missing), &again)
                .await
            {
                Ok(Outcome::Stored) => return Ok(()),
                Ok(Outcome::AfterUnansweredAttempt) => {} // read back again
                Err(e) => return Err(e),
            }
        }
        unreachable!("the rounds are unbounded")
    }

    /// After ClickHouse refused rows of a batch it had acknowledged before: its verdict on
    /// the data, logged, not looped on.
    fn refused_again(&self, result: Result<(), String>) {
        if let Err(e) = result {
            tracing::error!(table = T::TABLE, error = %e, "ClickHouse refused rows it had accepted");
        }
    }

    /// Commits the `next` offsets of the partitions, in one request (synchronously: the
    /// batches are durable now).
    async fn commit(&self, next: &[(i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for &(partition, offset) in next {
            if let Err(e) =
                tpl.add_partition_offset(T::TOPIC.name(), partition, Offset::Offset(offset))
            {
                tracing::error!(error = %e, "cannot build the offset commit");
                return;
            }
        }
        for attempt in 1..=10 {
            match kafka::commit_sync(&self.committer, &tpl).await {
                Ok(()) => return,
                Err(e) => {
                    // Rows are stored and the batch is re-formed identically: a failed commit
                    // only means the batch may be read (and skipped by ClickHouse) again.
                    tracing::warn!(attempt, error = %e, "offset commit failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        tracing::error!(
            ?next,
            "giving up committing offsets; the batches will be re-read and deduplicated"
        );
    }
}

/// The offsets `group` has committed on `partitions` of `topic`, asked until the broker
/// answers (it may still be starting).
fn committed_retrying(
    committer: &BaseConsumer,
    topic: Topic,
    partitions: &[i32],
    group: &str,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut attempt = 0;
    loop {
        match kafka::committed(committer, topic.name(), partitions, Duration::from_secs(10)) {
            Ok(c) => return Ok(c),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(attempt, error = %e, group, "reading the committed offsets failed; retrying");
                std::thread::sleep(Duration::from_millis(500 * attempt));
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "reading the offsets group {group} committed on {topic}: {e}; is the broker up?"
                ));
            }
        }
    }
}

/// Inserts `rows` into `table` as one block carrying `insert_deduplication_token = token`.
pub(crate) async fn insert_rows<R>(
    client: &clickhouse::Client,
    table: &str,
    rows: Rows<'_, R>,
    token: &str,
) -> clickhouse::error::Result<()>
where
    R: Row + for<'a> Row<Value<'a> = R> + Serialize + Send + Sync + 'static,
{
    let mut insert = client
        .insert::<R>(table)
        .await?
        .with_setting("insert_deduplication_token", token);
    match rows {
        Rows::All(all) => {
            for row in all {
                insert.write(row).await?;
            }
        }
        Rows::Chunks(chunks) => {
            for row in chunks.iter().flat_map(|c| c.iter()) {
                insert.write(row).await?;
            }
        }
        Rows::Some(all, positions) => {
            for &i in positions {
                insert.write(&all[i]).await?;
            }
        }
    }
    insert.end().await
}

/// ClickHouse error codes that mean "this data is refused", so retrying cannot help:
/// parse and type errors, values out of range, violated constraints, `throwIf`.
const DATA_ERROR_CODES: &[u32] = &[6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 395, 469];

/// Whether an insert error is ClickHouse refusing the data (as opposed to an outage, a
/// timeout or a missing table, which can pass).
fn rejects_data(e: &clickhouse::error::Error) -> bool {
    match e {
        clickhouse::error::Error::BadResponse(text) => {
            error_code(text).is_some_and(|c| DATA_ERROR_CODES.contains(&c))
        }
        _ => false,
    }
}

/// The `Code: N` of a ClickHouse exception text.
fn error_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The token naming exactly the offsets of an insert's batches, `(partition, first, last)`
/// in partition order: the same offsets give the same token, so ClickHouse stores a
/// retried insert once.
pub fn dedup_token(topic: Topic, ranges: &[(i32, i64, i64)]) -> String {
    let mut token = format!("{}/", topic.name());
    for (n, (partition, first, last)) in ranges.iter().enumerate() {
        if n > 0 {
            token.push(',');
        }
        token.push_str(&format!("{partition}:{first}-{last}"));
    }
    token
}

/// Takes the batches being formed (not re-formed) out of `batches`, to be inserted together.
fn take_fresh<R>(batches: &mut BTreeMap<i32, Batch<R>>) -> Vec<(i32, Batch<R>)> {
    let fresh: Vec<i32> = batches
        .iter()
        .filter(|(_, b)| b.recorded.is_none())
        .map(|(&p, _)| p)
        .collect();
    fresh
        .into_iter()
        .map(|p| (p, batches.remove(&p).expect("listed above")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_told_from_outages() {
        use clickhouse::error::Error;
        let refused = Error::BadResponse(
            "Code: 469. DB::Exception: Constraint `no_poison` for table obs.otel_logs is violated. (VIOLATED_CONSTRAINT)".into(),
        );
        assert!(rejects_data(&refused));
        let missing = Error::BadResponse("Code: 60. DB::Exception: Unknown table".into());
        assert!(!rejects_data(&missing));
        assert!(!rejects_data(&Error::TimedOut));
        assert_eq!(error_code("Code: 62. x"), Some(62));
        assert_eq!(error_code("no code"), None);
    }

    fn batch(rows: usize, bytes: usize, recorded_last: Option<i64>) -> Batch<u8> {
        Batch {
            first: 0,
            last: 9,
            rows: vec![0u8; rows],
            bytes,
            messages: vec![],
            started: Instant::now(),
            recorded: recorded_last.map(|last| Recorded {
                last,
                token: "t".into(),
            }),
        }
    }

    #[test]
    fn batches_are_due_together_at_their_rows_bytes_or_oldest_age() {
        let hour = Duration::from_secs(3600);
        let of = |list: Vec<Batch<u8>>| -> BTreeMap<i32, Batch<u8>> { (0..).zip(list).collect() };
        assert!(!fresh_due(&of(vec![batch(9, 99, None)]), 10, 100, hour));
        assert!(fresh_due(&of(vec![batch(10, 99, None)]), 10, 100, hour));
        assert!(fresh_due(&of(vec![batch(9, 100, None)]), 10, 100, hour));
        // The limits are on the batches of all partitions together.
        assert!(!fresh_due(
            &of(vec![batch(4, 40, None), batch(5, 50, None)]),
            10,
            100,
            hour
        ));
        assert!(fresh_due(
            &of(vec![batch(5, 40, None), batch(5, 50, None)]),
            10,
            100,
            hour
        ));
        assert!(fresh_due(
            &of(vec![batch(4, 50, None), batch(5, 50, None)]),
            10,
            100,
            hour
        ));
        assert!(fresh_due(
            &of(vec![batch(1, 1, None)]),
            10,
            100,
            Duration::ZERO
        ));
        // Re-formed batches are not counted: each ends where its intent says.
        assert!(!fresh_due(
            &of(vec![batch(10, 100, Some(12))]),
            10,
            100,
            Duration::ZERO
        ));
        assert!(!fresh_due(
            &of(vec![batch(5, 50, Some(12)), batch(5, 50, None)]),
            10,
            100,
            hour
        ));
        assert!(!batch(10, 100, Some(12)).complete());
        assert!(batch(1, 1, Some(9)).complete());
        assert!(!batch(1, 1, None).complete());
    }

    #[test]
    fn the_fresh_batches_are_taken_and_re_formed_ones_left() {
        let mut batches: BTreeMap<i32, Batch<u8>> = BTreeMap::new();
        batches.insert(0, batch(1, 1, None));
        batches.insert(1, batch(1, 1, Some(20)));
        batches.insert(2, batch(1, 1, None));
        let taken: Vec<i32> = take_fresh(&mut batches)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(taken, [0, 2]);
        assert_eq!(batches.keys().copied().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_full_batch_of_samples_leaves_its_buffer_for_the_next_batch() {
        use crate::metrics::SampleRow;
        let mut spares: Vec<Vec<SampleRow>> = Vec::new();
        let row = SampleRow {
            tenant: "t".into(),
            metric_name: "up".into(),
            fingerprint: 1,
            timestamp_ms: 0,
            value: 1.0,
        };
        // 249,999 rows and a last message of 33,000 (a third of the benchmark's requests
        // of 100,000 samples) grow a buffer to 2^19 rows.
        let mut full = Vec::new();
        for _ in 0..283_000 {
            full.push(row.clone()); // as `rows` adds them
        }
        assert_eq!(full.capacity(), 1 << 19);
        keep_spare(&mut spares, full);
        assert_eq!(spares.len(), 1);
        assert!(spares[0].is_empty() && spares[0].capacity() == 1 << 19);
        for _ in 0..SPARE_ROW_BUFFERS {
            keep_spare(&mut spares, Vec::with_capacity(10));
        }
        assert_eq!(
            spares.len(),
            SPARE_ROW_BUFFERS,
            "no more than that are kept"
        );
        let mut few = Vec::new();
        keep_spare(&mut few, Vec::<SampleRow>::with_capacity(1 << 21));
        keep_spare(&mut few, Vec::<SampleRow>::new());
        assert!(few.is_empty(), "too large, or nothing to keep");
    }

    #[test]
    fn a_second_of_spans_of_one_partition_leaves_its_buffer_for_the_next_batch() {
        use crate::traces::OtelTraceRow;
        // 33,334 spans (100,000 spans/s over three partitions, in a 1 s batch) grow a
        // buffer to 2^16 rows.
        let rows = Vec::<OtelTraceRow>::with_capacity(33_334usize.next_power_of_two());
        let mut spares = Vec::new();
        keep_spare(&mut spares, rows);
        assert_eq!(spares.len(), 1, "a buffer of 2^16 spans rows is kept");
        assert_eq!(spares[0].capacity(), 1 << 16);
    }

    #[test]
    fn token_names_topic_partitions_and_offsets() {
        assert_eq!(dedup_token(Topic::Logs, &[(2, 10, 19)]), "obs.logs/2:10-19");
        assert_eq!(
            dedup_token(Topic::Spans, &[(0, 5, 9), (2, 10, 19)]),
            "obs.spans/0:5-9,2:10-19"
        );
    }
}
