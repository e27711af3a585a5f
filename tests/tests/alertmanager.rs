//! Alerts from the rule processor reach a real Alertmanager 0.25 over its v2 API: its
//! `/api/v2/alerts` shows them with the rule's labels (external labels added), expanded
//! annotations and the `startsAt` the processor computed, and a webhook receiver gets the
//! firing and then the resolved notification, both alerts in one group as configured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use obs_e2e::alertmanager::{Alertmanager, Webhook};
use obs_e2e::remote_write::{self, Series};
use obs_e2e::rules::{LiveWrite, RulesStack};
use obs_e2e::{http, wait_for};

const RULES: &str = r#"
groups:
  - name: live
    interval: 2s
    rules:
      - alert: QueueStuck
        expr: queue_depth > 10
        for: 4s
        labels:
          severity: page
        annotations:
          summary: "queue {{ $labels.queue }} holds {{ $value }} messages"
"#;

/// One alert's transition as `obs_alerts` stores it.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Transition {
    queue: String,
    active_at_ms: i64,
    evaluated_at_ms: i64,
}

/// Both alerts' transitions to `state`, once both are stored.
async fn both(rs: &RulesStack, state: &str) -> Vec<Transition> {
    rs.rows_until(
        &format!("both {state} transitions stored"),
        &format!(
            "SELECT Labels['queue'] AS Queue, ActiveAtMs, EvaluatedAtMs FROM obs_alerts FINAL \
             WHERE Rule = 'QueueStuck' AND State = '{state}' ORDER BY Queue"
        ),
        |rows| rows.len() == 2,
    )
    .await
}

