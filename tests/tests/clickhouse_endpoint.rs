//! The ClickHouse HTTP endpoint over chDB, exercised with the `clickhouse` crate (its
//! defaults: LZ4 both ways, RowBinaryWithNamesAndTypes with schema validation) and plain
//! HTTP; plus the migrations against it.

use clickhouse::Row;
use obs_e2e::ClickHouse;
use obs_schemas::migrations::{MIGRATIONS, Retention, migrate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct AllTypes {
    ts: i64,
    ts_sec: u32,
    s: String,
    lc: String,
    u8v: u8,
    u32v: u32,
    u64v: u64,
    i64v: i64,
    f64v: f64,
    m: Vec<(String, String)>,
    #[serde(rename = "ev.Timestamp")]
    ev_timestamp: Vec<i64>,
    #[serde(rename = "ev.Name")]
    ev_name: Vec<String>,
    #[serde(rename = "ev.Attributes")]
    ev_attributes: Vec<Vec<(String, String)>>,
}

const DDL: &str = "CREATE TABLE all_types (
    ts DateTime64(9), ts_sec DateTime, s String, lc LowCardinality(String), u8v UInt8, u32v UInt32,
    u64v UInt64, i64v Int64, f64v Float64, m Map(LowCardinality(String), String),
    ev Nested (Timestamp DateTime64(9), Name LowCardinality(String), Attributes Map(LowCardinality(String), String))
) ENGINE = MergeTree ORDER BY ts SETTINGS non_replicated_deduplication_window = 100";

