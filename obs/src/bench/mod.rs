//! `obs bench`: throughput of a running pipeline, beside the peer measured in the same run.
//!
//! Collector phase, per workload (remote write, OTLP logs, OTLP spans): `--concurrency`
//! senders post for `--seconds`; reported are records acknowledged per second, request
//! latency percentiles and request bytes per record. Remote write is also sent, with the
//! same requests, to a Prometheus started with `--web.enable-remote-write-receiver`
//! (`--peer-prometheus`), and the ratio is reported.
//!
//! Sink phase: the time until every acknowledged record of the run is in ClickHouse, the
//! resulting end-to-end rows per second per table, and the stored bytes per row (compressed
//! bytes of the table's active parts after `OPTIMIZE ... FINAL`, over its rows).

pub mod logs;
pub mod rollups;
pub mod rules;
pub mod traces;
mod workloads;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_runtime::{Config, clickhouse as ch};
use tokio::sync::Mutex;

/// What `obs bench` was asked to do.
pub struct BenchOptions {
    /// Seconds each workload runs.
    pub seconds: u64,
    /// Concurrent senders per workload.
    pub concurrency: usize,
    /// Base URL of a Prometheus with the remote-write receiver enabled, if any.
    pub peer_prometheus: Option<String>,
}

/// One workload's numbers.
struct Measured {
    name: String,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    failures: u64,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() - 1) as f64 * p).round() as usize]
    }
}

