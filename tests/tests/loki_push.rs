//! Loki push end to end: JSON (gzip) and snappy protobuf bodies → collector → obs.logs →
//! otel_logs, exactly the rows expected; bad bodies refused whole.

use std::io::Write;
use std::time::Duration;

use clickhouse::Row;
use obs_e2e::{Stack, http, recent_whole_second_ns, repo_root, wait_for};
use prost::Message;
use serde::Deserialize;

#[derive(Debug, PartialEq, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LogRow {
    timestamp: i64,
    service_name: String,
    severity_text: String,
    body: String,
    resource_attributes: Vec<(String, String)>,
    log_attributes: Vec<(String, String)>,
    tenant: String,
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn row(
    ts: i64,
    service: &str,
    level: &str,
    body: &str,
    res: &[(&str, &str)],
    attrs: &[(&str, &str)],
) -> LogRow {
    LogRow {
        timestamp: ts,
        service_name: service.into(),
        severity_text: level.into(),
        body: body.into(),
        resource_attributes: pairs(res),
        log_attributes: pairs(attrs),
        tenant: "loki-tenant".into(),
    }
}

/// A `logproto.PushRequest`, given in protobuf's JSON mapping, encoded from Loki's schema
/// (`tests/proto/loki_push.proto`, compiled at run time by protox, encoded by prost-reflect):
/// independent of the collector's own structs.
fn loki_push_protobuf(request: serde_json::Value) -> Vec<u8> {
    let files = protox::compile(["loki_push.proto"], [repo_root().join("tests/proto")])
        .expect("tests/proto/loki_push.proto compiles");
    let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(files).unwrap();
    let desc = pool.get_message_by_name("logproto.PushRequest").unwrap();
    prost_reflect::DynamicMessage::deserialize(desc, request)
        .expect("a PushRequest in protobuf's JSON mapping")
        .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn loki_json_and_protobuf_pushes_are_stored_as_sent() {
    let stack = Stack::start().await.unwrap();
    let url = format!("{}/loki/api/v1/push", stack.collector_url());
    let t = recent_whole_second_ns();
    let json = serde_json::json!({"streams": [
        {"stream": {"service_name": "api", "level": "info", "env": "prod"},
         "values": [[(t + 1).to_string(), "GET /a 200"], [(t + 2).to_string(), "GET /b 404"]]},
        {"stream": {"job": "worker"},
         "values": [[(t + 3).to_string(), "job done", {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}]]}
    ]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.to_string().as_bytes()).unwrap();
    let r = http(30)
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .header("X-Scope-OrgID", "loki-tenant")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());

    // Encoded from Loki's own schema, not with the collector's structs.
    let at = |nanos: u32| {
        chrono::DateTime::from_timestamp(t / 1_000_000_000, nanos)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    let pb = loki_push_protobuf(serde_json::json!({"streams": [{
        "labels": r#"{job="batch", level="error", note="a \"quoted\" value"}"#,
        "entries": [
            {"timestamp": at(4), "line": "disk full",
             "structuredMetadata": [{"name": "path", "value": "/var"}]},
            {"timestamp": at(5), "line": "retrying"}
        ]
    }]}));
    let body = snap::raw::Encoder::new().compress_vec(&pb).unwrap();
    let r = http(30)
        .post(&url)
        .header("Content-Type", "application/x-protobuf")
        .header("X-Scope-OrgID", "loki-tenant")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());

    // Refused whole: bad snappy; a bad timestamp next to a good entry.
    let r = http(30)
        .post(&url)
        .header("Content-Type", "application/x-protobuf")
        .header("X-Scope-OrgID", "loki-tenant")
        .body(b"\xff\xff\xff\xffnope".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("snappy"));
    let bad = serde_json::json!({"streams": [{"stream": {"job": "x"},
        "values": [[(t + 9).to_string(), "good"], ["yesterday", "bad"]]}]});
    let r = http(30)
        .post(&url)
        .header("X-Scope-OrgID", "loki-tenant")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("stream #0 value #1: timestamp")
    );

    // Everything published is stored (the refused bodies' good lines would be there by now).
    stack.wait_sink_caught_up("otel_logs").await.unwrap();
    let db = stack.db();
    let rows: Vec<LogRow> = wait_for("5 Loki lines", Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let rows: Vec<LogRow> = db
                .query("SELECT Timestamp, ServiceName, SeverityText, Body, ResourceAttributes, LogAttributes, Tenant FROM otel_logs WHERE Tenant = 'loki-tenant' ORDER BY Timestamp")
                .fetch_all()
                .await
                .ok()?;
            (rows.len() >= 5).then_some(rows)
        }
    })
    .await
    .unwrap();
    let api = [("env", "prod"), ("level", "info"), ("service_name", "api")];
    let batch = [
        ("job", "batch"),
        ("level", "error"),
        ("note", "a \"quoted\" value"),
    ];
    assert_eq!(
        rows,
        vec![
            row(t + 1, "api", "info", "GET /a 200", &api, &[]),
            row(t + 2, "api", "info", "GET /b 404", &api, &[]),
            row(
                t + 3,
                "worker",
                "",
                "job done",
                &[("job", "worker")],
                &[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")]
            ),
            row(
                t + 4,
                "batch",
                "error",
                "disk full",
                &batch,
                &[("path", "/var")]
            ),
            row(t + 5, "batch", "error", "retrying", &batch, &[]),
        ]
    );
}
