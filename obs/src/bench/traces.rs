//! `obs bench-traces`: the trace processor's speed and memory, in process and (with
//! `--collector`) through a running pipeline.
//!
//! Data: traces of 10 spans shaped like a web request (frontend server span, three client
//! calls with their server spans, a database call, internal spans), 5% failing, 1% slow,
//! over 20 services. In process: one partition's state machine (span metrics, assembly,
//! tail sampling with `--policies`, service graph, summaries) fed 100-span messages in
//! event time: spans per second, and resident memory per open trace (traces held open,
//! measured from the process's RSS). Through the pipeline: the same traces sent over
//! OTLP/HTTP by `--concurrency` senders; spans acknowledged per second, spans per second
//! until the processor has handled all of them (its own `obs_traces_spans_total`, from the
//! first request), and the time until `traces_spanmetrics_calls_total` counts them in the
//! query API. No peer runs here (no Tempo or
//! OpenTelemetry Collector binary on this machine); the numbers stand alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_runtime::Config;

use super::rules::rss_bytes;
use obs_schemas::records::Span;
use obs_stream_processors::traces::partition::{Outputs, Partition};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as otlp;
use prost::Message;

/// What `obs bench-traces` was asked to do.
pub struct TracesBench {
    /// Traces in the in-process run.
    pub traces: usize,
    /// Tail-sampling policy file (empty: keep all).
    pub policies: String,
    /// Collector base URL (OTLP/HTTP) for the pipeline run, if any.
    pub collector: Option<String>,
    /// Query API base URL for the pipeline run.
    pub query: String,
    /// Trace processor base URL (its /metrics) for the pipeline run.
    pub processor: String,
    /// Traces sent in the pipeline run.
    pub pipeline_traces: usize,
    /// Concurrent senders in the pipeline run.
    pub concurrency: usize,
}

const SPANS_PER_TRACE: usize = 10;

