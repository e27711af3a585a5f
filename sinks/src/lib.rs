//! Sinks: Kafka topics into ClickHouse tables.
//!
//! In: wire-format batches from a raw topic (read once per topic, offsets committed in a
//! consumer group per table). Out: rows in the table, inserted through the `clickhouse`
//! crate. Offsets are committed only after ClickHouse accepted the insert, and each insert
//! carries an `insert_deduplication_token` naming the offsets it holds, so a retried insert
//! is stored once. Messages that cannot be decoded go to `obs.dlq` with the reason.
//!
//! * [`table`]: what a table sink must say (topic, table, row shape, conversion).
//! * [`logs`]: `obs.logs` → `otel_logs`.
//! * [`traces`]: `obs.spans` → `otel_traces`.
//! * [`metrics`]: `obs.metrics` → `metrics_samples`, `metrics_series`, `metrics_metadata`.
//! * [`events`]: `obs.events` → `obs_events`.
//! * [`alerts`]: `obs.alerts` → `obs_alerts` (the rule processor's alert transitions).
//! * [`derived_traces`]: `obs.traces` → `obs_trace_summaries`, `obs.servicegraph` →
//!   `obs_servicegraph_edges`, and `obs.spans.sampled` → `otel_traces` when only sampled
//!   traces are stored.
//! * [`rollups`]: `obs.metrics.rollup` → `metrics_rollups` (the rollup processor's windows).
//! * [`sql_outputs`]: `obs.sql.<query>` → `sql_<query>` (the SQL processor's windows; the
//!   table is made from the output's schema).
//! * [`errors`]: exceptions on spans and in error logs → `obs_error_events`, fingerprinted.
//! * [`raw_logs`]: `obs.logs.raw` (JSON lines from log agents) → `otel_logs` (when no log
//!   pipelines are configured; else the log processor reads it).
//! * [`replay`]: `obs replay`, a topic's time range into the tables again.
//! * [`lag`]: consumer lag and stalls per partition, measured beside the driver.
//! * [`reader`]: one consumer per topic, handing each message to every table of the topic.
//! * [`driver`]: the consume → batch → insert → commit loop shared by every table.

pub mod alerts;
pub mod derived_traces;
pub mod driver;
pub mod errors;
pub mod events;
pub mod lag;
pub mod logs;
pub mod metrics;
pub mod raw_logs;
pub mod reader;
pub mod replay;
pub mod rollups;
pub mod sql_outputs;
pub mod stored;
pub mod table;
pub mod traces;

use obs_runtime::{Config, kafka, ops};

use driver::SinkDriver;
use reader::Readers;
use table::TableSink;

/// Runs every table sink until one fails or a shutdown is asked for; `ready` turns true
/// once all are started and reports each sink's stalls. `tap`: a processor of this process
/// that may read its input along with the sinks' reader of that topic.
pub async fn run(
    cfg: Config,
    ready: ops::Readiness,
    tap: Option<obs_runtime::tap::Host>,
) -> anyhow::Result<()> {
    kafka::ensure_topics(&cfg.kafka).await?;
    let mut readers = Readers::new(&cfg);
    if let Some(host) = tap {
        readers.host(host);
    }
    let r = &mut readers;
    let logs = SinkDriver::<logs::OtelLogs>::new(&cfg, &ready, r).await?;
    let samples = SinkDriver::<metrics::MetricSamples>::new(&cfg, &ready, r).await?;
    let series = SinkDriver::<metrics::MetricSeriesTable>::new(&cfg, &ready, r).await?;
    let metadata = SinkDriver::<metrics::MetricMetadataTable>::new(&cfg, &ready, r).await?;
    let exemplars = SinkDriver::<metrics::MetricExemplars>::new(&cfg, &ready, r).await?;
    let events = SinkDriver::<events::ObsEvents>::new(&cfg, &ready, r).await?;
    // With log pipelines, the log processor reads obs.logs.raw and writes obs.logs.
    let raw_lines =
        optional::<raw_logs::RawLogs>(cfg.logs.pipelines_file.is_empty(), &cfg, &ready, r).await?;
    let alerts = SinkDriver::<alerts::ObsAlerts>::new(&cfg, &ready, r).await?;
    let summaries = SinkDriver::<derived_traces::TraceSummaries>::new(&cfg, &ready, r).await?;
    let edges = SinkDriver::<derived_traces::ServiceGraphEdges>::new(&cfg, &ready, r).await?;
    let rollups = SinkDriver::<rollups::MetricRollups>::new(&cfg, &ready, r).await?;
    let span_errors = SinkDriver::<errors::ErrorsFromSpans>::new(&cfg, &ready, r).await?;
    let log_errors = SinkDriver::<errors::ErrorsFromLogs>::new(&cfg, &ready, r).await?;
    // otel_traces from every span, or only from the traces tail sampling keeps.
    let sampled = cfg.sink.traces_from == "sampled";
    let all_spans = optional::<traces::OtelTraces>(!sampled, &cfg, &ready, r).await?;
    let sampled_spans = optional::<derived_traces::SampledTraces>(sampled, &cfg, &ready, r).await?;
    ready.set(true);
    tokio::try_join!(
        readers.run(),
        logs.run(),
        all_spans,
        sampled_spans,
        summaries.run(),
        edges.run(),
        rollups.run(),
        span_errors.run(),
        log_errors.run(),
        samples.run(),
        series.run(),
        metadata.run(),
        exemplars.run(),
        events.run(),
        raw_lines,
        alerts.run(),
        sql_outputs::run(cfg.clone(), ready.clone())
    )
    .map(|_| ())
}

/// A sink that runs only when `on`: its run, or nothing to do.
async fn optional<T: TableSink>(
    on: bool,
    cfg: &Config,
    ready: &ops::Readiness,
    readers: &mut Readers,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>> + use<T>> {
    let driver = if on {
        Some(SinkDriver::<T>::new(cfg, ready, readers).await?)
    } else {
        None
    };
    Ok(async move {
        match driver {
            Some(d) => d.run().await,
            None => Ok(()),
        }
    })
}
