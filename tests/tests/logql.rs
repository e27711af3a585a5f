//! LogQL end to end: the shared corpus (`../shared/logql/gen_corpus.py`) pushed through
//! the collector's Loki push endpoint, stored by the sink, and queried through the query
//! API's Loki endpoints. Expected answers come from `tests/python/logql_expected.py`,
//! which computes them from the corpus's JSON-lines form without our code; every answer
//! must equal them exactly.

use std::process::Command;
use std::time::Duration;

use obs_e2e::{Stack, http, python, repo_root};
use serde_json::{Value, json};

const TENANT: &str = "logql";

/// `gen_corpus.py` output for `[start, end]` seconds in `format`.
fn corpus(start: i64, end: i64, format: &str) -> String {
    let out = Command::new("python3")
        .arg(repo_root().join("../shared/logql/gen_corpus.py"))
        .args([
            "--start",
            &start.to_string(),
            "--end",
            &end.to_string(),
            "--format",
            format,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "gen_corpus.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

async fn push(stack: &Stack, tenant: &str, body: String) {
    let r = http(30)
        .post(format!("{}/loki/api/v1/push", stack.collector_url()))
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", tenant)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
}

/// A Loki API request: form POST when `post`, else GET. Status and body.
async fn get(
    stack: &Stack,
    tenant: &str,
    path: &str,
    params: &[(String, String)],
    post: bool,
) -> (u16, String) {
    let url = format!("{}{path}", stack.query_url());
    let req = if post {
        http(60).post(url).form(params)
    } else {
        http(60).get(url).query(params)
    };
    let r = req.header("X-Scope-OrgID", tenant).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Results in a fixed order (by their labels), without `stats`, so answers compare whole.
fn normalise(mut data: Value) -> Value {
    if let Some(o) = data.as_object_mut() {
        o.remove("stats");
        if let Some(Value::Array(r)) = o.get_mut("result") {
            r.sort_by_key(|x| {
                x.get("stream")
                    .or_else(|| x.get("metric"))
                    .map(Value::to_string)
            });
        }
    }
    data
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn logql_answers_equal_those_computed_from_the_corpus() {
    let stack = Stack::start().await.unwrap();
    // The last 20 minutes (ClickHouse TTLs drop old-dated rows).
    let end = chrono_now_secs() - 30;
    let start = end - 1200;
    let bodies = corpus(start, end, "loki");
    for body in bodies.lines() {
        push(&stack, TENANT, body.to_string()).await;
    }
    let jsonl = corpus(start, end, "jsonl");
    let n = jsonl.lines().count() as u64;
    stack
        .wait_log_count(&format!("Tenant = '{TENANT}'"), n, Duration::from_secs(120))
        .await
        .unwrap();

    let corpus_file = stack.dir().join("corpus.jsonl");
    std::fs::write(&corpus_file, &jsonl).unwrap();
    let out = Command::new(python())
        .arg(repo_root().join("tests/python/logql_expected.py"))
        .args(["--corpus", corpus_file.to_str().unwrap()])
        .args(["--start", &start.to_string(), "--end", &end.to_string()])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "logql_expected.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let path = case["path"].as_str().unwrap();
        let params = pairs(&case["params"]);
        // Every other case as a form POST: both are served.
        let (status, body) = get(&stack, TENANT, path, &params, i % 2 == 1).await;
        let expect = &case["expect"];
        if let Some(text) = expect.get("contains").and_then(Value::as_str) {
            if status != 400 || !body.contains(text) {
                failures.push(format!(
                    "{name}: expected 400 containing {text:?}, got {status}: {body}"
                ));
            }
            continue;
        }
        if status != 200 {
            failures.push(format!("{name}: HTTP {status}: {body}"));
            continue;
        }
        let got: Value = serde_json::from_str(&body).unwrap();
        let ok = got["status"] == "success"
            && normalise(got["data"].clone()) == normalise(expect["data"].clone());
        if !ok {
            failures.push(format!(
                "{name} ({}):\n  expected {}\n  got      {}",
                case["params"]["query"],
                normalise(expect["data"].clone()),
                normalise(got["data"].clone())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn chrono_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn parsed(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The lines of a streams answer, newest first, across streams.
fn lines(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap().iter())
        .map(|e| {
            (
                e[0].as_str().unwrap().to_string(),
                e[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0));
    out.into_iter().map(|(_, l)| l).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn injection_attempts_stay_values_and_the_row_bound_is_an_error() {
    let stack = Stack::start_with(&[("OBS_QUERY__LOGQL_MAX_ROWS", "50")])
        .await
        .unwrap();
    let now = chrono_now_secs() - 60;
    let t = |i: i64| ((now * 1000 + i) * 1_000_000).to_string();
    let tricky = [
        "plain",
        "') OR 1=1 --",
        "x' OR '1'='1",
        "a ?? b ? c",
        r"back\slash",
    ];
    let bulk: Vec<Value> = (0..60)
        .map(|i| json!([t(100 + i), format!("n={i}")]))
        .collect();
    let body = json!({"streams": [
        {"stream": {"service": "inj", "note": "it's a ? and a \\"},
         "values": tricky.iter().enumerate().map(|(i, l)| json!([t(i as i64), l])).collect::<Vec<_>>()},
        {"stream": {"service": "bulk"}, "values": bulk},
        {"stream": {"service": "meta"}, "values": [
            [t(200), "first", {"trace_id": "abc"}],
            [t(201), "second", {"trace_id": "def", "http.method": "GET"}],
        ]},
    ]});
    push(&stack, "inj", body.to_string()).await;
    stack
        .wait_log_count("Tenant = 'inj'", 67, Duration::from_secs(120))
        .await
        .unwrap();

    let range = |q: &str, limit: &str| {
        vec![
            ("query".to_string(), q.to_string()),
            ("start".into(), (now - 60).to_string()),
            ("end".into(), (now + 60).to_string()),
            ("limit".into(), limit.to_string()),
            ("step".into(), "60".into()),
        ]
    };
    let logs = |q: &'static str| {
        let p = range(q, "20");
        let stack = &stack;
        async move {
            let (status, body) = get(stack, "inj", "/loki/api/v1/query_range", &p, false).await;
            assert_eq!(status, 200, "{q}: {body}");
            lines(&body)
        }
    };
    let newest_first: Vec<String> = tricky.iter().rev().map(|s| s.to_string()).collect();
    // Label values, regexes and line filters that would break out of a quoted SQL string.
    assert!(logs(r#"{service="inj' OR 1=1 --"}"#).await.is_empty());
    assert!(logs(r#"{service="inj\" OR 1=1 --"}"#).await.is_empty());
    assert!(logs(r#"{service=~"nomatch' OR '1'='1"}"#).await.is_empty());
    assert!(
        logs(r#"{service=~"nomatch') OR match(Body, '.*"}"#)
            .await
            .is_empty()
    );
    assert_eq!(
        logs(r#"{service=~"inj|x' OR '1'='1"}"#).await,
        newest_first,
        "a regex alternation is a regex"
    );
    assert_eq!(
        logs(r#"{service="inj"} |= "') OR 1=1 --""#).await,
        ["') OR 1=1 --"]
    );
    assert_eq!(
        logs(r#"{service="inj"} |~ "x' OR '1'='1""#).await,
        ["x' OR '1'='1"]
    );
    assert_eq!(logs(r#"{service="inj"} |= "??""#).await, ["a ?? b ? c"]);
    assert_eq!(logs(r#"{service="inj"} |= "\\""#).await, [r"back\slash"]);
    assert_eq!(logs(r#"{note="it's a ? and a \\"}"#).await, newest_first);
    let (status, body) = get(
        &stack,
        "inj",
        "/loki/api/v1/label/note/values",
        &[
            ("query".into(), r#"{service="inj' OR '1'='1"}"#.into()),
            ("start".into(), (now - 60).to_string()),
        ],
        false,
    )
    .await;
    assert_eq!(
        (status, parsed(&body)),
        (200, json!({"status": "success", "data": []}))
    );
    let (status, body) = get(
        &stack,
        "inj",
        "/loki/api/v1/label/note/values",
        &[("start".into(), (now - 60).to_string())],
        false,
    )
    .await;
    assert_eq!(
        (status, parsed(&body)),
        (
            200,
            json!({"status": "success", "data": ["it's a ? and a \\"]})
        )
    );
    // Structured metadata is returned and filtered on as labels (Loki 3), names sanitised.
    assert_eq!(
        logs(r#"{service="meta"} | trace_id="abc""#).await,
        ["first"]
    );
    assert_eq!(
        logs(r#"{service="meta"} | http_method="GET""#).await,
        ["second"]
    );
    let (status, body) = get(
        &stack,
        "inj",
        "/loki/api/v1/query_range",
        &range(r#"{service="meta"} | trace_id="abc""#, "20"),
        false,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        parsed(&body)["data"]["result"][0]["stream"],
        json!({"service": "meta", "trace_id": "abc"})
    );
    // Another tenant sees nothing of this one.
    let (status, body) = get(
        &stack,
        "other",
        "/loki/api/v1/query_range",
        &range(r#"{service="inj"}"#, "20"),
        false,
    )
    .await;
    assert_eq!(status, 200);
    assert!(lines(&body).is_empty());

    // The row bound (50): more is an error naming it, never a cut answer.
    let answer = |q: &str, limit: &str| {
        let p = range(q, limit);
        let stack = &stack;
        async move { get(stack, "inj", "/loki/api/v1/query_range", &p, false).await }
    };
    let (status, body) = answer(r#"count_over_time({service="bulk"} | logfmt [2m])"#, "20").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("more than 50 log lines (the query.logql_max_rows limit)"),
        "{body}"
    );
    // Without Rust stages ClickHouse counts per series and bucket: 60 entries, 1 row.
    let (status, body) = get(
        &stack,
        "inj",
        "/loki/api/v1/query",
        &[
            (
                "query".into(),
                r#"count_over_time({service="bulk"}[2m])"#.into(),
            ),
            ("time".into(), (now + 60).to_string()),
        ],
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parsed(&body)["data"]["result"],
        json!([{"metric": {"service": "bulk"}, "value": [now + 60, "60"]}])
    );
    let (status, body) = answer(r#"{service="bulk"} | logfmt | n > 1000"#, "10").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("query.logql_max_rows"), "{body}");
    let (status, body) = answer(r#"{service="bulk"}"#, "100").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("max entries limit per query exceeded, limit > max_entries_limit (100 > 50)"),
        "{body}"
    );
    // Within the bound: the SQL LIMIT answers, and a filter that finds enough early stops.
    let (status, body) = answer(r#"{service="bulk"}"#, "5").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(lines(&body), ["n=59", "n=58", "n=57", "n=56", "n=55"]);
    let (status, body) = answer(r#"{service="bulk"} | logfmt | n > 10"#, "3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(lines(&body), ["n=59", "n=58", "n=57"]);
    let (status, body) = answer(r#"count_over_time({service="inj"}[2m])"#, "20").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["data"]["result"][0]["metric"],
        json!({"service": "inj", "note": "it's a ? and a \\"})
    );
}

/// The calls Grafana's Loki datasource makes: "Save & test" (labels over the last hour),
/// the label browser, the query-size estimate (`index/stats`), an Explore log query and
/// the logs-volume histogram; expected values computed from the corpus's JSON lines.
#[tokio::test(flavor = "multi_thread")]
async fn grafana_loki_datasource_calls_answer_what_grafana_reads() {
    let stack = Stack::start().await.unwrap();
    let end = chrono_now_secs() - chrono_now_secs() % 60;
    let start = end - 600;
    for body in corpus(start, end, "loki").lines() {
        push(&stack, "grafana", body.to_string()).await;
    }
    let entries: Vec<Value> = corpus(start, end, "jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One OTLP record: its `service.name` is the stream label `service_name`, as in Loki 3.
    let otlp_ns = (end - 30) * 1_000_000_000;
    let r = http(30)
        .post(stack.otlp_logs_url())
        .header("X-Scope-OrgID", "grafana")
        .json(&json!({"resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
            "scopeLogs": [{"logRecords": [{"timeUnixNano": otlp_ns.to_string(), "body": {"stringValue": "paid order 7"}}]}]
        }]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    stack
        .wait_log_count(
            "Tenant = 'grafana'",
            entries.len() as u64 + 1,
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let (start_ns, end_ns) = (start * 1_000_000_000, end * 1_000_000_000);
    let range = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        [("start", start_ns.to_string()), ("end", end_ns.to_string())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    };
    let call = |path: &'static str, params: Vec<(String, String)>| {
        let stack = &stack;
        async move {
            let (status, body) = get(stack, "grafana", path, &params, false).await;
            assert_eq!(status, 200, "{path}: {body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };

    // "Save & test" and the label browser.
    let v = call("/loki/api/v1/labels", range(&[])).await;
    assert_eq!(v["status"], "success");
    assert_eq!(
        v["data"],
        json!(["env", "level", "pod", "service", "service_name"])
    );
    let v = call(
        "/loki/api/v1/query_range",
        range(&[("query", r#"{service_name="checkout"}"#)]),
    )
    .await;
    assert_eq!(
        v["data"]["result"][0]["stream"],
        json!({"service_name": "checkout"})
    );
    assert_eq!(
        v["data"]["result"][0]["values"],
        json!([[otlp_ns.to_string(), "paid order 7"]])
    );
    let v = call("/loki/api/v1/label/service/values", range(&[])).await;
    assert_eq!(v["data"], json!(["api", "db", "web", "worker"]));

    // The size estimate Grafana shows before running a query.
    // Entries of the asked range (the corpus has jitter past its end).
    let api: Vec<&Value> = entries
        .iter()
        .filter(|e| e["labels"]["service"] == "api")
        .filter(|e| {
            let ts: i64 = e["ts_ns"].as_str().unwrap().parse().unwrap();
            ts >= start_ns && ts <= end_ns
        })
        .collect();
    let streams: std::collections::BTreeSet<String> =
        api.iter().map(|e| e["labels"].to_string()).collect();
    let bytes: usize = api.iter().map(|e| e["line"].as_str().unwrap().len()).sum();
    let v = call(
        "/loki/api/v1/index/stats",
        range(&[("query", r#"{service="api"}"#)]),
    )
    .await;
    assert_eq!(
        (&v["streams"], &v["entries"], &v["bytes"]),
        (&json!(streams.len()), &json!(api.len()), &json!(bytes)),
        "{v}"
    );

    // Explore: newest first, at most `limit` lines, each as [ns, line].
    let errors: Vec<&&Value> = api
        .iter()
        .filter(|e| e["line"].as_str().unwrap().contains("error"))
        .collect();
    assert!(errors.len() > 3, "{} error lines", errors.len());
    let v = call(
        "/loki/api/v1/query_range",
        range(&[
            ("query", r#"{service="api"} |= "error""#),
            ("direction", "backward"),
            ("limit", "3"),
            ("step", "1"),
        ]),
    )
    .await;
    assert_eq!(v["data"]["resultType"], "streams");
    let mut got: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap().clone())
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort_by(|a, b| {
        b.0.parse::<i64>()
            .unwrap()
            .cmp(&a.0.parse::<i64>().unwrap())
    });
    let mut want: Vec<(String, String)> = errors
        .iter()
        .map(|e| {
            (
                e["ts_ns"].as_str().unwrap().to_string(),
                e["line"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    want.sort_by(|a, b| {
        b.0.parse::<i64>()
            .unwrap()
            .cmp(&a.0.parse::<i64>().unwrap())
    });
    want.truncate(3);
    assert_eq!(got, want);

    // The logs-volume histogram: 1-minute windows tiling (start, end].
    let v = call(
        "/loki/api/v1/query_range",
        range(&[
            (
                "query",
                r#"sum by (level) (count_over_time({service="api"}[1m]))"#,
            ),
            ("step", "60"),
        ]),
    )
    .await;
    assert_eq!(v["data"]["resultType"], "matrix");
    let mut got = std::collections::BTreeMap::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let level = s["metric"]["level"].as_str().unwrap().to_string();
        let total: f64 = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p[0].as_f64().unwrap() > start as f64)
            .map(|p| p[1].as_str().unwrap().parse::<f64>().unwrap())
            .sum();
        got.insert(level, total as usize);
    }
    let mut want = std::collections::BTreeMap::new();
    for e in &api {
        let ts: i64 = e["ts_ns"].as_str().unwrap().parse().unwrap();
        if ts > start_ns && ts <= end_ns {
            *want
                .entry(e["labels"]["level"].as_str().unwrap().to_string())
                .or_insert(0usize) += 1;
        }
    }
    assert_eq!(got, want);
}
