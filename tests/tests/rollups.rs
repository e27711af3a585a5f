//! The rollup processor against the real broker and ClickHouse: three hours of samples of
//! four series (counters with resets and a gap, a gauge, fractions) sent by remote write;
//! every row of `metrics_rollups` (1m and 1h windows) equals the count, sum, min, max,
//! first, last and counter increase the test computes from the raw samples ClickHouse
//! stored, with no window missing or extra. Then the same with the processor SIGKILLed
//! while the samples arrive, its checkpoints written in parts. And PromQL range functions answered from the rollups
//! (`max_source_resolution`) equal the answers from the raw samples. (Late samples are unit-tested: the collector already refuses
//! a sample older than its series' newest.)
//!
//! Values are integers or eighths, exact in binary, so sums compare exactly whatever the
//! order of addition (an hour's sum is the sum of its minutes' sums).

use std::collections::BTreeMap;
use std::time::Duration;

use obs_e2e::remote_write::{self, Series};
use obs_e2e::{Stack, wait_for};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const STEP: i64 = 15_000;
const SAMPLES: i64 = 720;
const NAMES: &str = "'roll_requests_total', 'roll_temperature', 'roll_ratio'";

/// A series to send: name, its one label, samples.
type Sent = (&'static str, (&'static str, &'static str), Vec<(i64, f64)>);

/// The four series' samples from `t0`, every 15 s for three hours.
fn series(t0: i64) -> Vec<Sent> {
    let at = |i: i64| t0 + i * STEP;
    let mut a = Vec::new();
    let mut v = 0.0;
    for i in 0..SAMPLES {
        v = if i == 300 || i == 500 {
            0.0
        } else {
            v + (i % 5) as f64
        };
        a.push((at(i), v));
    }
    // A ten-minute gap: the increase across it is in no minute (the query API adds it from
    // the minutes' last and first), but in the hour around it.
    let b = (0..SAMPLES)
        .filter(|i| !(100..140).contains(i))
        .map(|i| (at(i), 3.0 * i as f64))
        .collect();
    let g = (0..SAMPLES)
        .map(|i| (at(i), ((i * 37) % 101 - 50) as f64))
        .collect();
    let r = (0..SAMPLES)
        .map(|i| (at(i), (i % 8) as f64 * 0.125))
        .collect();
    vec![
        ("roll_requests_total", ("path", "/a"), a),
        ("roll_requests_total", ("path", "/b"), b),
        ("roll_temperature", ("room", "x"), g),
        ("roll_ratio", ("kind", "y"), r),
    ]
}

/// Remote-write bodies of the samples in `[from, to)`.
fn body(t0: i64, from: i64, to: i64) -> Vec<u8> {
    let all = series(t0);
    let list: Vec<Series<'_>> = all
        .iter()
        .map(|(name, (k, v), samples)| Series {
            name,
            labels: vec![(k, v.to_string())],
            samples: samples
                .iter()
                .copied()
                .filter(|&(t, _)| t >= from && t < to)
                .collect(),
        })
        .filter(|s| !s.samples.is_empty())
        .collect();
    remote_write::body(&list)
}

/// One window: count, sum, min, max, first, first ms, last, last ms, increase.
type Window = (i64, f64, f64, f64, f64, i64, f64, i64, f64);

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RollupRow {
    fingerprint: i64,
    resolution_ms: i64,
    window_start_ms: i64,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    first: f64,
    first_timestamp_ms: i64,
    last: f64,
    last_timestamp_ms: i64,
    increase: f64,
}

/// The windows the test works out from the stored raw samples, by (fingerprint,
/// resolution, start).
async fn expected(stack: &Stack, t0: i64) -> BTreeMap<(i64, i64, i64), Window> {
    let sql = format!(
        "SELECT Fingerprint, TimestampMs, Value FROM metrics_samples \
         WHERE MetricName IN ({NAMES}) AND (TimestampMs - {t0}) % {STEP} = 0 \
         ORDER BY Fingerprint, TimestampMs"
    );
    let rows: Vec<(i64, i64, f64)> = stack.db().query(&sql).fetch_all().await.expect("raw");
    let mut out = BTreeMap::new();
    let mut prev: Option<(i64, i64, f64)> = None;
    for (fp, t, v) in rows {
        let p = prev.filter(|&(f, _, _)| f == fp);
        prev = Some((fp, t, v));
        for res in [MINUTE, HOUR] {
            let start = t.div_euclid(res) * res;
            // Only pairs inside one window count in its increase.
            let inc = p
                .filter(|&(_, pt, _)| pt >= start)
                .map_or(0.0, |(_, _, p)| if v >= p { v - p } else { v });
            let w = out.entry((fp, res, start)).or_insert((
                0,
                0.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                v,
                t,
                v,
                t,
                0.0,
            ));
            w.0 += 1;
            w.1 += v;
            w.2 = w.2.min(v);
            w.3 = w.3.max(v);
            (w.6, w.7) = (v, t);
            w.8 += inc;
        }
    }
    out
}

/// The stored rollups of the test's series.
async fn stored(stack: &Stack) -> BTreeMap<(i64, i64, i64), Window> {
    let sql = format!(
        "SELECT Fingerprint, ResolutionMs, WindowStartMs, Count, Sum, Min, Max, First, \
         FirstTimestampMs, Last, LastTimestampMs, Increase FROM metrics_rollups FINAL \
         WHERE MetricName IN ({NAMES})"
    );
    let rows: Vec<RollupRow> = stack.db().query(&sql).fetch_all().await.unwrap_or_default();
    rows.into_iter()
        .map(|r| {
            (
                (r.fingerprint, r.resolution_ms, r.window_start_ms),
                (
                    r.count,
                    r.sum,
                    r.min,
                    r.max,
                    r.first,
                    r.first_timestamp_ms,
                    r.last,
                    r.last_timestamp_ms,
                    r.increase,
                ),
            )
        })
        .collect()
}

/// Three whole hours ending at an hour boundary at least two minutes back (so its last hour
/// window is written once the partitions are idle), starting 7 s after a minute boundary.
fn start_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let end = (now - 2 * MINUTE).div_euclid(HOUR) * HOUR;
    end - 3 * HOUR + 7_000
}

