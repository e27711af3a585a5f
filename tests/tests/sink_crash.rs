//! The sink killed again and again while logs, spans and metrics flow — with SIGKILL at
//! random moments, and by aborting right after an insert before its offset commit (the
//! worst moment) — afterwards every record the collectors acknowledged is in ClickHouse
//! exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::remote_write::{self, Series};
use obs_e2e::{Stack, http, wait_for};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const PER_REQUEST: u64 = 50;
const SPANS_PER_REQUEST: u64 = 20;
const SERIES: u64 = 3;
const SAMPLES_PER_SERIES: u64 = 5;
const KILLS: usize = 20;
const CRASHES_AFTER_INSERT: usize = 8;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

/// Requests from three services (so several partitions), `PER_REQUEST` records each.
fn request(run: &str, request_no: u64) -> Vec<u8> {
    let service = format!("svc-{}", request_no % 3);
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..PER_REQUEST)
                    .map(|i| LogRecord {
                        time_unix_nano: now_ns(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("crash test".into())),
                        }),
                        attributes: vec![
                            kv("run", run.into()),
                            kv("seq", (request_no * PER_REQUEST + i).to_string()),
                        ],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// `SPANS_PER_REQUEST` spans in traces of 4 spans; ids unique per run and request.
fn spans_request(run_no: u64, request_no: u64) -> Vec<u8> {
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| {
            let n = request_no * SPANS_PER_REQUEST + i;
            let mut trace_id = run_no.to_be_bytes().to_vec();
            trace_id.extend((n / 4).to_be_bytes());
            let start = now_ns();
            Span {
                trace_id,
                span_id: (n + 1).to_be_bytes().to_vec(),
                name: "crash-span".into(),
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1000,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "crash-svc".into())],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// `SERIES` series with `SAMPLES_PER_SERIES` new samples each (ascending timestamps).
fn metrics_request(run: &str, base_ms: i64, request_no: u64) -> Vec<u8> {
    let series: Vec<Series> = (0..SERIES)
        .map(|s| Series {
            name: "crash_metric",
            labels: vec![("run", run.to_string()), ("s", s.to_string())],
            samples: (0..SAMPLES_PER_SERIES)
                .map(|j| {
                    (
                        base_ms + (request_no * SAMPLES_PER_SERIES + j) as i64,
                        j as f64,
                    )
                })
                .collect(),
        })
        .collect();
    remote_write::body(&series)
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_killed_at_random_points_stores_every_acknowledged_record_once() {
    let mut stack = Stack::start_with_separate_sink(&[("OBS_SINK__BATCH_MAX_WAIT_MS", "100")])
        .await
        .unwrap();
    let run = format!("crash-{}", now_ns());
    let run_no = now_ns();
    let url = stack.otlp_logs_url();
    let traces_url = url.replace("/v1/logs", "/v1/traces");
    let rw_url = format!("{}/api/v1/write", stack.collector_url());
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let spans_acked = Arc::new(AtomicU64::new(0));
    let samples_acked = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, acknowledged, run) = (stop.clone(), acknowledged.clone(), run.clone());
        let (spans_acked, samples_acked) = (spans_acked.clone(), samples_acked.clone());
        tokio::spawn(async move {
            let client = http(60);
            let base_ms = (now_ns() / 1_000_000) as i64;
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let resp = client
                    .post(&url)
                    .header("Content-Type", "application/x-protobuf")
                    .body(request(&run, n))
                    .send()
                    .await
                    .expect("collector reachable");
                assert_eq!(
                    resp.status(),
                    200,
                    "the collector does not depend on the sink"
                );
                acknowledged.fetch_add(PER_REQUEST, Ordering::SeqCst);
                let resp = client
                    .post(&traces_url)
                    .header("Content-Type", "application/x-protobuf")
                    .body(spans_request(run_no, n))
                    .send()
                    .await
                    .expect("collector reachable");
                assert_eq!(resp.status(), 200);
                spans_acked.fetch_add(SPANS_PER_REQUEST, Ordering::SeqCst);
                let resp = client
                    .post(&rw_url)
                    .header("Content-Type", "application/x-protobuf")
                    .header("Content-Encoding", "snappy")
                    .body(metrics_request(&run, base_ms, n))
                    .send()
                    .await
                    .expect("collector reachable");
                assert_eq!(resp.status(), 204);
                samples_acked.fetch_add(SERIES * SAMPLES_PER_SERIES, Ordering::SeqCst);
                n += 1;
                // Pacing of the load, not synchronisation.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Kill at pseudo-random moments between 0.2 and 2 s after the sink became ready.
    let mut seed = now_ns();
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..KILLS {
        // The random kill moment is the fault being tested.
        tokio::time::sleep(Duration::from_millis(200 + next(1800))).await;
        stack.kill_sink();
        stack.start_sink().await.unwrap();
    }
    // Now crash exactly between insert and commit, again and again.
    for _ in 0..CRASHES_AFTER_INSERT {
        stack.kill_sink();
        // It may crash before its readiness is seen; the wait below is what counts.
        let after = (1 + next(3)).to_string();
        let _ = stack
            .start_sink_with(&[("OBS_SINK_CRASH_AFTER_INSERTS", &after)])
            .await;
        wait_for(
            "the sink to crash after an insert",
            Duration::from_secs(120),
            || {
                let exited = stack.sink_exited();
                async move { exited.then_some(()) }
            },
        )
        .await
        .unwrap();
    }
    stack.kill_sink();
    stack.start_sink().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();
    let sent = acknowledged.load(Ordering::SeqCst);
    assert!(sent >= 20 * PER_REQUEST, "only {sent} records were sent");

    let db = stack.db();
    let filter = format!("LogAttributes['run'] = '{run}'");
    let stored = wait_for(
        &format!("{sent} records stored"),
        Duration::from_secs(120),
        || {
            let (db, filter) = (db.clone(), filter.clone());
            async move {
                let n: u64 = db
                    .query(&format!("SELECT count() FROM otel_logs WHERE {filter}"))
                    .fetch_one()
                    .await
                    .ok()?;
                (n >= sent).then_some(n)
            }
        },
    )
    .await;
    let stored = match stored {
        Ok(n) => n,
        Err(e) => panic!("{e}\n{}", diagnose(&stack).await),
    };
    let distinct: u64 = db
        .query(&format!(
            "SELECT uniqExact(LogAttributes['seq']) FROM otel_logs WHERE {filter}"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (stored, distinct),
        (sent, sent),
        "every acknowledged log record exactly once"
    );

    // Spans: one row per acknowledged span id.
    let spans = spans_acked.load(Ordering::SeqCst);
    let trace_prefix = hex_prefix(run_no);
    let span_filter = format!("startsWith(TraceId, '{trace_prefix}')");
    let stored = wait_for(
        &format!("{spans} spans stored"),
        Duration::from_secs(120),
        || {
            let (db, f) = (db.clone(), span_filter.clone());
            async move {
                let n: u64 = db
                    .query(&format!("SELECT count() FROM otel_traces WHERE {f}"))
                    .fetch_one()
                    .await
                    .ok()?;
                (n >= spans).then_some(n)
            }
        },
    )
    .await;
    let stored = match stored {
        Ok(n) => n,
        Err(e) => {
            let n: u64 = db
                .query(&format!(
                    "SELECT count() FROM otel_traces WHERE {span_filter}"
                ))
                .fetch_one()
                .await
                .unwrap_or(0);
            let m = stack.sink_metrics().await.unwrap_or_default();
            let lag: Vec<&str> = m.lines().filter(|l| l.contains("consumer_lag")).collect();
            panic!("{e}: {n} stored; lag {lag:?}\n{}", stack.sink_log());
        }
    };
    let distinct: u64 = db
        .query(&format!(
            "SELECT uniqExact(SpanId) FROM otel_traces WHERE {span_filter}"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (stored, distinct),
        (spans, spans),
        "every span exactly once"
    );

    // Samples: one row per acknowledged (series, timestamp).
    let samples = samples_acked.load(Ordering::SeqCst);
    let sample_filter = format!(
        "MetricName = 'crash_metric' AND Fingerprint IN (SELECT Fingerprint FROM metrics_series WHERE Labels['run'] = '{run}')"
    );
    let stored = wait_for(
        &format!("{samples} samples stored"),
        Duration::from_secs(120),
        || {
            let (db, f) = (db.clone(), sample_filter.clone());
            async move {
                let n: u64 = db
                    .query(&format!("SELECT count() FROM metrics_samples WHERE {f}"))
                    .fetch_one()
                    .await
                    .ok()?;
                (n >= samples).then_some(n)
            }
        },
    )
    .await
    .unwrap();
    let distinct: u64 = db
        .query(&format!(
            "SELECT uniqExact(Fingerprint, TimestampMs) FROM metrics_samples WHERE {sample_filter}"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (stored, distinct),
        (samples, samples),
        "every sample exactly once"
    );
    eprintln!(
        "crash test: {sent} logs, {spans} spans, {samples} samples acknowledged; each stored once"
    );
}

/// The hex of the first 8 bytes of this run's trace ids.
fn hex_prefix(run_no: u64) -> String {
    run_no
        .to_be_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Lag per table and partition, and the sink's log, for a failure message.
async fn diagnose(stack: &Stack) -> String {
    let m = stack.sink_metrics().await.unwrap_or_default();
    let lag: Vec<&str> = m.lines().filter(|l| l.contains("consumer_lag")).collect();
    format!("lag: {lag:#?}\n{}", stack.sink_log())
}
