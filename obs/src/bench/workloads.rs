//! The request bodies each benchmark sends: realistic shapes, unique per sender and request
//! so nothing is deduplicated away.

use std::time::{SystemTime, UNIX_EPOCH};

use obs_producers::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use prost::Message;

/// Series per remote-write request and samples per series (the shape DESIGN.md §8 measured
/// Prometheus's own receiver with).
pub const RW_SERIES: usize = 2000;
/// Samples per series per request.
pub const RW_SAMPLES: usize = 50;
/// Milliseconds between a series' samples: 250 ms, so that every run's samples together
/// span well under three hours and start an hour ago. A receiver then compacts nothing
/// in the middle of the benchmark (Prometheus cuts a block from its head once it spans
/// 3 h, and refuses older samples after that), as in steady operation where that happens
/// every 2 h of wall time.
pub const RW_STEP_MS: i64 = 250;
/// Log records per OTLP request.
pub const LOGS_PER_REQUEST: usize = 1000;
/// Spans per OTLP request (100 traces of 10 spans).
pub const SPANS_PER_REQUEST: usize = 1000;

/// ns since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn label(name: &str, value: String) -> Label {
    Label {
        name: name.into(),
        value,
    }
}

/// A remote-write request (snappy): sender `s`'s 2000 series, 50 new samples each,
/// [`RW_STEP_MS`] apart.
pub fn remote_write(run: &str, sender: usize, request: usize, start_ms: i64) -> Vec<u8> {
    let first = start_ms + (request * RW_SAMPLES) as i64 * RW_STEP_MS;
    let req = WriteRequest {
        timeseries: (0..RW_SERIES)
            .map(|i| TimeSeries {
                labels: vec![
                    label("__name__", format!("bench_metric_{}", i % 20)),
                    label("instance", format!("host-{}:9100", i / 20)),
                    label("job", "bench".into()),
                    label("run", run.into()),
                    label("sender", sender.to_string()),
                ],
                samples: (0..RW_SAMPLES)
                    .map(|j| Sample {
                        value: (request * RW_SAMPLES + j) as f64 * 1.5 + i as f64,
                        timestamp: first + j as i64 * RW_STEP_MS,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}

const SERVICES: &[&str] = &["checkout", "payments", "frontend", "inventory"];

/// An OTLP logs request (protobuf) of 1000 records with five attributes each.
pub fn otlp_logs(run: &str, sender: usize, request: usize) -> Vec<u8> {
    let now = now_ns();
    let service = SERVICES[(sender + request) % SERVICES.len()];
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service), kv("host.name", "bench-host")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..LOGS_PER_REQUEST)
                    .map(|i| LogRecord {
                        time_unix_nano: now + i as u64,
                        severity_text: if i % 10 == 0 { "ERROR" } else { "INFO" }.into(),
                        severity_number: if i % 10 == 0 { 17 } else { 9 },
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!(
                                "GET /api/v1/items/{} 200 {}ms user={} cart={}",
                                i * 7 + request,
                                i % 250,
                                i % 1000,
                                request
                            ))),
                        }),
                        attributes: vec![
                            kv("run", run),
                            kv("http.method", "GET"),
                            kv("http.route", "/api/v1/items/{id}"),
                            kv("http.status_code", "200"),
                            kv("seq", &format!("{sender}-{request}-{i}")),
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

/// An OTLP traces request (protobuf): 100 traces of 10 spans.
pub fn otlp_spans(run: &str, sender: usize, request: usize) -> Vec<u8> {
    let now = now_ns();
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| {
            let trace = (sender as u64) << 48 | (request as u64) << 16 | (i / 10) as u64;
            let mut trace_id = now.to_be_bytes().to_vec();
            trace_id.extend(trace.to_be_bytes());
            let span_no = (i % 10) as u64;
            Span {
                trace_id,
                // Never all zeros (an invalid id).
                span_id: ((trace << 4 | span_no) + 1).to_be_bytes().to_vec(),
                parent_span_id: if span_no == 0 {
                    vec![]
                } else {
                    ((trace << 4) + 1).to_be_bytes().to_vec()
                },
                name: format!("op-{}", i % 10),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: now + i as u64 * 1000,
                end_time_unix_nano: now + i as u64 * 1000 + 5_000_000,
                attributes: vec![kv("run", run), kv("http.route", "/api/v1/items/{id}")],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", SERVICES[sender % SERVICES.len()])],
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
