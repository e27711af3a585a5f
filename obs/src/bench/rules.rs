//! `obs bench-rules`: the rule engine's speed and memory on one rule file, beside a
//! Prometheus 2.42 evaluating the same file on the same samples in the same run.
//!
//! Data: `--series` counters `bench_requests_total{job, instance, code}` (ten jobs, 1% of
//! requests failing) sampled every 15 s for the `--minutes` before now. Measured here, in
//! process: the engine fed the samples one 15 s step at a time (one metrics batch per
//! step, as the processor receives them from Kafka, decoding excluded) with every due
//! evaluation run as time passes: samples per second ingested and evaluated, ingested
//! alone, and the rate it keeps up with (ingest in the time evaluation leaves of each
//! interval), each group evaluation's duration (p50, p99, max),
//! the samples its windows hold and the process's resident memory. With
//! `--peer-prometheus` the same samples go to that Prometheus by remote write (started with
//! `--web.enable-remote-write-receiver` and this rule file); its own numbers are read from
//! its API once it has evaluated: the group's last evaluation time
//! (`/api/v1/rules`), samples ingested per second by remote write, and its resident
//! memory.

use std::time::{Duration, Instant};

use anyhow::Context;
use obs_producers::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
use obs_runtime::Config;
use obs_schemas::records::{MetricBatch, MetricSeries};
use obs_stream_processors::rules::engine::Engine;
use obs_stream_processors::rules::group::Env;
use prost::Message;

/// What `obs bench-rules` was asked to do.
pub struct RulesBench {
    /// Rule file.
    pub rules: String,
    /// Counter series.
    pub series: usize,
    /// Minutes of history.
    pub minutes: i64,
    /// A Prometheus with the remote-write receiver and the same rule file, if any.
    pub peer_prometheus: Option<String>,
}

const STEP_MS: i64 = 15_000;

/// The process's resident memory (bytes), from /proc/self/status.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn labels(i: usize) -> Vec<(String, String)> {
    vec![
        (
            "code".into(),
            if i.is_multiple_of(100) { "500" } else { "200" }.into(),
        ),
        ("instance".into(), format!("host-{}", i / 2)),
        ("job".into(), format!("job-{}", i % 10)),
    ]
}

