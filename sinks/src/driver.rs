//! The loop every table sink runs: take its topic's messages → decode → batch per
//! partition → record the batch's offsets → insert (deduplicated) → commit.
//!
//! Exactly-once effect: a batch holds consecutive offsets of one partition and its insert
//! carries `insert_deduplication_token = <topic>/<partition>:<first>-<last>`. Before the
//! insert, the batch's range is written to `obs_sink_intents`; when the sink (re)starts
//! reading a partition at offset `a` and an intent `[a, b]` exists, it closes that batch at
//! exactly `b`, whatever the size and time limits say. So a batch re-read after a crash
//! between insert and commit is the same batch with the same token, and ClickHouse stores it
//! once. A partition whose Kafka committed offset is behind the newest recorded batch (a
//! commit lost or given up on) resumes at that batch rather than re-reading the partition.
//!
//! The token alone is not enough: ClickHouse (26.9) writes a token to its deduplication log
//! before it commits the part, so a ClickHouse crash in between leaves the token without the
//! rows, and the retry is acknowledged without storing anything. So when an attempt got no
//! answer, and for every batch re-formed after a crash, the acknowledged batch is read back
//! (through the table's record-time column, compared by content) and missing rows are
//! stored again under a new token (`obs_sink_rows_restored_total`).
//! Otherwise a batch is flushed at `sink.batch_max_rows` rows, `sink.batch_max_bytes` bytes
//! of messages, or when its first message is `sink.batch_max_wait_ms` old.
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
    /// Where the batch must end, from an intent written before a crash.
    end: Option<i64>,
}

impl<R> Batch<R> {
    /// Whether to insert it now: at the end an intent recorded, else at a size or age limit.
    fn due(&self, max_rows: usize, max_bytes: usize, max_wait: Duration) -> bool {
        match self.end {
            Some(end) => self.last >= end,
            None => {
                self.rows.len() >= max_rows
                    || self.bytes >= max_bytes
                    || self.started.elapsed() >= max_wait
            }
        }
    }
}

