//! The rule processor killed with SIGKILL 10 times while its alert is pending and firing,
//! under live remote-write traffic: the alert's `for` never starts over (one pending
//! transition, one active time), it is announced firing once, and the recorded series has
//! exactly one sample per evaluation, with no evaluation missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use obs_e2e::remote_write::{self, Series};
use obs_e2e::{Stack, Stop, wait_for};

const RULES: &str = r#"
groups:
  - name: live
    interval: 2s
    rules:
      - record: job:x:sum
        expr: sum by (job) (x)
      - alert: XPresent
        expr: job:x:sum > 0
        for: 20s
"#;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Transition {
    state: String,
    evaluated_at_ms: i64,
    active_at_ms: i64,
}

async fn transitions(db: &clickhouse::Client) -> Vec<Transition> {
    db.query(
        "SELECT State, EvaluatedAtMs, ActiveAtMs FROM obs_alerts FINAL \
         WHERE Rule = 'XPresent' ORDER BY EvaluatedAtMs, State",
    )
    .fetch_all()
    .await
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_does_not_restart_for_nor_duplicate_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let files = format!("[\"{}\"]", rules.display());
    let mut stack = Stack::start_with(&[
        ("OBS_PROCESSOR__RULE_FILES", &files),
        ("OBS_PROCESSOR__ALLOWED_LATENESS_MS", "1000"),
    ])
    .await
    .unwrap();

    // x{job="a"} = 1 every 500 ms, timestamped when sent; sends while obs is down fail and
    // are simply not retried (the rules see the series through the 5m lookback).
    let url = format!("{}/api/v1/write", stack.collector_url());
    let running = Arc::new(AtomicBool::new(true));
    let loader = tokio::spawn({
        let running = running.clone();
        async move {
            while running.load(Ordering::Relaxed) {
                let body = remote_write::body(&[Series {
                    name: "x",
                    labels: vec![("job", "a".to_string())],
                    samples: vec![(now_ms(), 1.0)],
                }]);
                remote_write::post(&url, body).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });

    let db = stack.db();
    wait_for("the alert to be pending", Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let t = transitions(&db).await;
            (!t.is_empty()).then_some(())
        }
    })
    .await
    .unwrap();
    // Ten kills spread over the pending 20 s and the firing time after it.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        stack
            .restart_obs(Stop::Kill)
            .await
            .unwrap_or_else(|e| panic!("restart {i}: {e:#}"));
    }
    running.store(false, Ordering::Relaxed);
    loader.await.unwrap();
    let last_sent = now_ms();

    // Everything evaluated up to the last sample is stored: evaluations continue for 5 min
    // of lookback, so wait for the recorded series to reach the last send.
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Sample {
        timestamp_ms: i64,
        copies: u64,
    }
    let samples: Vec<Sample> = wait_for(
        "the recorded series to reach the last send",
        Duration::from_secs(60),
        || {
            let db = db.clone();
            async move {
                let rows: Vec<Sample> = db
                    .query(
                        "SELECT TimestampMs, count() AS Copies FROM metrics_samples \
                         WHERE MetricName = 'job:x:sum' GROUP BY TimestampMs ORDER BY TimestampMs",
                    )
                    .fetch_all()
                    .await
                    .ok()?;
                rows.last()
                    .is_some_and(|s| s.timestamp_ms >= last_sent)
                    .then_some(rows)
            }
        },
    )
    .await
    .unwrap();
    let twice: Vec<i64> = samples
        .iter()
        .filter(|s| s.copies != 1)
        .map(|s| s.timestamp_ms)
        .collect();
    assert!(
        twice.is_empty(),
        "samples stored more than once at {twice:?}"
    );
    let gaps: Vec<(i64, i64)> = samples
        .windows(2)
        .filter(|w| w[1].timestamp_ms - w[0].timestamp_ms != 2_000)
        .map(|w| (w[0].timestamp_ms, w[1].timestamp_ms))
        .collect();
    assert!(gaps.is_empty(), "evaluations missing between {gaps:?}");

    // The alerts sink runs beside the samples sink: wait for it to store the firing too.
    let t = wait_for(
        "the firing transition stored",
        Duration::from_secs(30),
        || {
            let db = db.clone();
            async move {
                let t = transitions(&db).await;
                t.iter().any(|t| t.state == "firing").then_some(t)
            }
        },
    )
    .await
    .unwrap();
    let states: Vec<&str> = t.iter().map(|t| t.state.as_str()).collect();
    assert_eq!(states, ["pending", "firing"], "{t:?}");
    let active = t[0].active_at_ms;
    assert_eq!(t[0].evaluated_at_ms, active);
    assert_eq!(t[1].active_at_ms, active, "for started over: {t:?}");
    assert_eq!(
        t[1].evaluated_at_ms - active,
        20_000,
        "fired 20 s after pending"
    );
    // ALERTS_FOR_STATE carries the one active time through every restart.
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Value {
        value: f64,
    }
    let values: Vec<Value> = db
        .query(
            "SELECT DISTINCT Value FROM metrics_samples WHERE MetricName = 'ALERTS_FOR_STATE' \
             AND NOT isNaN(Value)",
        )
        .fetch_all()
        .await
        .unwrap();
    let values: Vec<f64> = values.iter().map(|v| v.value).collect();
    assert_eq!(values, vec![(active / 1000) as f64]);
    eprintln!(
        "10 SIGKILLs: {} evaluations stored once each, no gap; pending at {active}, firing 20 s later, once",
        samples.len()
    );
}
