//! The broker stopped while logs and metrics flow: clients get 503 with Retry-After, never
//! a 2xx for a record the broker did not take, and every answer comes within the produce
//! timeout and its grace; after the broker returns, every acknowledged log record and
//! sample is stored exactly once.

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
    /// Answers that took longer than [`ANSWER_WITHIN`]: which request, when it was sent
    /// (relative to the start of the load), how long it took, and the answer.
    slow: Vec<String>,
    /// The longest a request waited for its answer.
    slowest: Duration,
}

/// The produce timeout this test configures (ms).
const PRODUCE_TIMEOUT_MS: u64 = 3_000;

/// How soon every request must be answered, the broker up or not: the produce timeout, the
/// publisher's 2 s of grace (`kafka::DELIVERY_GRACE`), up to 1 s of admission wait and
/// 0.5 s for room in the producer's queue, and 3.5 s of slack for a loaded machine. Before
/// the grace was enforced, requests in flight when the broker stopped were answered after
/// 8–11 s (librdkafka holds messages in flight past their timeout), and after more than
/// 30 s when a sink's offset commit, waiting for the broker, held an async worker thread.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn broker_stopped_mid_load_acknowledges_only_what_is_stored() {
    let mut stack = Stack::start_with(&[(
        "OBS_KAFKA__PRODUCE_TIMEOUT_MS",
        &PRODUCE_TIMEOUT_MS.to_string(),
    )])
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
            let load_started = std::time::Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let bodies: Vec<String> = (0..20).map(|i| format!("bo-{n}-{i}")).collect();
                let records: Vec<serde_json::Value> = bodies
                    .iter()
                    .map(|b| serde_json::json!({"timeUnixNano": now_ns().to_string(), "body": {"stringValue": b}}))
                    .collect();
                let body = serde_json::json!({"resourceLogs": [{
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "broker-outage"}}]},
                    "scopeLogs": [{"logRecords": records}]}]});
                let sent = std::time::Instant::now();
                let r = client.post(&logs_url).json(&body).send().await;
                let logs_took = sent.elapsed();
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
                let rw_took = sent.elapsed() - logs_took;
                let mut o = out.lock().await;
                o.slowest = o.slowest.max(logs_took).max(rw_took);
                let rw_sent = sent + logs_took;
                for (which, sent, took, r) in [
                    ("logs", sent, logs_took, &r),
                    ("remote write", rw_sent, rw_took, &rw),
                ] {
                    if took > ANSWER_WITHIN {
                        let answer = match r {
                            Ok(resp) => resp.status().to_string(),
                            Err(e) => format!("{e:?}"),
                        };
                        let at = sent - load_started;
                        o.slow.push(format!(
                            "{which} sent at {at:?} answered after {took:?}: {answer}"
                        ));
                    }
                }
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
        o.slow.is_empty(),
        "answers must come within {ANSWER_WITHIN:?} (produce timeout {PRODUCE_TIMEOUT_MS} ms): {:?}\n{}",
        o.slow,
        stack.obs_log()
    );
    assert!(
        o.other.is_empty(),
        "only 2xx or 503 expected, got {:?}\n{}",
        o.other,
        stack.obs_log()
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
        "broker outage: {logs} logs and {samples} samples acknowledged and stored once; {} requests refused with 503; the slowest answer took {:?}",
        o.refused, o.slowest
    );
}
