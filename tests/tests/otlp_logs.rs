//! OTLP/HTTP logs end to end: collector → obs.logs (Avro, registry id) → sink → otel_logs,
//! with the OpenTelemetry Python SDK as the client, hand-built protobuf/JSON bodies, hostile
//! bodies, and a broker outage.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clickhouse::Row;
use flate2::{Compression, write::GzEncoder};
use obs_e2e::{Stack, run_python_sender, wait_for};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde::Deserialize;

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LogRow {
    timestamp: i64,
    trace_id: String,
    span_id: String,
    trace_flags: u8,
    severity_text: String,
    severity_number: u8,
    service_name: String,
    body: String,
    resource_attributes: Vec<(String, String)>,
    scope_name: String,
    scope_version: String,
    log_attributes: Vec<(String, String)>,
    tenant: String,
}

#[derive(Debug, Deserialize)]
struct Sent {
    seq: u64,
    timestamp_ns: i64,
    trace_id: String,
    span_id: String,
    severity_text: String,
    severity_number: u8,
    body: String,
}

/// `google.rpc.Status`, as OTLP/HTTP error bodies carry it.
#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
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

/// A request with one record per marker, service `hand-built`.
fn request(markers: &[&str]) -> ExportLogsServiceRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "hand-built")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: markers
                    .iter()
                    .map(|m| LogRecord {
                        time_unix_nano: now,
                        severity_text: "INFO".into(),
                        severity_number: 9,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("marker {m}"))),
                        }),
                        attributes: vec![kv("test.marker", m)],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post(
    url: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = obs_e2e::http(60)
        .post(url)
        .header("Content-Type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("Content-Encoding", e);
    }
    req.send().await.expect("collector reachable")
}

fn marker_filter(marker: &str) -> String {
    format!("LogAttributes['test.marker'] = '{marker}'")
}