/// The rows an insert carries.
pub(crate) enum Rows<'a, R> {
    /// All of them.
    All(&'a [R]),
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

/// How many emptied row buffers a table keeps: enough for batches of two partitions
/// flushed back to back.
const SPARE_ROW_BUFFERS: usize = 2;
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
                .filter(|b| b.end.is_none())
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
                        .is_some_and(|b| b.end.is_some_and(|e| offset > e))
                    {
                        let b = batches.remove(&p).expect("checked above");
                        self.flush(p, b).await;
                    }
                    let batch = match batches.entry(p) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => {
                            let end = if recorded_to.get(&p).is_none_or(|&r| offset <= r) {
                                self.intent_end(p, offset).await
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
                                end,
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
            let due: Vec<i32> = batches
                .iter()
                .filter(|(_, b)| b.due(self.max_rows, self.max_bytes, self.max_wait))
                .map(|(&p, _)| p)
                .collect();
            for p in due {
                let b = batches.remove(&p).expect("listed above");
                self.flush(p, b).await;
            }
        }
    }

    /// At shutdown: each batch read since the last commit is inserted and committed, so
    /// the next start resumes after it. A batch being re-formed from an intent is left to
    /// the next start, which re-forms it whole (its token must cover exactly its recorded
    /// offsets). Bounded by [`DRAIN_LIMIT`]: with ClickHouse down nothing more is
    /// committed, and the next start re-reads what was not.
    async fn drain(&self, batches: BTreeMap<i32, Batch<T::Row>>) {
        let work = async {
            for (p, b) in batches {
                if b.end.is_none() {
                    self.flush(p, b).await;
                }
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

    /// The end an earlier run recorded for a batch starting at `first`, if any.
    async fn intent_end(&self, partition: i32, first: i64) -> Option<i64> {
        let end: Option<i64> = retry("reading sink intents", || async {
            self.client
                .query(
                    "SELECT LastOffset FROM obs_sink_intents WHERE ConsumerGroup = ? AND Topic = ? \
                     AND Partition = ? AND FirstOffset = ? ORDER BY CreatedAt DESC LIMIT 1",
                )
                .bind(&self.group)
                .bind(T::TOPIC.name())
                .bind(partition)
                .bind(first)
                .fetch_optional::<i64>()
                .await
        })
        .await;
        if let Some(e) = end {
            tracing::info!(
                table = T::TABLE,
                partition,
                first,
                last = e,
                "re-forming a batch recorded before a restart"
            );
        }
        end
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

    /// Records the batch's range, inserts it (retrying until ClickHouse accepts), commits.
    async fn flush(&self, partition: i32, batch: Batch<T::Row>) {
        if !batch.rows.is_empty() {
            if batch.end.is_none() {
                let intent = Intent {
                    consumer_group: self.group.clone(),
                    topic: T::TOPIC.name().to_string(),
                    partition,
                    first_offset: batch.first,
                    last_offset: batch.last,
                };
                retry("recording the batch intent", || async {
                    let mut insert = self.client.insert::<Intent>(INTENTS_TABLE).await?;
                    insert.write(&intent).await?;
                    insert.end().await
                })
                .await;
            }
            let token = dedup_token(T::TOPIC, partition, batch.first, batch.last);
            let started = Instant::now();
            match self.insert_retrying(Rows::All(&batch.rows), &token).await {
                Ok(Outcome::Stored) if batch.end.is_none() => {}
                // Re-formed after a crash, or sent again after an answer that never came:
                // an earlier attempt may have left the token without the rows.
                Ok(_) => self.store_missing(&batch.rows, &token).await,
                Err(rejected) => {
                    tracing::warn!(
                        partition,
                        first = batch.first,
                        last = batch.last,
                        error = %rejected,
                        "ClickHouse rejected the batch's data; isolating the rows it refuses"
                    );
                    self.isolate(partition, &batch).await;
                }
            }
            self.mark_late(&batch.rows).await;
            #[cfg(feature = "failpoints")]
            crash_after_insert();
            metrics::counter!("obs_sink_rows_total", "table" => T::TABLE)
                .increment(batch.rows.len() as u64);
            metrics::counter!("obs_sink_input_bytes_total", "table" => T::TABLE)
                .increment(batch.bytes as u64);
            metrics::histogram!("obs_sink_batch_seconds", "table" => T::TABLE)
                .record(started.elapsed().as_secs_f64());
            tracing::debug!(table = T::TABLE, rows = batch.rows.len(), %token, "batch inserted");
        }
        self.commit(partition, batch.last + 1).await;
        keep_spare(
            &mut self.spare_rows.lock().expect("spare rows lock"),
            batch.rows,
        );
    }

    /// An emptied row buffer of a stored batch, if one is kept.
    fn spare_rows(&self) -> Option<Vec<T::Row>> {
        self.spare_rows.lock().expect("spare rows lock").pop()
    }

    /// After a batch is stored, before its commit: records the tenants whose rows were late
    /// (`obs_schemas::late_writes`), so a results cache drops the answers they change. A
    /// crash before this is a batch read and inserted (deduplicated) again, then recorded.
    async fn mark_late(&self, rows: &[T::Row]) {
        let before_ms = (unix_nanos() / 1_000_000) as i64 - late_writes::LATE_AFTER_MS;
        let late = T::late_from_ms(rows, before_ms);
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
        retry("recording a late write", || async {
            let mut insert = self.client.insert::<LateWrite>(late_writes::TABLE).await?;
            for m in &marks {
                insert.write(m).await?;
            }
            insert.end().await
        })
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
            let token = dedup_token(T::TOPIC, partition, offset, offset);
            match self.insert_retrying(Rows::All(rows), &token).await {
                Ok(Outcome::Stored) => continue,
                Ok(Outcome::AfterUnansweredAttempt) => {
                    self.store_missing(rows, &token).await;
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
                        self.store_missing(std::slice::from_ref(row), &row_token)
                            .await;
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
    /// acknowledged and stores nothing.
    async fn store_missing(&self, rows: &[T::Row], token: &str) {
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
                return;
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
                Ok(Outcome::Stored) => return,
                Ok(Outcome::AfterUnansweredAttempt) => {} // read back again
                Err(e) => {
                    // The same rows were accepted before the crash; a refusal now is
                    // ClickHouse's verdict on the data: logged, not looped on.
                    tracing::error!(table = T::TABLE, error = %e, "ClickHouse refused rows it had accepted");
                    return;
                }
            }
        }
    }

    /// Commits `next` for the partition (synchronously: the batch is durable now).
    async fn commit(&self, partition: i32, next: i64) {
        let mut tpl = TopicPartitionList::new();
        if let Err(e) = tpl.add_partition_offset(T::TOPIC.name(), partition, Offset::Offset(next)) {
            tracing::error!(error = %e, "cannot build the offset commit");
            return;
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
            partition,
            next,
            "giving up committing offsets; the batch will be re-read and deduplicated"
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

/// The token naming exactly the offsets of a batch: the same offsets give the same token,
/// so ClickHouse stores a retried insert once.
pub fn dedup_token(topic: Topic, partition: i32, first: i64, last: i64) -> String {
    format!("{}/{partition}:{first}-{last}", topic.name())
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

    #[test]
    fn a_batch_is_due_at_its_rows_bytes_or_age_limit_or_at_its_recorded_end() {
        let batch = |rows: usize, bytes: usize, end: Option<i64>| Batch {
            first: 0,
            last: 9,
            rows: vec![0u8; rows],
            bytes,
            messages: vec![],
            started: Instant::now(),
            end,
        };
        let hour = Duration::from_secs(3600);
        assert!(!batch(9, 99, None).due(10, 100, hour));
        assert!(batch(10, 99, None).due(10, 100, hour));
        assert!(batch(9, 100, None).due(10, 100, hour));
        assert!(batch(1, 1, None).due(10, 100, Duration::ZERO));
        // A batch re-formed from an intent ends exactly where the intent says.
        assert!(!batch(10, 100, Some(12)).due(10, 100, Duration::ZERO));
        assert!(batch(1, 1, Some(9)).due(10, 100, hour));
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
        keep_spare(&mut spares, Vec::with_capacity(10));
        keep_spare(&mut spares, Vec::with_capacity(10));
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
    fn token_names_topic_partition_and_offsets() {
        assert_eq!(dedup_token(Topic::Logs, 2, 10, 19), "obs.logs/2:10-19");
    }
}
