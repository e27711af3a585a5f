//! Consumer lag per partition, reported as `obs_sink_consumer_lag{table, topic, partition}`:
//! the partition's high watermark minus the group's committed offset, i.e. the messages
//! not yet durably stored. Measured from a separate client every few seconds, so the
//! number keeps moving while the sink itself is blocked retrying a ClickHouse outage.

use std::time::Duration;

use obs_runtime::config::KafkaConfig;
use obs_schemas::Topic;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const EVERY: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(5);

/// Starts reporting the lag of `group` on `topic` for `table`, until the process ends.
pub fn spawn(cfg: &KafkaConfig, group: &str, topic: Topic, table: &'static str) {
    let client: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, table, "cannot create the lag client; no lag metrics");
            return;
        }
    };
    std::thread::Builder::new()
        .name(format!("lag-{table}"))
        .spawn(move || {
            loop {
                if let Err(e) = report(&client, topic, table) {
                    tracing::debug!(error = %e, table, "lag measurement failed");
                }
                std::thread::sleep(EVERY);
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::warn!(error = %e, "cannot start the lag thread"));
}

fn report(client: &BaseConsumer, topic: Topic, table: &'static str) -> anyhow::Result<()> {
    let md = client.fetch_metadata(Some(topic.name()), TIMEOUT)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition(topic.name(), p);
    }
    let committed = client.committed_offsets(tpl, TIMEOUT)?;
    for &p in &partitions {
        let (low, high) = client.fetch_watermarks(topic.name(), p, TIMEOUT)?;
        let done = match committed
            .find_partition(topic.name(), p)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        // The topic is part of the series: two sinks may feed one table (obs.logs and
        // obs.logs.raw both feed otel_logs), and their gauges must not overwrite each other.
        metrics::gauge!(
            "obs_sink_consumer_lag",
            "table" => table,
            "topic" => topic.name(),
            "partition" => p.to_string()
        )
        .set((high - done).max(0) as f64);
    }
    Ok(())
}
