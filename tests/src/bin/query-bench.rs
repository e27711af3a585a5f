//! Query benchmark (not a test): the same PromQL range queries over the same demo data, asked
//! of the pipeline's query API and of a real Prometheus 2.42, with latency percentiles and
//! the ratio. `scripts/stack bench-query` runs it with a release build of `obs`
//! (`OBS_BIN`); everything it starts stops when it ends.
//!
//! usage: query-bench [HOURS_OF_DATA (default 6)] [RUNS_PER_QUERY (default 15)]

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

async fn timed(base: &str, q: &str, start: i64, end: i64, step: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let r = http(300)
        .get(format!("{base}/api/v1/query_range"))
        .query(&[
            ("query", q),
            ("start", &start.to_string()),
            ("end", &end.to_string()),
            ("step", step),
        ])
        .send()
        .await?;
    let status = r.status();
    let body = r.bytes().await?;
    anyhow::ensure!(
        status.is_success(),
        "{q}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(t.elapsed())
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
    // Ranges as a dashboard asks them: the last hour at 15 s, the whole data at 60 s.
    let ranges = [
        ("last 1h, step 15s", demo.end - 3600, demo.end, "15"),
        ("whole range, step 60s", demo.start + 600, demo.end, "60"),
    ];
    println!(
        "| query | range | obs p50 ms | obs p90 ms | Prometheus p50 ms | Prometheus p90 ms | p50 ratio obs/Prometheus |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for q in QUERIES {
        for (name, start, end, step) in ranges {
            // One warm-up each (caches, connection set-up), then alternate.
            timed(&ours, q, start, end, step).await?;
            timed(&theirs, q, start, end, step).await?;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                a.push(timed(&ours, q, start, end, step).await?);
                b.push(timed(&theirs, q, start, end, step).await?);
            }
            a.sort();
            b.sort();
            let ratio = ms(percentile(&a, 0.5)) / ms(percentile(&b, 0.5));
            ratios.push(ratio);
            println!(
                "| `{q}` | {name} | {:.1} | {:.1} | {:.1} | {:.1} | {ratio:.1} |",
                ms(percentile(&a, 0.5)),
                ms(percentile(&a, 0.9)),
                ms(percentile(&b, 0.5)),
                ms(percentile(&b, 0.9)),
            );
        }
    }
    ratios.sort_by(|x, y| x.total_cmp(y));
    let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    println!(
        "\n{} query/range pairs, {runs} runs each: geometric mean of p50 ratios obs/Prometheus = {geo:.1} (median {:.1}; 1.0 = as fast as Prometheus)",
        ratios.len(),
        ratios[ratios.len() / 2]
    );
    Ok(())
}
