//! Schemas and tables change while data is in flight. A second version of `obs.logs-value`
//! (a field added with a default) is registered as BACKWARD compatible while version-1
//! messages are still in the topic, and messages written with it arrive between version-1
//! ones: the sink stores both, and `obs replay` reads both into a fresh table with exactly
//! the same rows. And a database created by an older obs (migrations 1..7) holding rows is
//! migrated by `obs migrate` to the current version with every row of every table kept.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use obs_e2e::{Stack, http, repo_root, wait_for};
use obs_schemas::Topic;
use obs_schemas::migrations::{MIGRATIONS, Retention};
use obs_schemas::records::{LogBatch, LogRecord};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Every row of `table` where `filter`, as sorted TSV lines of `columns`.
async fn rows(db: &clickhouse::Client, table: &str, columns: &str, filter: &str) -> Vec<String> {
    db.query(&format!(
        "SELECT formatRow('TabSeparated', {columns}) AS r FROM {table} WHERE {filter} ORDER BY r"
    ))
    .fetch_all()
    .await
    .unwrap()
}

/// `obs.logs-value` version 2: version 1 (`schemas/avro/log_batch.avsc`) with a `priority`
/// field (int, default 0) added to `LogRecord`.
fn version_2() -> Value {
    let v1: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("schemas/avro/log_batch.avsc")).unwrap(),
    )
    .unwrap();
    let mut v2 = v1.clone();
    let fields = v2["fields"][0]["type"]["items"]["fields"]
        .as_array_mut()
        .expect("LogRecord's fields");
    fields.push(json!({"name": "priority", "type": "int", "default": 0,
                       "doc": "Added in version 2."}));
    v2
}

