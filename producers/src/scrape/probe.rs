//! Blackbox-style probes: HTTP and TCP targets checked every interval, giving
//! `probe_success`, `probe_duration_seconds` and (HTTP) `probe_http_status_code` with the
//! job's `job` label and the target as `instance`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use obs_schemas::records::Attrs;
use serde::Deserialize;

use crate::metrics::new_series;
use crate::server::AppState;

/// One `probe_configs` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeJob {
    /// The `job` label.
    pub job_name: String,
    /// `http` (a GET; success is a 2xx, or one of `valid_status_codes`) or `tcp` (a connect).
    pub module: String,
    /// URLs (http) or `host:port` (tcp).
    pub targets: Vec<String>,
    /// How often (default 15s).
    #[serde(default = "fifteen_seconds", with = "super::config::durations")]
    pub interval: Duration,
    /// How long a probe may take (default 5s).
    #[serde(default = "five_seconds", with = "super::config::durations")]
    pub timeout: Duration,
    /// Status codes that count as success (default: any 2xx).
    #[serde(default)]
    pub valid_status_codes: Vec<u16>,
    /// Extra labels.
    #[serde(default)]
    pub labels: Attrs,
}

fn fifteen_seconds() -> Duration {
    Duration::from_secs(15)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

impl ProbeJob {
    /// Checks the module.
    pub fn check(&self) -> anyhow::Result<()> {
        if !matches!(self.module.as_str(), "http" | "tcp") {
            bail!("probe job {:?}: module must be http or tcp", self.job_name);
        }
        Ok(())
    }
}

/// Result of one probe: success, seconds, HTTP status (0 for tcp or no answer).
async fn probe_once(job: &ProbeJob, client: &reqwest::Client, target: &str) -> (bool, f64, u16) {
    let started = Instant::now();
    let (ok, status) = match job.module.as_str() {
        "http" => match client.get(target).send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                let ok = if job.valid_status_codes.is_empty() {
                    r.status().is_success()
                } else {
                    job.valid_status_codes.contains(&code)
                };
                (ok, code)
            }
            Err(_) => (false, 0),
        },
        _ => {
            let connect = tokio::net::TcpStream::connect(target);
            (
                matches!(tokio::time::timeout(job.timeout, connect).await, Ok(Ok(_))),
                0,
            )
        }
    };
    (ok, started.elapsed().as_secs_f64(), status)
}

/// Probes every target of `job` every interval until the process ends.
pub async fn run(job: Arc<ProbeJob>, state: AppState, tenant: String) {
    let client = match reqwest::Client::builder().timeout(job.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the probe client");
            return;
        }
    };
    let mut tick = tokio::time::interval(job.interval);
    loop {
        tick.tick().await;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let results =
            futures::future::join_all(job.targets.iter().map(|t| probe_once(&job, &client, t)))
                .await;
        let mut series = Vec::new();
        for (target, (ok, secs, status)) in job.targets.iter().zip(results) {
            let mut labels = job.labels.clone();
            labels.insert("job".into(), job.job_name.clone());
            labels.insert("instance".into(), target.clone());
            let mut values = vec![
                ("probe_success", if ok { 1.0 } else { 0.0 }),
                ("probe_duration_seconds", secs),
            ];
            if job.module == "http" {
                values.push(("probe_http_status_code", f64::from(status)));
            }
            for (name, v) in values {
                let mut s = new_series(&tenant, name.into(), labels.clone(), "gauge".into());
                s.timestamps_ms.push(ts);
                s.values.push(v);
                series.push(s);
            }
        }
        let result = match state.guard.admit(&tenant, &mut series) {
            Ok(a) => state
                .publisher
                .metrics(series, vec![])
                .await
                .map(|()| state.guard.commit(a))
                .map_err(Into::into),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(job = %job.job_name, error = %e, "probe results not published");
        }
    }
}
