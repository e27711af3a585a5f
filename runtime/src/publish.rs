//! Publishing, shared by the collectors and the stream processors: records grouped per
//! partition of their key (series fingerprint, stream, trace id), one wire-format message
//! per group (chunked), sent concurrently through the idempotent [`SharedProducer`], and
//! acknowledged only when the broker acknowledged every message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::kafka::SharedProducer;
use obs_schemas::Topic;
use obs_schemas::records::{
    Event, EventBatch, LogBatch, LogRecord, MetricBatch, MetricMetadata, MetricSeries, Span,
    SpanBatch,
};
use obs_schemas::wire::Codec;
use obs_schemas::{series_fingerprint, stream_fingerprint};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

/// Why a publish failed; the caller answers "retry later" (nothing was half-acknowledged:
/// every message of the call is either delivered or retried with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError(pub String);

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PublishError {}

/// One message to publish: its partition, value and headers.
#[derive(Debug, Clone)]
pub struct Outgoing<T> {
    /// The partition it goes to.
    pub partition: i32,
    /// The record, encoded with the topic's registered schema.
    pub value: T,
    /// Kafka headers (name, bytes).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Most records in one Kafka message; larger groups are split.
const MAX_RECORDS_PER_MESSAGE: usize = 2_000;

/// Most samples in one metrics message (about 14 bytes each on the wire before lz4).
const MAX_SAMPLES_PER_MESSAGE: usize = 50_000;

/// Publishes normalised records to their topics.
#[derive(Clone)]
pub struct Publisher {
    producer: SharedProducer,
    codec: Arc<Codec>,
    partitions: Arc<HashMap<Topic, i32>>,
    /// Where [`Publisher::logs`] writes: `obs.logs`, or `obs.logs.ingest` when log
    /// pipelines run before storage.
    logs_topic: Topic,
}

/// What one collector call publishes, per tenant, counted in `obs_collector_records_total`
/// once the broker has acknowledged it (samples for metrics, records otherwise).
struct Accepted {
    signal: &'static str,
    per_tenant: BTreeMap<String, u64>,
}

impl Accepted {
    fn count<'a>(signal: &'static str, items: impl Iterator<Item = (&'a str, u64)>) -> Self {
        let mut per_tenant = BTreeMap::new();
        for (tenant, n) in items {
            *per_tenant.entry(tenant.to_string()).or_insert(0) += n;
        }
        Accepted { signal, per_tenant }
    }

    fn record(self) {
        for (tenant, n) in self.per_tenant {
            metrics::counter!("obs_collector_records_total", "signal" => self.signal, "tenant" => tenant)
                .increment(n);
        }
    }
}

/// The partition a key hash falls in (the same hash always lands in the same partition).
pub fn partition_of(hash: i64, partitions: i32) -> i32 {
    (hash as u64 % partitions.max(1) as u64) as i32
}

impl Publisher {
    /// A publisher over an (idempotent) producer and a registry codec; `partitions` holds
    /// each topic's partition count (records are grouped per partition before sending).
    pub fn new(
        producer: SharedProducer,
        codec: Arc<Codec>,
        partitions: HashMap<Topic, i32>,
    ) -> Self {
        Publisher {
            producer,
            codec,
            partitions: Arc::new(partitions),
            logs_topic: Topic::Logs,
        }
    }

    /// The same publisher writing log records to `topic` (`obs.logs.ingest` when log
    /// pipelines are configured).
    pub fn with_logs_topic(mut self, topic: Topic) -> Self {
        self.logs_topic = topic;
        self
    }

    /// How many partitions `topic` has.
    pub fn partitions(&self, topic: Topic) -> i32 {
        self.partitions.get(&topic).copied().unwrap_or(1)
    }

