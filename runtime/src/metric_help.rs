//! The HELP text of every metric the stages export on `/metrics`, in one table: what
//! `promtool check metrics` and a reader of the page need. A unit test checks that every
//! metric the code records is in the table, with its kind, and that the table names no
//! metric the code no longer records.

/// How a metric is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `metrics::counter!`.
    Counter,
    /// `metrics::gauge!`.
    Gauge,
    /// `metrics::histogram!` (rendered as a summary).
    Histogram,
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric: name, kind, HELP text.
pub const METRICS: &[(&str, Kind, &str)] = &[
    // Collectors.
    (
        "obs_collector_records_total",
        Counter,
        "Records (samples for metrics) accepted by the collectors, scrapes included, and acknowledged by Kafka, by signal and tenant.",
    ),
    (
        "obs_collector_rejected_total",
        Counter,
        "Requests the collectors refused, by reason (bad input, limits, unavailable broker, overloaded).",
    ),
    (
        "obs_collector_inflight_bytes",
        Gauge,
        "Request-body bytes the collector's listeners (HTTP and gRPC) hold now, against max_inflight_bytes.",
    ),
    (
        "obs_collector_active_series",
        Gauge,
        "Series seen recently, by tenant, as counted against max_series_per_tenant.",
    ),
    (
        "obs_scrapes_total",
        Counter,
        "Scrapes whose samples were published, by job.",
    ),
    (
        "obs_scrape_publish_failures_total",
        Counter,
        "Scrapes whose samples could not be published, by job.",
    ),
    (
        "obs_messages_published_total",
        Counter,
        "Kafka messages acknowledged by the broker, by topic.",
    ),
    (
        "obs_processor_publish_retries_total",
        Counter,
        "Publishes of processor output retried after a failed delivery.",
    ),
    (
        "obs_auth_refused_total",
        Counter,
        "Requests refused by [auth], by reason.",
    ),
    (
        "obs_tls_reloads_total",
        Counter,
        "Checks that found new certificate files, by result (loaded or failed; a failure keeps the previous certificate).",
    ),
    (
        "obs_tls_handshake_failures_total",
        Counter,
        "TLS handshakes that failed or timed out.",
    ),
    // Sinks.
    (
        "obs_shared_reader_joined",
        Gauge,
        "1 while a processor of this process reads the topic along with the sinks' reader (one fetch for both, obs up), 0 once it reads with its own consumer.",
    ),
    (
        "obs_sink_rows_total",
        Counter,
        "Rows inserted into ClickHouse, by table.",
    ),
    (
        "obs_sink_input_bytes_total",
        Counter,
        "Bytes of Kafka messages turned into inserted rows, by table.",
    ),
    (
        "obs_sink_batch_seconds",
        Histogram,
        "Time to insert one batch and commit its offsets, by table.",
    ),
    (
        "obs_sink_dlq_total",
        Counter,
        "Messages sent to obs.dlq because they could not be stored, by table.",
    ),
    (
        "obs_sink_rows_restored_total",
        Counter,
        "Rows ClickHouse acknowledged without storing (a deduplication token a crash left behind) that the sink stored again, by table.",
    ),
    (
        "obs_sink_undecodable_skipped_total",
        Counter,
        "Undecodable messages a second sink of a topic skipped (the topic's main sink sends them to obs.dlq), by table.",
    ),
    (
        "obs_sink_consumer_lag",
        Gauge,
        "Messages published but not yet committed by the sink, by table, topic, group and partition.",
    ),
    (
        "obs_sink_stalled_partitions",
        Gauge,
        "Partitions whose committed offset stood still with messages waiting past stall_after_secs, by table and topic.",
    ),
    // Rule processor.
    (
        "obs_processor_state_split_total",
        Counter,
        "Processor checkpoints larger than [processor] state_part_bytes, written to obs.processor.state in parts.",
    ),
    (
        "obs_processor_samples_total",
        Counter,
        "Samples the rule processor read, by outcome (kept, refused over max_samples_per_tenant).",
    ),
    (
        "obs_processor_undecodable_messages_total",
        Counter,
        "Messages of obs.metrics the rule processor could not decode.",
    ),
    (
        "obs_processor_watermark_seconds",
        Gauge,
        "The rule processor's event-time watermark, as a Unix time.",
    ),
    (
        "obs_processor_window_samples",
        Gauge,
        "Samples held in the rule processor's window.",
    ),
    (
        "obs_processor_tenants",
        Gauge,
        "Tenants with samples in the rule processor's window.",
    ),
    (
        "obs_rule_evaluations_total",
        Counter,
        "Rule group evaluations, by group.",
    ),
    (
        "obs_rule_evaluation_failures_total",
        Counter,
        "Rule evaluations that failed, by file, group and rule.",
    ),
    (
        "obs_rule_template_failures_total",
        Counter,
        "Alert label or annotation templates that failed to expand, by file, group and rule.",
    ),
    (
        "obs_alerts_sent_total",
        Counter,
        "Alerts sent to Alertmanager, by outcome.",
    ),
    // Trace processor.
    (
        "obs_traces_spans_total",
        Counter,
        "Spans the trace processor read.",
    ),
    (
        "obs_traces_late_spans_total",
        Counter,
        "Spans that arrived after their trace was decided.",
    ),
    (
        "obs_traces_decided_total",
        Counter,
        "Traces decided by tail sampling, by kept and reason.",
    ),
    (
        "obs_traces_open",
        Gauge,
        "Traces waiting for a sampling decision, by partition.",
    ),
    (
        "obs_traces_open_bytes",
        Gauge,
        "Estimated bytes held by traces waiting for a decision, by partition.",
    ),
    (
        "obs_traces_partition_time_seconds",
        Gauge,
        "Event time the trace processor has reached, by partition, as a Unix time.",
    ),
    (
        "obs_traces_undecodable_messages_total",
        Counter,
        "Messages of obs.spans the trace processor could not decode.",
    ),
    // Log processor.
    (
        "obs_logs_pipeline_records_total",
        Counter,
        "Records through the log pipelines, by outcome (stored or dropped).",
    ),
    // Rollup processor.
    (
        "obs_rollups_samples_total",
        Counter,
        "Samples the rollup processor read.",
    ),
    (
        "obs_rollups_late_samples_total",
        Counter,
        "Samples that arrived after their rollup window was written.",
    ),
    (
        "obs_rollups_skipped_samples_total",
        Counter,
        "Samples the rollup processor left out because their value is not finite.",
    ),
    (
        "obs_rollups_series",
        Gauge,
        "Series with an open rollup window.",
    ),
    (
        "obs_rollups_windows_total",
        Counter,
        "Rollup windows written.",
    ),
    (
        "obs_rollups_undecodable_messages_total",
        Counter,
        "Messages of obs.metrics the rollup processor could not decode.",
    ),
    // Streaming SQL.
    (
        "obs_sql_records_total",
        Counter,
        "Records read by the streaming SQL queries, by query.",
    ),
    (
        "obs_sql_late_records_total",
        Counter,
        "Records that arrived after all their windows had run, by query.",
    ),
    ("obs_sql_windows_total", Counter, "Windows run, by query."),
    (
        "obs_sql_failed_windows_total",
        Counter,
        "Windows the statement failed on (sent to obs.dlq), by query.",
    ),
    (
        "obs_sql_rows_total",
        Counter,
        "Rows the windows produced, by query.",
    ),
    (
        "obs_sql_undecodable_messages_total",
        Counter,
        "Messages a streaming SQL query could not decode, by query.",
    ),
    // Query API.
    (
        "obs_query_results_cache_total",
        Counter,
        "PromQL range queries by how the results cache answered them (hit, partial, miss, bypass).",
    ),
    (
        "obs_query_series_lookups_total",
        Counter,
        "PromQL selector reads by where their series' labels came from (kept from earlier queries, or read from metrics_series).",
    ),
    (
        "obs_query_results_cache_late_writes_total",
        Counter,
        "Late writes (rows of obs_late_writes) the results cache has read and dropped its answers' steps for.",
    ),
    (
        "obs_query_results_cache_bytes",
        Gauge,
        "Bytes of range-query answers the results cache holds.",
    ),
];

