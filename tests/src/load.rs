//! Continuous, identifiable load for fault tests: OTLP logs, OTLP spans and remote-write
//! samples sent in a loop, every record carrying an id, and afterwards the check that every
//! acknowledged record is stored exactly once.
//!
//! Ids: request `n` of a run carries log records `seq = n * LOGS + i`, spans with span id
//! `n * SPANS + i + 1` in traces whose id starts with the run number, and samples at
//! `base_ms + n * SAMPLES + j` on each of `SERIES` series labelled with the run. A request
//! that failed or was not answered may or may not have been stored; one that was
//! acknowledged must be stored once, and nothing may be stored twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::remote_write::{self, Series};
use crate::{Stack, http, wait_for};

/// Log records per request.
pub const LOGS: u64 = 50;
/// Spans per request (traces of 4 spans).
pub const SPANS: u64 = 20;
/// Series per remote-write request.
pub const SERIES: u64 = 3;
/// Samples per series per request.
pub const SAMPLES: u64 = 5;

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
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

/// Request `n` of logs: from three services in turn (so several partitions).
pub fn logs_request(run: &str, n: u64) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", format!("svc-{}", n % 3))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..LOGS)
                    .map(|i| LogRecord {
                        time_unix_nano: now_ns(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("load".into())),
                        }),
                        attributes: vec![
                            kv("run", run.into()),
                            kv("seq", (n * LOGS + i).to_string()),
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

/// Request `n` of spans: trace ids start with `run_no`, span ids are unique in the run.
/// Each trace is 4 `load-svc` spans in a chain: a root server span (a request from the
/// `user` virtual node), a client span calling a server span (a `load-svc` → `load-svc`
/// request), and an internal span.
pub fn spans_request(run_no: u64, n: u64) -> Vec<u8> {
    let spans = (0..SPANS)
        .map(|i| {
            let id = n * SPANS + i;
            let mut trace_id = run_no.to_be_bytes().to_vec();
            trace_id.extend((id / 4).to_be_bytes());
            let start = now_ns();
            let kind = [SpanKind::Server, SpanKind::Client, SpanKind::Server][..]
                .get((id % 4) as usize)
                .copied()
                .unwrap_or(SpanKind::Internal);
            Span {
                trace_id,
                span_id: (id + 1).to_be_bytes().to_vec(),
                // The previous span of the trace (its id is `id`).
                parent_span_id: if id.is_multiple_of(4) {
                    Vec::new()
                } else {
                    id.to_be_bytes().to_vec()
                },
                kind: kind as i32,
                name: "load-span".into(),
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1000,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "load-svc".into())],
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

/// Request `n` of samples: `SAMPLES` new (ascending) samples on each of `SERIES` series.
pub fn metrics_request(run: &str, base_ms: i64, n: u64) -> Vec<u8> {
    let series: Vec<Series> = (0..SERIES)
        .map(|s| Series {
            name: "load_metric",
            labels: vec![("run", run.to_string()), ("s", s.to_string())],
            samples: (0..SAMPLES)
                .map(|j| (base_ms + (n * SAMPLES + j) as i64, j as f64))
                .collect(),
        })
        .collect();
    remote_write::body(&series)
}

/// Where one collector listens: its OTLP/HTTP base URL and its main listener's base URL.
#[derive(Debug, Clone)]
pub struct Collector {
    /// OTLP/HTTP listener, without a path (`http://127.0.0.1:4318`).
    pub otlp_http: String,
    /// Main listener (remote write), without a path.
    pub main: String,
}

/// Which requests of each kind were acknowledged, and how many were tried.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    /// Request numbers whose logs were acknowledged (200).
    pub logs: BTreeSet<u64>,
    /// Request numbers whose spans were acknowledged (200).
    pub spans: BTreeSet<u64>,
    /// Request numbers whose samples were acknowledged (204).
    pub samples: BTreeSet<u64>,
    /// Requests tried (of each kind).
    pub tried: u64,
    /// Requests that failed or were refused, with the first few reasons.
    pub failures: u64,
    /// Up to 10 failure reasons.
    pub reasons: Vec<String>,
}

/// What makes one load's records identifiable.
#[derive(Debug, Clone)]
pub struct Ids {
    /// This run's label value (`run` attribute and label).
    pub run: String,
    /// This run's trace-id prefix.
    pub run_no: u64,
    /// Timestamp of request 0's first sample (ms).
    pub base_ms: i64,
}

/// A running load: requests go on until [`Load::stop`].
pub struct Load {
    /// The ids of its records.
    pub ids: Ids,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Sent>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts sending to the stack's collector, one request of each kind every `pace`.
    pub fn start(stack: &Stack, pace: Duration) -> Load {
        let target = Collector {
            otlp_http: stack.otlp_logs_url().replace("/v1/logs", ""),
            main: stack.collector_url(),
        };
        Load::start_to(vec![target], pace)
    }

    /// Starts sending to several collectors in turn, as a round-robin load balancer does:
    /// round `n`'s requests go to `collectors[n % len]`. A request a collector does not
    /// answer is not sent again elsewhere (it may or may not be stored).
    pub fn start_to(collectors: Vec<Collector>, pace: Duration) -> Load {
        let run_no = now_ns();
        let run = format!("load-{run_no}");
        let base_ms = (run_no / 1_000_000) as i64;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Sent::default()));
        let task = {
            let (stop, sent, run) = (stop.clone(), sent.clone(), run.clone());
            tokio::spawn(async move {
                let client = http(30);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let target = &collectors[(n % collectors.len() as u64) as usize];
                    let logs_url = format!("{}/v1/logs", target.otlp_http);
                    let spans_url = format!("{}/v1/traces", target.otlp_http);
                    let rw_url = format!("{}/api/v1/write", target.main);
                    let kinds = [
                        (&logs_url, logs_request(&run, n), None, 200u16),
                        (&spans_url, spans_request(run_no, n), None, 200),
                        (
                            &rw_url,
                            metrics_request(&run, base_ms, n),
                            Some("snappy"),
                            204,
                        ),
                    ];
                    for (k, (url, body, encoding, ok)) in kinds.into_iter().enumerate() {
                        let mut req = client
                            .post(url.as_str())
                            .header("Content-Type", "application/x-protobuf")
                            .body(body);
                        if let Some(e) = encoding {
                            req = req.header("Content-Encoding", e);
                        }
                        let outcome = match req.send().await {
                            Ok(r) if r.status().as_u16() == ok => Ok(()),
                            Ok(r) => Err(format!("{url}: {}", r.status())),
                            Err(e) => Err(format!("{url}: {e}")),
                        };
                        let mut guard = sent.lock().expect("sent lock");
                        let s = &mut *guard;
                        match outcome {
                            Ok(()) => {
                                [&mut s.logs, &mut s.spans, &mut s.samples][k].insert(n);
                            }
                            Err(reason) => {
                                s.failures += 1;
                                if s.reasons.len() < 10 {
                                    s.reasons.push(reason);
                                }
                            }
                        }
                    }
                    sent.lock().expect("sent lock").tried = n + 1;
                    n += 1;
                    // Pacing of the load, not synchronisation.
                    tokio::time::sleep(pace).await;
                }
            })
        };
        Load {
            ids: Ids {
                run,
                run_no,
                base_ms,
            },
            stop,
            sent,
            task,
        }
    }

    /// What was acknowledged so far.
    pub fn sent(&self) -> Sent {
        self.sent.lock().expect("sent lock").clone()
    }

    /// Stops sending and returns what was acknowledged.
    pub async fn stop(self) -> Sent {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("load task");
        self.sent.lock().expect("sent lock").clone()
    }
}

