//! `obs rules backtest` over an hour of replayed data gives exactly the transitions the
//! live processor recorded for that hour, counts the pages, and shows other `for` values.

use obs_e2e::remote_write::Series;
use obs_e2e::rules::{RulesStack, now_ms};

const RULES: &str = r#"
groups:
  - name: hour
    interval: 30s
    rules:
      - record: job:work:rate2m
        expr: sum by (job) (rate(work_total[2m]))
      - alert: Busy
        expr: job:work:rate2m > 5
        for: 2m
        labels:
          severity: page
"#;

/// A counter sampled every 15 s for an hour, rising 10/s in the first 10 minutes of every
/// 20 and 1/s in the others: three busy episodes.
fn counter(t0: i64) -> Vec<(i64, f64)> {
    let mut v = 0.0;
    (0..=240)
        .map(|i| {
            let t = t0 + i * 15_000;
            if i > 0 {
                let minute = (i - 1) * 15 / 60;
                v += if (minute / 10) % 2 == 0 { 150.0 } else { 15.0 };
            }
            (t, v)
        })
        .collect()
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    state: String,
    evaluated_at_ms: i64,
}

#[tokio::test(flavor = "multi_thread")]
async fn backtest_gives_the_live_transitions() {
    let rs = RulesStack::start(RULES, &[("OBS_PROCESSOR__IDLE_PARTITION_MS", "2000")]).await;
    let (stack, rules) = (&rs.stack, &rs.rules);
    let t0 = (now_ms() - 70 * 60_000) / 30_000 * 30_000;
    rs.write(&[Series {
        name: "work_total",
        labels: vec![("job", "batch".to_string())],
        samples: counter(t0),
    }])
    .await;

    // The live processor's transitions for the hour, once it has evaluated past it.
    let end = t0 + 3_600_000;
    rs.rows_until::<i64>(
        "the live processor past the hour",
        "SELECT max(TimestampMs) FROM metrics_samples WHERE MetricName = 'job:work:rate2m'",
        |m| m.first().is_some_and(|&m| m >= end),
    )
    .await;
    // Transitions go out before the evaluation that made them: once the alerts sink has
    // stored everything published so far, the hour's transitions are all there.
    stack.wait_sink_caught_up("obs_alerts").await.unwrap();
    let transitions_of = |table: &str| {
        format!(
            "SELECT State, EvaluatedAtMs FROM {table} FINAL WHERE Rule = 'Busy' \
             AND EvaluatedAtMs BETWEEN {t0} AND {end} ORDER BY EvaluatedAtMs"
        )
    };
    let db = stack.db();
    let live: Vec<Row> = db
        .query(&transitions_of("obs_alerts"))
        .fetch_all()
        .await
        .unwrap();
    let firing = live.iter().filter(|r| r.state == "firing").count();
    assert_eq!(firing, 3, "three busy episodes: {live:?}");

    let from = (t0 / 1000).to_string();
    let to = (end / 1000).to_string();
    let out = stack
        .run_obs(&[
            "rules",
            "backtest",
            &rules.display().to_string(),
            "--from",
            &from,
            "--to",
            &to,
            "--for",
            "5m,12m",
            "--format",
            "json",
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("messages read"),
        "progress on stderr: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let steps = |run: &serde_json::Value| -> Vec<Row> {
        run["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|a| a["steps"].as_array().unwrap().clone())
            .map(|s| Row {
                state: s["state"].as_str().unwrap().to_string(),
                evaluated_at_ms: s["at_ms"].as_i64().unwrap(),
            })
            .collect()
    };
    assert_eq!(
        steps(&runs[0]),
        live,
        "the backtest gives the live transitions"
    );
    assert_eq!(runs[0]["pages"], 3);
    // for 5m: still three pages (each episode lasts 10 min); for 12m: none fires.
    assert_eq!(runs[1]["for_ms"], 300_000);
    assert_eq!(runs[1]["pages"], 3);
    assert_eq!(runs[2]["pages"], 0);
    assert!(
        steps(&runs[2])
            .iter()
            .all(|s| s.state == "pending" || s.state == "inactive")
    );

    // obs.alerts replays into a fresh table with the same transitions.
    let out = stack
        .run_obs(&[
            "replay",
            "--topic",
            "obs.alerts",
            "--from",
            &from,
            "--to",
            &(end / 1000 + 1).to_string(),
            "--into",
            "obs_alerts_rebuild",
            "--quiet",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt: Vec<Row> = db
        .query(&transitions_of("obs_alerts_rebuild"))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rebuilt, live, "replayed alerts equal the stored ones");

    // The text report names the alert and its pages.
    let out = stack
        .run_obs(&[
            "rules",
            "backtest",
            &rules.display().to_string(),
            "--from",
            &from,
            "--to",
            &to,
            "--quiet",
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("alertname=\"Busy\""), "{text}");
    assert!(text.contains("pages in total: 3"), "{text}");
}