async fn get_json(url: String) -> serde_json::Value {
    http(10)
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// An RFC 3339 time (as Alertmanager prints it) in ms since the epoch.
fn ms_of(rfc3339: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_reach_alertmanager_and_its_receiver() {
    let hook = Webhook::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(
        dir.path(),
        &format!(
            r#"
route:
  receiver: hook
  group_by: [alertname, job]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {}
        send_resolved: true
"#,
            hook.url
        ),
    )
    .await
    .unwrap();
    let ams = format!("[\"{}\"]", am.url());
    let rs = RulesStack::start(
        RULES,
        &[
            ("OBS_PROCESSOR__ALERTMANAGERS", &ams),
            ("OBS_PROCESSOR__ALLOWED_LATENESS_MS", "500"),
            ("OBS_PROCESSOR__EXTERNAL_LABELS", "{cluster=\"eu-1\"}"),
        ],
    )
    .await;
    let stack = &rs.stack;

    // Two queues at 20 until told to drain, then at 0.
    let depth = Arc::new(AtomicU8::new(20));
    let live = LiveWrite::start(
        vec![format!("{}/api/v1/write", stack.collector_url())],
        Duration::from_millis(500),
        {
            let depth = depth.clone();
            move |t| {
                let d = depth.load(Ordering::Relaxed) as f64;
                let series: Vec<Series> = ["orders", "mail"]
                    .iter()
                    .map(|q| Series {
                        name: "queue_depth",
                        labels: vec![("job", "broker".to_string()), ("queue", q.to_string())],
                        samples: vec![(t, d)],
                    })
                    .collect();
                remote_write::body(&series)
            }
        },
    );

    // Firing in Alertmanager.
    let alerts = wait_for(
        "both alerts in Alertmanager",
        Duration::from_secs(60),
        || async {
            let a = am.alerts().await.ok()?;
            (a.len() == 2).then_some(a)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", am.log_tail()));
    let firing = both(&rs, "firing").await;
    for a in &alerts {
        let labels = &a["labels"];
        let queue = labels["queue"].as_str().unwrap();
        assert_eq!(labels["alertname"], "QueueStuck");
        assert_eq!(labels["severity"], "page");
        assert_eq!(labels["job"], "broker");
        assert_eq!(labels["cluster"], "eu-1", "external labels are added");
        assert_eq!(labels.as_object().unwrap().len(), 5, "{labels}");
        assert_eq!(
            a["annotations"]["summary"],
            format!("queue {queue} holds 20 messages")
        );
        assert_eq!(a["status"]["state"], "active");
        let f = firing.iter().find(|f| f.queue == queue).unwrap();
        assert_eq!(
            ms_of(&a["startsAt"]),
            f.active_at_ms,
            "startsAt is the active time"
        );
        assert!(
            a["generatorURL"]
                .as_str()
                .unwrap()
                .ends_with("/graph?g0.expr=queue_depth+%3E+10&g0.tab=1"),
            "{}",
            a["generatorURL"]
        );
    }
    // The same alerts through the query API's Prometheus endpoints (what Grafana reads).
    let api = get_json(format!("{}/api/v1/alerts", stack.query_url())).await;
    let api_alerts = api["data"]["alerts"].as_array().unwrap();
    assert_eq!(api_alerts.len(), 2, "{api}");
    for a in api_alerts {
        assert_eq!(a["state"], "firing");
        assert_eq!(a["value"], "2e+01");
        let queue = a["labels"]["queue"].as_str().unwrap();
        let f = firing.iter().find(|f| f.queue == queue).unwrap();
        assert_eq!(ms_of(&a["activeAt"]), f.active_at_ms);
        assert!(
            a["labels"].get("cluster").is_none(),
            "external labels only on sending"
        );
    }
    let rules = get_json(format!("{}/api/v1/rules?type=alert", stack.query_url())).await;
    let group = &rules["data"]["groups"][0];
    assert_eq!(group["name"], "live", "{rules}");
    assert_eq!(group["interval"], 2.0);
    let rule = &group["rules"][0];
    assert_eq!(rule["name"], "QueueStuck");
    assert_eq!(rule["type"], "alerting");
    assert_eq!(rule["state"], "firing");
    assert_eq!(rule["health"], "ok");
    assert_eq!(rule["duration"], 4.0);
    assert_eq!(rule["query"], "queue_depth > 10");
    assert_eq!(rule["alerts"].as_array().map(Vec::len), Some(2));
    let none = get_json(format!("{}/api/v1/rules?type=record", stack.query_url())).await;
    assert_eq!(
        none["data"]["groups"],
        serde_json::json!([]),
        "no recording rule"
    );

    let note = |status: &'static str| {
        let (hook, am) = (&hook, &am);
        async move {
            wait_for(
                &format!("the {status} notification"),
                Duration::from_secs(60),
                // The group's notification holding both alerts: when one alert became
                // active an evaluation before the other, Alertmanager first notifies the
                // group with one and then, after group_interval, with both.
                || async {
                    hook.received().into_iter().find(|n| {
                        n["status"] == status && n["alerts"].as_array().map(Vec::len) == Some(2)
                    })
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", am.log_tail()))
        }
    };
    let firing_note = note("firing").await;

    // Drained: resolved.
    depth.store(0, Ordering::Relaxed);
    let resolved_note = note("resolved").await;
    live.stop().await;

    for note in [&firing_note, &resolved_note] {
        assert_eq!(
            note["groupLabels"],
            serde_json::json!({"alertname": "QueueStuck", "job": "broker"}),
            "grouped by alertname and job: {note}"
        );
        let mut queues: Vec<&str> = note["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["labels"]["queue"].as_str().unwrap())
            .collect();
        queues.sort();
        assert_eq!(
            queues,
            ["mail", "orders"],
            "both alerts in one notification: {note}"
        );
    }
    // The resolved alerts end when the processor resolved them.
    let resolved = both(&rs, "resolved").await;
    for a in resolved_note["alerts"].as_array().unwrap() {
        let queue = a["labels"]["queue"].as_str().unwrap();
        let r = resolved.iter().find(|r| r.queue == queue).unwrap();
        assert_eq!(a["status"], "resolved");
        assert_eq!(
            ms_of(&a["endsAt"]),
            r.evaluated_at_ms,
            "endsAt is the resolve time"
        );
    }
}
