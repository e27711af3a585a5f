//! The results cache of PromQL range queries on a running stack: a repeated query is
//! answered from the cache with the same answer as an evaluation; samples (and a new
//! series) stored later than the cache's freshness window reach the cached answer; queries
//! that look at other times, or ask `Cache-Control: no-cache`, are evaluated every time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::remote_write::{self, Series};
use obs_e2e::{Stack, http, wait_for};

/// A range query's status, `X-Obs-Results-Cache` header and body.
async fn range(
    base: &str,
    query: &str,
    (start, end): (i64, i64),
    no_cache: bool,
) -> (u16, String, String) {
    let mut req = http(60).get(format!("{base}/api/v1/query_range")).query(&[
        ("query", query),
        ("start", &start.to_string()),
        ("end", &end.to_string()),
        ("step", "60"),
    ]);
    if no_cache {
        req = req.header("Cache-Control", "no-cache");
    }
    let r = req.send().await.expect("answered");
    let status = r.status().as_u16();
    let outcome = r
        .headers()
        .get("x-obs-results-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, outcome, r.text().await.unwrap())
}

/// The values of the answer's series with `job`, in step order.
fn values_of(body: &str, job: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["metric"]["job"] == job)
        .flat_map(|s| s["values"].as_array().unwrap().clone())
        .map(|p| p[1].as_str().unwrap().to_string())
        .collect()
}

async fn send(stack: &Stack, labels: &[(&str, &str)], samples: Vec<(i64, f64)>) {
    let body = remote_write::body(&[Series {
        name: "cache_probe",
        labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        samples,
    }]);
    let (status, text) =
        remote_write::post(&format!("{}/api/v1/write", stack.collector_url()), body).await;
    assert_eq!(status, 204, "{text}");
}

/// The samples of minutes `from..=to` of the range starting at `start` (s), all `value`.
fn minutes(start: i64, from: i64, to: i64, value: f64) -> Vec<(i64, f64)> {
    (from..=to)
        .map(|i| ((start + i * 60) * 1000, value))
        .collect()
}

/// Asks until the answer is `want` (per job: values in step order) and comes from the
/// cache whole; the outcomes seen on the way.
async fn until_cached(
    base: &str,
    query: &str,
    range_s: (i64, i64),
    want: &[(&str, Vec<&str>)],
) -> (String, Vec<String>) {
    let seen = std::sync::Mutex::new(Vec::new());
    let body = wait_for(
        "the answer, from the cache",
        Duration::from_secs(90),
        || {
            let seen = &seen;
            async move {
                let (_, outcome, body) = range(base, query, range_s, false).await;
                let matches = want.iter().all(|(job, v)| values_of(&body, job) == *v);
                let hit = outcome == "hit";
                seen.lock().unwrap().push(outcome);
                (matches && hit).then_some(body)
            }
        },
    )
    .await
    .unwrap();
    (body, seen.into_inner().unwrap())
}

/// Waits until the sinks have stored (and recorded as late) everything sent so far and the
/// query API's results cache has read every late write recorded.
async fn all_late_writes_read(stack: &Stack) {
    for table in ["metrics_samples", "metrics_series"] {
        stack.wait_sink_caught_up(table).await.unwrap();
    }
    let recorded: u64 = stack
        .db()
        .query(
            "SELECT count() FROM obs_late_writes \
             WHERE TableName IN ('metrics_samples', 'metrics_series')",
        )
        .fetch_one()
        .await
        .unwrap();
    assert!(recorded > 0, "the samples sent were late and recorded so");
    wait_for(
        "the query API to read every late write",
        Duration::from_secs(30),
        || async move {
            let read = stack
                .query_metric("obs_query_results_cache_late_writes_total")
                .await?;
            (read >= recorded as f64).then_some(())
        },
    )
    .await
    .unwrap();
}

async fn server_now_ms(stack: &Stack) -> i64 {
    stack
        .db()
        .query("SELECT toUnixTimestamp64Milli(now64(3))")
        .fetch_one()
        .await
        .unwrap()
}