/// A LogBatch written with schema `v2` (id `id`) in Confluent's wire format: the record as
/// version 1 shapes it, plus `priority`.
fn encode_v2(v2: &Schema, id: u32, batch: &LogBatch, priority: i32) -> Vec<u8> {
    let Schema::Record(batch_schema) = v2 else {
        panic!("a record")
    };
    let Schema::Array(items) = &batch_schema.fields[0].schema else {
        panic!("records is an array")
    };
    let mut records = Vec::new();
    for r in &batch.records {
        let Avro::Record(mut fields) = apache_avro::to_value(r).unwrap() else {
            panic!("a record")
        };
        fields.push(("priority".into(), Avro::Int(priority)));
        records.push(Avro::Record(fields).resolve(&items.items).unwrap());
    }
    let value = Avro::Record(vec![("records".into(), Avro::Array(records))]);
    let mut bytes = vec![0u8];
    bytes.extend(id.to_be_bytes());
    apache_avro::writer::datum::GenericDatumWriter::builder(v2)
        .build()
        .unwrap()
        .write_value_ref(&mut bytes, &value)
        .unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backward_compatible_schema_version_is_read_beside_the_old_one() {
    let stack = Stack::start().await.unwrap();
    let base = now_ns() - 5 * 60 * 1_000_000_000;
    let log = |i: i64| {
        json!({
            "timeUnixNano": (base + i * 1_000_000_000).to_string(),
            "severityText": "INFO",
            "body": {"stringValue": format!("evolve {i}")}
        })
    };
    // Version 1 from the collector.
    stack
        .post_otlp_logs("evolve-svc", "evolve", (0..3).map(log).collect())
        .await;

    // Version 2 registered while version-1 messages are in the topic.
    let registry = format!("http://127.0.0.1:{}", stack.ports.registry);
    let subject = Topic::Logs.value_subject();
    let v2 = version_2();
    let resp = http(30)
        .put(format!("{registry}/config/{subject}"))
        .json(&json!({"compatibility": "BACKWARD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = http(30)
        .post(format!("{registry}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": v2.to_string()}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "version 2 refused: {answer}");
    let id = answer["id"].as_u64().unwrap() as u32;
    let versions: Vec<u32> = http(30)
        .get(format!("{registry}/subjects/{subject}/versions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(versions, [1, 2]);

    // Three version-2 messages, then version 1 again from the collector.
    let schema_v2 = Schema::parse(&v2).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.broker.bootstrap())
        .create()
        .unwrap();
    for i in 3..6 {
        let batch = LogBatch {
            records: vec![LogRecord {
                timestamp_ns: base + i * 1_000_000_000,
                observed_timestamp_ns: base + i * 1_000_000_000,
                severity_text: "INFO".into(),
                body: format!("evolve {i}"),
                service: "evolve-svc".into(),
                tenant: "default".into(),
                ..Default::default()
            }],
        };
        producer
            .send(
                FutureRecord::to(Topic::Logs.name())
                    .key("evolve")
                    .payload(&encode_v2(&schema_v2, id, &batch, 7)),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    stack
        .post_otlp_logs("evolve-svc", "evolve", (6..9).map(log).collect())
        .await;

    // The sink stores all nine.
    let db = stack.db();
    let filter = "ServiceName = 'evolve-svc'";
    wait_for(
        "9 records of both versions",
        Duration::from_secs(60),
        || {
            let db = db.clone();
            async move {
                let n: u64 = db
                    .query(&format!("SELECT count() FROM otel_logs WHERE {filter}"))
                    .fetch_one()
                    .await
                    .ok()?;
                (n >= 9).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));
    stack.wait_sink_caught_up("otel_logs").await.unwrap();
    let bodies: Vec<String> = db
        .query(&format!(
            "SELECT Body FROM otel_logs WHERE {filter} ORDER BY Timestamp"
        ))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        bodies,
        (0..9).map(|i| format!("evolve {i}")).collect::<Vec<_>>()
    );

    // Replay reads both versions into a fresh table: the same rows.
    let out = stack
        .run_obs(&[
            "replay",
            "--quiet",
            "--topic",
            "logs",
            "--from",
            &(base / 1_000_000_000 - 1).to_string(),
            "--into",
            "otel_logs_evolved",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original = rows(&db, "otel_logs", "*", filter).await;
    assert_eq!(original.len(), 9);
    assert_eq!(
        rows(&db, "otel_logs_evolved", "*", filter).await,
        original,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrating_an_older_database_keeps_every_row() {
    let stack = Stack::start().await.unwrap();
    let server = stack.db().with_database("default");
    let old = "obs_older";
    // The database an obs of migration 7 left: its tables, and the record of what ran.
    server
        .query(&format!("CREATE DATABASE {old}"))
        .execute()
        .await
        .unwrap();
    let db = stack.db().with_database(old);
    db.query(
        "CREATE TABLE obs_schema_migrations (version UInt32, name String, \
         applied_at DateTime64(3) DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version",
    )
    .execute()
    .await
    .unwrap();
    let older: Vec<_> = MIGRATIONS.iter().filter(|m| m.version <= 7).collect();
    assert_eq!(older.len(), 7);
    for m in &older {
        for statement in m.statements(&Retention::default()) {
            db.query(&statement).execute().await.unwrap();
        }
        db.query("INSERT INTO obs_schema_migrations (version, name) VALUES (?, ?)")
            .bind(m.version)
            .bind(m.name)
            .execute()
            .await
            .unwrap();
    }
    // Rows in the tables of that version (times relative to now).
    for insert in [
        "INSERT INTO otel_logs (Timestamp, ServiceName, SeverityText, Body, LogAttributes, Tenant) \
         VALUES (now64(9) - 60, 'api', 'ERROR', 'disk full', map('path', '/var'), 'acme'), \
                (now64(9) - 30, 'api', 'INFO', 'ok', map(), 'umbrella')",
        "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ServiceName, SpanName, Duration, Tenant) \
         VALUES (now64(9) - 60, '5b8efff798038103d269b633813fc60c', '00f067aa0ba902b7', 'api', 'GET /', 5000000, 'acme'), \
                (now64(9) - 59, '5b8efff798038103d269b633813fc60c', '00f067aa0ba902b8', 'db', 'SELECT', 1000000, 'acme')",
        "INSERT INTO metrics_series (Tenant, MetricName, Fingerprint, Labels, Kind, LastSeenMs) \
         VALUES ('acme', 'up', 42, map('job', 'api'), 'gauge', toUnixTimestamp64Milli(now64(3)))",
        "INSERT INTO metrics_samples (Tenant, MetricName, Fingerprint, TimestampMs, Value) \
         VALUES ('acme', 'up', 42, toUnixTimestamp64Milli(now64(3)) - 15000, 1), \
                ('acme', 'up', 42, toUnixTimestamp64Milli(now64(3)), 0)",
        "INSERT INTO obs_events (Timestamp, EventId, Tenant, Type, Source, Title) \
         VALUES (now64(9) - 10, 'e1', 'acme', 'deploy', 'ci', 'v1.2.3')",
    ] {
        db.query(insert).execute().await.unwrap();
    }
    // Every table's rows, by the columns it has now.
    let tables: Vec<String> = db
        .query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() \
             AND engine NOT LIKE '%View' AND name != 'obs_schema_migrations' ORDER BY name",
        )
        .fetch_all()
        .await
        .unwrap();
    assert!(
        tables.contains(&"otel_traces_trace_id_ts".to_string()),
        "{tables:?}"
    );
    let mut before = Vec::new();
    for t in &tables {
        let columns: Vec<String> = db
            .query(
                "SELECT name FROM system.columns WHERE database = currentDatabase() \
                 AND table = ? AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') ORDER BY position",
            )
            .bind(t)
            .fetch_all()
            .await
            .unwrap();
        let list = columns.join(", ");
        let r = rows(&db, t, &list, "1").await;
        before.push((t.clone(), list, r));
    }
    let held: usize = before.iter().map(|(_, _, r)| r.len()).sum();
    // 2 logs, 2 spans and their trace's index row, a series, 2 samples, an event.
    assert_eq!(held, 9, "rows before: {before:?}");

    // The current obs migrates it.
    let out = stack
        .run_obs_with(&["migrate"], &[("OBS_CLICKHOUSE__DATABASE", old)])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied: Vec<u32> = db
        .query("SELECT DISTINCT version FROM obs_schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        applied,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    for (t, columns, rows_before) in &before {
        assert_eq!(
            &rows(&db, t, columns, "1").await,
            rows_before,
            "{t} changed its rows in the migration"
        );
    }
    // Migration 8's tenant column on the trace-id index: old rows have it empty, and a
    // lookup by id still finds the trace.
    let tenants: Vec<String> = db
        .query("SELECT Tenant FROM otel_traces_trace_id_ts")
        .fetch_all()
        .await
        .unwrap();
    assert!(
        !tenants.is_empty() && tenants.iter().all(String::is_empty),
        "{tenants:?}"
    );
}