    /// Publishes log records, partitioned by stream (tenant, service, resource attributes),
    /// to `obs.logs` (or `obs.logs.ingest`, see [`Publisher::with_logs_topic`]).
    pub async fn logs(&self, records: Vec<LogRecord>) -> Result<(), PublishError> {
        let accepted = Accepted::count("logs", records.iter().map(|r| (r.tenant.as_str(), 1)));
        let n = self.partitions(self.logs_topic);
        let mut groups: BTreeMap<i32, Vec<LogRecord>> = BTreeMap::new();
        for r in records {
            let fp = stream_fingerprint(
                &r.tenant,
                &r.service,
                r.resource_attrs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            groups.entry(partition_of(fp, n)).or_default().push(r);
        }
        let messages = groups
            .into_iter()
            .flat_map(|(p, recs)| {
                chunks(recs, MAX_RECORDS_PER_MESSAGE)
                    .into_iter()
                    .map(move |records| (p, LogBatch { records }))
            })
            .collect();
        self.send(self.logs_topic, messages).await?;
        accepted.record();
        Ok(())
    }

    /// Publishes spans partitioned by trace id, so all spans of a trace meet in one
    /// partition.
    pub async fn spans(&self, spans: Vec<Span>) -> Result<(), PublishError> {
        let accepted = Accepted::count("traces", spans.iter().map(|s| (s.tenant.as_str(), 1)));
        let n = self.partitions(Topic::Spans);
        let mut groups: BTreeMap<i32, Vec<Span>> = BTreeMap::new();
        for s in spans {
            let h = xxh3_64(s.trace_id.as_bytes()) as i64;
            groups.entry(partition_of(h, n)).or_default().push(s);
        }
        let messages = groups
            .into_iter()
            .flat_map(|(p, spans)| {
                chunks(spans, MAX_RECORDS_PER_MESSAGE)
                    .into_iter()
                    .map(move |spans| (p, SpanBatch { spans }))
            })
            .collect();
        self.send(Topic::Spans, messages).await?;
        accepted.record();
        Ok(())
    }

    /// Publishes events partitioned by source.
    pub async fn events(&self, events: Vec<Event>) -> Result<(), PublishError> {
        let accepted = Accepted::count("events", events.iter().map(|e| (e.tenant.as_str(), 1)));
        let n = self.partitions(Topic::Events);
        let mut groups: BTreeMap<i32, Vec<Event>> = BTreeMap::new();
        for e in events {
            let h = xxh3_64(e.source.as_bytes()) as i64;
            groups.entry(partition_of(h, n)).or_default().push(e);
        }
        let messages = groups
            .into_iter()
            .flat_map(|(p, events)| {
                chunks(events, MAX_RECORDS_PER_MESSAGE)
                    .into_iter()
                    .map(move |events| (p, EventBatch { events }))
            })
            .collect();
        self.send(Topic::Events, messages).await?;
        accepted.record();
        Ok(())
    }

    /// Publishes metric series partitioned by series fingerprint (a message carries series
    /// of one partition), and metadata partitioned by family name.
    pub async fn metrics(
        &self,
        series: Vec<MetricSeries>,
        metadata: Vec<MetricMetadata>,
    ) -> Result<(), PublishError> {
        let accepted = Accepted::count(
            "metrics",
            series
                .iter()
                .map(|s| (s.tenant.as_str(), s.timestamps_ms.len() as u64)),
        );
        let n = self.partitions(Topic::Metrics);
        let mut groups: BTreeMap<i32, MetricBatch> = BTreeMap::new();
        for s in series {
            groups
                .entry(partition_of(s.fingerprint, n))
                .or_default()
                .series
                .push(s);
        }
        for m in metadata {
            let h = series_fingerprint(&m.tenant, &m.name, []);
            groups
                .entry(partition_of(h, n))
                .or_default()
                .metadata
                .push(m);
        }
        let mut messages = Vec::new();
        for (p, batch) in groups {
            let mut size = 0;
            let mut current = MetricBatch::default();
            for s in batch.series {
                size += s.timestamps_ms.len().max(1);
                current.series.push(s);
                if size >= MAX_SAMPLES_PER_MESSAGE {
                    messages.push((p, std::mem::take(&mut current)));
                    size = 0;
                }
            }
            current.metadata = batch.metadata;
            if !current.series.is_empty() || !current.metadata.is_empty() {
                messages.push((p, current));
            }
        }
        self.send(Topic::Metrics, messages).await?;
        accepted.record();
        Ok(())
    }

    /// Encodes and sends `(partition, value)` messages; Ok only when every one is
    /// acknowledged.
    async fn send<T: Serialize>(
        &self,
        topic: Topic,
        messages: Vec<(i32, T)>,
    ) -> Result<(), PublishError> {
        let outgoing = messages
            .into_iter()
            .map(|(partition, value)| Outgoing {
                partition,
                value,
                headers: Vec::new(),
            })
            .collect();
        self.publish(topic, outgoing).await.map(|_| ())
    }

    /// Encodes and sends messages with their headers; Ok, with each message's
    /// `(partition, offset)`, only when every one is acknowledged.
    pub async fn publish<T: Serialize>(
        &self,
        topic: Topic,
        messages: Vec<Outgoing<T>>,
    ) -> Result<Vec<(i32, i64)>, PublishError> {
        self.publish_each(topic, messages)
            .await
            .into_iter()
            .collect()
    }

    /// Encodes and sends messages with their headers; one result per message, in order, so
    /// that a caller retries only what was not acknowledged.
    pub async fn publish_each<T: Serialize>(
        &self,
        topic: Topic,
        messages: Vec<Outgoing<T>>,
    ) -> Vec<Result<(i32, i64), PublishError>> {
        let count = messages.len();
        let mut encoded = Vec::with_capacity(count);
        for m in messages {
            let bytes = match self.codec.encode(topic, &m.value).await {
                Ok(b) => b,
                Err(e) => {
                    // Nothing was sent: every message fails alike.
                    let err = PublishError(e.to_string());
                    return (0..count).map(|_| Err(err.clone())).collect();
                }
            };
            let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
            for (key, value) in &m.headers {
                headers = headers.insert(Header {
                    key: key.as_str(),
                    value: Some(value.as_slice()),
                });
            }
            encoded.push((m.partition, bytes, headers));
        }
        let records = encoded.iter().map(|(partition, payload, headers)| {
            FutureRecord::<(), _>::to(topic.name())
                .partition(*partition)
                .payload(payload)
                .headers(headers.clone())
        });
        let mut failed = false;
        let results: Vec<Result<(i32, i64), PublishError>> = self
            .producer
            .send_all(records)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(delivery) => Ok((delivery.partition, delivery.offset)),
                Err(e) => {
                    if !failed {
                        tracing::warn!(topic = topic.name(), error = %e, "publish failed");
                        failed = true;
                    }
                    Err(PublishError(e.to_string()))
                }
            })
            .collect();
        let delivered = results.iter().filter(|r| r.is_ok()).count();
        metrics::counter!("obs_messages_published_total", "topic" => topic.name())
            .increment(delivered as u64);
        results
    }
}