fn row(i: u32) -> AllTypes {
    AllTypes {
        ts: 1_763_000_000_123_456_789 + i as i64,
        ts_sec: 1_763_000_000 + i,
        s: format!("body 'quoted' \\ {i} ✓"),
        lc: ["a", "b"][i as usize % 2].into(),
        u8v: 255,
        u32v: i,
        u64v: u64::MAX - i as u64,
        i64v: -(i as i64),
        f64v: 0.1 * i as f64,
        m: vec![("k".into(), format!("v{i}")), ("z".into(), String::new())],
        ev_timestamp: vec![1, 2],
        ev_name: vec!["e1".into(), "e2".into()],
        ev_attributes: vec![vec![("a".into(), "1".into())], vec![]],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_and_select_every_column_type_the_tables_use() {
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(dir.path()).await.unwrap();
    let client = ch.client();
    client.query(DDL).execute().await.unwrap();
    let rows: Vec<AllTypes> = (0..20_000).map(row).collect();
    let mut insert = client.insert::<AllTypes>("all_types").await.unwrap();
    for r in &rows {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();
    let back: Vec<AllTypes> = client
        .query("SELECT ?fields FROM all_types ORDER BY ts")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back.len(), rows.len());
    assert_eq!(back, rows);

    // Bound parameters, client-side (`?`) and server-side (`{name:Type}`).
    let n: u64 = client
        .query("SELECT count() FROM all_types WHERE lc = ? AND s LIKE {pat:String}")
        .bind("a")
        .param("pat", "%'quoted'%")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 10_000);

    // Plain RowBinary (the crate without schema validation) into the same columns.
    let plain: Vec<AllTypes> = (20_000..20_100).map(row).collect();
    let mut insert = client
        .clone()
        .with_validation(false)
        .insert::<AllTypes>("all_types")
        .await
        .unwrap();
    for r in &plain {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();
    let back: Vec<AllTypes> = client
        .query("SELECT ?fields FROM all_types WHERE u32v >= 20000 ORDER BY ts")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back, plain);

    // A header whose types are not the table's is refused by the engine, naming the column.
    let mut body = vec![1u8];
    for text in ["u32v", "UInt64"] {
        body.push(text.len() as u8);
        body.extend_from_slice(text.as_bytes());
    }
    body.extend_from_slice(&7u64.to_le_bytes());
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/?query=INSERT+INTO+all_types+(u32v)+FORMAT+RowBinaryWithNamesAndTypes",
            ch.url()
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-clickhouse-exception-code"], "117");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("Type of 'u32v' must be UInt32, not UInt64"),
        "{text}"
    );
    let n: u64 = client
        .query("SELECT count() FROM all_types")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 20_100);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_codes_and_multi_statements_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(dir.path()).await.unwrap();
    let client = ch.client();

    let err = client
        .query("SELECT * FROM missing_table")
        .fetch_all::<u8>()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Code: 60"), "{err}");

    let err = client
        .query("SELECT 1; SELECT 2")
        .fetch_all::<u8>()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Code: 62") && err.to_string().contains("Multi-statements"),
        "{err}"
    );

    // The same over plain HTTP: status 500 and the code in X-ClickHouse-Exception-Code.
    let http = reqwest::Client::new();
    let resp = http
        .post(ch.url())
        .body("SELECT 1; DROP TABLE x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-clickhouse-exception-code"], "62");
    let resp = http
        .post(format!("{}/?query=SELECT+nope()", ch.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-clickhouse-exception-code"], "46");
    // A `;` inside a string is not a second statement.
    let resp = http
        .post(ch.url())
        .body("SELECT 'a;b'")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "a;b\n");
    // INSERT with its data in the body, and GET being read-only.
    http.post(ch.url())
        .body("CREATE TABLE t (a UInt8) ENGINE = Memory")
        .send()
        .await
        .unwrap();
    let resp = http
        .post(format!("{}/?query=INSERT+INTO+t+FORMAT+CSV", ch.url()))
        .body("1\n2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .get(format!("{}/?query=INSERT+INTO+t+VALUES+(3)", ch.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-clickhouse-exception-code"], "164");
    let resp = http
        .get(format!("{}/?query=SELECT+sum(a)+FROM+t", ch.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "3\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_deduplication_token_stores_a_retried_block_once() {
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(dir.path()).await.unwrap();
    let client = ch.client();
    client.query(DDL).execute().await.unwrap();
    for token in ["t1", "t1", "t2"] {
        let mut insert = client
            .insert::<AllTypes>("all_types")
            .await
            .unwrap()
            .with_setting("insert_deduplication_token", token);
        for i in 0..3 {
            insert.write(&row(i)).await.unwrap();
        }
        insert.end().await.unwrap();
    }
    let n: u64 = client
        .query("SELECT count() FROM all_types")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 6, "t1 twice is stored once, t2 once");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_idempotent_and_give_the_otel_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(dir.path()).await.unwrap();
    let client = ch.client();
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    let first = migrate(&client, "obs_test", &Retention::default(), None)
        .await
        .unwrap();
    assert_eq!(
        (first.applied.clone(), first.already.clone()),
        (all.clone(), vec![])
    );
    let second = migrate(&client, "obs_test", &Retention::default(), None)
        .await
        .unwrap();
    assert_eq!((second.applied, second.already), (vec![], all));

    #[derive(Row, Deserialize)]
    struct Col {
        name: String,
        #[serde(rename = "type")]
        ty: String,
    }
    let cols: Vec<Col> = client
        .query("SELECT name, type FROM system.columns WHERE database = 'obs_test' AND table = ? ORDER BY position")
        .bind("otel_logs")
        .fetch_all()
        .await
        .unwrap();
    let got: Vec<(String, String)> = cols.into_iter().map(|c| (c.name, c.ty)).collect();
    let want: Vec<(&str, &str)> = vec![
        ("Timestamp", "DateTime64(9)"),
        ("TimestampTime", "DateTime"),
        ("TraceId", "String"),
        ("SpanId", "String"),
        ("TraceFlags", "UInt8"),
        ("SeverityText", "LowCardinality(String)"),
        ("SeverityNumber", "UInt8"),
        ("ServiceName", "LowCardinality(String)"),
        ("Body", "String"),
        ("ResourceSchemaUrl", "LowCardinality(String)"),
        ("ResourceAttributes", "Map(LowCardinality(String), String)"),
        ("ScopeSchemaUrl", "LowCardinality(String)"),
        ("ScopeName", "String"),
        ("ScopeVersion", "LowCardinality(String)"),
        ("ScopeAttributes", "Map(LowCardinality(String), String)"),
        ("LogAttributes", "Map(LowCardinality(String), String)"),
        ("EventName", "String"),
        ("Tenant", "LowCardinality(String)"),
    ];
    let want: Vec<(String, String)> = want
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
    assert_eq!(got, want);

    let tables: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = 'obs_test' ORDER BY name")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        tables,
        [
            "metrics_exemplars",
            "metrics_metadata",
            "metrics_rollups",
            "metrics_samples",
            "metrics_series",
            "obs_alerts",
            "obs_error_events",
            "obs_events",
            "obs_late_writes",
            "obs_replay_log",
            "obs_schema_migrations",
            "obs_servicegraph_edges",
            "obs_sink_intents",
            "obs_trace_summaries",
            "otel_logs",
            "otel_traces",
            "otel_traces_trace_id_ts",
            "otel_traces_trace_id_ts_mv"
        ]
    );
    let sorting: String = client
        .query("SELECT sorting_key FROM system.tables WHERE database = 'obs_test' AND name = 'otel_traces'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        sorting,
        "Tenant, ServiceName, SpanName, toDateTime(Timestamp)"
    );
}

