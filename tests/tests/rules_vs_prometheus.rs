//! One rule file in a real Prometheus 2.42 and in the rule processor, the same samples sent
//! to both by remote write as they happen: the recorded series take the same values and the
//! alert goes through pending, firing and resolved alike, with the same `for`.
//!
//! Prometheus evaluates its group at a phase of its own (a hash of the group), the processor
//! at multiples of the interval, so their evaluation times differ by less than the
//! interval. The inputs are therefore held constant for 15 s at a time (three intervals):
//! every evaluation inside a stretch sees the same inputs, and the series compare as their
//! runs of equal values, in order. Alerts compare by their transitions' order and the time
//! from pending to firing, which both measure on their own evaluation times.

use std::time::Duration;

use obs_e2e::prometheus::Prometheus;
use obs_e2e::remote_write::{self, Series};
use obs_e2e::rules::{LiveWrite, RulesStack, now_ms};
use obs_e2e::{http, wait_for};

const RULES: &str = r#"
groups:
  - name: compare
    interval: 5s
    rules:
      - record: job:x:sum
        expr: sum by (job) (x)
      - record: job:x_over_1:count
        expr: count by (job) (x > 1)
      - alert: XHigh
        expr: job:x:sum > 5
        for: 10s
        labels:
          severity: ticket
        annotations:
          summary: "sum {{ $value }}"
"#;

/// Values of x{instance="1"} and x{instance="2"}, each held for 15 s.
const STRETCHES: [(f64, f64); 4] = [(1.0, 2.0), (4.0, 4.0), (10.0, 1.0), (0.0, 0.0)];

/// Consecutive equal values collapsed.
fn runs(values: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for &v in values {
        if out.last() != Some(&v) {
            out.push(v);
        }
    }
    out
}