/// Waits until every window of the raw samples is stored and compares them all.
async fn check(stack: &Stack, t0: i64) {
    let raw = format!(
        "SELECT count() FROM metrics_samples WHERE MetricName IN ({NAMES}) \
         AND (TimestampMs - {t0}) % {STEP} = 0"
    );
    let sent = 4 * SAMPLES as u64 - 40;
    wait_for("every raw sample stored", Duration::from_secs(60), || {
        let q = stack.db().query(&raw);
        async move { (q.fetch_one::<u64>().await.ok()? == sent).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.processor_log()));
    let want = expected(stack, t0).await;
    // 3 hours of minutes (the gap's 10 minutes of /b missing) and 3 hours, per series.
    assert_eq!(want.len(), 4 * 180 - 10 + 4 * 3);
    let got = match wait_for("every window stored", Duration::from_secs(90), || async {
        let got = stored(stack).await;
        (got.len() >= want.len()).then_some(got)
    })
    .await
    {
        Ok(got) => got,
        Err(e) => {
            let got = stored(stack).await;
            let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(k)).collect();
            let mut metrics = String::new();
            for m in [
                "obs_rollups_samples_total",
                "obs_rollups_late_samples_total",
                "obs_rollups_windows_total",
            ] {
                metrics += &format!("{m} = {:?}\n", stack.processor_metric(m).await);
            }
            panic!(
                "{e:#}: {} of {} windows stored, missing {} (first {:?}, last {:?})\n{metrics}{}",
                got.len(),
                want.len(),
                missing.len(),
                missing.first(),
                missing.last(),
                stack.processor_log()
            )
        }
    };
    for (k, w) in &want {
        assert_eq!(
            got.get(k),
            Some(w),
            "window (fingerprint, resolution, start) {k:?}"
        );
    }
    assert_eq!(got.len(), want.len(), "no window besides the samples' ones");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollups_equal_the_aggregates_of_the_raw_samples() {
    let stack = Stack::start_with_separate_processor(&[("OBS_ROLLUPS__IDLE_PARTITION_MS", "1000")])
        .await
        .expect("stack started");
    let url = format!("{}/api/v1/write", stack.collector_url());
    let t0 = start_ms();
    for k in 0..36 {
        let (from, to) = (t0 + k * 5 * MINUTE, t0 + (k + 1) * 5 * MINUTE);
        let (status, text) = remote_write::post(&url, body(t0, from, to)).await;
        assert_eq!(status, 204, "{text}");
    }
    check(&stack, t0).await;
    assert_eq!(
        stack
            .processor_metric("obs_rollups_late_samples_total")
            .await,
        Some(0.0),
        "no sample late"
    );
    queries_from_rollups_equal_raw(&stack, t0).await;
}

/// `GET /api/v1/<api>` (query_range or explain) of a range query with
/// `max_source_resolution`.
async fn ask(
    stack: &Stack,
    api: &str,
    query: &str,
    (start, end, step): (i64, i64, i64),
    resolution: &str,
) -> serde_json::Value {
    let v: serde_json::Value = obs_e2e::http(30)
        .get(format!("{}/api/v1/{api}", stack.query_url()))
        .query(&[
            ("query", query),
            ("start", &(start / 1000).to_string()),
            ("end", &(end / 1000).to_string()),
            ("step", &(step / 1000).to_string()),
            ("max_source_resolution", resolution),
        ])
        .send()
        .await
        .expect("query API answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(v["status"], "success", "{api} {query}: {v}");
    v
}

/// A range query's matrix from the query API: labels → (seconds, value) per step.
async fn query_range(
    stack: &Stack,
    query: &str,
    grid: (i64, i64, i64),
    resolution: &str,
) -> BTreeMap<String, Vec<(i64, f64)>> {
    let v = ask(stack, "query_range", query, grid, resolution).await;
    v["data"]["result"]
        .as_array()
        .expect("a matrix")
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|p| {
                    (
                        p[0].as_i64().expect("time"),
                        p[1].as_str().expect("value").parse().expect("a number"),
                    )
                })
                .collect();
            (s["metric"].to_string(), points)
        })
        .collect()
}