/// How many times each id of one kind is stored.
async fn stored_counts(stack: &Stack, sql: &str) -> BTreeMap<u64, u64> {
    let rows: Vec<(u64, u64)> = stack
        .db()
        .query(sql)
        .fetch_all()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter().collect()
}

/// Checks one kind: every id of an acknowledged request stored exactly once, no id stored
/// twice, no id stored that no request carried. `ids` lists the ids request `n` carries.
fn check_kind(
    what: &str,
    stored: &BTreeMap<u64, u64>,
    acked: &BTreeSet<u64>,
    tried: u64,
    ids: impl Fn(u64) -> Vec<u64>,
) -> Result<u64, String> {
    let twice: Vec<_> = stored.iter().filter(|(_, c)| **c > 1).take(5).collect();
    if !twice.is_empty() {
        return Err(format!(
            "{what}: stored more than once (id, times): {twice:?}"
        ));
    }
    let expected: Vec<u64> = acked.iter().flat_map(|&n| ids(n)).collect();
    let missing: Vec<u64> = expected
        .iter()
        .filter(|id| !stored.contains_key(id))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{what}: {} of {} acknowledged records missing, e.g. {:?}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    let all: BTreeSet<u64> = (0..tried.max(1) + 1).flat_map(&ids).collect();
    let strange: Vec<_> = stored
        .keys()
        .filter(|id| !all.contains(id))
        .take(5)
        .collect();
    if !strange.is_empty() {
        return Err(format!(
            "{what}: stored ids no request carried: {strange:?}"
        ));
    }
    Ok(expected.len() as u64)
}

