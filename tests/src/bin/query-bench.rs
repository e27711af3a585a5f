//! Query benchmark (not a test): the same PromQL range queries over the same demo data, asked
//! of the pipeline's query API and of a real Prometheus 2.42, with latency percentiles and
//! the ratio; then long-range queries of range functions from raw samples and from the
//! rollup processor's windows (`max_source_resolution`); LogQL metric queries beside one SQL
//! statement computing the same counts; and each PromQL query asked again through the
//! results cache, as a dashboard refresh asks it. `scripts/stack bench-query` runs it with a release build of `obs`
//! (`OBS_BIN`); everything it starts stops when it ends.
//!
//! usage: query-bench [HOURS_OF_DATA (default 6)] [RUNS_PER_QUERY (default 15)]
//!
//! With `OBS_QUERY_BENCH_HOLD=1` it loads the data, prints the query API's, Prometheus's and
//! the engine endpoint's addresses and keeps everything running until interrupted, for
//! trying queries and statement shapes by hand.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use obs_e2e::promql_demo::Demo;
use obs_e2e::{Stack, http};

/// The queries: selectors, rates, aggregations, a histogram quantile, topk, a subquery and
/// a ratio of two aggregations.
const QUERIES: &[&str] = &[
    "demo_cpu_usage_ratio",
    "rate(demo_requests_total[5m])",
    "sum by (status) (rate(demo_requests_total[5m]))",
    "histogram_quantile(0.9, sum by (le) (rate(demo_request_duration_seconds_bucket[5m])))",
    "topk(3, demo_cpu_usage_ratio)",
    "avg_over_time(demo_cpu_usage_ratio[5m])",
    "max_over_time(rate(demo_requests_total[1m])[10m:1m])",
    "sum by (instance) (rate(demo_requests_total{status=~\"5..\"}[5m])) / sum by (instance) (rate(demo_requests_total[5m]))",
];

/// Range functions over long ranges, which rollups can answer.
const LONG_RANGE: &[&str] = &[
    "sum by (status) (rate(demo_requests_total[1h]))",
    "increase(demo_requests_total[1h])",
    "avg_over_time(demo_cpu_usage_ratio[1h])",
    "max_over_time(demo_cpu_usage_ratio[1h])",
];

async fn timed(base: &str, q: &str, start: i64, end: i64, step: &str) -> anyhow::Result<Duration> {
    timed_from(base, q, (start, end, step), "raw", Cache::Skip).await
}

/// A `query_range` request reading `resolution` (`max_source_resolution`; Prometheus
/// ignores it).
fn range_query(
    base: &str,
    q: &str,
    grid: (i64, i64, &str),
    resolution: &str,
) -> reqwest::RequestBuilder {
    range_request(base, "query_range", q, grid, resolution)
}

/// How a request meets obs's results cache: skipped (`Cache-Control: no-cache`, each
/// answer evaluated whole) or used (a dashboard asking the same query again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    Skip,
    Use,
}

/// A GET of `/api/v1/<api>` with a range query's parameters (`query_range`, `explain`).
fn range_request(
    base: &str,
    api: &str,
    q: &str,
    (start, end, step): (i64, i64, &str),
    resolution: &str,
) -> reqwest::RequestBuilder {
    http(300).get(format!("{base}/api/v1/{api}")).query(&[
        ("query", q),
        ("start", &start.to_string()),
        ("end", &end.to_string()),
        ("step", step),
        ("max_source_resolution", resolution),
    ])
}

