//! The rule processor killed with SIGKILL 10 times while its alert is pending and firing,
//! under live remote-write traffic: the alert's `for` never starts over (one pending
//! transition, one active time), it is announced firing once, and the recorded series has
//! exactly one sample per evaluation, with no evaluation missing.

use std::time::Duration;

use obs_e2e::Stop;
use obs_e2e::remote_write::{self, Series};
use obs_e2e::rules::{LiveWrite, RulesStack, now_ms};

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

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Transition {
    state: String,
    evaluated_at_ms: i64,
    active_at_ms: i64,
}

const TRANSITIONS: &str = "SELECT State, EvaluatedAtMs, ActiveAtMs FROM obs_alerts FINAL \
     WHERE Rule = 'XPresent' ORDER BY EvaluatedAtMs, State";

const NEWEST: &str = "SELECT max(TimestampMs) FROM metrics_samples WHERE MetricName = 'job:x:sum'";

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Sample {
    timestamp_ms: i64,
    copies: u64,
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_does_not_restart_for_nor_duplicate_outputs() {
    let mut rs = RulesStack::start(RULES, &[("OBS_PROCESSOR__ALLOWED_LATENESS_MS", "1000")]).await;

    // x{job="a"} = 1 every 500 ms, timestamped when sent; sends while obs is down fail and
    // are simply not retried (the rules see the series through the 5m lookback).
    let live = LiveWrite::start(
        vec![format!("{}/api/v1/write", rs.stack.collector_url())],
        Duration::from_millis(500),
        |t| {
            remote_write::body(&[Series {
                name: "x",
                labels: vec![("job", "a".to_string())],
                samples: vec![(t, 1.0)],
            }])
        },
    );

    rs.rows_until::<Transition>("the alert to be pending", TRANSITIONS, |t| !t.is_empty())
        .await;
    // Ten kills over the pending 20 s and the firing time after it, each once the processor
    // has stored an evaluation newer than any before the previous kill.
    let mut newest = 0;
    for i in 0..10 {
        let after = newest;
        newest = rs
            .rows_until::<i64>("a new evaluation stored", NEWEST, |m| {
                m.first().is_some_and(|&m| m > after)
            })
            .await[0];
        rs.stack
            .restart_obs(Stop::Kill)
            .await
            .unwrap_or_else(|e| panic!("restart {i}: {e:#}"));
    }
    live.stop().await;
    let last_sent = now_ms();

    // Everything evaluated up to the last sample is stored: evaluations continue for 5 min
    // of lookback, so wait for the recorded series to reach the last send, then for both
    // sinks to store everything published so far.
    rs.rows_until::<i64>("the recorded series to reach the last send", NEWEST, |m| {
        m.first().is_some_and(|&m| m >= last_sent)
    })
    .await;
    rs.stack
        .wait_sink_caught_up("metrics_samples")
        .await
        .unwrap();
    rs.stack.wait_sink_caught_up("obs_alerts").await.unwrap();
    let db = rs.stack.db();
    let samples: Vec<Sample> = db
        .query(
            "SELECT TimestampMs, count() AS Copies FROM metrics_samples \
             WHERE MetricName = 'job:x:sum' GROUP BY TimestampMs ORDER BY TimestampMs",
        )
        .fetch_all()
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

    let t: Vec<Transition> = db.query(TRANSITIONS).fetch_all().await.unwrap();
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
    let values: Vec<f64> = db
        .query(
            "SELECT DISTINCT Value FROM metrics_samples WHERE MetricName = 'ALERTS_FOR_STATE' \
             AND NOT isNaN(Value)",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(values, vec![(active / 1000) as f64]);
    eprintln!(
        "10 SIGKILLs: {} evaluations stored once each, no gap; pending at {active}, firing 20 s later, once",
        samples.len()
    );
}