/// Waits until every acknowledged record is stored (up to `timeout`), then checks that each
/// is stored exactly once and nothing twice. Returns (logs, spans, samples) acknowledged.
pub async fn verify_exactly_once(
    stack: &Stack,
    ids: &Ids,
    sent: &Sent,
    timeout: Duration,
) -> Result<(u64, u64, u64), String> {
    let Ids {
        run,
        run_no,
        base_ms,
    } = ids;
    let logs_sql = format!(
        "SELECT toUInt64(LogAttributes['seq']) AS id, count() FROM otel_logs \
         WHERE LogAttributes['run'] = '{run}' GROUP BY id"
    );
    let prefix: String = run_no
        .to_be_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let spans_sql = format!(
        "SELECT toUInt64(reinterpretAsUInt64(reverse(unhex(SpanId))) - 1) AS id, count() FROM otel_traces \
         WHERE startsWith(TraceId, '{prefix}') GROUP BY id"
    );
    // A sample's id: its series number * 10^12 + its timestamp's offset from the base.
    let samples_sql = format!(
        "SELECT toUInt64(s.n * 1000000000000 + (m.TimestampMs - {base_ms})) AS id, count() \
         FROM metrics_samples AS m INNER JOIN (SELECT Fingerprint, toUInt64(any(Labels['s'])) AS n \
         FROM metrics_series WHERE Labels['run'] = '{run}' GROUP BY Fingerprint) AS s \
         ON m.Fingerprint = s.Fingerprint WHERE m.MetricName = 'load_metric' GROUP BY id"
    );
    let tried = sent.tried;
    let log_ids = |n: u64| (0..LOGS).map(|i| n * LOGS + i).collect::<Vec<_>>();
    let span_ids = |n: u64| (0..SPANS).map(|i| n * SPANS + i).collect::<Vec<_>>();
    let sample_ids = |n: u64| {
        (0..SERIES)
            .flat_map(|s| (0..SAMPLES).map(move |j| s * 1_000_000_000_000 + n * SAMPLES + j))
            .collect::<Vec<_>>()
    };
    let mut last;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let logs = stored_counts(stack, &logs_sql).await;
        let spans = stored_counts(stack, &spans_sql).await;
        let samples = stored_counts(stack, &samples_sql).await;
        let verdict = check_kind("logs", &logs, &sent.logs, tried, log_ids).and_then(|l| {
            let s = check_kind("spans", &spans, &sent.spans, tried, span_ids)?;
            let m = check_kind("samples", &samples, &sent.samples, tried, sample_ids)?;
            Ok((l, s, m))
        });
        match verdict {
            Ok(counts) => return Ok(counts),
            // Duplicates never go away: fail at once.
            Err(e) if e.contains("more than once") || e.contains("no request carried") => {
                return Err(e);
            }
            Err(e) => last = e,
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("after {timeout:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sends one log with a fresh marker and waits until it can be queried through the query
/// API's SQL endpoint; returns how long that took.
pub async fn time_to_queryable(stack: &Stack, limit: Duration) -> Result<Duration, String> {
    let marker = format!("probe-{}", now_ns());
    let started = std::time::Instant::now();
    let client = http(5);
    // The collector may still be starting: retry the send within the limit too.
    wait_for("the probe log to be acknowledged", limit, || {
        let (client, url, body) = (
            client.clone(),
            stack.otlp_logs_url(),
            logs_request(&marker, 0),
        );
        async move {
            let r = client
                .post(url)
                .header("Content-Type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    let sql = format!("SELECT count() FROM otel_logs WHERE LogAttributes['run'] = '{marker}'");
    let url = format!("{}/api/v1/sql", stack.query_url());
    let remaining = limit.saturating_sub(started.elapsed());
    wait_for("the probe log to be queryable", remaining, || {
        let (client, url, sql) = (client.clone(), url.clone(), sql.clone());
        async move {
            let text = client
                .get(url)
                .query(&[("query", sql.as_str()), ("format", "csv")])
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            // CSV with a header line, then the count.
            (text.lines().last().map(str::trim) == Some(LOGS.to_string().as_str())).then_some(())
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

/// `sum(traces_spanmetrics_calls_total{service="load-svc"})` through the query API: the
/// spans of the load the trace processors have counted, `None` without a value yet.
pub async fn spans_counted(stack: &Stack) -> Option<f64> {
    let q = "sum(traces_spanmetrics_calls_total{service=\"load-svc\"})";
    let body = stack.instant_query(q).await?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}