/// A series' raw samples `[(ms, value)]` from a Prometheus-API instant query of a range
/// selector.
async fn raw(url: &str, selector: &str, at_ms: i64) -> Vec<(i64, f64)> {
    let body: serde_json::Value = http(10)
        .get(format!("{url}/api/v1/query"))
        .query(&[
            ("query", format!("{selector}[10m]")),
            ("time", format!("{}", at_ms as f64 / 1000.0)),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result = body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(result.len() <= 1, "{selector}: {body}");
    result
        .first()
        .map(|s| {
            s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                        p[1].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_processor_evaluates_rules_as_prometheus_does() {
    let rs = RulesStack::start(RULES, &[("OBS_PROCESSOR__ALLOWED_LATENESS_MS", "1000")]).await;
    let stack = &rs.stack;
    let prom = Prometheus::start_with_args(
        rs.dir.path(),
        "prom-rules",
        &format!(
            "global: {{evaluation_interval: 5s}}\nrule_files: [\"{}\"]\n",
            rs.rules.display()
        ),
        &rs.dir.path().join("prom-data"),
        &["--web.enable-remote-write-receiver"],
    )
    .await
    .unwrap();

    // The same samples to both, every 500 ms, as they happen, stretch after stretch.
    let start = now_ms();
    let live = LiveWrite::start(
        vec![
            format!("{}/api/v1/write", prom.url()),
            format!("{}/api/v1/write", stack.collector_url()),
        ],
        Duration::from_millis(500),
        move |t| {
            let k = (((t - start) / 15_000) as usize).min(STRETCHES.len() - 1);
            let (a, b) = STRETCHES[k];
            let series: Vec<Series> = [("1", a), ("2", b)]
                .iter()
                .map(|(i, v)| Series {
                    name: "x",
                    labels: vec![("job", "api".to_string()), ("instance", i.to_string())],
                    samples: vec![(t, *v)],
                })
                .collect();
            remote_write::body(&series)
        },
    );
    // The traffic runs through every stretch.
    live.sent_through(start + 15_000 * STRETCHES.len() as i64)
        .await;
    assert_eq!(live.stop().await, 0, "every sample accepted by both");
    let end = now_ms();

    // Both have evaluated past the last stretch's start + 10 s.
    let last_stretch = end - 15_000;
    for (name, url) in [("Prometheus", prom.url()), ("obs", stack.query_url())] {
        wait_for(
            &format!("{name} to evaluate the last stretch"),
            Duration::from_secs(60),
            || {
                let url = url.clone();
                async move {
                    let s = raw(&url, "job:x:sum", now_ms()).await;
                    s.last()
                        .is_some_and(|(t, _)| *t >= last_stretch + 10_000)
                        .then_some(())
                }
            },
        )
        .await
        .unwrap();
    }
    let at = now_ms();
    for rule in ["job:x:sum", "job:x_over_1:count"] {
        let p = raw(&prom.url(), rule, at).await;
        let o = raw(&stack.query_url(), rule, at).await;
        let in_range = |s: &[(i64, f64)]| -> Vec<f64> {
            s.iter()
                .filter(|(t, _)| *t >= start && *t <= end)
                .map(|(_, v)| *v)
                .collect()
        };
        let (pr, or) = (runs(&in_range(&p)), runs(&in_range(&o)));
        assert_eq!(or, pr, "{rule}: obs {o:?}\nPrometheus {p:?}");
        eprintln!(
            "{rule}: the same runs {pr:?} ({} and {} samples)",
            p.len(),
            o.len()
        );
    }
    assert_eq!(
        runs(
            &raw(&prom.url(), "job:x:sum", at)
                .await
                .iter()
                .map(|p| p.1)
                .collect::<Vec<_>>()
        ),
        vec![3.0, 8.0, 11.0, 0.0]
    );

    // The alert: pending, then firing 10 s later, then gone, in both.
    let transitions = |pending: &[(i64, f64)], firing: &[(i64, f64)]| {
        let first_pending = pending.first().map(|p| p.0);
        let first_firing = firing.first().map(|p| p.0);
        let last_firing = firing.last().map(|p| p.0);
        (first_pending, first_firing, last_firing)
    };
    let prom_pending = raw(
        &prom.url(),
        r#"ALERTS{alertname="XHigh",alertstate="pending"}"#,
        at,
    )
    .await;
    let prom_firing = raw(
        &prom.url(),
        r#"ALERTS{alertname="XHigh",alertstate="firing"}"#,
        at,
    )
    .await;
    let ours_pending = raw(
        &stack.query_url(),
        r#"ALERTS{alertname="XHigh",alertstate="pending"}"#,
        at,
    )
    .await;
    let ours_firing = raw(
        &stack.query_url(),
        r#"ALERTS{alertname="XHigh",alertstate="firing"}"#,
        at,
    )
    .await;
    let (pp, pf, pl) = transitions(&prom_pending, &prom_firing);
    let (op, of, ol) = transitions(&ours_pending, &ours_firing);
    let (pp, pf, pl, op, of, ol) = (
        pp.unwrap(),
        pf.unwrap(),
        pl.unwrap(),
        op.unwrap(),
        of.unwrap(),
        ol.unwrap(),
    );
    assert_eq!(pf - pp, 10_000, "Prometheus fires 10 s after pending");
    assert_eq!(
        of - op,
        10_000,
        "obs fires 10 s after pending, as Prometheus"
    );
    // Both went pending in the stretch where the sum first exceeds 5, and stopped firing in
    // the last one.
    let stretch = |t: i64| (t - start) / 15_000;
    assert_eq!(stretch(op), stretch(pp));
    assert_eq!(stretch(ol + 5_000), stretch(pl + 5_000));
    // Resolved: neither has ALERTS after the last stretch began (plus one interval).
    assert!(pl < last_stretch + 5_000 && ol < last_stretch + 5_000);
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Row {
        state: String,
    }
    let states: Vec<Row> = stack
        .db()
        .query("SELECT State FROM obs_alerts FINAL WHERE Rule = 'XHigh' ORDER BY EvaluatedAtMs")
        .fetch_all()
        .await
        .unwrap();
    let states: Vec<&str> = states.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, ["pending", "firing", "resolved"]);
}
