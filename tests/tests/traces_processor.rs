//! The trace processor end to end: designed traces sent with the OpenTelemetry Python SDK
//! (tests/python/send_trace_topologies.py), then
//! * every span-metric series (calls, latency buckets, size) equals what the test works out
//!   from the spans the SDK says it sent, through our PromQL API;
//! * every service-graph series equals the requests the design makes (plain, database,
//!   messaging and virtual-node edges, unpaired spans), and Grafana's Tempo service-map
//!   queries return exactly the designed nodes and edges;
//! * tail sampling (tests/traces/sampling.yml) stores exactly the traces its policies keep,
//!   a span arriving after its trace was kept is stored too, one arriving after its trace
//!   was dropped is not; every trace has exactly one summary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use obs_e2e::{Stack, http, repo_root, run_python_sender, wait_for};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
struct Sent {
    trace_id: String,
    service: String,
    name: String,
    kind: String,
    status: String,
    start_ns: i64,
    end_ns: i64,
    size: u64,
}

const TEMPO_BUCKETS: [f64; 14] = [
    0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
    16.384,
];

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i64
}

fn send(stack: &Stack, scenario: &str, base_ns: i64, trace_ids: &[&str]) -> Vec<Sent> {
    let endpoint = format!("http://127.0.0.1:{}/v1/traces", stack.ports.otlp_http);
    let base = base_ns.to_string();
    let ids = trace_ids.join(",");
    run_python_sender(
        "send_trace_topologies.py",
        &[
            "--endpoint",
            &endpoint,
            "--scenario",
            scenario,
            "--base-ns",
            &base,
            "--trace-ids",
            &ids,
        ],
    )
}

/// An instant PromQL query as tenant acme: each series' labels (named ones only) → value.
async fn query(stack: &Stack, q: &str, by: &[&str]) -> BTreeMap<Vec<String>, f64> {
    let url = format!("{}/api/v1/query", stack.query_url());
    let body: Value = http(30)
        .get(&url)
        .header("X-Scope-OrgID", "acme")
        .query(&[("query", q)])
        .send()
        .await
        .expect("query API answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["status"], "success", "{q}: {body}");
    body["data"]["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|s| {
            let key = by
                .iter()
                .map(|l| s["metric"][*l].as_str().unwrap_or("").to_string())
                .collect();
            let v: f64 = s["value"][1]
                .as_str()
                .expect("value")
                .parse()
                .expect("number");
            (key, v)
        })
        .collect()
}