/// Late writes recorded since `since_ms` (server time): (table, from ms).
async fn marks_since(stack: &Stack, since_ms: i64) -> Vec<(String, i64)> {
    stack
        .db()
        .query(
            "SELECT TableName, FromMs FROM obs_late_writes WHERE Tenant = 'default' \
             AND toUnixTimestamp64Milli(WrittenAt) >= ? ORDER BY TableName, FromMs",
        )
        .bind(since_ms)
        .fetch_all()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_answers_equal_evaluation_and_late_data_reaches_them() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Whole minutes from 60 to 20 minutes ago: every step older than the freshness window,
    // every sample late (older than 5 minutes) when it is stored.
    let end = now - now % 60 - 20 * 60;
    let start = end - 40 * 60;
    let stack = Stack::start().await.unwrap();
    let base = stack.query_url();
    send(&stack, &[("job", "a")], minutes(start, 0, 40, 1.0)).await;
    send(&stack, &[("job", "c")], minutes(start, 0, 9, 3.0)).await;
    let query = "sum by (job) (cache_probe)";
    let ones = vec!["1"; 41];
    // c is seen from its first sample to 5 minutes (the lookback) after its last.
    let threes = |n| vec!["3"; n];
    let stored = wait_for("the samples stored", Duration::from_secs(60), || {
        let base = base.clone();
        let (ones, c) = (ones.clone(), threes(15));
        async move {
            let (_, _, body) = range(&base, query, (start, end), true).await;
            (values_of(&body, "a") == ones && values_of(&body, "c") == c).then_some(body)
        }
    })
    .await
    .unwrap();
    // The sinks record the late writes after storing the rows: once the query API has read
    // them all, none can still drop the answer cached next.
    all_late_writes_read(&stack).await;
    let (cached, outcomes) = until_cached(
        &base,
        query,
        (start, end),
        &[("a", ones.clone()), ("c", threes(15))],
    )
    .await;
    assert_eq!(cached, stored);
    assert_eq!(outcomes[0], "miss", "{outcomes:?}");
    // Ten minutes earlier: the ten steps before the cached run are evaluated.
    let moved = (start - 600, end - 600);
    let (_, outcome, cached) = range(&base, query, moved, false).await;
    let (_, _, evaluated) = range(&base, query, moved, true).await;
    assert_eq!(outcome, "partial");
    assert_eq!(cached, evaluated);

    // 30 minutes late, more samples of a known series (c, minutes 12 to 18): only the
    // samples are recorded as a late write, from minute 12.
    let before_c = server_now_ms(&stack).await;
    send(&stack, &[("job", "c")], minutes(start, 12, 18, 3.0)).await;
    let (cached, _) = until_cached(
        &base,
        query,
        (start, end),
        &[("a", ones.clone()), ("c", threes(24))],
    )
    .await;
    assert_eq!(cached, range(&base, query, (start, end), true).await.2);
    assert_eq!(
        marks_since(&stack, before_c).await,
        vec![("metrics_samples".to_string(), (start + 12 * 60) * 1000)]
    );

    // New series, late: job b from minute 10, and a second series of job a from minute 30
    // (job a's sum becomes 5 there). A new label set is recorded as late from any time.
    let before_new = server_now_ms(&stack).await;
    send(&stack, &[("job", "b")], minutes(start, 10, 40, 7.0)).await;
    send(
        &stack,
        &[("job", "a"), ("instance", "late")],
        minutes(start, 30, 40, 4.0),
    )
    .await;
    let mut a = vec!["1"; 30];
    a.extend(["5"; 11]);
    let (cached, _) = until_cached(
        &base,
        query,
        (start, end),
        &[("a", a), ("b", vec!["7"; 31]), ("c", threes(24))],
    )
    .await;
    assert_eq!(cached, range(&base, query, (start, end), true).await.2);
    let marks = marks_since(&stack, before_new).await;
    assert!(
        marks.contains(&("metrics_samples".to_string(), (start + 10 * 60) * 1000))
            || marks.contains(&("metrics_samples".to_string(), (start + 30 * 60) * 1000)),
        "{marks:?}"
    );
    assert!(
        marks.contains(&("metrics_series".to_string(), i64::MIN)),
        "{marks:?}"
    );

    // Not cached: `@`, negative offsets, no-cache.
    for (q, no_cache) in [
        ("sum by (job) (cache_probe @ end())", false),
        ("sum by (job) (cache_probe offset -1m)", false),
        (query, true),
    ] {
        let (status, outcome, _) = range(&base, q, (start, end), no_cache).await;
        assert_eq!((status, outcome.as_str()), (200, "bypass"), "{q}");
    }
}
