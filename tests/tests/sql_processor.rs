//! The SQL processor against the real broker, registry and ClickHouse: two queries of
//! `tests/sql/queries.toml` over log records sent by OTLP (three services, one in each
//! `obs.logs` partition, ten minutes of records every 5 s, two hours old):
//!
//! * every row of `sql_errors_per_route` (tumbling minutes) and `sql_logs_per_service_5m`
//!   (5-minute windows every minute) equals what the test counts from the records it sent;
//!   no window is missing or extra;
//! * a record 17 s behind the newest (lateness 30 s) is counted in its windows; one
//!   4 minutes behind is late for its minute (counted in `obs_sql_late_records_total`) but
//!   still in the one 5-minute window not yet run;
//! * `obs migrate` made the tables before any output; the output schema is in the
//!   registry and the tables have its columns;
//! * a window the statement fails on (a division by zero) has no rows and is a dead
//!   letter naming it;
//! * with the processor SIGKILLed while the records arrive, the rows are the same, and no
//!   window was ever written with other rows.

use std::collections::BTreeMap;
use std::time::Duration;

use obs_e2e::{Stack, wait_for};
use serde_json::json;

const MINUTE: i64 = 60_000;
const ROUTES: [&str; 3] = ["/a", "/b", "/c"];
/// Chunks of 20 s sent: ten minutes.
const CHUNKS: i64 = 30;

/// One record: service, time (ms), route, error.
type Record = (String, i64, String, bool);

/// One service name per `obs.logs` partition (three), as the collector partitions streams.
fn services() -> Vec<String> {
    let mut found: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0.. {
        let s = format!("sqlsvc-{i}");
        let fp = obs_schemas::stream_fingerprint("default", &s, [("service.name", s.as_str())]);
        found.entry(fp as u64 % 3).or_insert(s);
        if found.len() == 3 {
            break;
        }
    }
    found.into_values().collect()
}

/// The records of chunk `c` (event time `[t0 + c·20 s, t0 + (c+1)·20 s)`, one request) of
/// service `k`.
fn chunk(t0: i64, c: i64, k: usize, service: &str) -> Vec<Record> {
    (0..4)
        .map(|i| {
            let s = c * 4 + i; // 5-second step number
            let t = t0 + s * 5_000;
            // Uneven counts per route and minute, so no misplaced record goes unnoticed.
            let route = ROUTES[((s * s + s / 7) as usize + k) % 3].to_string();
            (service.to_string(), t, route, (s * 5 + k as i64) % 7 < 2)
        })
        .collect()
}

async fn send(stack: &Stack, records: &[Record]) {
    let service = &records[0].0;
    let body = records
        .iter()
        .map(|(_, t, route, error)| {
            json!({
                "timeUnixNano": (t * 1_000_000).to_string(),
                "severityNumber": if *error { 17 } else { 9 },
                "body": {"stringValue": "request"},
                "attributes": [{"key": "http.route", "value": {"stringValue": route}}]
            })
        })
        .collect();
    stack.post_otlp_logs(service, "sqltest", body).await;
}

/// Sends chunks `from..to` of every service; returns what was sent.
async fn send_chunks(
    stack: &Stack,
    t0: i64,
    services: &[String],
    from: i64,
    to: i64,
) -> Vec<Record> {
    let mut sent = Vec::new();
    for c in from..to {
        for (k, s) in services.iter().enumerate() {
            let records = chunk(t0, c, k, s);
            send(stack, &records).await;
            sent.extend(records);
        }
    }
    sent
}

/// Per (window start, route): requests and errors, from the records the minute query saw.
fn per_route(records: &[Record]) -> BTreeMap<(i64, String), (i64, i64)> {
    let mut out = BTreeMap::new();
    for (_, t, route, error) in records {
        let e = out
            .entry((t.div_euclid(MINUTE) * MINUTE, route.clone()))
            .or_insert((0, 0));
        e.0 += 1;
        e.1 += i64::from(*error);
    }
    out
}

