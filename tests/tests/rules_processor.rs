//! The rule processor in the running pipeline: metrics sent by remote write are evaluated
//! in event time; the recorded series is stored once per evaluation and queryable through
//! the Prometheus API, and the alert's transitions (pending, firing, resolved) reach the
//! `obs_alerts` table at the evaluation times Prometheus's rules give.

use std::time::Duration;

use obs_e2e::remote_write::Series;
use obs_e2e::rules::{RulesStack, now_ms};
use obs_e2e::{http, wait_for};

const RULES: &str = r#"
groups:
  - name: requests
    interval: 10s
    rules:
      - record: job:requests:rate1m
        expr: sum by (job) (rate(requests_total[1m]))
      - alert: HighRequestRate
        expr: job:requests:rate1m > 5
        for: 20s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.job }} at {{ $value }} requests/s"
"#;

/// A counter rising 10/s, sampled every 5 s for 3 minutes from `t0`.
fn counter(t0: i64) -> Vec<(i64, f64)> {
    (0..=36)
        .map(|i| (t0 + i * 5_000, i as f64 * 50.0))
        .collect()
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Transition {
    state: String,
    evaluated_at_ms: i64,
    active_at_ms: i64,
    summary: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_are_evaluated_in_event_time_and_their_outputs_stored_once() {
    let rs = RulesStack::start(
        RULES,
        &[
            ("OBS_PROCESSOR__IDLE_PARTITION_MS", "2000"),
            ("RUST_LOG", "info,obs_stream_processors=debug"),
        ],
    )
    .await;
    let stack = &rs.stack;
    // Event time well in the past: the whole history is evaluated once the partitions go
    // idle and time follows the wall clock.
    let t0 = (now_ms() - 400_000) / 10_000 * 10_000;
    rs.write(&[Series {
        name: "requests_total",
        labels: vec![("job", "api".to_string())],
        samples: counter(t0),
    }])
    .await;

    // The alert: pending at the first evaluation where the rate exceeds 5 (rate = (t-t0)/6
    // while the window is filling: t0+40s), firing 20 s later, resolved once the samples
    // stop and the extrapolated rate falls to 5 or below: at t0+210s the window holds
    // 30 s of samples (rate 300 x 32.5/30/60 = 5.42), at t0+220s 20 s (200 x 22.5/20/60 =
    // 3.75).
    let db = stack.db();
    let transitions: Vec<Transition> = rs
        .rows_until(
            "the alert's three transitions",
            "SELECT State, EvaluatedAtMs, ActiveAtMs, Annotations['summary'] AS Summary \
             FROM obs_alerts FINAL WHERE Rule = 'HighRequestRate' ORDER BY EvaluatedAtMs",
            |rows| rows.len() >= 3,
        )
        .await;
    let got: Vec<(&str, i64, i64)> = transitions
        .iter()
        .map(|t| {
            (
                t.state.as_str(),
                t.evaluated_at_ms - t0,
                t.active_at_ms - t0,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("pending", 40_000, 40_000),
            ("firing", 60_000, 40_000),
            ("resolved", 220_000, 40_000)
        ]
    );
    assert_eq!(transitions[1].summary, "api at 10 requests/s");

    // Stored once per evaluation: evaluations at t0+10s .. t0+230s wrote a sample (the rate
    // needs two samples), then one stale marker at t0+240s. Waited for (the samples sink
    // runs beside the alerts sink), then counted again once the samples sink has stored
    // everything published so far, so a duplicate would be in the count.
    #[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Count {
        rows: u64,
        times: u64,
    }
    let count = || {
        let db = db.clone();
        async move {
            db.query(
                "SELECT count() AS Rows, uniqExact(TimestampMs) AS Times FROM metrics_samples \
                 WHERE MetricName = 'job:requests:rate1m'",
            )
            .fetch_one::<Count>()
            .await
            .ok()
        }
    };
    wait_for(
        "the recorded series stored",
        Duration::from_secs(60),
        || async { count().await.filter(|c| c.rows >= 24) },
    )
    .await
    .unwrap();
    stack.wait_sink_caught_up("metrics_samples").await.unwrap();
    assert_eq!(
        count().await,
        Some(Count {
            rows: 24,
            times: 24
        }),
        "23 samples and a stale marker, once each"
    );

    // The recorded series: 10 at every evaluation with a full window, through the query API.
    let client = http(10);
    let at = (t0 + 120_000) as f64 / 1000.0;
    let answer: serde_json::Value = client
        .get(format!("{}/api/v1/query", stack.query_url()))
        .query(&[("query", "job:requests:rate1m"), ("time", &at.to_string())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result = &answer["data"]["result"];
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{answer}");
    assert_eq!(result[0]["metric"]["job"], "api");
    assert_eq!(result[0]["value"][1], "10");
}
