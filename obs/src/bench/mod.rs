//! `obs bench`: throughput of a running pipeline, beside the peer measured in the same run.
//!
//! Each run sends every workload in turn (remote write, the same requests to a Prometheus
//! started with `--web.enable-remote-write-receiver` if `--peer-prometheus` is given, OTLP
//! logs, OTLP spans): `--concurrency` senders post for `--seconds`, then the benchmark
//! waits until ClickHouse holds every acknowledged record before the next workload starts,
//! so each workload's figures are its own. Per workload: records acknowledged per second,
//! request latency percentiles and request bytes per record; records per second from the
//! workload's start until the last of them is stored; ingest → queryable latency of probe
//! samples sent while it runs (`probe`); CPU seconds per million records of each process
//! of the stack (`procs`). After the runs: stored bytes per row, the engine's own insert
//! rate for the same rows (the floor), peak memory, and with `--report` a dated Markdown
//! report of the medians (`report`).

mod drive;
pub mod logs;
mod probe;
mod procs;
mod report;
pub mod rollups;
pub mod rules;
pub mod traces;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_runtime::{Config, clickhouse as ch};

pub use procs::parse as parse_pids;
use report::{RunFigures, WorkloadFigures};

/// What `obs bench` was asked to do.
pub struct BenchOptions {
    /// Seconds each workload runs.
    pub seconds: u64,
    /// Concurrent senders per workload.
    pub concurrency: usize,
    /// Samples per second of the paced remote-write workload (0: none).
    pub paced_rate: u64,
    /// Base URL of a Prometheus with the remote-write receiver enabled, if any.
    pub peer_prometheus: Option<String>,
    /// How many times the whole set runs (the report gives medians).
    pub runs: usize,
    /// Where the Markdown report (and its JSON figures) go; none: only printed.
    pub report: Option<PathBuf>,
    /// The stack's processes to account CPU and memory to.
    pub pids: Vec<procs::Watched>,
    /// How the stack was set up (broker, engine, build), for the report.
    pub setup: String,
    /// Only these workloads, by slug (`rw`, `rw-peer`, `rw-paced`, `logs`, `spans`); empty:
    /// all. A partial set is printed, never written as a report.
    pub only: Vec<String>,
    /// How often the ingest → queryable probe asks the query API.
    pub probe_poll: Duration,
}

const RW_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];
const OTLP_HEADERS: &[(&str, &str)] = &[("Content-Type", "application/x-protobuf")];

/// One kind of load the benchmark sends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    RemoteWrite,
    RemoteWritePeer,
    /// Remote write at `paced_rate` samples/s: ingest → queryable where nothing backs up.
    RemoteWritePaced,
    Logs,
    Spans,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::RemoteWrite => "remote write → obs",
            Workload::RemoteWritePeer => "remote write → Prometheus 2.42",
            Workload::RemoteWritePaced => "paced remote write → obs",
            Workload::Logs => "OTLP/HTTP logs → obs",
            Workload::Spans => "OTLP/HTTP spans → obs",
        }
    }

    /// A short name, unique per workload (labels its probe series apart).
    fn slug(self) -> &'static str {
        match self {
            Workload::RemoteWrite => "rw",
            Workload::RemoteWritePeer => "rw-peer",
            Workload::RemoteWritePaced => "rw-paced",
            Workload::Logs => "logs",
            Workload::Spans => "spans",
        }
    }

    /// The table its records end in (none for the peer).
    fn table(self) -> Option<&'static str> {
        match self {
            Workload::RemoteWrite | Workload::RemoteWritePaced => Some("metrics_samples"),
            Workload::RemoteWritePeer => None,
            Workload::Logs => Some("otel_logs"),
            Workload::Spans => Some("otel_traces"),
        }
    }
}