/// Per (window start, service): records, over 5-minute windows every minute.
fn per_service(records: &[Record]) -> BTreeMap<(i64, String), i64> {
    let mut out = BTreeMap::new();
    for (service, t, _, _) in records {
        let last = t.div_euclid(MINUTE) * MINUTE;
        for k in 0..5 {
            *out.entry((last - k * MINUTE, service.clone())).or_insert(0) += 1;
        }
    }
    out
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct RouteRow {
    window_start_ms: i64,
    window_end_ms: i64,
    route: Option<String>,
    requests: i64,
    errors: Option<i64>,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ServiceRow {
    window_start_ms: i64,
    window_end_ms: i64,
    service: String,
    records: i64,
}

async fn stored_routes(stack: &Stack) -> BTreeMap<(i64, String), (i64, i64)> {
    let rows: Vec<RouteRow> = stack
        .db()
        .query("SELECT window_start_ms, window_end_ms, route, requests, errors FROM sql_errors_per_route FINAL")
        .fetch_all()
        .await
        .unwrap_or_default();
    rows.into_iter()
        .map(|r| {
            assert_eq!(r.window_end_ms - r.window_start_ms, MINUTE);
            (
                (r.window_start_ms, r.route.unwrap_or_default()),
                (r.requests, r.errors.unwrap_or(-1)),
            )
        })
        .collect()
}

async fn stored_services(stack: &Stack) -> BTreeMap<(i64, String), i64> {
    let rows: Vec<ServiceRow> = stack
        .db()
        .query("SELECT window_start_ms, window_end_ms, service, records FROM sql_logs_per_service_5m FINAL")
        .fetch_all()
        .await
        .unwrap_or_default();
    rows.into_iter()
        .map(|r| {
            assert_eq!(r.window_end_ms - r.window_start_ms, 5 * MINUTE);
            ((r.window_start_ms, r.service), r.records)
        })
        .collect()
}

/// Waits until both tables hold their last expected window (windows are written in
/// order), then compares them with what is expected.
async fn check(
    stack: &Stack,
    routes: &BTreeMap<(i64, String), (i64, i64)>,
    services: &BTreeMap<(i64, String), i64>,
) {
    let last_route = routes.keys().map(|k| k.0).max();
    let last_service = services.keys().map(|k| k.0).max();
    let got = wait_for(
        "the last window in sql_errors_per_route and sql_logs_per_service_5m",
        Duration::from_secs(150),
        || async {
            let r = stored_routes(stack).await;
            let s = stored_services(stack).await;
            let done = r.keys().map(|k| k.0).max() == last_route
                && s.keys().map(|k| k.0).max() == last_service;
            done.then_some((r, s))
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nprocessor:\n{}\nobs:\n{}",
            stack.processor_log(),
            stack.obs_log()
        )
    });
    assert_eq!(&got.0, routes, "errors per route per minute");
    assert_eq!(&got.1, services, "records per service per 5 minutes");
}

/// Waits until the processor has read `n` records for the minute query.
async fn read_all(stack: &Stack, n: usize) {
    let metric = "obs_sql_records_total{query=\"errors_per_route\"}";
    wait_for(
        &format!("the processor to read {n} records"),
        Duration::from_secs(20),
        || async {
            let got = stack.processor_metric(metric).await?;
            (got as usize >= n).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.processor_log()));
}

/// Ten whole minutes, two hours back.
fn start_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    (now - 2 * 60 * MINUTE).div_euclid(MINUTE) * MINUTE
}

/// The stack's settings: the test's queries, partitions idle after `idle_ms`.
fn env<'a>(queries_file: &'a str, idle_ms: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("OBS_SQL__QUERIES_FILE", queries_file),
        ("OBS_SQL__IDLE_PARTITION_MS", idle_ms),
        ("OBS_SQL__CHECKPOINT_INTERVAL_MS", "500"),
        ("OBS_ROLLUPS__ENABLED", "false"),
        ("OBS_SINK__BATCH_MAX_WAIT_MS", "200"),
    ]
}

