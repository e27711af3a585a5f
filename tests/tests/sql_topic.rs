//! `obs sql --topic`: DataFusion SQL over a time range of a topic's records, read from the
//! broker, answers what the sinks stored for the same range: a count, counts per service
//! and severity, a count by attribute over logs; a count and a sum over metric samples.
//! A statement DataFusion cannot plan is refused with its reason, naming the columns.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::remote_write::{self, Series};
use obs_e2e::{Stack, wait_for};

const SECOND_NS: i64 = 1_000_000_000;
const MINUTE_NS: i64 = 60 * SECOND_NS;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// `obs sql --topic … --format json`: one JSON object per row.
fn sql_on_topic(
    stack: &Stack,
    topic: &str,
    (from, to): (i64, i64),
    sql: &str,
) -> Vec<serde_json::Value> {
    let (f, t) = ((from / SECOND_NS).to_string(), (to / SECOND_NS).to_string());
    let out = stack
        .run_obs(&[
            "sql", "--topic", topic, "--from", &f, "--to", &t, "--format", "json", sql,
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "obs sql --topic {topic} {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_over_a_topic_range_equals_what_the_sinks_stored() {
    let stack = Stack::start().await.unwrap();
    // 600 logs, one per second of record time over the last 10 minutes, 3 services.
    let base = now_ns() - 10 * MINUTE_NS;
    for req in 0..6 {
        let records: Vec<serde_json::Value> = (req * 100..(req + 1) * 100)
            .map(|i| {
                serde_json::json!({
                    "timeUnixNano": (base + i * SECOND_NS).to_string(),
                    "severityText": if i % 7 == 0 { "ERROR" } else { "INFO" },
                    "body": {"stringValue": format!("sql topic record {i}")},
                    "attributes": [{"key": "route", "value": {"stringValue": format!("/r{}", i % 4)}}]
                })
            })
            .collect();
        stack
            .post_otlp_logs(&format!("svc-{}", req % 3), "sql-topic-test", records)
            .await;
    }
    stack
        .wait_log_count("ScopeName = 'sql-topic-test'", 600, Duration::from_secs(60))
        .await
        .unwrap();

    // Minutes 2..5 of the ten: 180 records.
    let (from, to) = (base + 2 * MINUTE_NS, base + 5 * MINUTE_NS);
    let in_range = format!(
        "ScopeName = 'sql-topic-test' AND toUnixTimestamp64Nano(Timestamp) >= {from} \
         AND toUnixTimestamp64Nano(Timestamp) < {to}"
    );
    let stored: u64 = stack
        .db()
        .query(&format!("SELECT count() FROM otel_logs WHERE {in_range}"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(stored, 180);
    let rows = sql_on_topic(
        &stack,
        "obs.logs",
        (from, to),
        "SELECT count(*) AS n FROM records WHERE scope_name = 'sql-topic-test'",
    );
    assert_eq!(rows, vec![serde_json::json!({"n": stored})]);

    // Per service and severity, and per attribute: equal to ClickHouse's groups.
    let want: Vec<(String, String, u64)> = stack
        .db()
        .query(&format!(
            "SELECT ServiceName, SeverityText, count() FROM otel_logs WHERE {in_range} \
             GROUP BY ServiceName, SeverityText ORDER BY ServiceName, SeverityText"
        ))
        .fetch_all()
        .await
        .unwrap();
    let got: Vec<(String, String, u64)> = sql_on_topic(
        &stack,
        "logs",
        (from, to),
        "SELECT service, severity_text, count(*) AS n FROM records \
         WHERE scope_name = 'sql-topic-test' GROUP BY service, severity_text \
         ORDER BY service, severity_text",
    )
    .into_iter()
    .map(|r| {
        (
            r["service"].as_str().unwrap().to_string(),
            r["severity_text"].as_str().unwrap().to_string(),
            r["n"].as_u64().unwrap(),
        )
    })
    .collect();
    assert_eq!(got, want);
    assert!(want.len() >= 4, "{want:?}");
    let by_route: BTreeMap<String, u64> = sql_on_topic(
        &stack,
        "obs.logs",
        (from, to),
        "SELECT attrs['route'] AS route, count(*) AS n FROM records \
         WHERE scope_name = 'sql-topic-test' GROUP BY 1",
    )
    .into_iter()
    .map(|r| {
        (
            r["route"].as_str().unwrap().to_string(),
            r["n"].as_u64().unwrap(),
        )
    })
    .collect();
    let want: BTreeMap<String, u64> = stack
        .db()
        .query(&format!(
            "SELECT LogAttributes['route'], count() FROM otel_logs WHERE {in_range} GROUP BY 1"
        ))
        .fetch_all::<(String, u64)>()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(by_route, want);
    assert_eq!(by_route.values().sum::<u64>(), 180);

    // Metric samples: two series, one sample per 15 s over 5 minutes.
    let t0 = (now_ns() / MINUTE_NS - 6) * MINUTE_NS / 1_000_000;
    let samples = |k: f64| (0..20).map(|i| (t0 + i * 15_000, k * i as f64)).collect();
    let series = [
        Series {
            name: "sql_topic_total",
            labels: vec![("job", "a".to_string())],
            samples: samples(1.0),
        },
        Series {
            name: "sql_topic_total",
            labels: vec![("job", "b".to_string())],
            samples: samples(2.0),
        },
    ];
    let url = format!("{}/api/v1/write", stack.collector_url());
    let (status, text) = remote_write::post(&url, remote_write::body(&series)).await;
    assert_eq!(status, 204, "{text}");
    wait_for("40 samples stored", Duration::from_secs(60), || async {
        let n: u64 = stack
            .db()
            .query("SELECT count() FROM metrics_samples WHERE MetricName = 'sql_topic_total'")
            .fetch_one()
            .await
            .ok()?;
        (n == 40).then_some(())
    })
    .await
    .unwrap();
    // Samples 4..=15 of each series: 2 × 12, values summing to 3 × (4 + … + 15).
    let range = ((t0 + 60_000) * 1_000_000, (t0 + 240_000) * 1_000_000);
    let rows = sql_on_topic(
        &stack,
        "obs.metrics",
        range,
        "SELECT count(*) AS n, sum(value) AS total FROM records WHERE name = 'sql_topic_total'",
    );
    assert_eq!(
        rows,
        vec![serde_json::json!({"n": 24, "total": 3.0 * 114.0})]
    );

    // A statement that cannot run: refused with DataFusion's reason.
    let out = stack
        .run_obs(&[
            "sql",
            "--topic",
            "obs.logs",
            "--from",
            "-5m",
            "SELECT nope FROM records",
        ])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope") && err.contains("timestamp_ns"),
        "{err}"
    );
}