impl Publisher {
    /// Sends until every message is acknowledged, sending again only the unacknowledged
    /// ones with a growing pause (a processor's outputs must all land before it may move
    /// on); each message's `(partition, offset)` in order, `None` when a shutdown
    /// interrupted it.
    pub async fn deliver<T: Serialize + Clone>(
        &self,
        topic: Topic,
        messages: Vec<Outgoing<T>>,
    ) -> Option<Vec<(i32, i64)>> {
        let mut delivered: Vec<Option<(i32, i64)>> = vec![None; messages.len()];
        let mut pending: Vec<(usize, Outgoing<T>)> = messages.into_iter().enumerate().collect();
        let mut backoff = Duration::from_millis(200);
        loop {
            let batch: Vec<Outgoing<T>> = pending.iter().map(|(_, m)| m.clone()).collect();
            let results = self.publish_each(topic, batch).await;
            let mut failed = Vec::new();
            for ((i, m), r) in pending.into_iter().zip(results) {
                match r {
                    Ok(at) => delivered[i] = Some(at),
                    Err(e) => {
                        tracing::warn!(topic = topic.name(), error = %e, "output not acknowledged; sending it again");
                        failed.push((i, m));
                    }
                }
            }
            pending = failed;
            if pending.is_empty() {
                return Some(delivered.into_iter().flatten().collect());
            }
            metrics::counter!("obs_processor_publish_retries_total").increment(1);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = crate::shutdown::wait() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Sends already-encoded messages `(partition, key, payload)` to a topic that is not
    /// Avro (the processors' checkpoints); Ok with each message's `(partition, offset)`
    /// only when every one is acknowledged.
    pub async fn publish_raw(
        &self,
        topic: Topic,
        messages: &[(i32, Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<(i32, i64)>, PublishError> {
        self.publish_encoded(topic.name(), messages).await
    }

    /// Sends already-encoded messages `(partition, key, payload)` to the topic named
    /// `topic` until the broker acknowledges them all, backing off between attempts; false
    /// when a shutdown interrupted (a processor's outputs and checkpoints must land before
    /// it moves on).
    pub async fn deliver_encoded(&self, topic: &str, messages: &[(i32, Vec<u8>, Vec<u8>)]) -> bool {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.publish_encoded(topic, messages).await {
                Ok(_) => return true,
                Err(e) => {
                    tracing::warn!(topic, error = %e, "not acknowledged; sending again");
                    metrics::counter!("obs_processor_publish_retries_total").increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = crate::shutdown::wait() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Sends already-encoded messages `(partition, key, payload)` to the topic named
    /// `topic` (also one made at run time, such as a SQL query's output); Ok with each
    /// message's `(partition, offset)` only when every one is acknowledged.
    pub async fn publish_encoded(
        &self,
        topic: &str,
        messages: &[(i32, Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<(i32, i64)>, PublishError> {
        let records = messages.iter().map(|(partition, key, payload)| {
            FutureRecord::to(topic)
                .partition(*partition)
                .key(key)
                .payload(payload)
        });
        let out = self
            .producer
            .send_all(records)
            .await
            .into_iter()
            .map(|r| {
                r.map(|d| (d.partition, d.offset))
                    .map_err(|e| PublishError(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        metrics::counter!("obs_messages_published_total", "topic" => topic.to_string())
            .increment(out.len() as u64);
        Ok(out)
    }
}

/// Splits a group into messages of at most `max` records.
fn chunks<T>(mut items: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(max));
        out.push(items);
        items = rest;
    }
    out
}