/// The SDK's OTLP log exporters over HTTP and gRPC, plain and gzip.
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_logs_arrive_exactly_once_with_every_field() {
    let stack = Stack::start().await.unwrap();
    let grpc = format!("127.0.0.1:{}", stack.ports.otlp_grpc);
    let http = stack.otlp_logs_url();
    for (protocol, endpoint, compression) in [
        ("otlp-http", &http, "none"),
        ("otlp-http", &http, "gzip"),
        ("otlp-grpc", &grpc, "none"),
        ("otlp-grpc", &grpc, "gzip"),
    ] {
        let run_id = unique(&format!("{protocol}-{compression}"));
        let sent: Vec<Sent> = run_python_sender(
            "send_otlp_logs.py",
            &[
                "--endpoint",
                endpoint,
                "--run-id",
                &run_id,
                "--count",
                "40",
                "--compression",
                compression,
                "--protocol",
                protocol,
            ],
        );
        assert_eq!(sent.len(), 40);

        let filter = format!("LogAttributes['test.run_id'] = '{run_id}'");
        stack
            .wait_log_count(&filter, 40, Duration::from_secs(60))
            .await
            .unwrap();
        let rows: Vec<LogRow> = stack
            .db()
            .query("SELECT ?fields FROM otel_logs WHERE LogAttributes['test.run_id'] = ? ORDER BY Timestamp")
            .bind(&run_id)
            .fetch_all()
            .await
            .unwrap();
        assert_eq!(rows.len(), 40);
        for (row, s) in rows.iter().zip(&sent) {
            let attrs: std::collections::BTreeMap<_, _> =
                row.log_attributes.iter().cloned().collect();
            assert_eq!(
                attrs["test.seq"],
                s.seq.to_string(),
                "records out of order or missing"
            );
            assert_eq!(row.timestamp, s.timestamp_ns);
            assert_eq!(row.body, s.body);
            assert_eq!(row.severity_text, s.severity_text);
            assert_eq!(row.severity_number, s.severity_number);
            assert_eq!(row.trace_id, s.trace_id);
            assert_eq!(row.span_id, s.span_id);
            assert_eq!(row.trace_flags, 1);
            assert_eq!(row.service_name, "sdk-test-svc");
            assert_eq!(row.scope_name, "obs.e2e");
            assert_eq!(row.scope_version, "1.2.3");
            assert_eq!(row.tenant, "default");
            let expected: std::collections::BTreeMap<String, String> = [
                ("test.run_id", run_id.as_str()),
                ("test.seq", &s.seq.to_string()),
                ("ratio", "0.25"),
                ("ok", "true"),
                ("tags", r#"["a","b"]"#),
                ("user", &format!("u{}", s.seq)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            assert_eq!(attrs, expected);
            let res: std::collections::BTreeMap<_, _> =
                row.resource_attributes.iter().cloned().collect();
            assert_eq!(res["service.name"], "sdk-test-svc");
            assert_eq!(res["deployment.environment"], "e2e");
            assert_eq!(res["telemetry.sdk.language"], "python");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_and_gzipped_protobuf_bodies_are_stored() {
    let stack = Stack::start().await.unwrap();
    let url = stack.otlp_logs_url();

    let pb_marker = unique("pb");
    let resp = post(
        &url,
        "application/x-protobuf",
        Some("gzip"),
        gzip(&request(&[&pb_marker]).encode_to_vec()),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");

    let json_marker = unique("json");
    // A current time: TTL merges may drop old-dated rows.
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
        / 1000
        * 1000
        + 789;
    let body = format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-svc"}}}}]}},
        "scopeLogs":[{{"scope":{{"name":"json-scope"}},"logRecords":[{{"timeUnixNano":"{ts}",
        "severityNumber":17,"severityText":"ERROR","traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
        "body":{{"kvlistValue":{{"values":[{{"key":"msg","value":{{"stringValue":"boom"}}}}]}}}},
        "attributes":[{{"key":"test.marker","value":{{"stringValue":"{json_marker}"}}}},{{"key":"n","value":{{"intValue":"42"}}}}]}}]}}]}}]}}"#
    );
    let resp = post(&url, "application/json", None, body.into_bytes()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");

    // Through the tenant header, over the collector's main port too.
    let tenant_marker = unique("tenant");
    let resp = obs_e2e::http(60)
        .post(format!(
            "http://127.0.0.1:{}/v1/logs",
            stack.ports.collector
        ))
        .header("Content-Type", "application/x-protobuf")
        .header("X-Scope-OrgID", "team-a")
        .body(request(&[&tenant_marker]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    for m in [&pb_marker, &json_marker, &tenant_marker] {
        stack
            .wait_log_count(&marker_filter(m), 1, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let row: LogRow = stack
        .db()
        .query("SELECT ?fields FROM otel_logs WHERE LogAttributes['test.marker'] = ?")
        .bind(&json_marker)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(row.timestamp, ts);
    assert_eq!(row.severity_number, 17);
    assert_eq!(row.severity_text, "ERROR");
    assert_eq!(row.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(row.span_id, "eee19b7ec3c1b174");
    assert_eq!(row.body, r#"{"msg":"boom"}"#);
    assert_eq!(row.service_name, "json-svc");
    assert_eq!(row.scope_name, "json-scope");
    let attrs: std::collections::BTreeMap<_, _> = row.log_attributes.into_iter().collect();
    assert_eq!(attrs["n"], "42");

    let tenant: String = stack
        .db()
        .query("SELECT Tenant FROM otel_logs WHERE LogAttributes['test.marker'] = ?")
        .bind(&tenant_marker)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(tenant, "team-a");

    // The value in Kafka carries the registry id of the obs.logs-value subject.
    let latest = stack
        .latest_schema(&obs_schemas::Topic::Logs.value_subject())
        .await;
    assert_eq!(latest["version"], 1);
    assert_eq!(
        latest["schema"].as_str().unwrap(),
        obs_schemas::Topic::Logs.value_schema().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_get_clear_errors_and_write_nothing() {
    let stack = Stack::start_with(&[("OBS_COLLECTOR__MAX_BODY_BYTES", "65536")])
        .await
        .unwrap();
    let url = stack.otlp_logs_url();

    // Truncated protobuf.
    let mut truncated = request(&["bad-truncated"]).encode_to_vec();
    truncated.truncate(truncated.len() - 5);
    let resp = post(&url, "application/x-protobuf", None, truncated).await;
    assert_eq!(resp.status(), 400);
    let status = Status::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, 3);
    assert!(
        status
            .message
            .starts_with("invalid OTLP protobuf logs request"),
        "{}",
        status.message
    );

    // Invalid UTF-8 in a protobuf string.
    let mut bad_utf8 = request(&["bad-utf8-XXXX"]).encode_to_vec();
    let at = bad_utf8.windows(4).position(|w| w == b"XXXX").unwrap();
    bad_utf8[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    let resp = post(&url, "application/x-protobuf", None, bad_utf8).await;
    assert_eq!(resp.status(), 400);
    let status = Status::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(status.message.contains("UTF-8"), "{}", status.message);

    // Broken JSON.
    let resp = post(
        &url,
        "application/json",
        None,
        br#"{"resourceLogs": ["#.to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid OTLP JSON logs request"),
        "{v}"
    );

    // One bad record spoils its request: the good one next to it is not written either.
    let mixed = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
        {"body":{"stringValue":"good"},"attributes":[{"key":"test.marker","value":{"stringValue":"bad-mixed"}}]},
        {"traceId":"abcd","attributes":[{"key":"test.marker","value":{"stringValue":"bad-mixed"}}]}]}]}]}"#;
    let resp = post(&url, "application/json", None, mixed.as_bytes().to_vec()).await;
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["message"], "invalid trace_id: 2 bytes, expected 16");

    // Not gzip although it says so.
    let resp = post(
        &url,
        "application/x-protobuf",
        Some("gzip"),
        request(&["bad-gzip"]).encode_to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let status = Status::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(
        status.message.starts_with("invalid gzip body"),
        "{}",
        status.message
    );

    // A content type OTLP does not define.
    let resp = post(&url, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(resp.status(), 415);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("send application/x-protobuf or application/json")
    );

    // Over the size limit, before and after decompression.
    let big: Vec<String> = (0..2000)
        .map(|i| format!("bad-big-{i:04}-{}", "x".repeat(40)))
        .collect();
    let big_refs: Vec<&str> = big.iter().map(String::as_str).collect();
    let big_body = request(&big_refs).encode_to_vec();
    assert!(big_body.len() > 65536);
    let resp = post(&url, "application/x-protobuf", None, big_body.clone()).await;
    assert_eq!(resp.status(), 413);
    let status = Status::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(
        status.message,
        "request body is larger than the limit of 65536 bytes; send smaller batches"
    );
    let zipped = gzip(&big_body);
    assert!(zipped.len() < 65536);
    let resp = post(&url, "application/x-protobuf", Some("gzip"), zipped).await;
    assert_eq!(resp.status(), 413);

    // The collector still serves, and nothing of the bad requests reached the table.
    let good = unique("good-after-bad");
    assert_eq!(
        post(
            &url,
            "application/x-protobuf",
            None,
            request(&[&good]).encode_to_vec()
        )
        .await
        .status(),
        200
    );
    stack
        .wait_log_count(&marker_filter(&good), 1, Duration::from_secs(60))
        .await
        .unwrap();
    // Everything published before now is stored: a bad record would be there by now.
    stack.wait_sink_caught_up("otel_logs").await.unwrap();
    let bad: u64 = stack
        .db()
        .query(
            "SELECT count() FROM otel_logs WHERE startsWith(LogAttributes['test.marker'], 'bad-')",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(bad, 0);
    let rejected = stack.collector_metrics().await.unwrap();
    assert!(
        rejected.contains(r#"obs_collector_rejected_total{reason="bad_request"} 5"#),
        "{rejected}"
    );
    assert!(
        rejected.contains(r#"obs_collector_rejected_total{reason="too_large"} 2"#),
        "{rejected}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_broker_gets_503_and_the_collector_recovers() {
    let mut stack = Stack::start_with(&[("OBS_KAFKA__PRODUCE_TIMEOUT_MS", "3000")])
        .await
        .unwrap();
    let url = stack.otlp_logs_url();
    let before = unique("before");
    assert_eq!(
        post(
            &url,
            "application/x-protobuf",
            None,
            request(&[&before]).encode_to_vec()
        )
        .await
        .status(),
        200
    );
    stack
        .wait_log_count(&marker_filter(&before), 1, Duration::from_secs(60))
        .await
        .unwrap();

    stack.broker.stop();
    let started = std::time::Instant::now();
    let resp = post(
        &url,
        "application/x-protobuf",
        None,
        request(&[&unique("during")]).encode_to_vec(),
    )
    .await;
    assert_eq!(
        resp.status(),
        503,
        "a record the broker did not take must not be acknowledged"
    );
    assert_eq!(resp.headers()["retry-after"], "5");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the collector must answer, not hang"
    );
    let status = Status::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, 14);
    assert!(status.message.contains("retry later"), "{}", status.message);

    stack.broker.restart().await.unwrap();
    let mut attempt = 0;
    let acknowledged = wait_for(
        "the collector to accept again",
        Duration::from_secs(90),
        || {
            attempt += 1;
            let marker = unique(&format!("after-{attempt}"));
            let url = url.clone();
            async move {
                let resp = post(
                    &url,
                    "application/x-protobuf",
                    None,
                    request(&[&marker]).encode_to_vec(),
                )
                .await;
                (resp.status() == 200).then_some(marker)
            }
        },
    )
    .await
    .unwrap();
    // What was acknowledged is stored exactly once; what was there before is untouched.
    stack
        .wait_log_count(&marker_filter(&acknowledged), 1, Duration::from_secs(60))
        .await
        .unwrap();
    stack
        .wait_log_count(&marker_filter(&before), 1, Duration::from_secs(5))
        .await
        .unwrap();
}
