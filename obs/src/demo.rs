//! `obs demo`: a short burst of realistic logs over OTLP/HTTP and the last ten minutes of
//! request counters by remote write, so a new stack has data; with `--live` the counters
//! go on every 5 s, with traces through frontend → checkout → payments and the logs of
//! their spans (see [`crate::demo_traces`]). The example rules in
//! `config/rules/demo.rules.yml` fire on them: checkout fails 12% of its requests.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// A string attribute.
pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(string(value)),
        ..Default::default()
    }
}

/// A string value.
pub(crate) fn string(value: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    }
}

const SERVICES: &[&str] = &["checkout", "payments", "frontend", "inventory"];
const LINES: &[(&str, i32, &str)] = &[
    ("INFO", 9, "request handled"),
    ("INFO", 9, "cache hit"),
    ("WARN", 13, "slow upstream response"),
    ("ERROR", 17, "upstream returned 503"),
    ("DEBUG", 5, "retrying request"),
];

/// Sends `records` log records spread over four services to `base`/v1/logs, each with the
/// attribute `demo.run` = `run_id` (when given) so a caller can count exactly this burst.
pub async fn run(base: &str, records: usize, run_id: Option<&str>) -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let mut per_service: Vec<Vec<LogRecord>> = vec![vec![]; SERVICES.len()];
    for i in 0..records {
        let (sev, num, msg) = LINES[i % LINES.len()];
        per_service[i % SERVICES.len()].push(LogRecord {
            time_unix_nano: now - (records - i) as u64 * 10_000_000,
            severity_text: sev.into(),
            severity_number: num,
            body: Some(string(&format!("{msg} (demo #{i})"))),
            attributes: [
                kv("demo.seq", &i.to_string()),
                kv("http.route", "/api/orders"),
            ]
            .into_iter()
            .chain(run_id.map(|id| kv("demo.run", id)))
            .collect(),
            trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            ..Default::default()
        });
    }
    let req = ExportLogsServiceRequest {
        resource_logs: SERVICES
            .iter()
            .zip(per_service)
            .map(|(svc, log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", svc),
                        kv("deployment.environment", "demo"),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "obs-demo".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    let url = format!("{}/v1/logs", base.trim_end_matches('/'));
    post(&url, &[], req.encode_to_vec()).await?;
    println!(
        "sent {records} demo log records from {} services to {url}",
        SERVICES.len()
    );
    metrics(base, now as i64 / 1_000_000).await
}

/// Error share of each service's demo requests, in percent.
const ERROR_PERCENT: &[u32] = &[12, 1, 0, 2];

/// Requests per second per service.
const REQUESTS_PER_SEC: u32 = 20;

/// `demo_requests_total{service, code}` at `t_ms`: a pure function of time, so the history
/// and the live samples agree wherever they meet.
fn demo_counters(t_ms: i64) -> Vec<(&'static str, &'static str, f64)> {
    let secs = (t_ms / 1000) as f64;
    SERVICES
        .iter()
        .zip(ERROR_PERCENT)
        .flat_map(|(svc, errors)| {
            let bad = (REQUESTS_PER_SEC * errors) as f64 / 100.0;
            let good = REQUESTS_PER_SEC as f64 - bad;
            [(*svc, "200", secs * good), (*svc, "500", secs * bad)]
        })
        .collect()
}

/// Sends the counters at each of `times` (ms) by remote write to `base`/api/v1/write, with
/// `exemplars` (code, trace id, span id) on checkout's series at the last time.
async fn send_counters(
    base: &str,
    times: &[i64],
    exemplars: &[(&str, String, String)],
) -> anyhow::Result<()> {
    use obs_producers::remote_write::proto::{Exemplar, Label, Sample, TimeSeries, WriteRequest};
    let label = |name: &str, value: &str| Label {
        name: name.into(),
        value: value.into(),
    };
    let mut series: Vec<TimeSeries> = demo_counters(0)
        .iter()
        .map(|(svc, code, _)| TimeSeries {
            labels: vec![
                label("__name__", "demo_requests_total"),
                label("code", code),
                label("job", "demo"),
                label("service", svc),
            ],
            ..Default::default()
        })
        .collect();
    for &t in times {
        for (s, (_, _, v)) in series.iter_mut().zip(demo_counters(t)) {
            s.samples.push(Sample {
                value: v,
                timestamp: t,
            });
        }
    }
    let last = times.last().copied().unwrap_or_default();
    for (s, (svc, code, _)) in series.iter_mut().zip(demo_counters(last)) {
        for (_, trace, span) in exemplars
            .iter()
            .filter(|(c, _, _)| svc == "checkout" && *c == code)
        {
            s.exemplars.push(Exemplar {
                labels: vec![label("trace_id", trace), label("span_id", span)],
                value: 1.0,
                timestamp: last,
            });
        }
    }
    let body = snap::raw::Encoder::new().compress_vec(
        &WriteRequest {
            timeseries: series,
            metadata: vec![],
        }
        .encode_to_vec(),
    )?;
    let url = format!("{}/api/v1/write", base.trim_end_matches('/'));
    let headers = [
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    post(&url, &headers, body).await
}

/// POSTs a body (protobuf unless `headers` name a `Content-Type`) to the collector; an
/// answer other than 2xx is an error with the collector's reason.
async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> anyhow::Result<()> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let mut req =
        crate::query_api::authorized(CLIENT.get_or_init(crate::query_api::client).post(url));
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req = req.header("Content-Type", "application/x-protobuf");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the collector at {url}: {e}"))?;
    anyhow::ensure!(
        resp.status().is_success(),
        "collector answered {}: {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
    Ok(())
}

/// The last ten minutes of request counters, every 15 s.
async fn metrics(base: &str, now_ms: i64) -> anyhow::Result<()> {
    let start = (now_ms - 600_000) / 15_000 * 15_000;
    let times: Vec<i64> = (0..=40).map(|i| start + i * 15_000).collect();
    if let Err(e) = send_counters(base, &times, &[]).await {
        // A collector that already has newer samples of these series refuses older ones.
        if e.to_string().contains("out of order") {
            println!(
                "the collector already has newer demo_requests_total samples; history not sent again"
            );
            return Ok(());
        }
        return Err(e);
    }
    println!(
        "sent 10 minutes of demo_requests_total for {} services to {base}/api/v1/write",
        SERVICES.len()
    );
    Ok(())
}

/// The request counters, a round of traces and their logs every 5 s at the current time,
/// after one deploy event, until a shutdown is asked for.
pub async fn live(base: &str) -> anyhow::Result<()> {
    let base = base.trim_end_matches('/');
    println!("sending demo_requests_total, traces and their logs every 5 s until stopped");
    let event = crate::demo_traces::deploy_event().to_string().into_bytes();
    let json = [("Content-Type", "application/json")];
    if let Err(e) = post(&format!("{base}/api/v1/events"), &json, event).await {
        tracing::warn!(error = %e, "demo deploy event not sent");
    }
    let mut round = 0;
    loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let (traces, logs) = crate::demo_traces::round(now.as_nanos() as u64, round);
        round += 1;
        let exemplars = crate::demo_traces::checkout_exemplars(&traces);
        if let Err(e) = send_counters(base, &[now.as_millis() as i64], &exemplars).await {
            tracing::warn!(error = %e, "demo counters not sent; trying again in 5 s");
        }
        for (path, body) in [
            ("v1/traces", traces.encode_to_vec()),
            ("v1/logs", logs.encode_to_vec()),
        ] {
            if let Err(e) = post(&format!("{base}/{path}"), &[], body).await {
                tracing::warn!(error = %e, "demo {path} not sent; trying again in 5 s");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = obs_runtime::shutdown::wait() => return Ok(()),
        }
    }
}
