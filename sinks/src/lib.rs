//! Sinks: Kafka topics into ClickHouse tables.
//!
//! In: wire-format batches from a raw topic (a consumer group per table). Out: rows in the
//! table, inserted through the `clickhouse` crate. Offsets are committed only after
//! ClickHouse accepted the insert, and each insert carries an
//! `insert_deduplication_token` naming the offsets it holds, so a retried insert is stored
//! once. Messages that cannot be decoded go to `obs.dlq` with the reason.
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
pub mod replay;
pub mod rollups;
pub mod sql_outputs;
pub mod stored;
pub mod table;
pub mod traces;

use obs_runtime::{Config, kafka, ops};

/// Runs every table sink until one fails or a shutdown is asked for; `ready` turns true
/// once all are started and reports each sink's stalls.
pub async fn run(cfg: Config, ready: ops::Readiness) -> anyhow::Result<()> {
    kafka::ensure_topics(&cfg.kafka).await?;
    let logs = driver::SinkDriver::<logs::OtelLogs>::new(&cfg, &ready)?;
    let samples = driver::SinkDriver::<metrics::MetricSamples>::new(&cfg, &ready)?;
    let series = driver::SinkDriver::<metrics::MetricSeriesTable>::new(&cfg, &ready)?;
    let metadata = driver::SinkDriver::<metrics::MetricMetadataTable>::new(&cfg, &ready)?;
    let exemplars = driver::SinkDriver::<metrics::MetricExemplars>::new(&cfg, &ready)?;
    let events = driver::SinkDriver::<events::ObsEvents>::new(&cfg, &ready)?;
    // With log pipelines, the log processor reads obs.logs.raw and writes obs.logs.
    let raw_lines = async {
        if cfg.logs.pipelines_file.is_empty() {
            driver::SinkDriver::<raw_logs::RawLogs>::new(&cfg, &ready)?
                .run()
                .await
        } else {
            Ok(())
        }
    };
    let alerts = driver::SinkDriver::<alerts::ObsAlerts>::new(&cfg, &ready)?;
    let summaries = driver::SinkDriver::<derived_traces::TraceSummaries>::new(&cfg, &ready)?;
    let edges = driver::SinkDriver::<derived_traces::ServiceGraphEdges>::new(&cfg, &ready)?;
    let rollups = driver::SinkDriver::<rollups::MetricRollups>::new(&cfg, &ready)?;
    let span_errors = driver::SinkDriver::<errors::ErrorsFromSpans>::new(&cfg, &ready)?;
    let log_errors = driver::SinkDriver::<errors::ErrorsFromLogs>::new(&cfg, &ready)?;
    // otel_traces from every span, or only from the traces tail sampling keeps.
    let traces = async {
        if cfg.sink.traces_from == "sampled" {
            driver::SinkDriver::<derived_traces::SampledTraces>::new(&cfg, &ready)?
                .run()
                .await
        } else {
            driver::SinkDriver::<traces::OtelTraces>::new(&cfg, &ready)?
                .run()
                .await
        }
    };
    ready.set(true);
    tokio::try_join!(
        logs.run(),
        traces,
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