fn queries_file() -> String {
    obs_e2e::repo_root()
        .join("tests/sql/queries.toml")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn windowed_counts_equal_the_records_sent_and_late_records_are_counted() {
    let file = queries_file();
    let stack = Stack::start_with_separate_processor(&env(&file, "30000"))
        .await
        .expect("stack started");
    // The tables exist before any output: obs migrate made them from the planned queries.
    let tables: Vec<String> = stack
        .db()
        .query("SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'sql\\_%' ORDER BY name")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        tables,
        [
            "sql_errors_per_route",
            "sql_fails_on_36",
            "sql_logs_per_service_5m"
        ]
    );
    let t0 = start_ms();
    let svcs = services();
    // Up to 5:20 and read by the processor (event time 5:15 − 30 s in every partition);
    // then a record 17 s behind the newest: its minute is still open.
    let mut minute_query = send_chunks(&stack, t0, &svcs, 0, 16).await;
    read_all(&stack, minute_query.len()).await;
    let inside = vec![(
        svcs[0].clone(),
        t0 + 4 * MINUTE + 58_000,
        "/late".to_string(),
        true,
    )];
    send(&stack, &inside).await;
    minute_query.extend(inside);
    // Up to 8:00 and read: event time is 7:25 in every partition, so a record for 3:30
    // is late for its minute but not for the 5-minute window [3:00, 8:00).
    minute_query.extend(send_chunks(&stack, t0, &svcs, 16, 24).await);
    read_all(&stack, minute_query.len()).await;
    let outside = vec![(
        svcs[1].clone(),
        t0 + 3 * MINUTE + 30_000,
        "/late".to_string(),
        false,
    )];
    send(&stack, &outside).await;
    let mut hopping_query = minute_query.clone();
    hopping_query.extend(outside.clone());
    let rest = send_chunks(&stack, t0, &svcs, 24, CHUNKS).await;
    minute_query.extend(rest.clone());
    hopping_query.extend(rest);

    let mut services_expected = per_service(&hopping_query);
    // The late record is only in the window not run when it came.
    for k in 1..5 {
        let key = (t0 + (3 - k) * MINUTE, svcs[1].clone());
        *services_expected.get_mut(&key).expect("window") -= 1;
    }
    check(&stack, &per_route(&minute_query), &services_expected).await;
    // Every minute but 4 holds 36 records: the statement divides by zero there, so those
    // windows have no rows and each is a dead letter naming it.
    let failed: Vec<i64> = stack
        .db()
        .query("SELECT DISTINCT window_start_ms FROM sql_fails_on_36 FINAL ORDER BY 1")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        failed,
        [t0 + 4 * MINUTE],
        "only minute 4 (37 records) has rows"
    );
    let letters = stack
        .dead_letters(Duration::from_secs(30), Duration::from_secs(2))
        .await
        .unwrap();
    let mut windows: Vec<String> = letters
        .iter()
        .filter(|(_, l)| l.stage == "sql:fails_on_36")
        .map(|(_, l)| {
            assert!(l.error.contains("Divide by zero"), "{}", l.error);
            l.error.split(')').next().unwrap_or_default().to_string()
        })
        .collect();
    windows.sort();
    let want: Vec<String> = (0..10)
        .filter(|&m| m != 4)
        .map(|m| {
            let start = t0 + m * MINUTE;
            format!("query fails_on_36, window [{start}, {}", start + MINUTE)
        })
        .collect();
    assert_eq!(windows, want);
    for (query, late) in [("errors_per_route", 1.0), ("logs_per_service_5m", 0.0)] {
        let metric = format!("obs_sql_late_records_total{{query=\"{query}\"}}");
        let got = stack.processor_metric(&metric).await;
        assert_eq!(got, Some(late), "{metric}");
    }

    // The output schema is registered, and the table has its columns.
    let latest = stack.latest_schema("obs.sql.errors_per_route-value").await;
    let schema: serde_json::Value =
        serde_json::from_str(latest["schema"].as_str().unwrap()).unwrap();
    let fields: Vec<String> = schema["fields"][0]["type"]["items"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        fields,
        [
            "window_start_ms",
            "window_end_ms",
            "row",
            "route",
            "requests",
            "errors"
        ]
    );
    let columns: Vec<(String, String)> = stack
        .db()
        .query("SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'sql_errors_per_route' ORDER BY position")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        columns,
        [
            ("window_start_ms", "Int64"),
            ("window_end_ms", "Int64"),
            ("row", "UInt32"),
            ("route", "Nullable(String)"),
            ("requests", "Int64"),
            ("errors", "Nullable(Int64)"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_the_processor_neither_loses_nor_changes_a_window() {
    let file = queries_file();
    let mut stack = Stack::start_with_separate_processor(&env(&file, "20000"))
        .await
        .expect("stack started");
    let t0 = start_ms();
    let svcs = services();
    let mut sent = Vec::new();
    for c in 0..CHUNKS {
        sent.extend(send_chunks(&stack, t0, &svcs, c, c + 1).await);
        if c % 6 == 5 {
            wait_for(
                "the processor to read records",
                Duration::from_secs(60),
                || async {
                    let n = stack
                        .processor_metric("obs_sql_records_total{query=\"errors_per_route\"}")
                        .await?;
                    (n > 0.0).then_some(())
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.processor_log()));
            stack.crash_processor(&format!("after chunk {c}")).await;
        }
    }
    check(&stack, &per_route(&sent), &per_service(&sent)).await;
    // A window written more than once was written with the same rows each time.
    let changed: Vec<(i64, u32)> = stack
        .db()
        .query(
            "SELECT window_start_ms, row FROM sql_errors_per_route \
             GROUP BY window_start_ms, row \
             HAVING uniqExact(route, requests, errors) > 1",
        )
        .fetch_all()
        .await
        .unwrap();
    assert!(
        changed.is_empty(),
        "windows written with other rows: {changed:?}"
    );
}