fn value(i: usize, step: i64) -> f64 {
    (step * (10 + (i % 7) as i64)) as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the benchmark and prints the report.
pub async fn run(cfg: &Config, opts: &RulesBench) -> anyhow::Result<()> {
    let env = Env {
        external_labels: Default::default(),
        external_url: cfg.processor.external_url.clone(),
        default_interval_ms: cfg.processor.evaluation_interval_secs as i64 * 1000,
    };
    let groups =
        obs_stream_processors::rules::run::load_groups(std::slice::from_ref(&opts.rules), &env)?;
    let now = chrono::Utc::now().timestamp_millis();
    let steps = opts.minutes * 60_000 / STEP_MS;
    let start = (now - steps * STEP_MS) / STEP_MS * STEP_MS;
    let names: Vec<Vec<(String, String)>> = (0..opts.series).map(labels).collect();
    let fingerprints: Vec<i64> = names
        .iter()
        .map(|l| {
            obs_schemas::series_fingerprint(
                "default",
                "bench_requests_total",
                l.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
        })
        .collect();

    // The engine, step by step.
    let rss_before = rss_bytes();
    let mut engine = Engine::new(groups, env, usize::MAX, Box::new(|_| true));
    let mut eval_seconds: Vec<f64> = Vec::new();
    let mut busy = Duration::ZERO;
    let mut ingesting = Duration::ZERO;
    let mut peak_samples = 0;
    for step in 0..=steps {
        let t = start + step * STEP_MS;
        let batch = MetricBatch {
            series: (0..opts.series)
                .map(|i| MetricSeries {
                    fingerprint: fingerprints[i],
                    name: "bench_requests_total".into(),
                    labels: names[i].iter().cloned().collect(),
                    kind: "counter".into(),
                    timestamps_ms: vec![t],
                    values: vec![value(i, step)],
                    tenant: "default".into(),
                    ..MetricSeries::default()
                })
                .collect(),
            metadata: vec![],
        };
        let began = Instant::now();
        engine.ingest(&batch, None);
        ingesting += began.elapsed();
        while let Some(runs) = engine.evaluate_round(t, None) {
            for r in runs {
                if let Some(g) = engine.group(&r.tenant, &r.group) {
                    eval_seconds.push(g.rules.iter().map(|r| r.last_duration_s).sum());
                }
            }
        }
        busy += began.elapsed();
        peak_samples = peak_samples.max(engine.samples());
    }
    let rss_after = rss_bytes();
    eval_seconds.sort_by(f64::total_cmp);
    let total = opts.series as f64 * (steps + 1) as f64;
    println!(
        "rule engine ({} series, {} min at 15 s, {} evaluations of {}):",
        opts.series,
        opts.minutes,
        eval_seconds.len(),
        opts.rules
    );
    println!(
        "  ingest and evaluate: {:.0} samples/s ({:.2} s busy for {total} samples)",
        total / busy.as_secs_f64(),
        busy.as_secs_f64()
    );
    println!(
        "  ingest alone: {:.0} samples/s; keeps up with {:.0} samples/s at this rule file's evaluation cost (the 15 s interval minus the p50 evaluation, at the ingest rate)",
        total / ingesting.as_secs_f64(),
        total / ingesting.as_secs_f64() * (15.0 - percentile(&eval_seconds, 0.5)) / 15.0
    );
    println!(
        "  group evaluation: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&eval_seconds, 0.5) * 1e3,
        percentile(&eval_seconds, 0.99) * 1e3,
        percentile(&eval_seconds, 1.0) * 1e3
    );
    println!(
        "  memory: {peak_samples} samples in the windows at most; resident memory grew {:.1} MiB",
        (rss_after.saturating_sub(rss_before)) as f64 / (1 << 20) as f64
    );

    let Some(peer) = &opts.peer_prometheus else {
        return Ok(());
    };
    // The same samples to Prometheus, 20 steps per request.
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/write", peer.trim_end_matches('/'));
    let began = Instant::now();
    let mut step = 0;
    while step <= steps {
        let last = (step + 20).min(steps + 1);
        let req = WriteRequest {
            timeseries: (0..opts.series)
                .map(|i| TimeSeries {
                    labels: std::iter::once(Label {
                        name: "__name__".into(),
                        value: "bench_requests_total".into(),
                    })
                    .chain(names[i].iter().map(|(k, v)| Label {
                        name: k.clone(),
                        value: v.clone(),
                    }))
                    .collect(),
                    samples: (step..last)
                        .map(|s| Sample {
                            value: value(i, s),
                            timestamp: start + s * STEP_MS,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())?;
        let resp = client
            .post(&url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .body(body)
            .send()
            .await
            .with_context(|| format!("remote write to {url}"))?;
        anyhow::ensure!(
            resp.status().is_success(),
            "Prometheus answered {}",
            resp.status()
        );
        step = last;
    }
    let sent = began.elapsed();
    // Its evaluation of the group once the data is in: the next two evaluations.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let rules: serde_json::Value = client
        .get(format!("{}/api/v1/rules", peer.trim_end_matches('/')))
        .send()
        .await?
        .json()
        .await?;
    let group = &rules["data"]["groups"][0];
    let metrics = client
        .get(format!("{}/metrics", peer.trim_end_matches('/')))
        .send()
        .await?
        .text()
        .await?;
    let rss = metrics
        .lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    println!("Prometheus 2.42 at {peer}, same rule file and samples:");
    println!(
        "  remote-write ingest: {:.0} samples/s ({:.2} s for {total} samples)",
        total / sent.as_secs_f64(),
        sent.as_secs_f64()
    );
    println!(
        "  group evaluation: {:.1} ms (last evaluation of {:?})",
        group["evaluationTime"].as_f64().unwrap_or(0.0) * 1e3,
        group["name"].as_str().unwrap_or("?")
    );
    println!("  resident memory: {:.1} MiB", rss / (1 << 20) as f64);
    Ok(())
}
