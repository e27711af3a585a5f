//! The traces and trace-linked logs of `obs demo --live`: every round, a few requests
//! through frontend → checkout → payments as OTLP spans (client and server sides, so the
//! service graph and span metrics have edges), checkout failing one request in eight and
//! payments slow one in five, and a log line per server span carrying its trace and span
//! ids (an ERROR with `exception.*` attributes for each failure), plus one deploy event
//! when the live demo starts.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::demo::{kv, string};

/// Requests per round.
const REQUESTS: u64 = 4;

/// One call of the demo topology: who, what, and the span it answers.
struct Call {
    service: &'static str,
    name: &'static str,
    kind: SpanKind,
    parent: usize,
    start_ms: u64,
    duration_ms: u64,
}

/// The spans and logs of one round of requests ending at `now_ns`; `round` numbers the
/// rounds so ids never repeat within a run.
pub fn round(now_ns: u64, round: u64) -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
    let mut spans: Vec<(&'static str, Span)> = Vec::new();
    let mut logs: Vec<(&'static str, LogRecord)> = Vec::new();
    for r in 0..REQUESTS {
        let n = round * REQUESTS + r;
        let failed = n % 8 == 3;
        let slow = n % 5 == 1;
        let pay_ms = if slow { 1_200 } else { 40 };
        let calls = [
            Call {
                service: "frontend",
                name: "GET /api/orders",
                kind: SpanKind::Server,
                parent: usize::MAX,
                start_ms: 0,
                duration_ms: pay_ms + 60,
            },
            Call {
                service: "frontend",
                name: "POST /checkout",
                kind: SpanKind::Client,
                parent: 0,
                start_ms: 5,
                duration_ms: pay_ms + 45,
            },
            Call {
                service: "checkout",
                name: "POST /checkout",
                kind: SpanKind::Server,
                parent: 1,
                start_ms: 8,
                duration_ms: pay_ms + 40,
            },
            Call {
                service: "checkout",
                name: "POST /charge",
                kind: SpanKind::Client,
                parent: 2,
                start_ms: 12,
                duration_ms: pay_ms + 10,
            },
            Call {
                service: "payments",
                name: "POST /charge",
                kind: SpanKind::Server,
                parent: 3,
                start_ms: 15,
                duration_ms: pay_ms,
            },
        ];
        // Ids: the time of the round and the request, so runs never collide.
        let trace_id = ((now_ns as u128) << 32 | n as u128).to_be_bytes().to_vec();
        let span_id = |i: usize| {
            ((n << 8) | (i as u64 + 1))
                .wrapping_add(now_ns)
                .to_be_bytes()
                .to_vec()
        };
        let total_ms = calls[0].duration_ms;
        let begin = now_ns - (REQUESTS - r) * 1_000_000_000 / REQUESTS - total_ms * 1_000_000;
        for (i, c) in calls.iter().enumerate() {
            // checkout's server side fails, and the frontend sees it.
            let error = failed && c.service != "payments";
            let start = begin + c.start_ms * 1_000_000;
            let end = start + c.duration_ms * 1_000_000;
            spans.push((
                c.service,
                Span {
                    trace_id: trace_id.clone(),
                    span_id: span_id(i),
                    parent_span_id: if c.parent == usize::MAX {
                        vec![]
                    } else {
                        span_id(c.parent)
                    },
                    name: c.name.into(),
                    kind: c.kind as i32,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes: vec![
                        kv(
                            "http.request.method",
                            if c.name.starts_with("GET") {
                                "GET"
                            } else {
                                "POST"
                            },
                        ),
                        kv(
                            "http.response.status_code",
                            if error { "500" } else { "200" },
                        ),
                    ],
                    status: Some(Status {
                        code: if error {
                            StatusCode::Error
                        } else {
                            StatusCode::Ok
                        } as i32,
                        message: if error {
                            "payment declined".into()
                        } else {
                            String::new()
                        },
                    }),
                    ..Default::default()
                },
            ));
            if c.kind != SpanKind::Server {
                continue;
            }
            let (severity, number, body, mut attributes) = if error {
                (
                    "ERROR",
                    17,
                    format!("{} failed: payment declined", c.name),
                    vec![
                        kv("exception.type", "PaymentDeclined"),
                        kv("exception.message", "payment declined by the issuer"),
                    ],
                )
            } else if slow && c.service == "payments" {
                (
                    "WARN",
                    13,
                    format!("{} took {} ms", c.name, c.duration_ms),
                    vec![],
                )
            } else {
                ("INFO", 9, format!("{} handled", c.name), vec![])
            };
            attributes.push(kv("http.route", c.name));
            logs.push((
                c.service,
                LogRecord {
                    time_unix_nano: end,
                    observed_time_unix_nano: end,
                    severity_text: severity.into(),
                    severity_number: number,
                    body: Some(string(&body)),
                    attributes,
                    trace_id: trace_id.clone(),
                    span_id: span_id(i),
                    ..Default::default()
                },
            ));
        }
    }
    (traces_request(spans), logs_request(logs))
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", service),
            kv("service.version", "1.4.2"),
            kv("deployment.environment", "demo"),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "obs-demo".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// The services in the order they first appear, each with its items.
fn by_service<T>(items: Vec<(&'static str, T)>) -> Vec<(&'static str, Vec<T>)> {
    let mut out: Vec<(&'static str, Vec<T>)> = Vec::new();
    for (svc, item) in items {
        match out.iter_mut().find(|(s, _)| *s == svc) {
            Some((_, v)) => v.push(item),
            None => out.push((svc, vec![item])),
        }
    }
    out
}

fn traces_request(spans: Vec<(&'static str, Span)>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: by_service(spans)
            .into_iter()
            .map(|(svc, spans)| ResourceSpans {
                resource: Some(resource(svc)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn logs_request(logs: Vec<(&'static str, LogRecord)>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: by_service(logs)
            .into_iter()
            .map(|(svc, log_records)| ResourceLogs {
                resource: Some(resource(svc)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// The deploy event the live demo announces itself with (`POST /api/v1/events`).
pub fn deploy_event() -> serde_json::Value {
    serde_json::json!({
        "type": "deploy",
        "source": "obs-demo",
        "title": "checkout 1.4.2 deployed",
        "severity": "info",
        "attributes": {"service.name": "checkout", "service.version": "1.4.2"}
    })
}

/// For `demo_requests_total{service="checkout"}`'s exemplars: per response code (`200`,
/// `500`) the trace and span ids (hex) of one checkout server span of the round with that
/// outcome.
pub fn checkout_exemplars(
    traces: &ExportTraceServiceRequest,
) -> Vec<(&'static str, String, String)> {
    let mut by_code: Vec<(&'static str, String, String)> = Vec::new();
    for rs in &traces.resource_spans {
        let checkout = rs.resource.as_ref().is_some_and(|r| {
            r.attributes.iter().any(|kv| {
                kv.key == "service.name" && kv.value.as_ref() == Some(&string("checkout"))
            })
        });
        if !checkout {
            continue;
        }
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            if span.kind != SpanKind::Server as i32 {
                continue;
            }
            let failed = span
                .status
                .as_ref()
                .is_some_and(|s| s.code == StatusCode::Error as i32);
            let code = if failed { "500" } else { "200" };
            if !by_code.iter().any(|(c, _, _)| *c == code) {
                by_code.push((code, hex(&span.trace_id), hex(&span.span_id)));
            }
        }
    }
    by_code
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_links_every_server_span_to_a_log_and_fails_one_request_in_eight() {
        let (traces, logs) = round(1_800_000_000_000_000_000, 0);
        let spans: Vec<&Span> = traces
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans[0].spans)
            .collect();
        assert_eq!(spans.len(), 4 * 5);
        let records: Vec<&LogRecord> = logs
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs[0].log_records)
            .collect();
        assert_eq!(records.len(), 4 * 3);
        for rec in &records {
            assert!(
                spans
                    .iter()
                    .any(|s| s.trace_id == rec.trace_id && s.span_id == rec.span_id),
                "a log without its span"
            );
        }
        // Request 3 of round 0 fails: 2 frontend spans and 2 checkout spans in error.
        let errors = spans
            .iter()
            .filter(|s| s.status.as_ref().unwrap().code == StatusCode::Error as i32)
            .count();
        assert_eq!(errors, 4);
        assert_eq!(
            records
                .iter()
                .filter(|r| r.severity_text == "ERROR")
                .count(),
            2
        );
        // Checkout's exemplars: a successful and the failed request's server spans.
        let exemplars = checkout_exemplars(&traces);
        assert_eq!(exemplars.len(), 2, "{exemplars:?}");
        for (code, trace, span) in &exemplars {
            let s = spans
                .iter()
                .find(|s| hex(&s.span_id) == *span && hex(&s.trace_id) == *trace)
                .expect("the exemplar's span is in the round");
            let failed = s.status.as_ref().unwrap().code == StatusCode::Error as i32;
            assert_eq!(*code == "500", failed);
        }
        // Ids are distinct within a round and across rounds.
        let (next, _) = round(1_800_000_000_000_000_000 + 5_000_000_000, 1);
        let mut ids: Vec<Vec<u8>> = spans.iter().map(|s| s.span_id.clone()).collect();
        ids.extend(
            next.resource_spans
                .iter()
                .flat_map(|r| r.scope_spans[0].spans.iter().map(|s| s.span_id.clone())),
        );
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