/// One range query's latency, reading `resolution` (`max_source_resolution`; Prometheus
/// ignores it).
async fn timed_from(
    base: &str,
    q: &str,
    grid: (i64, i64, &str),
    resolution: &str,
    cache: Cache,
) -> anyhow::Result<Duration> {
    let mut req = range_query(base, q, grid, resolution);
    if cache == Cache::Skip {
        req = req.header("Cache-Control", "no-cache");
    }
    let t = Instant::now();
    let r = req.send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    anyhow::ensure!(
        status.is_success(),
        "{q}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(t.elapsed())
}

/// The SQL statements obs runs for a range query from raw samples, from the query API's
/// explain endpoint.
async fn explain(base: &str, q: &str, grid: (i64, i64, &str)) -> anyhow::Result<Vec<String>> {
    let v: serde_json::Value = range_request(base, "explain", q, grid, "raw")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let sql = v["data"]["sql"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{q}: explain gave no SQL: {v}"))?;
    // A statement explain opens with a comment runs only sometimes: the lookup of series'
    // labels, for series the query API has not kept (`store::LABELS_LOOKUP_NOTE`). Every
    // query here is asked before it is timed, so it never runs in the timed answers.
    Ok(sql
        .iter()
        .filter_map(|s| s.as_str().map(String::from))
        .filter(|s| !s.starts_with("/*"))
        .collect())
}

/// The statements run one after another through the ClickHouse endpoint: the engine's own
/// time (the sum of each answer's `elapsed_ns`) and the sum of the round trips.
async fn statements_time(
    client: &reqwest::Client,
    engine: &str,
    statements: &[String],
) -> anyhow::Result<(Duration, Duration)> {
    let (mut in_engine, mut round_trips) = (Duration::ZERO, Duration::ZERO);
    for sql in statements {
        let t = Instant::now();
        let r = client
            .post(format!("{engine}/?database=obs&default_format=RowBinary"))
            .body(sql.clone())
            .send()
            .await?;
        let summary = r
            .headers()
            .get("x-clickhouse-summary")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let status = r.status();
        let body = r.bytes().await?;
        round_trips += t.elapsed();
        anyhow::ensure!(
            status.is_success(),
            "{sql}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let summary: serde_json::Value = serde_json::from_str(&summary.unwrap_or_default())?;
        let ns: u64 = summary["elapsed_ns"].as_str().unwrap_or("0").parse()?;
        in_engine += Duration::from_nanos(ns);
    }
    Ok((in_engine, round_trips))
}

/// A range query's answer: each series' values by labels (for comparing sources).
async fn values(
    base: &str,
    q: &str,
    (start, end, step): (i64, i64, &str),
    resolution: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<(i64, f64)>>> {
    let v: serde_json::Value = range_query(base, q, (start, end, step), resolution)
        .send()
        .await?
        .json()
        .await?;
    Ok(matrix(&v, |m| m.to_string(), |t| t.as_i64()))
}

/// Per series of a matrix answer (named by `name` from its `metric`), its `(time, value)`
/// points, each time read by `time`.
fn matrix(
    v: &serde_json::Value,
    name: impl Fn(&serde_json::Value) -> String,
    time: impl Fn(&serde_json::Value) -> Option<i64>,
) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
    let mut out = std::collections::BTreeMap::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let points = s["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((time(&p[0])?, p[1].as_str()?.parse().ok()?)))
            .collect();
        out.insert(name(&s["metric"]), points);
    }
    out
}

/// The largest relative difference between two answers (infinite when their series or
/// steps differ).
async fn max_difference(base: &str, q: &str, grid: (i64, i64, &str)) -> anyhow::Result<f64> {
    let (raw, rolled) = (
        values(base, q, grid, "raw").await?,
        values(base, q, grid, "auto").await?,
    );
    let mut worst = 0.0f64;
    if raw.len() != rolled.len() || raw.is_empty() {
        return Ok(f64::INFINITY);
    }
    for (labels, a) in &raw {
        let Some(b) = rolled.get(labels).filter(|b| b.len() == a.len()) else {
            return Ok(f64::INFINITY);
        };
        for (&(t, x), &(u, y)) in a.iter().zip(b) {
            if t != u {
                return Ok(f64::INFINITY);
            }
            worst = worst.max((x - y).abs() / x.abs().max(1e-300));
        }
    }
    Ok(worst)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let hours: i64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(6);
    let runs: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(15);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let end = now - now % 60;
    eprintln!("starting the stack (tansu, ClickHouse over chDB, obs)");
    let stack = Stack::start().await?;
    let demo = Demo::generate(stack.dir(), end - hours * 3600, end)?;
    eprintln!(
        "demo data: {} series, {} samples over {hours} h; loading into Prometheus (promtool) and the pipeline (remote write)",
        demo.series.len(),
        demo.sample_count()
    );
    let prom = demo.start_prometheus(stack.dir()).await?;
    demo.load_into(&stack).await?;
    let ours = stack.query_url();
    let theirs = prom.url();
    if std::env::var_os("OBS_QUERY_BENCH_HOLD").is_some() {
        println!(
            "holding (interrupt to stop): query API {ours}, Prometheus {theirs}, engine endpoint {}, data {}..{} s",
            stack.clickhouse.url(),
            demo.start,
            demo.end
        );
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    // Ranges as a dashboard asks them: the last hour at 15 s, the whole data at 60 s.
    let ranges = [
        ("last 1h, step 15s", demo.end - 3600, demo.end, "15"),
        ("whole range, step 60s", demo.start + 600, demo.end, "60"),
    ];
    println!(
        "| query | range | obs p50 ms | obs p90 ms | its SQL: engine p50 ms | its SQL: endpoint p50 ms | Prometheus p50 ms | Prometheus p90 ms | p50 ratio obs/Prometheus | engine/Prometheus | obs asked again (results cache) p50 ms | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let (mut ratios, mut floors, mut cached_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let engine = stack.clickhouse.url();
    // One client, its connection kept alive between statements, as obs's ClickHouse client.
    let to_engine = http(300);
    for q in QUERIES {
        for (name, start, end, step) in ranges {
            let grid = (start, end, step);
            let statements = explain(&ours, q, grid).await?;
            // One warm-up each (connection set-up; it also fills the results cache), then
            // alternate.
            timed(&ours, q, start, end, step).await?;
            timed_from(&ours, q, grid, "raw", Cache::Use).await?;
            timed(&theirs, q, start, end, step).await?;
            statements_time(&to_engine, &engine, &statements).await?;
            let (mut a, mut b, mut e, mut h, mut c) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                a.push(timed(&ours, q, start, end, step).await?);
                c.push(timed_from(&ours, q, grid, "raw", Cache::Use).await?);
                b.push(timed(&theirs, q, start, end, step).await?);
                let (in_engine, round_trips) =
                    statements_time(&to_engine, &engine, &statements).await?;
                e.push(in_engine);
                h.push(round_trips);
            }
            for v in [&mut a, &mut b, &mut e, &mut h, &mut c] {
                v.sort();
            }
            let p50 = |v: &[Duration]| ms(percentile(v, 0.5));
            let ratio = p50(&a) / p50(&b);
            let floor = p50(&e) / p50(&b);
            let cached = p50(&c) / p50(&b);
            ratios.push(ratio);
            floors.push(floor);
            cached_ratios.push(cached);
            println!(
                "| `{q}` | {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {ratio:.1} | {floor:.1} | {:.1} | {cached:.2} |",
                p50(&a),
                ms(percentile(&a, 0.9)),
                p50(&e),
                p50(&h),
                p50(&b),
                ms(percentile(&b, 0.9)),
                p50(&c),
            );
        }
    }
    // The engine's time for a small read grows with the parts it opens, which differ from
    // run to run (merges after loading; data across midnight is two partitions).
    let parts: Vec<(String, u64)> = stack
        .db()
        .query(
            "SELECT table, count() FROM system.parts WHERE active AND database = 'obs' \
             AND table IN ('metrics_samples', 'metrics_series') GROUP BY table ORDER BY table",
        )
        .fetch_all()
        .await?;
    println!(
        "\nActive parts after the PromQL queries: {}.",
        parts
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let geo = |v: &[f64]| (v.iter().map(|r| r.ln()).sum::<f64>() / v.len() as f64).exp();
    let (geo_ratio, geo_floor, geo_cached) = (geo(&ratios), geo(&floors), geo(&cached_ratios));
    ratios.sort_by(|x, y| x.total_cmp(y));
    println!(
        "\n{} query/range pairs, {runs} runs each: geometric mean of p50 ratios obs/Prometheus = {geo_ratio:.1} (median {:.1}; 1.0 = as fast as Prometheus), each answer evaluated whole (Cache-Control: no-cache)",
        ratios.len(),
        ratios[ratios.len() / 2]
    );
    println!(
        "The engine's own time for the same SQL (chDB's elapsed time of each statement obs runs for the query, one after another) is {geo_floor:.1}x Prometheus's whole query (geometric mean): the floor of obs on this engine. \
         The endpoint column adds the HTTP endpoint in front of the engine (the round trips)."
    );
    println!(
        "Asked again as a dashboard refresh does, through the results cache (steps older than its 10-minute freshness window from the cache, the newer ones evaluated): {geo_cached:.2}x Prometheus (geometric mean)."
    );
    logql(&stack, demo.end, hours, runs).await?;
    if hours >= 3 {
        long_range(&stack, &demo, &ours, &theirs, runs).await
    } else {
        println!("\nLong ranges: skipped (they need at least 3 hours of data; {hours} asked)");
        Ok(())
    }
}

/// LogQL metric queries over the shared log corpus (query, the stream label it sums by, the
/// floor's condition for its selector and filters) and, as the engine's floor, one SQL
/// statement computing the same counts (what ClickHouse alone takes to count the windows).
const LOGQL: &[(&str, &str, &str)] = &[
    (
        "sum by (level) (count_over_time({env=\"prod\"}[5m]))",
        "level",
        "ResourceAttributes['env'] = 'prod'",
    ),
    (
        "sum by (service) (count_over_time({env=\"prod\"} |= \"error\" [5m]))",
        "service",
        "ResourceAttributes['env'] = 'prod' AND position(Body, 'error') > 0",
    ),
];

/// The floor statement of a LogQL `sum by (<label>) (count_over_time(<selector>[range]))`
/// at steps `start + k * step` (ns): every line counted at each step whose window
/// `(t - range, t]` holds it (`range` a multiple of `step`), per label value and step.
fn logql_floor_sql(
    label: &str,
    filter: &str,
    tenant: &str,
    grid_ns: (i64, i64, i64),
    range_ns: i64,
) -> String {
    let (start, end, step) = grid_ns;
    let n = (end - start) / step + 1;
    let per = range_ns / step;
    // With a = ts - start + range > 0: the steps holding the line are
    // ceil(a / step) - range / step .. ceil(a / step) - 1.
    format!(
        "SELECT ResourceAttributes['{label}'] AS value, k, count() AS c FROM otel_logs \
         ARRAY JOIN range(toInt64(greatest(0, intDiv(toUnixTimestamp64Nano(Timestamp) - {start} + {range_ns} + {step} - 1, {step}) - {per})), \
                          toInt64(least({n}, intDiv(toUnixTimestamp64Nano(Timestamp) - {start} + {range_ns} + {step} - 1, {step})))) AS k \
         WHERE Tenant = '{tenant}' AND TimestampTime >= toDateTime({lo}) AND TimestampTime <= toDateTime({hi}) \
         AND Timestamp > fromUnixTimestamp64Nano(toInt64({after})) AND Timestamp <= fromUnixTimestamp64Nano(toInt64({end})) AND {filter} \
         GROUP BY value, k ORDER BY value, k FORMAT TSV",
        lo = (start - range_ns).div_euclid(1_000_000_000),
        hi = end.div_euclid(1_000_000_000),
        after = start - range_ns,
    )
}

/// Per label value, `(step ns, count)` from the floor statement's TSV.
fn floor_counts(
    tsv: &str,
    grid_ns: (i64, i64, i64),
) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
    for line in tsv.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let [value, k, c] = f[..] {
            let t = grid_ns.0 + k.parse::<i64>().unwrap_or(0) * grid_ns.2;
            out.entry(value.to_string())
                .or_default()
                .push((t, c.parse().unwrap_or(f64::NAN)));
        }
    }
    out
}

/// Per label value of `label`, `(step ns, value)` of a Loki matrix answer.
fn loki_counts(
    v: &serde_json::Value,
    label: &str,
) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
    matrix(
        v,
        |m| m[label].as_str().unwrap_or("").to_string(),
        |t| Some((t.as_f64()? * 1e3).round() as i64 * 1_000_000),
    )
}

/// LogQL metric queries on obs beside the engine's floor: the shared log corpus (one line
/// every 25 ms over the data's hours) pushed through the Loki endpoint, then each query over
/// the last hour at 60 s steps and over the whole data at 300 s steps, its answer checked
/// equal to the floor statement's counts.
async fn logql(stack: &Stack, end_s: i64, hours: i64, runs: usize) -> anyhow::Result<()> {
    const TENANT: &str = "logbench";
    let start_s = end_s - hours * 3600;
    let corpus = |format: &str| -> anyhow::Result<String> {
        let out = std::process::Command::new("python3")
            .arg(obs_e2e::repo_root().join("../shared/logql/gen_corpus.py"))
            .args(["--start", &start_s.to_string(), "--end", &end_s.to_string()])
            .args(["--every-ms", "25", "--format", format])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "gen_corpus.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let lines = corpus("jsonl")?.lines().count() as u64;
    eprintln!("pushing {lines} log lines (the shared LogQL corpus) through the Loki endpoint");
    let client = http(60);
    for body in corpus("loki")?.lines() {
        let r = client
            .post(format!("{}/loki/api/v1/push", stack.collector_url()))
            .header("Content-Type", "application/json")
            .header("X-Scope-OrgID", TENANT)
            .body(body.to_string())
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "Loki push: {}", r.text().await?);
    }
    stack
        .wait_log_count(
            &format!("Tenant = '{TENANT}'"),
            lines,
            Duration::from_secs(600),
        )
        .await?;
    println!(
        "\nLogQL metric queries ({lines} log lines over {hours} h), beside one SQL statement computing the same counts (the engine's floor)"
    );
    println!(
        "| query | range | obs p50 ms | obs p90 ms | floor SQL: engine p50 ms | ratio obs/floor | answer equal to the floor's |"
    );
    println!("|---|---|---|---|---|---|---|");
    let end_ns = end_s * 1_000_000_000;
    let ranges = [
        ("last 1h, step 60s", end_ns - 3600 * 1_000_000_000, 60),
        (
            "whole range, step 300s",
            (start_s + 600) * 1_000_000_000,
            300,
        ),
    ];
    let engine = stack.clickhouse.url();
    let mut ratios = Vec::new();
    for &(q, label, filter) in LOGQL {
        for (name, start_ns, step_s) in ranges {
            let grid_ns = (start_ns, end_ns, step_s * 1_000_000_000);
            let request = || {
                client
                    .get(format!("{}/loki/api/v1/query_range", stack.query_url()))
                    .header("X-Scope-OrgID", TENANT)
                    .query(&[
                        ("query", q.to_string()),
                        ("start", start_ns.to_string()),
                        ("end", end_ns.to_string()),
                        ("step", step_s.to_string()),
                    ])
            };
            let floor_sql = logql_floor_sql(label, filter, TENANT, grid_ns, 300 * 1_000_000_000);
            let floor = || async {
                let r = client
                    .post(format!("{engine}/?database=obs"))
                    .body(floor_sql.clone())
                    .send()
                    .await?;
                let summary: serde_json::Value = serde_json::from_str(
                    r.headers()
                        .get("x-clickhouse-summary")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("{}"),
                )?;
                let ns: u64 = summary["elapsed_ns"].as_str().unwrap_or("0").parse()?;
                let status = r.status();
                let text = r.text().await?;
                anyhow::ensure!(status.is_success(), "floor SQL: {status} {text}");
                Ok::<_, anyhow::Error>((Duration::from_nanos(ns), text))
            };
            let answer: serde_json::Value = request().send().await?.json().await?;
            let (_, tsv) = floor().await?;
            let equal = loki_counts(&answer, label) == floor_counts(&tsv, grid_ns);
            let (mut a, mut f) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let t = Instant::now();
                let r = request().send().await?;
                anyhow::ensure!(r.status().is_success(), "{q}: {}", r.text().await?);
                r.bytes().await?;
                a.push(t.elapsed());
                f.push(floor().await?.0);
            }
            a.sort();
            f.sort();
            let p50 = |v: &[Duration]| ms(percentile(v, 0.5));
            let ratio = p50(&a) / p50(&f);
            ratios.push(ratio);
            println!(
                "| `{q}` | {name} | {:.1} | {:.1} | {:.1} | {ratio:.1} | {} |",
                p50(&a),
                ms(percentile(&a, 0.9)),
                p50(&f),
                if equal { "yes" } else { "NO" }
            );
        }
    }
    let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    println!(
        "\nLogQL: obs takes {geo:.1}x the floor statement's engine time (geometric mean of p50s)"
    );
    Ok(())
}

/// Long-range queries from raw samples and from rollups, beside Prometheus: hour-aligned
/// steps of 1h (1h rollups) and 5m (1m rollups) over the whole data.
async fn long_range(
    stack: &Stack,
    demo: &Demo,
    ours: &str,
    theirs: &str,
    runs: usize,
) -> anyhow::Result<()> {
    let start = (demo.start + 3600).div_euclid(3600) * 3600 + 3600;
    let end = demo.end.div_euclid(300) * 300;
    eprintln!("waiting for the rollup processor's minute windows up to the end of the data");
    let db = stack.db();
    obs_e2e::wait_for(
        "1m rollups up to the end of the demo data",
        Duration::from_secs(300),
        || {
            let q = db.query(&format!(
                "SELECT count() FROM metrics_rollups WHERE ResolutionMs = 60000 AND WindowStartMs >= {}",
                (end - 120) * 1000
            ));
            async move { (q.fetch_one::<u64>().await.ok()? > 0).then_some(()) }
        },
    )
    .await?;
    let rows: u64 = db
        .query("SELECT count() FROM metrics_rollups")
        .fetch_one()
        .await?;
    println!(
        "\nLong ranges ({} h, {rows} rollup rows): the same range functions from raw samples and from rollups",
        (end - start) / 3600
    );
    println!(
        "| query | step | raw p50 ms | rollups p50 ms | rollups p90 ms | Prometheus p50 ms | p50 ratio rollups/Prometheus | max rel. diff rollups/raw |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for q in LONG_RANGE {
        for step in ["3600", "300"] {
            timed_from(ours, q, (start, end, step), "raw", Cache::Skip).await?;
            timed_from(ours, q, (start, end, step), "auto", Cache::Skip).await?;
            timed(theirs, q, start, end, step).await?;
            let (mut raw, mut rolled, mut prom) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                raw.push(timed_from(ours, q, (start, end, step), "raw", Cache::Skip).await?);
                rolled.push(timed_from(ours, q, (start, end, step), "auto", Cache::Skip).await?);
                prom.push(timed(theirs, q, start, end, step).await?);
            }
            for v in [&mut raw, &mut rolled, &mut prom] {
                v.sort();
            }
            let diff = max_difference(ours, q, (start, end, step)).await?;
            println!(
                "| `{q}` | {step} s | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {diff:.1e} |",
                ms(percentile(&raw, 0.5)),
                ms(percentile(&rolled, 0.5)),
                ms(percentile(&rolled, 0.9)),
                ms(percentile(&prom, 0.5)),
                ms(percentile(&rolled, 0.5)) / ms(percentile(&prom, 0.5)),
            );
        }
    }
    Ok(())
}
