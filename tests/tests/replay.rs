//! `obs replay`: a time range of a topic into an empty table reproduces exactly the
//! original table's rows for that range; replaying again (or an overlapping range) stores
//! nothing twice; into the live table it stores only a gap deleted from it; metrics replay
//! into a fresh database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::remote_write::{self, Series};
use obs_e2e::{Stack, wait_for};

const MINUTE_NS: i64 = 60_000_000_000;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Every row of `table` where `filter`, as sorted TSV lines (all columns).
async fn rows(stack: &Stack, table: &str, filter: &str) -> Vec<String> {
    stack
        .db()
        .query(&format!(
            "SELECT formatRow('TabSeparated', *) AS r FROM {table} WHERE {filter} ORDER BY r"
        ))
        .fetch_all()
        .await
        .unwrap()
}

fn replay(stack: &Stack, args: &[&str]) -> String {
    let out = stack
        .run_obs(&[&["replay", "--quiet"], args].concat())
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "obs replay {args:?} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_range_equals_the_original_rows_and_twice_changes_nothing() {
    let stack = Stack::start().await.unwrap();
    let base = send_ten_minutes(&stack, "replay-test").await;

    // Minutes 2..5 of the ten: 180 records.
    let (from, to) = (base + 2 * MINUTE_NS, base + 5 * MINUTE_NS);
    let range = |a: i64, b: i64| {
        format!(
            "ScopeName = 'replay-test' AND toUnixTimestamp64Nano(Timestamp) >= {a} AND toUnixTimestamp64Nano(Timestamp) < {b}"
        )
    };
    let (f, t) = (
        (from / 1_000_000_000).to_string(),
        (to / 1_000_000_000).to_string(),
    );
    let out = replay(
        &stack,
        &[
            "--topic",
            "obs.logs",
            "--from",
            &f,
            "--to",
            &t,
            "--into",
            "otel_logs_replay",
        ],
    );
    let original = rows(&stack, "otel_logs", &range(from, to)).await;
    assert_eq!(original.len(), 180);
    let replayed = rows(&stack, "otel_logs_replay", "1").await;
    assert_eq!(replayed, original, "replay output:\n{out}");

    // Again: nothing more.
    let out = replay(
        &stack,
        &[
            "--topic",
            "logs",
            "--from",
            &f,
            "--to",
            &t,
            "--into",
            "otel_logs_replay",
        ],
    );
    assert!(
        out.contains("180"),
        "the summary counts 180 rows already stored:\n{out}"
    );
    assert_eq!(rows(&stack, "otel_logs_replay", "1").await, original);

    // An overlapping wider range adds only what is new: minutes 1..5.
    let f1 = ((from - MINUTE_NS) / 1_000_000_000).to_string();
    replay(
        &stack,
        &[
            "--topic",
            "logs",
            "--from",
            &f1,
            "--to",
            &t,
            "--into",
            "otel_logs_replay",
        ],
    );
    let wider = rows(&stack, "otel_logs", &range(from - MINUTE_NS, to)).await;
    assert_eq!(wider.len(), 240);
    assert_eq!(rows(&stack, "otel_logs_replay", "1").await, wider);
}