/// Posts bodies from `make(sender, request)` to `url` from `concurrency` senders for
/// `seconds`; each 2xx counts `per_request` records.
async fn drive<F>(
    name: &str,
    url: String,
    headers: &'static [(&'static str, &'static str)],
    per_request: u64,
    opts: &BenchOptions,
    make: F,
) -> Measured
where
    F: Fn(usize, usize) -> Vec<u8> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    let started = Instant::now();
    let tasks: Vec<_> = (0..opts.concurrency)
        .map(|sender| {
            let (make, stop, records, bytes, failures, latencies, client, url) = (
                make.clone(),
                stop.clone(),
                records.clone(),
                bytes.clone(),
                failures.clone(),
                latencies.clone(),
                client.clone(),
                url.clone(),
            );
            tokio::spawn(async move {
                let mut request = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = {
                        let make = make.clone();
                        tokio::task::spawn_blocking(move || make(sender, request))
                            .await
                            .unwrap_or_default()
                    };
                    let size = body.len() as u64;
                    let mut req = crate::query_api::authorized(client.post(&url)).body(body);
                    for (k, v) in headers {
                        req = req.header(*k, *v);
                    }
                    let t = Instant::now();
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            latencies.lock().await.push(t.elapsed());
                            records.fetch_add(per_request, Ordering::Relaxed);
                            bytes.fetch_add(size, Ordering::Relaxed);
                            request += 1;
                        }
                        Ok(r) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            eprintln!("{url}: {status} {}", text.trim());
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{url}: {e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock().await);
    Measured {
        name: name.into(),
        records: records.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        elapsed,
        latencies,
        failures: failures.load(Ordering::Relaxed),
    }
}

const RW_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];
const OTLP_HEADERS: &[(&str, &str)] = &[("Content-Type", "application/x-protobuf")];

/// Runs every workload against the pipeline configured in `cfg`, then the sink phase.
pub async fn run(cfg: &Config, opts: &BenchOptions) -> anyhow::Result<()> {
    let run = format!("bench-{}", workloads::now_ns());
    let collector = format!("http://{}", cfg.collector.listen);
    let start_ms = (workloads::now_ns() / 1_000_000) as i64 - 3_600_000;
    let samples = (workloads::RW_SERIES * workloads::RW_SAMPLES) as u64;
    let mut results = Vec::new();
    let mut starts = Vec::new();

    eprintln!("remote write → obs collector ({} s)...", opts.seconds);
    starts.push(Instant::now());
    let r = run.clone();
    results.push(
        drive(
            "remote write → obs",
            format!("{collector}/api/v1/write"),
            RW_HEADERS,
            samples,
            opts,
            move |s, i| workloads::remote_write(&r, s, i, start_ms),
        )
        .await,
    );
    if let Some(peer) = &opts.peer_prometheus {
        eprintln!("remote write → Prometheus receiver ({} s)...", opts.seconds);
        starts.push(Instant::now());
        let r = run.clone();
        results.push(
            drive(
                "remote write → Prometheus 2.42",
                format!("{}/api/v1/write", peer.trim_end_matches('/')),
                RW_HEADERS,
                samples,
                opts,
                move |s, i| workloads::remote_write(&r, s, i, start_ms),
            )
            .await,
        );
    }
    eprintln!("OTLP logs → obs collector ({} s)...", opts.seconds);
    starts.push(Instant::now());
    let r = run.clone();
    results.push(
        drive(
            "OTLP/HTTP logs → obs",
            format!("{collector}/v1/logs"),
            OTLP_HEADERS,
            workloads::LOGS_PER_REQUEST as u64,
            opts,
            move |s, i| workloads::otlp_logs(&r, s, i),
        )
        .await,
    );
    eprintln!("OTLP spans → obs collector ({} s)...", opts.seconds);
    starts.push(Instant::now());
    let r = run.clone();
    results.push(
        drive(
            "OTLP/HTTP spans → obs",
            format!("{collector}/v1/traces"),
            OTLP_HEADERS,
            workloads::SPANS_PER_REQUEST as u64,
            opts,
            move |s, i| workloads::otlp_spans(&r, s, i),
        )
        .await,
    );

    let mut table = comfy_table::Table::new();
    table.set_header([
        "into the topics",
        "records/s",
        "records",
        "p50 request",
        "p99 request",
        "bytes/record (request)",
        "failed requests",
    ]);
    for m in &results {
        table.add_row([
            m.name.clone(),
            format!("{:.0}", m.per_second()),
            m.records.to_string(),
            format!("{:.1} ms", m.percentile(0.5).as_secs_f64() * 1000.0),
            format!("{:.1} ms", m.percentile(0.99).as_secs_f64() * 1000.0),
            format!("{:.2}", m.bytes as f64 / m.records.max(1) as f64),
            m.failures.to_string(),
        ]);
    }
    println!("{table}");
    if let [ours, peer, ..] = &results[..]
        && opts.peer_prometheus.is_some()
    {
        println!(
            "remote write: obs / Prometheus = {:.2}",
            ours.per_second() / peer.per_second().max(1.0)
        );
    }

    // Sink phase: poll every table until everything acknowledged is stored, noting when
    // each got there.
    let expected = [
        ("metrics_samples", results[0].records, starts[0]),
        (
            "otel_logs",
            results[results.len() - 2].records,
            starts[starts.len() - 2],
        ),
        (
            "otel_traces",
            results[results.len() - 1].records,
            starts[starts.len() - 1],
        ),
    ];
    let client = ch::client(&cfg.clickhouse);
    let count = |table: &str| {
        let sql = match table {
            "metrics_samples" => {
                "SELECT count() FROM metrics_samples WHERE MetricName LIKE 'bench_metric_%'"
                    .to_string()
            }
            other => format!(
                "SELECT count() FROM {other} WHERE {} = ?",
                attr_column(other)
            ),
        };
        let mut q = client.query(&sql);
        if table != "metrics_samples" {
            q = q.bind(&run);
        }
        q.fetch_one::<u64>()
    };
    let mut done: Vec<Option<(u64, Instant)>> = vec![None; expected.len()];
    let deadline = Instant::now() + Duration::from_secs(900);
    while done.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, (table, want, _)) in expected.iter().enumerate() {
            if done[i].is_none() {
                let got = count(table).await.unwrap_or(0);
                if got >= *want {
                    done[i] = Some((got, Instant::now()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut sink = comfy_table::Table::new();
    sink.set_header([
        "table",
        "rows",
        "stored (s after its workload began)",
        "rows/s into ClickHouse",
        "stored bytes/row",
    ]);
    for (i, (table, want, started)) in expected.iter().enumerate() {
        let (got, at) = match done[i] {
            Some(d) => d,
            None => (count(table).await.unwrap_or(0), Instant::now()),
        };
        let secs = at.duration_since(*started).as_secs_f64();
        client
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .execute()
            .await
            .with_context(|| format!("OPTIMIZE TABLE {table}"))?;
        let (bytes, rows): (u64, u64) = client
            .query("SELECT sum(data_compressed_bytes), sum(rows) FROM system.parts WHERE database = currentDatabase() AND table = ? AND active")
            .bind(*table)
            .fetch_one()
            .await?;
        sink.add_row([
            table.to_string(),
            format!("{got} of {want}"),
            format!("{secs:.1}"),
            format!("{:.0}", got as f64 / secs),
            format!("{:.2}", bytes as f64 / rows.max(1) as f64),
        ]);
    }
    println!("{sink}");
    println!(
        "rows/s into ClickHouse counts from the start of the table's workload to its last row stored (the sinks run while the collectors are loaded); stored bytes are compressed bytes of the table's parts after OPTIMIZE FINAL (synthetic values compress better than real ones)."
    );
    Ok(())
}

/// The attribute column carrying the run id.
fn attr_column(table: &str) -> &'static str {
    match table {
        "otel_logs" => "LogAttributes['run']",
        _ => "SpanAttributes['run']",
    }
}
