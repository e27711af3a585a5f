//! Logging and the process's own metrics registry.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Starts logging to stderr, filtered by `RUST_LOG` (default `info`), and installs the
/// metrics recorder. Safe to call twice.
pub fn init() {
    metrics_handle();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process-wide metrics recorder, installed on first use; render it for `/metrics`.
pub fn metrics_handle() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests); then ours only renders itself.
        if metrics::set_global_recorder(recorder).is_ok() {
            crate::metric_help::describe();
        }
        handle
    })
}