/// One span of the benchmark's trace: service, name, kind, parent index, start offset
/// (ms), duration (ms), an attribute.
type Shape = (
    String,
    &'static str,
    &'static str,
    Option<usize>,
    i64,
    i64,
    Option<(&'static str, String)>,
);

/// The spans of trace `i`, starting at `t0_ns`: (service, name, kind, parent index,
/// start offset ms, duration ms, attributes).
fn trace(run: u64, i: usize, t0_ns: i64) -> Vec<Span> {
    let svc = |k: usize| format!("bench-svc-{}", (i + k) % 20);
    let failing = i.is_multiple_of(20);
    let slow = i % 100 == 1;
    let shape: [Shape; SPANS_PER_TRACE] = [
        (
            svc(0),
            "GET /checkout",
            "Server",
            None,
            0,
            if slow { 900 } else { 80 },
            None,
        ),
        (svc(0), "POST /cart", "Client", Some(0), 1, 20, None),
        (svc(1), "add", "Server", Some(1), 2, 15, None),
        (svc(0), "POST /pay", "Client", Some(0), 25, 30, None),
        (svc(2), "charge", "Server", Some(3), 26, 25, None),
        (
            svc(2),
            "SELECT",
            "Client",
            Some(4),
            27,
            5,
            Some(("db.system", "postgresql".into())),
        ),
        (svc(0), "GET /ads", "Client", Some(0), 60, 10, None),
        (svc(3), "ads", "Server", Some(6), 61, 8, None),
        (svc(3), "rank", "Internal", Some(7), 62, 3, None),
        (
            svc(0),
            "render",
            "Internal",
            Some(0),
            72,
            5,
            Some(("template", "checkout".into())),
        ),
    ];
    // Random-looking ids, as SDKs make them: the Collector's probabilistic sampling hashes
    // the id with FNV, whose top bits barely change between sequential ids.
    let trace_id = format!("{run:016x}{:016x}", splitmix64(i as u64));
    shape
        .into_iter()
        .enumerate()
        .map(|(k, (service, name, kind, parent, at, ms, attr))| {
            let start = t0_ns + at * 1_000_000;
            let mut s = Span {
                trace_id: trace_id.clone(),
                span_id: format!("{:016x}", (i * SPANS_PER_TRACE + k + 1) as u64),
                parent_span_id: parent
                    .map(|p| format!("{:016x}", (i * SPANS_PER_TRACE + p + 1) as u64))
                    .unwrap_or_default(),
                name: name.into(),
                kind: kind.into(),
                service,
                start_ns: start,
                end_ns: start + ms * 1_000_000,
                status_code: if failing && k == 4 {
                    "Error".into()
                } else {
                    "Unset".into()
                },
                tenant: "default".into(),
                ..Span::default()
            };
            if let Some((k, v)) = attr {
                s.attrs.insert(k.into(), v);
            }
            s
        })
        .collect()
}

fn settings(
    cfg: &Config,
    policies: &str,
    wait_ms: i64,
) -> anyhow::Result<obs_stream_processors::traces::partition::Settings> {
    let mut cfg = cfg.clone();
    cfg.traces.sampling_file = policies.to_string();
    let mut s = obs_stream_processors::traces::run::settings(&cfg)?;
    s.limits.decision_wait_ms = wait_ms;
    s.limits.max_age_ms = i64::MAX / 4;
    s.limits.max_traces = usize::MAX;
    s.limits.max_bytes = usize::MAX;
    Ok(s)
}

/// Runs the benchmark and prints its numbers.
pub async fn run(cfg: &Config, b: &TracesBench) -> anyhow::Result<()> {
    let run = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
    let t0 = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - 3_600_000_000_000;
    eprintln!(
        "generating {} traces ({} spans)...",
        b.traces,
        b.traces * SPANS_PER_TRACE
    );
    // Traces start 2 ms apart in event time; messages of 100 spans (10 traces).
    let spans: Vec<Span> = (0..b.traces)
        .flat_map(|i| trace(run, i, t0 + i as i64 * 2_000_000))
        .collect();
    let messages: Vec<Vec<Span>> = spans.chunks(100).map(<[Span]>::to_vec).collect();
    drop(spans);

    let s = Arc::new(settings(cfg, &b.policies, 10_000)?);
    let mut p = Partition::new(0, s, 0, 0);
    let mut out = Outputs::default();
    let (mut kept, mut decided) = (0usize, 0usize);
    let started = Instant::now();
    for (o, m) in messages.iter().enumerate() {
        p.handle(o as i64, m.clone(), &mut out);
        if out.summaries.len() > 10_000 {
            decided += out.summaries.len();
            kept += out.summaries.iter().filter(|s| s.kept).count();
            out = Outputs::default();
        }
    }
    let elapsed = started.elapsed();
    decided += out.summaries.len();
    kept += out.summaries.iter().filter(|s| s.kept).count();
    let n = (b.traces * SPANS_PER_TRACE) as f64;
    println!(
        "trace processor, in process (one partition, policies: {}):",
        if b.policies.is_empty() {
            "none, keep all"
        } else {
            &b.policies
        }
    );
    println!(
        "  {:.0} spans/s ({} spans in {:.2} s; {} traces decided, {} kept; {} open at the end)",
        n / elapsed.as_secs_f64(),
        n,
        elapsed.as_secs_f64(),
        decided,
        kept,
        p.load().0
    );

    // Memory per open trace: hold every trace open (a decision wait longer than the run).
    let before = rss_bytes();
    let s = Arc::new(settings(cfg, &b.policies, i64::MAX / 4)?);
    let mut held = Partition::new(0, s, 0, 0);
    let mut out = Outputs::default();
    let open_traces = b.traces.min(100_000);
    for (o, m) in messages.iter().take(open_traces / 10).enumerate() {
        held.handle(o as i64, m.clone(), &mut out);
    }
    let (open, bytes) = held.load();
    let after = rss_bytes();
    println!(
        "  memory per open trace of {SPANS_PER_TRACE} spans: {:.0} bytes resident ({} traces open, RSS +{:.1} MiB; the bytes limit counts {:.0} bytes each)",
        after.saturating_sub(before) as f64 / open.max(1) as f64,
        open,
        after.saturating_sub(before) as f64 / (1 << 20) as f64,
        bytes as f64 / open.max(1) as f64
    );
    drop(held);

    if let Some(collector) = &b.collector {
        pipeline(b, collector, run).await?;
    }
    Ok(())
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..KeyValue::default()
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

/// SplitMix64's output function: a bijection that scatters sequential numbers.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One OTLP request holding `traces` whole traces from trace number `first`.
fn request(run: u64, first: usize, traces: usize, t0_ns: i64) -> Vec<u8> {
    let mut by_service: std::collections::BTreeMap<String, Vec<otlp::Span>> = Default::default();
    for i in first..first + traces {
        for s in trace(run, i, t0_ns + (i - first) as i64 * 1_000_000) {
            by_service
                .entry(s.service.clone())
                .or_default()
                .push(otlp::Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: obs_schemas::records::kind_number(&s.kind),
                    start_time_unix_nano: s.start_ns as u64,
                    end_time_unix_nano: s.end_ns as u64,
                    attributes: s.attrs.iter().map(|(k, v)| kv(k, v)).collect(),
                    status: Some(otlp::Status {
                        code: obs_schemas::records::status_number(&s.status_code),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| otlp::ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", &service)],
                    ..Default::default()
                }),
                scope_spans: vec![otlp::ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

async fn counted(client: &reqwest::Client, query: &str) -> Option<f64> {
    let q = "sum(traces_spanmetrics_calls_total{service=~\"bench-svc-.*\"})";
    let result = super::instant_query(client, query, q).await?;
    Some(
        result[0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0),
    )
}

/// Spans the trace processor has handled since it started (`obs_traces_spans_total`, absent
/// before the first).
async fn handled(client: &reqwest::Client, processor: &str) -> Option<f64> {
    let url = format!("{}/metrics", processor.trim_end_matches('/'));
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .find(|l| l.starts_with("obs_traces_spans_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0),
    )
}

async fn pipeline(b: &TracesBench, collector: &str, run: u64) -> anyhow::Result<()> {
    const TRACES_PER_REQUEST: usize = 50;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let before = counted(&client, &b.query)
        .await
        .context("reading traces_spanmetrics_calls_total from the query API (is it running?)")?;
    let handled_before = handled(&client, &b.processor).await.with_context(|| {
        format!(
            "reading obs_traces_spans_total from {}/metrics (is the trace processor running?)",
            b.processor
        )
    })?;
    let requests = b.pipeline_traces.div_ceil(TRACES_PER_REQUEST);
    let url = format!("{}/v1/traces", collector.trim_end_matches('/'));
    let t0 = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut latencies = Vec::new();
    eprintln!(
        "sending {} spans to {url}...",
        requests * TRACES_PER_REQUEST * SPANS_PER_TRACE
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..b.concurrency.max(1) {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let r = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if r >= requests {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let body = request(
                    run,
                    1_000_000_000 + r * TRACES_PER_REQUEST,
                    TRACES_PER_REQUEST,
                    t0,
                );
                loop {
                    let sent = Instant::now();
                    let resp = client
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .body(body.clone())
                        .send()
                        .await?;
                    if resp.status().is_success() {
                        lat.push(sent.elapsed());
                        break;
                    }
                    // Backpressure (429/503): the collector asks to retry later.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r.context("sender")??);
    }
    let acked = started.elapsed();
    let spans = (requests * TRACES_PER_REQUEST * SPANS_PER_TRACE) as f64;
    // The processor's own count of spans handled: its consuming speed.
    let mut handled_at = None;
    loop {
        if handled(&client, &b.processor).await.unwrap_or(0.0) >= handled_before + spans {
            handled_at = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handled_at =
        handled_at.context("the processor did not handle every span within 10 minutes")?;
    let target = before + spans;
    loop {
        if counted(&client, &b.query).await.unwrap_or(0.0) >= target {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the processor did not count every span within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let through = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "through the pipeline ({} senders, {} spans per request):",
        b.concurrency,
        TRACES_PER_REQUEST * SPANS_PER_TRACE
    );
    println!(
        "  collector: {:.0} spans/s acknowledged (request p50 {:?}, p99 {:?}, {:.0} request bytes per span)",
        spans / acked.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        request(run, 0, TRACES_PER_REQUEST, t0).len() as f64
            / (TRACES_PER_REQUEST * SPANS_PER_TRACE) as f64
    );
    println!(
        "  trace processor: {:.0} spans/s from the first request until it had handled every span ({:.1} s)",
        spans / handled_at.as_secs_f64(),
        handled_at.as_secs_f64()
    );
    println!(
        "  query API: every span counted in traces_spanmetrics_calls_total {:.1} s after the first request (span metrics are written every [traces] metrics_interval_ms of event time)",
        through.as_secs_f64()
    );
    Ok(())
}
