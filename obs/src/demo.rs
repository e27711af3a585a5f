//! `obs demo`: a short burst of realistic logs over OTLP/HTTP, so a new stack has data.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
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
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("{msg} (demo #{i})"))),
            }),
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
    let resp = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the collector at {url}: {e}"))?;
    anyhow::ensure!(
        resp.status().is_success(),
        "collector answered {}: {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
    println!(
        "sent {records} demo log records from {} services to {url}",
        SERVICES.len()
    );
    Ok(())
}