/// 600 logs of the last ten minutes, one per second, in 6 requests (scope `scope`).
async fn send_ten_minutes(stack: &Stack, scope: &str) -> i64 {
    let base = now_ns() - 10 * MINUTE_NS;
    for req in 0..6 {
        let records: Vec<serde_json::Value> = (req * 100..(req + 1) * 100)
            .map(|i| {
                serde_json::json!({
                    "timeUnixNano": (base + i * 1_000_000_000).to_string(),
                    "body": {"stringValue": format!("record {i}")},
                    "attributes": [{"key": "i", "value": {"intValue": i.to_string()}}]
                })
            })
            .collect();
        stack
            .post_otlp_logs(&format!("svc-{}", req % 2), scope, records)
            .await;
    }
    stack
        .wait_log_count(
            &format!("ScopeName = '{scope}'"),
            600,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_into_the_live_table_stores_only_a_deleted_gap() {
    let stack = Stack::start().await.unwrap();
    let base = send_ten_minutes(&stack, "live-gap").await;
    stack.wait_sink_caught_up("otel_logs").await.unwrap();
    let all = "ScopeName = 'live-gap'";
    let original = rows(&stack, "otel_logs", all).await;
    assert_eq!(original.len(), 600);

    // Replaying what the live sink stored adds nothing.
    let secs = |ns: i64| (ns / 1_000_000_000).to_string();
    let whole = [
        "--topic",
        "logs",
        "--from",
        &secs(base),
        "--to",
        &secs(base + 10 * MINUTE_NS),
    ];
    let out = replay(&stack, &whole);
    assert!(out.contains("600"), "600 rows already stored:\n{out}");
    assert_eq!(rows(&stack, "otel_logs", all).await, original, "{out}");

    // A gap in the middle (minutes 4..6) is deleted; replaying minutes 2..9 fills exactly it.
    let gap = format!(
        "{all} AND toUnixTimestamp64Nano(Timestamp) >= {} AND toUnixTimestamp64Nano(Timestamp) < {}",
        base + 4 * MINUTE_NS,
        base + 6 * MINUTE_NS
    );
    stack
        .db()
        .query(&format!(
            "ALTER TABLE otel_logs DELETE WHERE {gap} SETTINGS mutations_sync = 2"
        ))
        .execute()
        .await
        .unwrap();
    assert_eq!(rows(&stack, "otel_logs", all).await.len(), 480);
    let out = replay(
        &stack,
        &[
            "--topic",
            "logs",
            "--from",
            &secs(base + 2 * MINUTE_NS),
            "--to",
            &secs(base + 9 * MINUTE_NS),
        ],
    );
    assert_eq!(
        rows(&stack, "otel_logs", all).await,
        original,
        "every record exactly once after the replay:\n{out}"
    );
    // And once more over everything: still exactly once.
    replay(&stack, &whole);
    assert_eq!(rows(&stack, "otel_logs", all).await, original);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_replay_into_a_fresh_database() {
    let stack = Stack::start().await.unwrap();
    let start_ms = now_ns() / 1_000_000 - 600_000;
    // Three series, 600 samples each, one per second.
    let series: Vec<Series> = (0..3)
        .map(|s| Series {
            name: "replay_metric",
            labels: vec![("series", s.to_string())],
            samples: (0..600)
                .map(|i| (start_ms + i * 1000, (s * 1000 + i) as f64))
                .collect(),
        })
        .collect();
    let url = format!("{}/api/v1/write", stack.collector_url());
    let (status, text) = remote_write::post(&url, remote_write::body(&series)).await;
    assert_eq!(status, 204, "{text}");
    let db = stack.db();
    wait_for("1800 samples", Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let n: u64 = db
                .query("SELECT count() FROM metrics_samples WHERE MetricName = 'replay_metric'")
                .fetch_one()
                .await
                .ok()?;
            (n == 1800).then_some(())
        }
    })
    .await
    .unwrap();
    let (from_ms, to_ms) = (start_ms + 100_000, start_ms + 400_000);
    replay(
        &stack,
        &[
            "--topic",
            "metrics",
            "--from",
            &(from_ms / 1000).to_string(),
            "--to",
            &(to_ms / 1000).to_string(),
            "--database",
            "rebuild",
        ],
    );
    let filter = format!(
        "MetricName = 'replay_metric' AND TimestampMs >= {from_ms} AND TimestampMs < {to_ms}"
    );
    let original = rows(&stack, "metrics_samples", &filter).await;
    assert_eq!(original.len(), 900);
    assert_eq!(rows(&stack, "rebuild.metrics_samples", "1").await, original);
    let series: Vec<String> = db
        .query("SELECT toString(Labels) FROM rebuild.metrics_series FINAL ORDER BY 1")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        series,
        ["{'series':'0'}", "{'series':'1'}", "{'series':'2'}"]
    );
}