/// The SQL `explain` shows for a range query with `max_source_resolution`.
async fn explained(stack: &Stack, query: &str, grid: (i64, i64, i64), resolution: &str) -> String {
    ask(stack, "explain", query, grid, resolution).await["data"]["sql"].to_string()
}

/// Long-range queries answered from rollups equal the answers from raw samples, within
/// 1e-9 relative (the order of float additions differs), and `explain` names the table.
async fn queries_from_rollups_equal_raw(stack: &Stack, t0: i64) {
    let h0 = t0 - 7_000;
    let hours = (h0 + HOUR, h0 + 3 * HOUR, HOUR);
    let tens = (h0 + 30 * MINUTE, h0 + 3 * HOUR, 10 * MINUTE);
    let cases = [
        ("rate(roll_requests_total[1h])", hours, "1h", 2),
        (
            "increase(roll_requests_total[2h])",
            (h0 + 2 * HOUR, h0 + 3 * HOUR, HOUR),
            "1h",
            2,
        ),
        (
            "sum by (path) (increase(roll_requests_total[30m]))",
            tens,
            "1m",
            2,
        ),
        ("delta(roll_temperature[1h])", hours, "1h", 1),
        ("avg_over_time(roll_temperature[1h])", hours, "1h", 1),
        ("min_over_time(roll_temperature[20m])", tens, "1m", 1),
        ("max_over_time(roll_temperature[1h])", hours, "1h", 1),
        ("sum_over_time(roll_ratio[1h])", hours, "1h", 1),
        (
            r#"count_over_time({__name__=~"roll_.*"}[1h])"#,
            hours,
            "1h",
            4,
        ),
        ("last_over_time(roll_ratio[10m])", tens, "1m", 1),
    ];
    for (query, grid, table_res, n) in cases {
        let raw = query_range(stack, query, grid, "raw").await;
        assert_eq!(raw.len(), n, "{query}: {raw:?}");
        for resolution in ["auto", table_res] {
            let plan = explained(stack, query, grid, resolution).await;
            let res_ms = if table_res == "1h" { HOUR } else { MINUTE };
            assert!(
                plan.contains("FROM metrics_rollups")
                    && plan.contains(&format!("ResolutionMs = {res_ms}")),
                "{query} ({resolution}) reads {table_res} rollups: {plan}"
            );
            let rolled = query_range(stack, query, grid, resolution).await;
            assert_close(&raw, &rolled, &format!("{query} ({resolution})"));
        }
        assert!(
            !explained(stack, query, grid, "raw")
                .await
                .contains("metrics_rollups")
        );
    }
    // Windows the processor has not written yet come from the raw samples: without the last
    // hour's rollups of the gauge, the answers are still the raw ones.
    stack
        .db()
        .query(&format!(
            "ALTER TABLE metrics_rollups DELETE WHERE MetricName = 'roll_temperature' \
             AND WindowStartMs >= {} SETTINGS mutations_sync = 2",
            h0 + 2 * HOUR
        ))
        .execute()
        .await
        .expect("rollups deleted");
    for query in [
        "count_over_time(roll_temperature[1h])",
        "sum_over_time(roll_temperature[30m])",
        "avg_over_time(roll_temperature[30m])",
    ] {
        let raw = query_range(stack, query, tens, "raw").await;
        let rolled = query_range(stack, query, tens, "auto").await;
        assert_close(&raw, &rolled, query);
    }
}

