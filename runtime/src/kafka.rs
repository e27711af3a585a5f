//! Kafka clients configured the way every stage needs them, and topic creation.
//!
//! Producers are idempotent with `acks=all` and lz4; consumers never auto-commit (a stage
//! commits only after its output is durable). The broker may not create topics on first
//! produce (tansu does not), so every stage calls [`ensure_topics`] at start-up.

use std::time::Duration;

use anyhow::Context;
use obs_schemas::Topic;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// An idempotent, `acks=all`, lz4 producer; a message not acknowledged within
/// `produce_timeout_ms` fails instead of waiting forever.
pub fn producer(cfg: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", cfg.produce_timeout_ms.to_string())
        .set("message.max.bytes", (8 << 20).to_string())
        .create()
        .context("creating the Kafka producer")
}

/// A consumer in `group` that commits only when told to, starting from the earliest offset
/// when the group has none.
pub fn consumer(cfg: &KafkaConfig, group: &str) -> anyhow::Result<StreamConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.max.bytes", (32 << 20).to_string())
        .set("max.partition.fetch.bytes", (8 << 20).to_string())
        .create()
        .context("creating the Kafka consumer")
}

/// Creates every pipeline topic that does not exist yet (raw topics with
/// `raw_partitions`), and waits until the broker reports them.
pub async fn ensure_topics(cfg: &KafkaConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let partitions: Vec<(Topic, i32)> = Topic::ALL
        .iter()
        .map(|&t| {
            let n = if t.default_partitions() > 1 { cfg.raw_partitions } else { t.default_partitions() };
            (t, n)
        })
        .collect();
    let new: Vec<NewTopic> = partitions
        .iter()
        .map(|(t, n)| NewTopic::new(t.name(), *n, TopicReplication::Fixed(1)))
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
