//! ClickHouse stopped for 30 s while logs and metrics flow: the sinks stop consuming (lag
//! grows), nothing is lost or duplicated, and the lag returns to zero after ClickHouse
//! is back.

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

/// Acknowledged log bodies and metric sample timestamps.
#[derive(Default)]
struct Acked {
    logs: Vec<String>,
    samples: Vec<i64>,
}

async fn send_logs(url: &str, start: usize, n: usize) -> Option<Vec<String>> {
    let bodies: Vec<String> = (start..start + n).map(|i| format!("outage-{i}")).collect();
    let t = now_ns();
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| serde_json::json!({"timeUnixNano": t.to_string(), "body": {"stringValue": b}}))
        .collect();
    let body = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "outage"}}]},
        "scopeLogs": [{"logRecords": records}]
    }]});
    let r = http(20).post(url).json(&body).send().await.ok()?;
    r.status().is_success().then_some(bodies)
}

async fn send_samples(url: &str, first_ms: i64, n: i64) -> Option<Vec<i64>> {
    let ts: Vec<i64> = (0..n).map(|i| first_ms + i).collect();
    let body = remote_write::body(&[Series {
        name: "outage_metric",
        labels: vec![("run", "outage".into())],
        samples: ts.iter().map(|&t| (t, t as f64)).collect(),
    }]);
    let (status, _) = remote_write::post(url, body).await;
    (status == 204).then_some(ts)
}

/// The summed lag of `table` from the sink's /metrics, if reported.
fn lag(metrics: &str, table: &str) -> Option<f64> {
    let prefix = format!("obs_sink_consumer_lag{{table=\"{table}\"");
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_outage_of_30s_loses_and_duplicates_nothing() {
    let mut stack = Stack::start().await.unwrap();
    let logs_url = stack.otlp_logs_url();
    let rw_url = format!("{}/api/v1/write", stack.collector_url());
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut next_log, mut next_ms) = (0usize, now_ns() / 1_000_000);
            while !stop.load(Ordering::SeqCst) {
                if let Some(b) = send_logs(&logs_url, next_log, 200).await {
                    acked.lock().await.logs.extend(b);
                }
                next_log += 200;
                if let Some(t) = send_samples(&rw_url, next_ms, 50).await {
                    acked.lock().await.samples.extend(t);
                }
                next_ms += 50;
                // Pacing of the load, not synchronisation.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let db = stack.db();
    wait_for("rows flowing", Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let n: u64 = db
                .query("SELECT count() FROM otel_logs WHERE ServiceName = 'outage'")
                .fetch_one()
                .await
                .ok()?;
            (n > 1000).then_some(())
        }
    })
    .await
    .unwrap();

    stack.clickhouse.stop();
    let outage = std::time::Instant::now();
    // While ClickHouse is down, the sinks hold their offsets: lag (in messages; one per
    // request here) builds up.
    let grown = wait_for(
        "lag to grow during the outage",
        Duration::from_secs(25),
        || {
            let stack = &stack;
            async move {
                let m = stack.sink_metrics().await.ok()?;
                let (l, s) = (lag(&m, "otel_logs")?, lag(&m, "metrics_samples")?);
                (l >= 100.0 && s >= 100.0).then_some((l, s))
            }
        },
    )
    .await;
    let grown = match grown {
        Ok(g) => g,
        Err(e) => {
            let m = stack.sink_metrics().await.unwrap_or_default();
            let lines: Vec<&str> = m.lines().filter(|l| l.contains("lag")).collect();
            panic!("{e}; lag lines: {lines:?}\n{}", stack.obs_log());
        }
    };
    // The outage itself lasts 30 s: this wait is the fault being tested.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    stack.clickhouse.restart().await.unwrap();
    // Load goes on after ClickHouse is back until more records are acknowledged.
    let before = acked.lock().await.logs.len();
    wait_for("load after the restart", Duration::from_secs(60), || {
        let acked = acked.clone();
        async move { (acked.lock().await.logs.len() >= before + 1000).then_some(()) }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();

    let acked = acked.lock().await;
    let (n_logs, n_samples) = (acked.logs.len() as u64, acked.samples.len() as u64);
    assert!(n_logs > 10_000, "only {n_logs} logs acknowledged");
    wait_for(
        "every acknowledged record stored",
        Duration::from_secs(120),
        || {
            let db = db.clone();
            async move {
                let l: u64 = db
                    .query("SELECT count() FROM otel_logs WHERE ServiceName = 'outage'")
                    .fetch_one()
                    .await
                    .ok()?;
                let s: u64 = db
                    .query("SELECT count() FROM metrics_samples WHERE MetricName = 'outage_metric'")
                    .fetch_one()
                    .await
                    .ok()?;
                (l >= n_logs && s >= n_samples).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));
    let (rows, distinct): (u64, u64) = db
        .query("SELECT count(), uniqExact(Body) FROM otel_logs WHERE ServiceName = 'outage'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (rows, distinct),
        (n_logs, n_logs),
        "log rows, distinct bodies"
    );
    let stored: Vec<String> = db
        .query("SELECT Body FROM otel_logs WHERE ServiceName = 'outage'")
        .fetch_all()
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    assert!(acked.logs.iter().all(|b| stored.contains(b)));
    let (rows, distinct): (u64, u64) = db
        .query("SELECT count(), uniqExact(TimestampMs) FROM metrics_samples WHERE MetricName = 'outage_metric'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (rows, distinct),
        (n_samples, n_samples),
        "sample rows, distinct timestamps"
    );

    // The lag recovers.
    wait_for("lag back to zero", Duration::from_secs(60), || {
        let stack = &stack;
        async move {
            let m = stack.sink_metrics().await.ok()?;
            (lag(&m, "otel_logs")? == 0.0 && lag(&m, "metrics_samples")? == 0.0).then_some(())
        }
    })
    .await
    .unwrap();
    eprintln!(
        "outage: {n_logs} logs and {n_samples} samples acknowledged, each stored once; lag during the outage reached {grown:?}"
    );
}
