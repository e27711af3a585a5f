//! Overload: the collector holds at most `collector.max_inflight_bytes` of request bodies.
//! A request past that bound waits, then gets 503 with `Retry-After` (nothing of it read),
//! the refusal is counted, and every acknowledged record is stored exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use obs_e2e::{Stack, http, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVICE: &str = "overload-test";
const BUDGET: usize = 64 * 1024;

/// An OTLP/JSON logs body of `n` records named `{tag}-{i}`, each padded to about 1 KiB.
fn logs(tag: &str, n: usize) -> Vec<u8> {
    let pad = "x".repeat(1000);
    let records: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"body": {"stringValue": format!("{tag}-{i} {pad}")}}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": SERVICE}}]},
        "scopeLogs": [{"logRecords": records}]
    }]}))
    .unwrap()
}

/// A metric's value on the collector's `/metrics` page (summed over its series).
async fn metric(stack: &Stack, name: &str, labels: &str) -> f64 {
    let page = stack.collector_metrics().await.unwrap();
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn post(stack: &Stack, body: Vec<u8>) -> reqwest::Response {
    http(30)
        .post(stack.otlp_logs_url())
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the collector answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_past_the_inflight_budget_get_503_and_every_acknowledged_record_is_stored() {
    let budget = BUDGET.to_string();
    let stack = Stack::start_with(&[("OBS_COLLECTOR__MAX_INFLIGHT_BYTES", budget.as_str())])
        .await
        .unwrap();

    // A slow client holds most of the budget: headers sent, body not yet.
    let held = logs("held", 48);
    assert!(held.len() > BUDGET * 3 / 4 && held.len() < BUDGET);
    let addr = stack
        .otlp_logs_url()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        held.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&held[..100]).await.unwrap();
    wait_for(
        "the slow request to hold its share",
        Duration::from_secs(30),
        || async {
            (metric(&stack, "obs_collector_inflight_bytes", "").await >= held.len() as f64)
                .then_some(())
        },
    )
    .await
    .unwrap();

    // A request that does not fit waits for room, then is refused with Retry-After.
    let refused = post(&stack, logs("refused", 20)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let text = refused.text().await.unwrap();
    assert!(text.contains("max_inflight_bytes"), "{text}");
    assert_eq!(
        metric(
            &stack,
            "obs_collector_rejected_total",
            "reason=\"overloaded\""
        )
        .await,
        1.0
    );

    // The slow client finishes and is acknowledged; the refused request, sent again, fits.
    slow.write_all(&held[100..]).await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(post(&stack, logs("refused", 20)).await.status(), 200);
    assert_eq!(
        metric(&stack, "obs_collector_inflight_bytes", "").await,
        0.0
    );

    // Many senders at once against the small budget: every request is acknowledged or
    // refused with 503 (then sent again), never anything else.
    let (senders, per_sender, records) = (12, 10, 20);
    let refusals = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let (url, refusals) = (stack.otlp_logs_url(), refusals.clone());
            tokio::spawn(async move {
                let client = http(30);
                for r in 0..per_sender {
                    let body = logs(&format!("flood-{s}-{r}"), records);
                    loop {
                        let resp = client
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .expect("the collector answers");
                        match resp.status().as_u16() {
                            200 => break,
                            503 => {
                                assert_eq!(resp.headers()["retry-after"], "5");
                                // Sent again at once: the collector already held it
                                // for its admission wait before refusing.
                                refusals.fetch_add(1, Ordering::Relaxed);
                            }
                            other => panic!("unexpected {other}: {}", resp.text().await.unwrap()),
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let expected = 48 + 20 + senders * per_sender * records;
    eprintln!(
        "flood: {} requests refused and sent again",
        refusals.load(Ordering::Relaxed)
    );

    // Every acknowledged record is stored, once; nothing of a refused request is.
    let db = stack.db();
    let sql =
        format!("SELECT count(), uniqExact(Body) FROM otel_logs WHERE ServiceName = '{SERVICE}'");
    let stored: (u64, u64) = wait_for(
        "every acknowledged record stored",
        Duration::from_secs(120),
        || {
            let (db, sql) = (db.clone(), sql.clone());
            async move {
                let got: (u64, u64) = db.query(&sql).fetch_one().await.ok()?;
                (got.0 >= expected as u64).then_some(got)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(stored, (expected as u64, expected as u64));
}