/// Registers the HELP text of every metric with the installed recorder.
pub fn describe() {
    for &(name, kind, help) in METRICS {
        match kind {
            Counter => metrics::describe_counter!(name, help),
            Gauge => metrics::describe_gauge!(name, help),
            Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Every `counter!`/`gauge!`/`histogram!` with a literal name under `dir`.
    fn recorded(dir: &Path, out: &mut BTreeMap<String, Kind>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                recorded(&path, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("metric_help.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (macro_name, kind) in [
                ("counter!(", Counter),
                ("gauge!(", Gauge),
                ("histogram!(", Histogram),
            ] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let name = &rest[..rest.find('"').unwrap()];
                    if let Some(k) = out.insert(name.to_string(), kind) {
                        assert_eq!(k, kind, "{name} recorded as two kinds");
                    }
                }
            }
        }
    }

    #[test]
    fn every_recorded_metric_has_help_text_and_no_help_is_stale() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = BTreeMap::new();
        for krate in [
            "runtime",
            "producers",
            "sinks",
            "stream-processors",
            "query-api",
            "schemas",
            "obs",
        ] {
            recorded(&root.join(krate).join("src"), &mut found);
        }
        assert!(found.len() > 40, "the scan found only {found:?}");
        let table: BTreeMap<String, Kind> = METRICS
            .iter()
            .map(|&(n, k, _)| (n.to_string(), k))
            .collect();
        assert_eq!(table.len(), METRICS.len(), "a metric is listed twice");
        for (name, kind) in &found {
            assert_eq!(table.get(name), Some(kind), "{name}: add it to METRICS");
        }
        for name in table.keys() {
            assert!(found.contains_key(name), "{name} is no longer recorded");
        }
        for &(name, _, help) in METRICS {
            assert!(help.ends_with('.') && help.len() > 20, "{name}: {help:?}");
        }
    }
}