/// Same series and steps, values within 1e-9 relative.
fn assert_close(
    raw: &BTreeMap<String, Vec<(i64, f64)>>,
    rolled: &BTreeMap<String, Vec<(i64, f64)>>,
    what: &str,
) {
    assert_eq!(
        rolled.keys().collect::<Vec<_>>(),
        raw.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (labels, want) in raw {
        let got = &rolled[labels];
        assert_eq!(got.len(), want.len(), "{what} {labels}");
        for (&(t, a), &(u, b)) in want.iter().zip(got) {
            assert_eq!(t, u, "{what} {labels}");
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                "{what} {labels} at {t}: raw {a}, rollups {b}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_the_processor_neither_loses_nor_changes_a_window() {
    // The samples are three hours old and a restart pauses a partition for longer than
    // the 1 s idle time: the idle move must write the windows of the samples it has
    // without making the next minutes' samples late (it once took the wall clock as its
    // time, and a CI run lost 472 of 472 samples after the last restart).
    // Checkpoints of over 256 bytes go in parts: each restart restores from parts.
    let mut stack = Stack::start_with_separate_processor(&[
        ("OBS_ROLLUPS__IDLE_PARTITION_MS", "1000"),
        ("OBS_ROLLUPS__CHECKPOINT_INTERVAL_MS", "300"),
        ("OBS_PROCESSOR__STATE_PART_BYTES", "256"),
    ])
    .await
    .expect("stack started");
    let url = format!("{}/api/v1/write", stack.collector_url());
    let t0 = start_ms();
    // A minute of samples per request, the processor killed after every 30 requests,
    // once it has handled some samples of this start.
    for k in 0..180 {
        let (from, to) = (t0 + k * MINUTE, t0 + (k + 1) * MINUTE);
        let (status, text) = remote_write::post(&url, body(t0, from, to)).await;
        assert_eq!(status, 204, "{text}");
        if k % 30 == 29 {
            wait_for(
                "the processor to handle samples",
                Duration::from_secs(60),
                || async {
                    let n = stack.processor_metric("obs_rollups_samples_total").await?;
                    let split = stack
                        .processor_metric("obs_processor_state_split_total")
                        .await?;
                    (n > 0.0 && split > 0.0).then_some(())
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.processor_log()));
            stack.crash_processor(&format!("after request {k}")).await;
        }
    }
    check(&stack, t0).await;
}
