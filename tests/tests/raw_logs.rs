//! The raw JSON-lines topic: lines a log agent publishes to `obs.logs.raw` (here with a
//! plain Kafka producer, as Vector's or Fluent Bit's Kafka output would) are normalised into
//! `otel_logs` with exactly the expected rows; a message with a broken line goes to the DLQ.

use std::time::Duration;

use clickhouse::Row;
use obs_e2e::{Stack, recent_whole_second_ns, rfc3339_ms, wait_for};
use obs_schemas::Topic;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

#[derive(Debug, PartialEq, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LogRow {
    timestamp: i64,
    service_name: String,
    severity_text: String,
    severity_number: u8,
    body: String,
    trace_id: String,
    resource_attributes: Vec<(String, String)>,
    log_attributes: Vec<(String, String)>,
    tenant: String,
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_json_lines_are_normalised_into_otel_logs() {
    let stack = Stack::start().await.unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.broker.bootstrap())
        .create()
        .unwrap();
    let t = recent_whole_second_ns();
    let messages: [String; 3] = [
        // Vector-style, two lines in one message.
        format!(
            "{{\"message\":\"GET /cart 200\",\"timestamp\":\"{}\",\"host\":\"web-1\",\"level\":\"info\",\"service\":\"shop\",\"http\":{{\"status\":200}},\"tenant\":\"agents\"}}\n\
             {{\"message\":\"GET /pay 502\",\"timestamp\":\"{}\",\"host\":\"web-1\",\"level\":\"error\",\"service\":\"shop\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"tenant\":\"agents\"}}",
            rfc3339_ms(t + 500_000_000),
            rfc3339_ms(t + 1_000_000_000)
        ),
        // Fluent Bit-style: seconds as a float, `log`, nested Kubernetes metadata.
        format!(
            "{{\"date\":{}.25,\"log\":\"disk almost full\",\"level\":\"warn\",\"kubernetes\":{{\"pod_name\":\"db-0\",\"namespace_name\":\"prod\"}},\"app\":\"postgres\",\"tenant\":\"agents\"}}",
            t / 1_000_000_000 + 2
        ),
        // Broken: the whole message goes to the DLQ.
        "{\"message\":\"fine\",\"tenant\":\"agents\"}\n{not json".to_string(),
    ];
    let mut offsets = vec![];
    for m in &messages {
        let d = producer
            .send(
                FutureRecord::<(), _>::to(Topic::LogsRaw.name())
                    .partition(0)
                    .payload(m.as_str()),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        offsets.push(d.offset);
    }
    let db = stack.db();
    let rows: Vec<LogRow> = wait_for("3 normalised lines", Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let rows: Vec<LogRow> = db
                .query("SELECT Timestamp, ServiceName, SeverityText, SeverityNumber, Body, TraceId, ResourceAttributes, LogAttributes, Tenant FROM otel_logs WHERE Tenant = 'agents' ORDER BY Timestamp")
                .fetch_all()
                .await
                .ok()?;
            (rows.len() >= 3).then_some(rows)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));
    assert_eq!(
        rows,
        vec![
            LogRow {
                timestamp: t + 500_000_000,
                service_name: "shop".into(),
                severity_text: "info".into(),
                severity_number: 9,
                body: "GET /cart 200".into(),
                trace_id: String::new(),
                resource_attributes: pairs(&[("host.name", "web-1"), ("service.name", "shop")]),
                log_attributes: pairs(&[("http.status", "200")]),
                tenant: "agents".into(),
            },
            LogRow {
                timestamp: t + 1_000_000_000,
                service_name: "shop".into(),
                severity_text: "error".into(),
                severity_number: 17,
                body: "GET /pay 502".into(),
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                resource_attributes: pairs(&[("host.name", "web-1"), ("service.name", "shop")]),
                log_attributes: vec![],
                tenant: "agents".into(),
            },
            LogRow {
                timestamp: t + 2_250_000_000,
                service_name: "postgres".into(),
                severity_text: "warn".into(),
                severity_number: 13,
                body: "disk almost full".into(),
                trace_id: String::new(),
                resource_attributes: pairs(&[("service.name", "postgres")]),
                log_attributes: pairs(&[
                    ("kubernetes.namespace_name", "prod"),
                    ("kubernetes.pod_name", "db-0")
                ]),
                tenant: "agents".into(),
            },
        ]
    );

    let letters = stack
        .dead_letters(Duration::from_secs(60), Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "exactly the broken message");
    let (_, letter) = &letters[0];
    assert_eq!(
        (letter.topic.as_str(), letter.offset),
        ("obs.logs.raw", offsets[2])
    );
    assert_eq!(letter.stage, "sink:otel_logs_raw");
    assert!(
        letter.error.starts_with("line 2 is not valid JSON"),
        "{}",
        letter.error
    );
    assert_eq!(letter.value.as_deref(), Some(messages[2].as_bytes()));
}
