//! Exemplars are stored and answered as Prometheus answers them: the same remote-write
//! request (two counters, exemplars carrying trace and span ids) goes to the pipeline and to
//! a Prometheus 2.42 with exemplar storage, and `/api/v1/query_exemplars` must give the same
//! answer for plain, range, aggregated, multi-selector and non-matching queries, values
//! written digit for digit as Prometheus writes them.

use obs_e2e::Stack;
use obs_e2e::prometheus::Prometheus;
use obs_e2e::remote_write::post;
use obs_producers::remote_write::proto::{Exemplar, Label, Sample, TimeSeries, WriteRequest};
use prost::Message;

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

/// `checkout_requests_total{code}` every 15 s for 5 minutes before `now_ms`, an exemplar on
/// every other sample (trace `t<code><i>`, span `s<i>`), and a gauge without exemplars.
// A tie is written out exactly: its last digits are the point.
#[allow(clippy::excessive_precision)]
fn request(now_ms: i64) -> Vec<u8> {
    let start = now_ms - 300_000;
    let series = |code: &str, per_step: f64| {
        let times: Vec<i64> = (0..20).map(|i| start + i * 15_000).collect();
        TimeSeries {
            labels: vec![
                label("__name__", "checkout_requests_total"),
                label("code", code),
                label("job", "checkout"),
            ],
            samples: times
                .iter()
                .enumerate()
                .map(|(i, &t)| Sample {
                    value: per_step * i as f64,
                    timestamp: t,
                })
                .collect(),
            exemplars: times
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(i, &t)| Exemplar {
                    labels: vec![
                        label("trace_id", &format!("{:032x}", 0xabc0 + i)),
                        label("span_id", &format!("{:016x}", i + 1)),
                    ],
                    value: per_step,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        }
    };
    let gauge = TimeSeries {
        labels: vec![
            label("__name__", "checkout_queue_depth"),
            label("job", "checkout"),
        ],
        samples: vec![Sample {
            value: 3.0,
            timestamp: now_ms - 1000,
        }],
        ..Default::default()
    };
    let req = WriteRequest {
        // Exemplar values from 1e21, under 1e-6 and half-way between two shortest
        // decimals, to be written as Prometheus writes them.
        timeseries: vec![
            series("200", 5.0),
            series("500", 1.0),
            series("502", 1e21),
            series("503", 1.5e-7),
            series("504", 2115347345748811.25),
            gauge,
        ],
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

async fn exemplars(base: &str, query: &str, start: f64, end: f64) -> serde_json::Value {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/query_exemplars"))
        .form(&[
            ("query", query.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "success", "{base}: {query}: {answer}");
    let mut data = answer["data"].as_array().cloned().unwrap_or_default();
    // Prometheus lists series in no fixed order.
    data.sort_by_key(|s| s["seriesLabels"].to_string());
    serde_json::Value::Array(data)
}

#[tokio::test(flavor = "multi_thread")]
async fn exemplars_are_answered_as_prometheus_answers_them() {
    let stack = Stack::start().await.unwrap();
    let prom = Prometheus::start_with_args(
        stack.dir(),
        "prom-exemplars",
        "global: {scrape_interval: 1h}\n",
        &stack.dir().join("prom-data"),
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=exemplar-storage",
        ],
    )
    .await
    .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let body = request(now_ms);
    for url in [
        format!("{}/api/v1/write", stack.collector_url()),
        format!("{}/api/v1/write", prom.url()),
    ] {
        let (status, text) = post(&url, body.clone()).await;
        assert!((200..300).contains(&status), "{url}: {status} {text}");
    }
    let (start, end) = ((now_ms - 600_000) as f64 / 1000.0, now_ms as f64 / 1000.0);
    let queries = [
        "checkout_requests_total",
        r#"rate(checkout_requests_total{code="500"}[5m])"#,
        "sum by (code) (rate(checkout_requests_total[1m]))",
        "checkout_requests_total / ignoring(code) group_left checkout_queue_depth",
        "checkout_queue_depth",
        "no_such_metric",
    ];
    // The pipeline stores asynchronously: wait until its first answer is complete.
    let want = exemplars(&prom.url(), queries[0], start, end).await;
    let n: usize = want
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["exemplars"].as_array().unwrap().len())
        .sum();
    assert_eq!(n, 50, "Prometheus keeps 10 exemplars per series: {want}");
    obs_e2e::wait_for(
        "the exemplars to be stored",
        std::time::Duration::from_secs(60),
        || {
            let (url, want) = (stack.query_url(), want.clone());
            async move { (exemplars(&url, queries[0], start, end).await == want).then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!("{e}\n{}", stack.obs_log());
    });
    for q in queries {
        let ours = exemplars(&stack.query_url(), q, start, end).await;
        let theirs = exemplars(&prom.url(), q, start, end).await;
        assert_eq!(ours, theirs, "{q}");
    }
    // A window that holds only the last exemplar of each series (30 s before now).
    let late = (now_ms - 40_000) as f64 / 1000.0;
    let ours = exemplars(&stack.query_url(), queries[0], late, end).await;
    assert_eq!(ours, exemplars(&prom.url(), queries[0], late, end).await);
    assert_eq!(ours.as_array().unwrap().len(), 5, "{ours}");
}
