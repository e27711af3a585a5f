//! Publishing: records grouped by Kafka key, one wire-format message per group (chunked),
//! sent concurrently, and acknowledged only when the broker acknowledged every message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use obs_runtime::kafka::SharedProducer;
use obs_schemas::Topic;
use obs_schemas::records::{LogBatch, LogRecord, Span, SpanBatch};
use obs_schemas::stream_fingerprint;
use obs_schemas::wire::Codec;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use serde::Serialize;

use crate::error::CollectorError;

/// Most records in one Kafka message; larger groups are split.
const MAX_RECORDS_PER_MESSAGE: usize = 2_000;

/// How long a send may wait for room in the producer's queue before the client is told to
/// back off: the queue being full means the broker is not keeping up.
const ENQUEUE_TIMEOUT: Duration = Duration::from_millis(500);

/// Publishes normalised records to their topics.
#[derive(Clone)]
pub struct Publisher {
    producer: SharedProducer,
    codec: Arc<Codec>,
}

impl Publisher {
    /// A publisher over an (idempotent) producer and a registry codec.
    pub fn new(producer: SharedProducer, codec: Arc<Codec>) -> Self {
        Publisher { producer, codec }
    }

    /// Publishes log records, keyed by stream (tenant, service, resource attributes).
    pub async fn logs(&self, records: Vec<LogRecord>) -> Result<(), CollectorError> {
        let mut groups: BTreeMap<i64, Vec<LogRecord>> = BTreeMap::new();
        for r in records {
            let fp = stream_fingerprint(
                &r.tenant,
                &r.service,
                r.resource_attrs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            groups.entry(fp).or_default().push(r);
        }
        let messages = groups
            .into_iter()
            .flat_map(|(fp, recs)| {
                chunks(recs)
                    .into_iter()
                    .map(move |records| (fp.to_be_bytes().to_vec(), LogBatch { records }))
            })
            .collect();
        self.send(Topic::Logs, messages).await
    }

    /// Publishes spans keyed by trace id, so all spans of a trace meet in one partition.
    pub async fn spans(&self, spans: Vec<Span>) -> Result<(), CollectorError> {
        let mut groups: BTreeMap<String, Vec<Span>> = BTreeMap::new();
        for s in spans {
            groups.entry(s.trace_id.clone()).or_default().push(s);
        }
        let messages = groups
            .into_iter()
            .flat_map(|(trace_id, spans)| {
                let key = trace_id.into_bytes();
                chunks(spans)
                    .into_iter()
                    .map(move |spans| (key.clone(), SpanBatch { spans }))
            })
            .collect();
        self.send(Topic::Spans, messages).await
    }

    /// Encodes and sends `(key, value)` messages; Ok only when every one is acknowledged.
    async fn send<T: Serialize>(
        &self,
        topic: Topic,
        messages: Vec<(Vec<u8>, T)>,
    ) -> Result<(), CollectorError> {
        let mut encoded = Vec::with_capacity(messages.len());
        for (key, value) in messages {
            let bytes = self
                .codec
                .encode(topic, &value)
                .await
                .map_err(|e| CollectorError::Unavailable(e.to_string()))?;
            encoded.push((key, bytes));
        }
        let (generation, producer) = self.producer.get();
        let sends = encoded.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic.name()).key(key).payload(payload),
                ENQUEUE_TIMEOUT,
            )
        });
        let mut failure = None;
        for result in join_all(sends).await {
            if let Err((e, _)) = result {
                failure.get_or_insert(e);
            }
        }
        match failure {
            None => {
                metrics::counter!("obs_collector_messages_published_total", "topic" => topic.name())
                    .increment(encoded.len() as u64);
                Ok(())
            }
            Some(e) => {
                tracing::warn!(topic = topic.name(), error = %e, "publish failed");
                self.producer.reset(generation);
                Err(CollectorError::Unavailable(describe(&e)))
            }
        }
    }
}

/// Splits a group into messages of at most [`MAX_RECORDS_PER_MESSAGE`] records.
fn chunks<T>(mut items: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(MAX_RECORDS_PER_MESSAGE));
        out.push(items);
        items = rest;
    }
    out
}

fn describe(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) => {
            "the Kafka broker did not acknowledge in time".into()
        }
        Some(RDKafkaErrorCode::QueueFull) => "the Kafka producer queue is full".into(),
        _ => format!("Kafka: {e}"),
    }
}