/// Asserts that `q` comes to answer `want`. The samples of one flush reach ClickHouse
/// through several Kafka partitions (by series), and a trace's edges are counted when it
/// is decided, after its spans: a query can land in between, so the answer is polled
/// until it settles (30 s at most), then compared.
async fn settles(
    stack: &Stack,
    q: &str,
    by: &[&str],
    want: &BTreeMap<Vec<String>, f64>,
    what: &str,
) {
    let settled = wait_for(what, Duration::from_secs(30), || async {
        (&query(stack, q, by).await == want).then_some(())
    })
    .await;
    if settled.is_err() {
        assert_eq!(&query(stack, q, by).await, want, "{what}: {q}");
    }
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn span_metrics_service_graph_and_tail_sampling() {
    let policies = repo_root().join("tests/traces/sampling.yml");
    let stack = Stack::start_with(&[
        ("OBS_TRACES__DECISION_WAIT_MS", "1000"),
        ("OBS_TRACES__IDLE_PARTITION_MS", "500"),
        ("OBS_TRACES__METRICS_INTERVAL_MS", "1000"),
        ("OBS_TRACES__CHECKPOINT_INTERVAL_MS", "500"),
        (
            "OBS_TRACES__SAMPLING_FILE",
            policies.to_str().expect("UTF-8 path"),
        ),
        ("OBS_SINK__TRACES_FROM", "sampled"),
    ])
    .await
    .expect("stack started");

    let base = now_ns() - 30_000_000_000;
    let mut sent = send(&stack, "topology", base, &[]);
    let sampling = send(&stack, "sampling", base + 5_000_000_000, &[]);
    let case_trace = |case: &str| -> String {
        sampling
            .iter()
            .find(|s| s.name == case)
            .unwrap_or_else(|| panic!("case {case} sent"))
            .trace_id
            .clone()
    };
    sent.extend(sampling.iter().cloned());

    // Late spans, once their traces are decided: one kept ("error"), one dropped ("fast-ok").
    let (kept_late, dropped_late) = (case_trace("error"), case_trace("fast-ok"));
    let db = stack.db();
    wait_for(
        "the two traces to be decided",
        Duration::from_secs(60),
        || {
            let q = db
                .query("SELECT count() FROM obs_trace_summaries FINAL WHERE TraceId IN (?, ?)")
                .bind(&kept_late)
                .bind(&dropped_late);
            async move { (q.fetch_one::<u64>().await.ok()? == 2).then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.obs_log()));
    sent.extend(send(&stack, "late", now_ns(), &[&kept_late, &dropped_late]));

    // Span metrics count every span, before sampling.
    let total = sent.len() as f64;
    let by_op = ["service", "span_name", "span_kind", "status_code"];
    wait_for("every span counted", Duration::from_secs(60), || async {
        let got = query(&stack, "sum(traces_spanmetrics_calls_total)", &[]).await;
        (got.values().next() == Some(&total)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.obs_log()));

    let mut calls: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    let mut sizes: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    let mut buckets: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for s in &sent {
        let op = key(&[
            &s.service,
            &s.name,
            &format!("SPAN_KIND_{}", s.kind.to_uppercase()),
            &format!("STATUS_CODE_{}", s.status.to_uppercase()),
        ]);
        *calls.entry(op).or_default() += 1.0;
        *sizes.entry(key(&[&s.service, &s.name])).or_default() += s.size as f64;
        let seconds = (s.end_ns - s.start_ns) as f64 / 1e9;
        for le in TEMPO_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_string()])
        {
            let bound: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let k = key(&[&s.service, &s.name, &le]);
            *buckets.entry(k).or_default() += if seconds <= bound { 1.0 } else { 0.0 };
        }
    }
    let q = "sum by (service, span_name, span_kind, status_code) (traces_spanmetrics_calls_total)";
    settles(&stack, q, &by_op, &calls, "calls per operation").await;
    let q = "sum by (service, span_name) (traces_spanmetrics_size_total)";
    settles(
        &stack,
        q,
        &["service", "span_name"],
        &sizes,
        "bytes per operation",
    )
    .await;
    let q = "sum by (service, span_name, le) (traces_spanmetrics_latency_bucket)";
    settles(
        &stack,
        q,
        &["service", "span_name", "le"],
        &buckets,
        "latency buckets",
    )
    .await;

    // The service graph the design makes.
    let edges: BTreeMap<Vec<String>, f64> = [
        (["user", "frontend", "virtual_node"], 3.0),
        (["frontend", "cart", ""], 3.0),
        (["cart", "fx-api", "virtual_node"], 3.0),
        (["frontend", "payments", ""], 3.0),
        (["payments", "ledger", "database"], 3.0),
        (["orders", "mailer", "messaging_system"], 2.0),
        (["healthchecker", "frontend", "virtual_node"], 1.0),
        (["user", "shop", "virtual_node"], 11.0),
    ]
    .into_iter()
    .map(|(k, v)| (key(&k), v))
    .collect();
    let by_edge = ["client", "server", "connection_type"];
    let q = "sum by (client, server, connection_type) (traces_service_graph_request_total)";
    settles(&stack, q, &by_edge, &edges, "requests per edge").await;
    let q = "sum by (client, server, connection_type) (traces_service_graph_request_server_seconds_count)";
    settles(&stack, q, &by_edge, &edges, "server histogram counts").await;
    let q = "sum by (client, server, connection_type) (traces_service_graph_request_failed_total)";
    let failed: BTreeMap<Vec<String>, f64> = [
        (key(&["frontend", "payments", ""]), 1.0),
        (key(&["user", "shop", "virtual_node"]), 2.0),
    ]
    .into();
    settles(&stack, q, &by_edge, &failed, "failed requests").await;
    let q = "sum by (client, server) (traces_service_graph_request_server_seconds_sum{client=\"payments\"})";
    let got = query(&stack, q, &["client", "server"]).await;
    assert!(
        (got[&key(&["payments", "ledger"])] - 0.030).abs() < 1e-9,
        "database time: {got:?}"
    );
    let q = "sum by (client, server) (traces_service_graph_request_client_seconds_sum{server=\"payments\"})";
    let got = query(&stack, q, &["client", "server"]).await;
    assert!(
        (got[&key(&["frontend", "payments"])] - 0.180).abs() < 1e-9,
        "client time: {got:?}"
    );
    let q = "sum by (client, server) (traces_service_graph_unpaired_spans_total)";
    let unpaired: BTreeMap<Vec<String>, f64> = [
        (key(&["frontend", ""]), 3.0),
        (key(&["", "inventory"]), 2.0),
    ]
    .into();
    settles(
        &stack,
        q,
        &["client", "server"],
        &unpaired,
        "unpaired spans",
    )
    .await;
    // The kept trace's late span is a shop server span: too late to pair.
    let q = "sum by (client, server) (traces_service_graph_dropped_spans_total)";
    let dropped: BTreeMap<Vec<String>, f64> = [(key(&["", "shop"]), 1.0)].into();
    settles(
        &stack,
        q,
        &["client", "server"],
        &dropped,
        "spans dropped from the graph",
    )
    .await;

    // Grafana's Tempo service map: its instant queries over the dashboard range.
    let pairs: BTreeSet<Vec<String>> = edges.keys().map(|k| k[..2].to_vec()).collect();
    for metric in [
        "traces_service_graph_request_server_seconds_sum",
        "traces_service_graph_request_total",
        "traces_service_graph_request_server_seconds_bucket",
    ] {
        let q = format!("sum by (client, server) (rate({metric}{{}}[5m]))");
        let got = query(&stack, &q, &["client", "server"]).await;
        assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), pairs, "{q}");
        // A virtual server node has no server span: no server time.
        let timeless = metric.ends_with("_sum").then(|| key(&["cart", "fx-api"]));
        for (pair, v) in &got {
            let want_positive = Some(pair) != timeless.as_ref();
            assert_eq!(*v > 0.0, want_positive, "{q}: {pair:?} = {v}");
        }
        let q = format!("group by (client, connection_type, server) ({metric}{{}})");
        let got = query(&stack, &q, &by_edge).await;
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            edges.keys().cloned().collect(),
            "{q}"
        );
    }
    let q = "sum by (client, server) (rate(traces_service_graph_request_failed_total{}[5m]))";
    let got = query(&stack, q, &["client", "server"]).await;
    let failing: BTreeSet<Vec<String>> =
        [key(&["frontend", "payments"]), key(&["user", "shop"])].into();
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), failing, "{q}");
    let q = "histogram_quantile(0.9, sum(rate(traces_service_graph_request_server_seconds_bucket{client=\"frontend\",server=\"payments\"}[5m])) by (le, client, server))";
    // A flush's bucket series reach the table through several Kafka partitions: a query
    // landing between them sees buckets one sample apart, so poll until they agree.
    let p90 = wait_for("the p90 link query", Duration::from_secs(30), || async {
        let got = query(&stack, q, &["client", "server"]).await;
        let p90 = *got.get(&key(&["frontend", "payments"]))?;
        ((p90 - 0.09).abs() < 1e-9).then_some(p90)
    })
    .await
    .unwrap_or_else(|e| panic!("p90 of three 45 ms calls in the 0.1 s bucket is 0.09: {e:#}"));
    assert!((p90 - 0.09).abs() < 1e-9);

    // Tail sampling: exactly the kept traces are stored, the late span of the kept one too.
    let cases_kept = ["error", "slow", "gold", "platinum", "big", "debug-beta"];
    // The checkouts have 8 spans: span_count (min 5) keeps all three.
    let checkouts: BTreeSet<String> = sent
        .iter()
        .filter(|s| s.name == "GET /checkout")
        .map(|s| s.trace_id.clone())
        .collect();
    assert_eq!(checkouts.len(), 3);
    let mut expected: BTreeMap<String, u64> = cases_kept
        .iter()
        .map(|c| {
            let t = case_trace(c);
            let n = sent.iter().filter(|s| s.trace_id == t).count() as u64;
            (t, n)
        })
        .collect();
    expected.extend(checkouts.into_iter().map(|t| (t, 8)));
    assert_eq!(
        expected[&kept_late], 2,
        "the kept trace's late span is among what was sent"
    );
    stack
        .wait_sink_caught_up("otel_traces")
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.sink_log()));
    let rows: Vec<(String, u64)> = db
        .query("SELECT TraceId, count() FROM otel_traces WHERE Tenant = 'acme' GROUP BY TraceId ORDER BY TraceId")
        .fetch_all()
        .await
        .expect("otel_traces read");
    let stored: BTreeMap<String, u64> = rows.into_iter().collect();
    assert_eq!(
        stored, expected,
        "the traces the policies keep, with their late span"
    );

    // One summary per trace, kept flags as decided.
    let traces: BTreeSet<&str> = sent.iter().map(|s| s.trace_id.as_str()).collect();
    let rows: Vec<(String, bool, i32, u64)> = db
        .query("SELECT TraceId, Kept, SpanCount, count() FROM obs_trace_summaries FINAL WHERE Tenant = 'acme' GROUP BY TraceId, Kept, SpanCount ORDER BY TraceId")
        .fetch_all()
        .await
        .expect("summaries read");
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<BTreeSet<_>>(),
        traces,
        "a summary for every trace"
    );
    for (trace, kept, spans, copies) in &rows {
        assert_eq!(*copies, 1, "one summary for {trace}");
        let want_kept = expected.contains_key(trace);
        assert_eq!(*kept, want_kept, "kept flag of {trace}");
        // A late span follows its trace's decision and is not in its summary.
        let n = sent.iter().filter(|s| &s.trace_id == trace).count() as i32;
        let late = i32::from(trace == &kept_late || trace == &dropped_late);
        assert_eq!(*spans, n - late, "span count of {trace}");
    }
}