/// Runs every workload `runs` times against the pipeline configured in `cfg`.
pub async fn run(cfg: &Config, opts: &BenchOptions) -> anyhow::Result<()> {
    let invocation = format!("bench-{}", workloads::now_ns());
    let collector = format!("http://{}", cfg.collector.listen);
    let query = format!("http://{}", cfg.query.listen);
    let client = ch::client(&cfg.clickhouse);
    let mut set = vec![Workload::RemoteWrite];
    if opts.peer_prometheus.is_some() {
        set.push(Workload::RemoteWritePeer);
    }
    if opts.paced_rate > 0 {
        set.push(Workload::RemoteWritePaced);
    }
    set.extend([Workload::Logs, Workload::Spans]);
    let set = only(set, &opts.only)?;

    // Each remote-write target's sample times go on from run to run: a receiver refuses
    // samples older than what it already holds (Prometheus answers "out of bounds").
    let hour_ago = (workloads::now_ns() / 1_000_000) as i64 - 3_600_000;
    let mut timelines = [hour_ago, hour_ago];
    let mut runs = Vec::new();
    for i in 1..=opts.runs {
        let run = format!("{invocation}-{i}");
        let mut figures = RunFigures::default();
        for &w in &set {
            eprintln!(
                "run {i}/{}: {} ({} s, {} senders)...",
                opts.runs,
                w.name(),
                opts.seconds,
                opts.concurrency
            );
            let timeline = &mut timelines[usize::from(w == Workload::RemoteWritePeer)];
            figures
                .workloads
                .push(one_workload(opts, &client, &collector, &query, &run, w, timeline).await?);
        }
        print_run(i, &figures);
        runs.push(figures);
    }

    let mut stored_bytes = BTreeMap::new();
    let mut floors = BTreeMap::new();
    let mut tables: Vec<&str> = set.iter().filter_map(|w| w.table()).collect();
    tables.dedup();
    for table in tables {
        stored_bytes.insert(table.to_string(), bytes_per_row(&client, table).await?);
        eprintln!("the engine's own insert of {table}'s benchmark rows...");
        floors.insert(
            table.to_string(),
            engine_floor(&client, table, &invocation).await?,
        );
    }
    let rss = procs::peak_rss(&opts.pids);
    let report = report::Report::new(opts, runs, stored_bytes, floors, rss);
    println!("{}", report.markdown());
    if !opts.only.is_empty() {
        eprintln!("a partial set of workloads (--only): the report is printed, not written");
    } else if let Some(dir) = &opts.report {
        let path = report.write(dir)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// The workloads of `set` named in `slugs` (all of `set` when `slugs` is empty); an error
/// names a slug that is not one of them.
fn only(set: Vec<Workload>, slugs: &[String]) -> anyhow::Result<Vec<Workload>> {
    if let Some(unknown) = slugs
        .iter()
        .find(|s| !set.iter().any(|w| w.slug() == s.as_str()))
    {
        let known: Vec<&str> = set.iter().map(|w| w.slug()).collect();
        anyhow::bail!(
            "--only {unknown}: no such workload in this run; choose from {} (rw-peer needs \
             --peer-prometheus, rw-paced a --paced-rate above 0)",
            known.join(", ")
        );
    }
    Ok(set
        .into_iter()
        .filter(|w| slugs.is_empty() || slugs.iter().any(|s| s == w.slug()))
        .collect())
}

/// Sends one workload, then waits until its records are stored; the figures of it.
/// Remote-write samples start at `timeline`, which is moved past the last one sent.
async fn one_workload(
    opts: &BenchOptions,
    client: &clickhouse::Client,
    collector: &str,
    query: &str,
    run: &str,
    w: Workload,
    timeline: &mut i64,
) -> anyhow::Result<WorkloadFigures> {
    let start_ms = *timeline;
    let stored_before = match w.table() {
        Some(t) => count(client, t, run).await?,
        None => 0,
    };
    let cpu_before = procs::cpu_seconds(&opts.pids);
    let since_s = (workloads::now_ns() / 1_000_000_000) as i64 - 1;
    let probe = w.table().map(|_| {
        probe::start(
            collector,
            query,
            &format!("{run}-{}", w.slug()),
            opts.probe_poll,
        )
    });
    let started = Instant::now();
    let (url, headers, per_request) = match w {
        Workload::RemoteWrite | Workload::RemoteWritePaced => (
            format!("{collector}/api/v1/write"),
            RW_HEADERS,
            (workloads::RW_SERIES * workloads::RW_SAMPLES) as u64,
        ),
        Workload::RemoteWritePeer => (
            format!(
                "{}/api/v1/write",
                opts.peer_prometheus
                    .as_deref()
                    .unwrap_or_default()
                    .trim_end_matches('/')
            ),
            RW_HEADERS,
            (workloads::RW_SERIES * workloads::RW_SAMPLES) as u64,
        ),
        Workload::Logs => (
            format!("{collector}/v1/logs"),
            OTLP_HEADERS,
            workloads::LOGS_PER_REQUEST as u64,
        ),
        Workload::Spans => (
            format!("{collector}/v1/traces"),
            OTLP_HEADERS,
            workloads::SPANS_PER_REQUEST as u64,
        ),
    };
    let r = run.to_string();
    let make = move |s: usize, i: usize| match w {
        Workload::RemoteWrite | Workload::RemoteWritePeer | Workload::RemoteWritePaced => {
            workloads::remote_write(&r, s, i, start_ms)
        }
        Workload::Logs => workloads::otlp_logs(&r, s, i),
        Workload::Spans => workloads::otlp_spans(&r, s, i),
    };
    // Paced: each sender posts a request every `concurrency * per_request / rate` seconds.
    let pace = (w == Workload::RemoteWritePaced).then(|| {
        Duration::from_secs_f64(
            opts.concurrency as f64 * per_request as f64 / opts.paced_rate.max(1) as f64,
        )
    });
    let m = drive::drive(
        url,
        headers,
        per_request,
        (opts.concurrency, pace),
        opts.seconds,
        make,
    )
    .await;
    if w != Workload::Logs && w != Workload::Spans {
        // No sender sent more requests than all of them together.
        let requests = (m.records / per_request) as i64 + 1;
        *timeline = start_ms + requests * (workloads::RW_SAMPLES as i64) * workloads::RW_STEP_MS;
    }

    // Until everything acknowledged is stored (the sinks drain after the senders stop):
    // polled with a count the engine answers from the sorting key, confirmed by the exact
    // count of this run's rows.
    let mut stored = None;
    if let Some(table) = w.table() {
        let want = stored_before + m.records;
        let deadline = Instant::now() + Duration::from_secs(900);
        let mut got = stored_before;
        while Instant::now() < deadline {
            let quick = rows_since(client, table, since_s).await.unwrap_or(None);
            if quick.is_none_or(|n| n >= m.records) {
                got = count(client, table, run).await.unwrap_or(got);
                if got >= want {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stored = Some((got - stored_before, started.elapsed()));
    }
    let seen = match probe {
        Some(p) => Some(p.finish().await),
        None => None,
    };
    // The engine's merges of the workload's parts go on after its last row is stored: they
    // are its cost, and would otherwise be the next workload's.
    if w.table().is_some() {
        settle(client).await;
    }
    let cpu = procs::spent(&cpu_before, &procs::cpu_seconds(&opts.pids));
    Ok(WorkloadFigures::new(
        w.name(),
        w.table(),
        &m,
        stored,
        seen,
        cpu,
    ))
}

/// Rows of `table` stamped at or after `since_s` (s since the epoch), counted from the
/// columns the table is sorted by: at least the workload's stored rows, at a fraction of the
/// cost of [`count`], whose map lookup reads every row's attributes (polled ten times a
/// second, it took a third of the engine's CPU under the logs workload, by the engine's
/// query log). `None` where [`count`] is cheap already.
async fn rows_since(
    client: &clickhouse::Client,
    table: &str,
    since_s: i64,
) -> anyhow::Result<Option<u64>> {
    let sql = match table {
        "otel_logs" => "SELECT count() FROM otel_logs WHERE TimestampTime >= toDateTime(?)",
        "otel_traces" => {
            "SELECT count() FROM otel_traces WHERE toDateTime(Timestamp) >= toDateTime(?)"
        }
        _ => return Ok(None),
    };
    let n = client.query(sql).bind(since_s).fetch_one::<u64>().await?;
    Ok(Some(n))
}

/// Waits (at most [`SETTLE_LIMIT`]) until the engine has no merge running on three polls
/// in a row, half a second apart.
async fn settle(client: &clickhouse::Client) {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut quiet = 0;
    while quiet < 3 && Instant::now() < deadline {
        let running = client
            .query("SELECT count() FROM system.merges")
            .fetch_one::<u64>()
            .await
            .unwrap_or(1);
        quiet = if running == 0 { quiet + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if quiet < 3 {
        eprintln!("the engine's merges did not settle within {SETTLE_LIMIT:?}; going on");
    }
}

/// How long a workload waits for the engine's merges of its parts to finish.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);

/// Rows of `table` this benchmark wrote so far (for metrics: every benchmark sample; the
/// benchmark's stack is fresh, so those are this invocation's).
async fn count(client: &clickhouse::Client, table: &str, run: &str) -> anyhow::Result<u64> {
    let q = match table {
        "metrics_samples" => client
            .query("SELECT count() FROM metrics_samples WHERE MetricName LIKE 'bench_metric_%'"),
        "otel_logs" => client
            .query("SELECT count() FROM otel_logs WHERE LogAttributes['run'] = ?")
            .bind(run),
        _ => client
            .query("SELECT count() FROM otel_traces WHERE SpanAttributes['run'] = ?")
            .bind(run),
    };
    q.fetch_one::<u64>()
        .await
        .with_context(|| format!("counting the benchmark's rows in {table}"))
}

/// Compressed bytes per row of `table`'s parts after `OPTIMIZE ... FINAL`.
async fn bytes_per_row(client: &clickhouse::Client, table: &str) -> anyhow::Result<f64> {
    client
        .query(&format!("OPTIMIZE TABLE {table} FINAL"))
        .execute()
        .await
        .with_context(|| format!("OPTIMIZE TABLE {table}"))?;
    let (bytes, rows): (u64, u64) = client
        .query("SELECT sum(data_compressed_bytes), sum(rows) FROM system.parts WHERE database = currentDatabase() AND table = ? AND active")
        .bind(table)
        .fetch_one()
        .await?;
    Ok(bytes as f64 / rows.max(1) as f64)
}

/// The engine's own rate for storing the benchmark's rows of `table`: one
/// `INSERT ... SELECT` of them into an empty table of the same definition, timed (it reads
/// them back as well, so the pure insert is faster still). (rows, seconds).
async fn engine_floor(
    client: &clickhouse::Client,
    table: &str,
    invocation: &str,
) -> anyhow::Result<(u64, f64)> {
    let scratch = "obs_bench_engine_floor";
    let filter = match table {
        "metrics_samples" => "MetricName LIKE 'bench_metric_%'",
        "otel_logs" => "startsWith(LogAttributes['run'], ?)",
        _ => "startsWith(SpanAttributes['run'], ?)",
    };
    let exec = |sql: String| async move {
        client
            .query(&sql)
            .execute()
            .await
            .with_context(|| format!("{sql} (the engine's floor of {table})"))
    };
    exec(format!("DROP TABLE IF EXISTS {scratch}")).await?;
    exec(format!("CREATE TABLE {scratch} AS {table}")).await?;
    let started = Instant::now();
    let mut copy = client.query(&format!(
        "INSERT INTO {scratch} SELECT * FROM {table} WHERE {filter}"
    ));
    if table != "metrics_samples" {
        copy = copy.bind(format!("{invocation}-"));
    }
    copy.execute()
        .await
        .with_context(|| format!("the engine's insert of {table}'s rows"))?;
    let secs = started.elapsed().as_secs_f64();
    let rows: u64 = client
        .query(&format!("SELECT count() FROM {scratch}"))
        .fetch_one()
        .await?;
    exec(format!("DROP TABLE {scratch}")).await?;
    Ok((rows, secs))
}

/// `data.result` of the instant query `promql` on the query API at `query` (a base URL).
async fn instant_query(
    client: &reqwest::Client,
    query: &str,
    promql: &str,
) -> Option<serde_json::Value> {
    let url = format!("{}/api/v1/query", query.trim_end_matches('/'));
    let mut answer: serde_json::Value = crate::query_api::authorized(client.get(url))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(answer["data"]["result"].take())
}

/// One line per workload after each run, so a long benchmark shows progress.
fn print_run(i: usize, run: &RunFigures) {
    for w in &run.workloads {
        eprintln!(
            "run {i}: {:<32} acknowledged {:>9.0}/s{}{}",
            w.name,
            w.acked_per_s,
            w.stored_per_s
                .map(|s| format!(", stored {s:>9.0}/s"))
                .unwrap_or_default(),
            w.queryable_p99_ms
                .map(|p| format!(", queryable p99 {p:.0} ms"))
                .unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keeps_the_named_workloads_and_names_an_unknown_one() {
        let set = || vec![Workload::RemoteWrite, Workload::Logs, Workload::Spans];
        let slugs = |ws: Vec<Workload>| ws.iter().map(|w| w.slug()).collect::<Vec<_>>();
        assert_eq!(slugs(only(set(), &[]).unwrap()), ["rw", "logs", "spans"]);
        let picked = only(set(), &["spans".into(), "rw".into()]).unwrap();
        assert_eq!(slugs(picked), ["rw", "spans"]);
        let e = only(set(), &["rw-peer".into()]).unwrap_err().to_string();
        assert!(
            e.contains("--only rw-peer") && e.contains("choose from rw, logs, spans"),
            "{e}"
        );
    }
}