/// A client that dies mid-insert (a sink killed with SIGKILL) must leave nothing behind:
/// a partial body inserted under its dedup token would hide the rest when the client
/// retries. Found by the sink crash test; this is the direct check.
#[tokio::test(flavor = "multi_thread")]
async fn an_insert_whose_body_is_cut_off_stores_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(dir.path()).await.unwrap();
    let client = ch.client();
    client
        .query("CREATE TABLE cut (n UInt32) ENGINE = MergeTree ORDER BY n")
        .execute()
        .await
        .unwrap();
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", ch.port)).unwrap();
        write!(
            s,
            "POST /?query=INSERT%20INTO%20cut%20FORMAT%20TSV HTTP/1.1\r\nHost: x\r\n\
             Transfer-Encoding: chunked\r\n\r\n4\r\n1\n2\n\r\n"
        )
        .unwrap();
        s.flush().unwrap();
        // No terminating chunk: the client goes away. Reading to the end waits until the
        // endpoint has dealt with the request and closed its side.
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        use std::io::Read;
        let _ = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            !answer.contains("200 OK"),
            "a cut-off insert was answered: {answer}"
        );
    }
    // A complete insert afterwards works, so the endpoint is fine and the cut one is gone.
    client
        .query("INSERT INTO cut VALUES (3)")
        .execute()
        .await
        .unwrap();
    let rows: Vec<u32> = client
        .query("SELECT n FROM cut ORDER BY n")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows, [3]);
}

/// The endpoint reuses connections between requests and caches table descriptions for
/// inserts; each request must still see exactly its own session (as a new session per
/// request on clickhouse-server) and the table as it is now.
#[tokio::test(flavor = "multi_thread")]
async fn requests_share_no_session_state_and_inserts_see_altered_tables() {
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(dir.path()).await.unwrap();
    let http = reqwest::Client::new();
    let run = |query: &'static str, params: &'static str| {
        let req = http
            .post(format!("{}/?{params}", ch.url()))
            .body(query)
            .send();
        async move {
            let resp = req.await.unwrap();
            let status = resp.status();
            let summary = resp
                .headers()
                .get("x-clickhouse-summary")
                .map(|v| v.to_str().unwrap().to_string());
            let text = resp.text().await.unwrap();
            assert_eq!(status, 200, "{query}: {text}");
            (text, summary)
        }
    };
    let setting = "SELECT getSetting('max_result_rows'), currentDatabase()";
    // Several times each, so a pooled connection is the one reused.
    for _ in 0..3 {
        assert_eq!(run(setting, "max_result_rows=7").await.0, "7\tdefault\n");
        assert_eq!(run(setting, "").await.0, "0\tdefault\n");
        assert_eq!(run(setting, "database=system").await.0, "0\tsystem\n");
        // A session changed by a statement is not handed to the next request.
        run("SET max_result_rows = 9", "").await;
        run("USE system", "").await;
        assert_eq!(run(setting, "").await.0, "0\tdefault\n");
        run("CREATE TEMPORARY TABLE tmp (a UInt8)", "").await;
        assert_eq!(
            run("SELECT count() FROM system.tables WHERE name = 'tmp'", "")
                .await
                .0,
            "0\n"
        );
    }
    // The engine's own time comes back in the summary, as clickhouse-server's elapsed_ns.
    let (_, summary) = run("SELECT sum(number) FROM numbers(100000)", "").await;
    let summary: serde_json::Value = serde_json::from_str(&summary.unwrap()).unwrap();
    let elapsed: u64 = summary["elapsed_ns"].as_str().unwrap().parse().unwrap();
    assert!(elapsed > 0, "{summary}");

    // An insert after ALTER TABLE uses the new column list (a stale description of the
    // table would refuse column b, or write the rows without it).
    run("CREATE TABLE grow (a UInt32) ENGINE = MergeTree ORDER BY a SETTINGS non_replicated_deduplication_window = 10", "").await;
    run("INSERT INTO grow FORMAT CSV\n1\n", "").await;
    run("ALTER TABLE grow ADD COLUMN b String DEFAULT 'none'", "").await;
    run("INSERT INTO grow FORMAT CSV\n2,\"two\"\n", "").await;
    // A URL setting reaches the insert (a repeated token is stored once), and an insert's
    // own SETTINGS clause wins over the URL's.
    for _ in 0..2 {
        run(
            "INSERT INTO grow FORMAT CSV\n3,\"three\"\n",
            "insert_deduplication_token=x3",
        )
        .await;
    }
    run(
        "INSERT INTO grow SETTINGS insert_deduplication_token = 'own' FORMAT CSV\n4,\"four\"\n",
        "insert_deduplication_token=x3",
    )
    .await;
    assert_eq!(
        run("SELECT a, b FROM grow ORDER BY a", "").await.0,
        "1\tnone\n2\ttwo\n3\tthree\n4\tfour\n"
    );
    // A setting the engine does not know fails the insert with the engine's code.
    let resp = http
        .post(format!("{}/?no_such_setting=1", ch.url()))
        .body("INSERT INTO grow FORMAT CSV\n5,\"five\"\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-clickhouse-exception-code"], "115");
}
