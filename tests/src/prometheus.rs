//! A real Prometheus 2.42 (Debian's `prometheus`) as a peer: started on a free port with a
//! given configuration and data directory, stopped cleanly with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::{Proc, free_port, http};

/// The `prometheus` binary (`OBS_PROMETHEUS_BIN`, else on PATH).
pub fn prometheus_bin() -> PathBuf {
    std::env::var_os("OBS_PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "prometheus".into())
}

/// A Prometheus configuration that scrapes itself every second and remote-writes to `url`
/// (`extra`: more YAML of the remote_write entry, indented by four spaces, e.g.
/// `authorization`), for [`Prometheus::start`].
pub fn self_scrape_remote_write(url: &str, extra: &str) -> String {
    format!(
        r#"
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:{{port}}']
remote_write:
  - url: {url}
    queue_config:
      batch_send_deadline: 1s
{extra}"#
    )
}

/// A running Prometheus.
pub struct Prometheus {
    /// Its HTTP port.
    pub port: u16,
    proc: Proc,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML; `{port}` is replaced by its own port) and
    /// TSDB in `data`, and waits until it is ready.
    pub async fn start(dir: &Path, name: &str, config: &str, data: &Path) -> anyhow::Result<Self> {
        Prometheus::start_with_args(dir, name, config, data, &[]).await
    }

    /// [`Prometheus::start`] with extra command-line flags (e.g.
    /// `--web.enable-remote-write-receiver`).
    pub async fn start_with_args(
        dir: &Path,
        name: &str,
        config: &str,
        data: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let config_path = dir.join(format!("{name}.yml"));
        std::fs::write(&config_path, config.replace("{port}", &port.to_string()))?;
        let mut cmd = Command::new(prometheus_bin());
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .arg("--log.level=info")
            .args(args);
        let proc = Proc::spawn(name, cmd, dir)?;
        crate::wait_answering(
            &format!("http://127.0.0.1:{port}/-/ready"),
            "Prometheus",
            &proc,
        )
        .await?;
        Ok(Prometheus { port, proc })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it with SIGTERM (flushing remote write) and waits.
    pub async fn stop(&mut self) {
        self.proc.terminate(Duration::from_secs(90)).await;
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// Runs an instant query and returns `data.result`.
    pub async fn query(&self, query: &str, time_s: f64) -> anyhow::Result<Vec<serde_json::Value>> {
        let resp: serde_json::Value = http(30)
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", query), ("time", &time_s.to_string())])
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(resp["status"] == "success", "query {query} failed: {resp}");
        resp["data"]["result"]
            .as_array()
            .cloned()
            .context("result is not an array")
    }
}
