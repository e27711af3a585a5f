//! The PromQL demo data (`../shared/promql/gen_openmetrics.py`) loaded the same way into a
//! real Prometheus 2.42 (`promtool tsdb create-blocks-from openmetrics`, then Prometheus on
//! those blocks) and into the pipeline (remote write to the collector), for conformance
//! tests and the query benchmark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::prometheus::{Prometheus, prometheus_bin};
use crate::remote_write::{self, Series};
use crate::{Stack, repo_root, wait_for};

/// One series of the file: labels (without `__name__`), name and samples `(ms, value)`.
#[derive(Debug, Clone)]
pub struct DemoSeries {
    /// Metric name.
    pub name: String,
    /// Other labels.
    pub labels: BTreeMap<String, String>,
    /// Samples in file order (ascending time).
    pub samples: Vec<(i64, f64)>,
}

/// The demo data written for `[start, end]` (Unix seconds).
pub struct Demo {
    /// The OpenMetrics file.
    pub file: PathBuf,
    /// Its series.
    pub series: Vec<DemoSeries>,
    /// First sample time (s).
    pub start: i64,
    /// Last sample time (s).
    pub end: i64,
}

/// `promtool` (`OBS_PROMTOOL_BIN`, else beside the prometheus binary or on PATH).
pub fn promtool_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OBS_PROMTOOL_BIN") {
        return p.into();
    }
    let beside = prometheus_bin().with_file_name("promtool");
    if beside.is_absolute() && beside.exists() {
        return beside;
    }
    "promtool".into()
}

fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let eq = rest.find("=\"").context("label without =\"")?;
        let name = rest[..eq].trim_start_matches(',').to_string();
        let after = &rest[eq + 2..];
        let close = after.find('"').context("unterminated label value")?;
        out.insert(name, after[..close].to_string());
        rest = &after[close + 1..];
    }
    Ok(out)
}

/// Parses the sample lines of an OpenMetrics file (`name{labels} value ts`).
pub fn parse_openmetrics(text: &str) -> anyhow::Result<Vec<DemoSeries>> {
    type Key = (String, BTreeMap<String, String>);
    let mut order: Vec<Key> = Vec::new();
    let mut by_key: BTreeMap<Key, Vec<(i64, f64)>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, rest) = line.split_once('}').context("a line without labels")?;
        let (name, labels) = series.split_once('{').context("no {")?;
        let mut parts = rest.split_whitespace();
        let value: f64 = match parts.next().context("no value")? {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().with_context(|| format!("bad value in {line}"))?,
        };
        let ts: f64 = parts.next().context("no timestamp")?.parse()?;
        let key = (name.to_string(), parse_labels(labels)?);
        let entry = by_key.entry(key.clone()).or_default();
        if entry.is_empty() {
            order.push(key);
        }
        entry.push(((ts * 1000.0).round() as i64, value));
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let samples = by_key.remove(&k).unwrap_or_default();
            DemoSeries {
                name: k.0,
                labels: k.1,
                samples,
            }
        })
        .collect())
}

impl Demo {
    /// Writes the demo file for `[start, end]` into `dir` and parses it.
    pub fn generate(dir: &Path, start: i64, end: i64) -> anyhow::Result<Demo> {
        let script = repo_root().join("../shared/promql/gen_openmetrics.py");
        let out = Command::new(crate::python())
            .arg(&script)
            .args(["--start", &start.to_string(), "--end", &end.to_string()])
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let file = dir.join("demo.om");
        std::fs::write(&file, &out.stdout)?;
        let series = parse_openmetrics(&String::from_utf8(out.stdout)?)?;
        let times = series.iter().flat_map(|s| s.samples.iter().map(|p| p.0));
        let (lo, hi) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        Ok(Demo {
            file,
            series,
            start: lo / 1000,
            end: hi / 1000,
        })
    }

    /// Samples in the file.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    /// Builds TSDB blocks from the file with promtool and starts Prometheus on them.
    pub async fn start_prometheus(&self, dir: &Path) -> anyhow::Result<Prometheus> {
        let data = dir.join("prom-demo-data");
        let out = Command::new(promtool_bin())
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&self.file)
            .arg(&data)
            .output()
            .context("running promtool")?;
        if !out.status.success() {
            bail!(
                "promtool failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Prometheus::start(dir, "prom-demo", "global: {scrape_interval: 1m}\n", &data).await
    }

    /// Sends the series to the collector by remote write (a minute of up to 200 series per
    /// request, in time order) and waits until every sample is in `metrics_samples`.
    pub async fn load_into(&self, stack: &Stack) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/write", stack.collector_url());
        // A minute of every series at a time, as live senders would: the rollup processor
        // counts samples more than its allowed lateness (1m) behind its partition's newest
        // as late, and minutes aligned to the epoch never are.
        const SLICE_MS: i64 = 60_000;
        let times = self
            .series
            .iter()
            .flat_map(|s| s.samples.iter().map(|p| p.0));
        let (first, last) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let mut from = first.div_euclid(SLICE_MS) * SLICE_MS;
        while from <= last {
            let to = from + SLICE_MS;
            for chunk in self.series.chunks(200) {
                let series: Vec<Series<'_>> = chunk
                    .iter()
                    .map(|s| Series {
                        name: &s.name,
                        labels: s
                            .labels
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.clone()))
                            .collect(),
                        samples: s
                            .samples
                            .iter()
                            .copied()
                            .filter(|&(t, _)| t >= from && t < to)
                            .collect(),
                    })
                    .filter(|s| !s.samples.is_empty())
                    .collect();
                if series.is_empty() {
                    continue;
                }
                let (status, text) = remote_write::post(&url, remote_write::body(&series)).await;
                if status != 204 && status != 200 {
                    bail!("remote write answered {status}: {text}");
                }
            }
            from = to;
        }
        // Samples and series are separate tables (written by separate sink tables): wait
        // for both.
        let (want, series) = (self.sample_count() as u64, self.series.len() as u64);
        let db = stack.db();
        wait_for(
            &format!("{want} demo samples and {series} series in ClickHouse"),
            Duration::from_secs(120),
            || {
                let db = db.clone();
                async move {
                    let n: u64 = db
                        .query("SELECT count() FROM metrics_samples")
                        .fetch_one()
                        .await
                        .ok()?;
                    let s: u64 = db
                        .query("SELECT uniqExact(Fingerprint) FROM metrics_series")
                        .fetch_one()
                        .await
                        .ok()?;
                    (n == want && s == series).then_some(())
                }
            },
        )
        .await
    }
}
