//! The broker stopped while logs and metrics flow: clients get 503 with Retry-After, never
//! a 2xx for a record the broker did not take; after it returns, every acknowledged log
//! record and sample is stored exactly once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::remote_write::{self, Series};
use obs_e2e::{Stack, http, wait_for};
use tokio::sync::Mutex;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[derive(Default)]
struct Outcomes {
    acked_logs: Vec<String>,
    acked_samples: Vec<i64>,
    refused: usize,
    /// Answers that were neither 2xx nor 503: the status, or the client's error.
    other: Vec<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_stopped_mid_load_acknowledges_only_what_is_stored() {
    let mut stack = Stack::start_with(&[("OBS_KAFKA__PRODUCE_TIMEOUT_MS", "3000")])
        .await
        .unwrap();
    let logs_url = stack.otlp_logs_url();
    let rw_url = format!("{}/api/v1/write", stack.collector_url());
    let out = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (out, stop) = (out.clone(), stop.clone());
        tokio::spawn(async move {
            let client = http(30);
            let (mut n, base_ms) = (0i64, now_ns() / 1_000_000 - 60_000);
            while !stop.load(Ordering::SeqCst) {
                let bodies: Vec<String> = (0..20).map(|i| format!("bo-{n}-{i}")).collect();
                let records: Vec<serde_json::Value> = bodies
                    .iter()
                    .map(|b| serde_json::json!({"timeUnixNano": now_ns().to_string(), "body": {"stringValue": b}}))
                    .collect();
                let body = serde_json::json!({"resourceLogs": [{
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "broker-outage"}}]},
                    "scopeLogs": [{"logRecords": records}]}]});
                let r = client.post(&logs_url).json(&body).send().await;
                let ts: Vec<i64> = (0..10).map(|j| base_ms + n * 10 + j).collect();
                let rw_body = remote_write::body(&[Series {
                    name: "broker_outage_metric",
                    labels: vec![],
                    samples: ts.iter().map(|&t| (t, 1.0)).collect(),
                }]);
                let rw = client
                    .post(&rw_url)
                    .header("Content-Type", "application/x-protobuf")
                    .header("Content-Encoding", "snappy")
                    .body(rw_body)
                    .send()
                    .await;
                let mut o = out.lock().await;
                for (resp, acked) in [(r, true), (rw, false)] {
                    match resp {
                        Ok(resp) if resp.status().is_success() => {
                            if acked {
                                o.acked_logs.extend(bodies.iter().cloned());
                            } else {
                                o.acked_samples.extend(ts.iter().copied());
                            }
                        }
                        Ok(resp) if resp.status() == 503 => {
                            assert_eq!(resp.headers()["retry-after"], "5");
                            o.refused += 1;
                        }
                        Ok(resp) => o.other.push(resp.status().to_string()),
                        Err(e) => o.other.push(format!("{e:?}")),
                    }
                }
                drop(o);
                n += 1;
                // Pacing of the load, not synchronisation.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Load flows (and is acknowledged) before the broker goes away.
    wait_for("acknowledged load", Duration::from_secs(60), || {
        let out = out.clone();
        async move { (out.lock().await.acked_logs.len() >= 200).then_some(()) }
    })
    .await
    .unwrap();
    stack.broker.stop();
    // Refusals must come while the broker is down.
    wait_for(
        "503s while the broker is down",
        Duration::from_secs(60),
        || {
            let out = out.clone();
            async move { (out.lock().await.refused >= 2).then_some(()) }
        },
    )
    .await
    .unwrap();
    stack.broker.restart().await.unwrap();
    // Load goes on until the collector acknowledges again.
    let acked_before = out.lock().await.acked_logs.len();
    wait_for(
        "acknowledgements after the restart",
        Duration::from_secs(90),
        || {
            let out = out.clone();
            async move { (out.lock().await.acked_logs.len() > acked_before + 100).then_some(()) }
        },
    )
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();

    let o = out.lock().await;
    assert!(
        o.other.is_empty(),
        "only 2xx or 503 expected, got {:?}",
        o.other
    );
    let (logs, samples) = (o.acked_logs.len() as u64, o.acked_samples.len() as u64);
    let db = stack.db();
    wait_for("every acknowledged record stored", Duration::from_secs(120), || {
        let db = db.clone();
        async move {
            let l: u64 = db.query("SELECT count() FROM otel_logs WHERE ServiceName = 'broker-outage'").fetch_one().await.ok()?;
            let s: u64 = db.query("SELECT count() FROM metrics_samples WHERE MetricName = 'broker_outage_metric'").fetch_one().await.ok()?;
            (l >= logs && s >= samples).then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));
    // Every acknowledged record exactly once (refused ones may be absent or, if the broker
    // took them before failing to answer, present once).
    let stored: Vec<(String, u64)> = db
        .query(
            "SELECT Body, count() FROM otel_logs WHERE ServiceName = 'broker-outage' GROUP BY Body",
        )
        .fetch_all()
        .await
        .unwrap();
    assert!(
        stored.iter().all(|(_, c)| *c == 1),
        "a log record stored twice"
    );
    let stored: HashSet<String> = stored.into_iter().map(|(b, _)| b).collect();
    assert!(
        o.acked_logs.iter().all(|b| stored.contains(b)),
        "an acknowledged log record is missing"
    );
    let samples_stored: Vec<(i64, u64)> = db
        .query("SELECT TimestampMs, count() FROM metrics_samples WHERE MetricName = 'broker_outage_metric' GROUP BY TimestampMs")
        .fetch_all()
        .await
        .unwrap();
    assert!(
        samples_stored.iter().all(|(_, c)| *c == 1),
        "a sample stored twice"
    );
    let samples_stored: HashSet<i64> = samples_stored.into_iter().map(|(t, _)| t).collect();
    assert!(
        o.acked_samples.iter().all(|t| samples_stored.contains(t)),
        "an acknowledged sample is missing"
    );
    eprintln!(
        "broker outage: {logs} logs and {samples} samples acknowledged and stored once; {} requests refused with 503",
        o.refused
    );
}
