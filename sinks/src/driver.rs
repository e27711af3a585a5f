//! The loop every table sink runs: consume → decode → batch → insert (deduplicated) → commit.
//!
//! A batch is flushed when it holds `sink.batch_max_rows` rows or its first message is
//! `sink.batch_max_wait_ms` old. The insert is retried with backoff for as long as
//! ClickHouse refuses it for a reason that can pass; meanwhile nothing is committed and
//! nothing more is consumed, so Kafka holds the backlog (bounded memory).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use obs_runtime::kafka::SharedProducer;
use obs_runtime::{Config, clickhouse as ch, kafka};
use obs_schemas::Topic;
use obs_schemas::records::DeadLetter;
use obs_schemas::wire::{Codec, WireError};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::table::TableSink;

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Offsets held by a batch, per partition: `(first, last)`.
type Ranges = BTreeMap<i32, (i64, i64)>;

/// Drives one [`TableSink`].
pub struct SinkDriver<T: TableSink> {
    consumer: StreamConsumer,
    dlq: SharedProducer,
    codec: Arc<Codec>,
    client: clickhouse::Client,
    max_rows: usize,
    max_wait: Duration,
    _table: PhantomData<T>,
}

impl<T: TableSink> SinkDriver<T> {
    /// Connects the consumer (group `<group_prefix>-<table>`), the DLQ producer and the
    /// ClickHouse client.
    pub fn new(cfg: &Config) -> anyhow::Result<Self> {
        let group = format!("{}-{}", cfg.sink.group_prefix, T::TABLE);
        let consumer = kafka::consumer(&cfg.kafka, &group)?;
        consumer
            .subscribe(&[T::TOPIC.name()])
            .with_context(|| format!("subscribing to {}", T::TOPIC))?;
        Ok(SinkDriver {
            consumer,
            dlq: SharedProducer::new(&cfg.kafka)?,
            codec: Arc::new(Codec::new(&cfg.registry.url)),
            client: ch::client(&cfg.clickhouse),
            max_rows: cfg.sink.batch_max_rows.max(1),
            max_wait: Duration::from_millis(cfg.sink.batch_max_wait_ms),
            _table: PhantomData,
        })
    }

    /// Runs until an unrecoverable error (a Kafka consumer error that does not pass).
    pub async fn run(self) -> anyhow::Result<()> {
        tracing::info!(topic = %T::TOPIC, table = T::TABLE, "sink started");
        let mut rows: Vec<T::Row> = Vec::new();
        let mut ranges = Ranges::new();
        let mut started: Option<Instant> = None;
        loop {
            let wait = match started {
                Some(t) => self.max_wait.saturating_sub(t.elapsed()),
                None => Duration::from_secs(3600),
            };
            match tokio::time::timeout(wait, self.consumer.recv()).await {
                Ok(Ok(msg)) => {
                    self.take(&msg, &mut rows).await;
                    let e = ranges
                        .entry(msg.partition())
                        .or_insert((msg.offset(), msg.offset()));
                    e.1 = msg.offset();
                    started.get_or_insert_with(Instant::now);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => {} // the batch is due
            }
            let due = started.is_some_and(|t| t.elapsed() >= self.max_wait);
            if !ranges.is_empty() && (rows.len() >= self.max_rows || due) {
                self.flush(std::mem::take(&mut rows), &ranges).await;
                self.commit(&ranges).await?;
                ranges.clear();
                started = None;
            }
        }
    }

    /// Decodes one message into rows; a message that cannot be decoded goes to the DLQ.
    async fn take(&self, msg: &BorrowedMessage<'_>, rows: &mut Vec<T::Row>) {
        let payload = msg.payload().unwrap_or_default();
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.codec.decode::<T::Message>(payload).await {
                Ok(m) => {
                    T::rows(m, rows);
                    return;
                }
                Err(e @ WireError::Registry(_)) => {
                    tracing::warn!(error = %e, "schema registry unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e @ WireError::Malformed(_)) => {
                    self.dead_letter(msg, &e.to_string()).await;
                    return;
                }
            }
        }
    }

    async fn dead_letter(&self, msg: &BorrowedMessage<'_>, error: &str) {
        let letter = DeadLetter {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            stage: format!("sink:{}", T::TABLE),
            error: error.to_string(),
            failed_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        };
        tracing::warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            error,
            "message sent to the DLQ"
        );
        let mut backoff = Duration::from_millis(200);
        loop {
            let sent = match self.codec.encode(Topic::Dlq, &letter).await {
                Ok(bytes) => {
                    let key = msg.key().unwrap_or_default();
                    let (generation, producer) = self.dlq.get();
                    producer
                        .send(
                            FutureRecord::to(Topic::Dlq.name()).key(key).payload(&bytes),
                            Duration::from_secs(5),
                        )
                        .await
                        .map(|_| ())
                        .map_err(|(e, _)| {
                            self.dlq.reset(generation);
                            e.to_string()
                        })
                }
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => {
                    metrics::counter!("obs_sink_dlq_total", "table" => T::TABLE).increment(1);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write to the DLQ yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Inserts the batch, retrying until ClickHouse accepts it.
    async fn flush(&self, rows: Vec<T::Row>, ranges: &Ranges) {
        if rows.is_empty() {
            return;
        }
        let token = dedup_token(T::TOPIC, ranges);
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            match self.insert(&rows, &token).await {
                Ok(()) => {
                    metrics::counter!("obs_sink_rows_total", "table" => T::TABLE)
                        .increment(rows.len() as u64);
                    metrics::histogram!("obs_sink_batch_seconds", "table" => T::TABLE)
                        .record(started.elapsed().as_secs_f64());
                    tracing::debug!(table = T::TABLE, rows = rows.len(), %token, "batch inserted");
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    metrics::counter!("obs_sink_insert_errors_total", "table" => T::TABLE)
                        .increment(1);
                    tracing::warn!(table = T::TABLE, attempt, error = %e, "insert failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn insert(&self, rows: &[T::Row], token: &str) -> clickhouse::error::Result<()> {
        let mut insert = self
            .client
            .insert::<T::Row>(T::TABLE)
            .await?
            .with_setting("insert_deduplication_token", token);
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    }

    /// Commits the offsets after the batch (synchronously: the batch is durable now).
    async fn commit(&self, ranges: &Ranges) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (&p, &(_, last)) in ranges {
            tpl.add_partition_offset(T::TOPIC.name(), p, Offset::Offset(last + 1))?;
        }
        let mut backoff = Duration::from_millis(200);
        for _ in 0..10 {
            match self.consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // Rows are stored and deduplicated by token; a failed commit only
                    // means the batch may be read (and skipped by ClickHouse) again.
                    tracing::warn!(error = %e, "offset commit failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        tracing::error!("giving up committing offsets; the batch will be re-read and deduplicated");
        Ok(())
    }
}

/// The token naming exactly the offsets of a batch: the same offsets give the same token,
/// so ClickHouse stores a retried insert once.
pub fn dedup_token(topic: Topic, ranges: &Ranges) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|(p, (a, b))| format!("{p}:{a}-{b}"))
        .collect();
    format!("{}/{}", topic.name(), parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_topic_partitions_and_offsets() {
        let mut r = Ranges::new();
        r.insert(2, (10, 19));
        r.insert(0, (5, 5));
        assert_eq!(dedup_token(Topic::Logs, &r), "obs.logs/0:5-5,2:10-19");
    }
}
