//! The PromQL endpoints as Grafana's Prometheus datasource calls them ("Save & test", the
//! metrics browser in Explore, a dashboard panel's form POST), checked against values
//! worked out from the demo file itself; hostile label values and regexes stay values;
//! tenants see only their own series; errors have Prometheus's shape; `explain` shows the
//! SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::promql_demo::Demo;
use obs_e2e::{Stack, http};
use serde_json::Value;

async fn get(url: &str, params: &[(&str, &str)], tenant: Option<&str>) -> (u16, Value) {
    let mut req = http(60).get(url).query(params);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let r = req.send().await.expect("answered");
    (r.status().as_u16(), r.json().await.expect("JSON"))
}

async fn post_form(url: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let r = http(60)
        .post(url)
        .form(params)
        .send()
        .await
        .expect("answered");
    (r.status().as_u16(), r.json().await.expect("JSON"))
}

/// `max by (mode) (demo_cpu_usage_ratio)` at `t` (ms), from the file: per series the newest
/// sample at or before `t` no older than 5 minutes.
fn expected_max_by_mode(demo: &Demo, t: i64) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for s in demo
        .series
        .iter()
        .filter(|s| s.name == "demo_cpu_usage_ratio")
    {
        let Some(&(ts, v)) = s.samples.iter().rev().find(|p| p.0 <= t) else {
            continue;
        };
        if ts < t - 300_000 {
            continue;
        }
        let m = out.entry(s.labels["mode"].clone()).or_insert(f64::MIN);
        *m = m.max(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_calls_injection_tenants_errors_and_explain() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = now - now % 60;
    let stack = Stack::start().await.unwrap();
    let demo = Demo::generate(stack.dir(), end - 1800, end).unwrap();
    demo.load_into(&stack).await.unwrap();
    let base = stack.query_url();
    let (start_s, end_s) = (demo.start.to_string(), demo.end.to_string());
    let query = format!("{base}/api/v1/query");
    let query_range = format!("{base}/api/v1/query_range");

    // "Save & test": 1+1 as an instant query, then buildinfo.
    let (status, v) = get(&query, &[("query", "1+1"), ("time", &end_s)], None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"],
        serde_json::json!({"resultType": "scalar", "result": [end, "2"]})
    );
    let (status, v) = get(&format!("{base}/api/v1/status/buildinfo"), &[], None).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("success")));
    assert!(v["data"]["version"].is_string());

    // Metrics browser: metric names, label names and values of one metric.
    let range = [("start", start_s.as_str()), ("end", end_s.as_str())];
    let (_, v) = get(
        &format!("{base}/api/v1/label/__name__/values"),
        &range,
        None,
    )
    .await;
    let names: BTreeSet<String> = serde_json::from_value(v["data"].clone()).unwrap();
    let want: BTreeSet<String> = demo.series.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, want);
    let (_, v) = get(
        &format!("{base}/api/v1/label/mode/values"),
        &[("match[]", "demo_cpu_usage_ratio"), range[0], range[1]],
        None,
    )
    .await;
    assert_eq!(
        v["data"],
        serde_json::json!(["idle", "iowait", "system", "user"])
    );
    let (_, v) = get(
        &format!("{base}/api/v1/series"),
        &[("match[]", "demo_cpu_usage_ratio"), range[0], range[1]],
        None,
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 12);
    let (status, v) = get(
        &format!("{base}/api/v1/query_exemplars"),
        &[("query", "demo_cpu_usage_ratio"), range[0], range[1]],
        None,
    )
    .await;
    assert_eq!((status, &v["data"]), (200, &serde_json::json!([])));

    // A dashboard panel: a form POST of a range query, values from the file.
    let step = 30;
    let panel_start = demo.start + 300;
    let (status, v) = post_form(
        &query_range,
        &[
            ("query", "max by (mode) (demo_cpu_usage_ratio)"),
            ("start", &panel_start.to_string()),
            ("end", &end_s),
            ("step", &step.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 4);
    let steps = ((demo.end - panel_start) / step + 1) as usize;
    for s in result {
        let mode = s["metric"]["mode"].as_str().unwrap();
        assert_eq!(s["metric"].as_object().unwrap().len(), 1, "{s}");
        let values = s["values"].as_array().unwrap();
        assert_eq!(values.len(), steps);
        for p in values {
            let t = p[0].as_i64().unwrap();
            let got: f64 = p[1].as_str().unwrap().parse().unwrap();
            let want = expected_max_by_mode(&demo, t * 1000)[mode];
            assert_eq!(got, want, "{mode} at {t}");
        }
    }
    // The same as an instant form POST.
    let (_, v) = post_form(
        &query,
        &[
            ("query", "max by (mode) (demo_cpu_usage_ratio)"),
            ("time", &end_s),
        ],
    )
    .await;
    let want = expected_max_by_mode(&demo, demo.end * 1000);
    let got: BTreeMap<String, f64> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["mode"].as_str().unwrap().to_string(),
                s["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);

    // Hostile values and regexes are values: no match, no SQL error; a real regex works.
    for (q, want) in [
        (r#"demo_cpu_usage_ratio{mode="x' OR 1=1 --"}"#, 0),
        (r#"demo_cpu_usage_ratio{mode=~"x' OR '1'='1"}"#, 0),
        // A negated hostile regex matches no mode, so every series stays.
        (r#"demo_cpu_usage_ratio{mode!~".*') OR ('1'='1"}"#, 12),
        (r#"{__name__="demo_cpu_usage_ratio' OR 1=1 --"}"#, 0),
        (r#"{__name__=~"demo_cpu_usage_ratio\\\\' OR 1=1 --"}"#, 0),
    ] {
        let (status, v) = get(&query, &[("query", q), ("time", &end_s)], None).await;
        assert_eq!(status, 200, "{q}: {v}");
        assert_eq!(v["data"]["result"].as_array().unwrap().len(), want, "{q}");
    }
    let (_, v) = get(
        &query,
        &[
            (
                "query",
                r#"count(demo_cpu_usage_ratio{mode=~"(?i)USER|Sys.*"})"#,
            ),
            ("time", &end_s),
        ],
        None,
    )
    .await;
    assert_eq!(v["data"]["result"][0]["value"][1], "6", "{v}");

    // Another tenant sees none of it.
    let (_, v) = get(
        &query,
        &[("query", "count(demo_cpu_usage_ratio)"), ("time", &end_s)],
        Some("someone-else"),
    )
    .await;
    assert_eq!(v["data"]["result"], serde_json::json!([]));

    // Errors in Prometheus's shape.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: [Case<'_>; 6] = [
        (&query, vec![("query", "rate(")], 400, "bad_data"),
        (&query, vec![("query", r#"up{job=~"("}"#)], 400, "bad_data"),
        (
            &query_range,
            vec![
                ("query", "demo_queue_depth[5m]"),
                range[0],
                range[1],
                ("step", "60"),
            ],
            400,
            "bad_data",
        ),
        (
            &query_range,
            vec![("query", "up"), range[0], range[1], ("step", "0")],
            400,
            "bad_data",
        ),
        (
            &query_range,
            vec![
                ("query", "up"),
                ("start", "0"),
                ("end", &end_s),
                ("step", "1"),
            ],
            400,
            "bad_data",
        ),
        (
            &query,
            vec![
                (
                    "query",
                    "sum by (instance) (demo_cpu_usage_ratio) + on (job) demo_cpu_usage_ratio",
                ),
                ("time", &end_s),
            ],
            422,
            "execution",
        ),
    ];
    for (url, params, want_status, want_type) in &cases {
        let (status, v) = get(url, params, None).await;
        assert_eq!(
            (status, v["status"].as_str(), v["errorType"].as_str()),
            (*want_status, Some("error"), Some(*want_type)),
            "{params:?}: {v}"
        );
        assert!(!v["error"].as_str().unwrap().is_empty());
    }

    // explain: the endpoint and the CLI show the SQL (values inlined for reading).
    let q = r#"sum by (status) (rate(demo_requests_total{status=~"5.."}[5m]))"#;
    let (status, v) = get(&format!("{base}/api/v1/explain"), &[("query", q)], None).await;
    assert_eq!(status, 200, "{v}");
    let sql: Vec<String> = serde_json::from_value(v["data"]["sql"].clone()).unwrap();
    // The samples, then the series' labels when they are not kept from earlier queries.
    assert_eq!(sql.len(), 2, "{sql:?}");
    assert!(
        sql[1].starts_with("/* only for series whose labels the query API has not kept */ SELECT")
            && sql[1].contains("any(Labels) AS labels FROM metrics_series"),
        "{}",
        sql[1]
    );
    assert!(
        sql[0].contains("FROM metrics_series WHERE Tenant = 'default'"),
        "{}",
        sql[0]
    );
    assert!(
        sql[0].contains("match(Labels['status'], '^(?:5..)$')"),
        "{}",
        sql[0]
    );
    assert!(sql[0].contains("FROM metrics_samples"), "{}", sql[0]);
    assert!(
        sql[0].contains("MetricName = 'demo_requests_total'"),
        "{}",
        sql[0]
    );
    let rust: Vec<String> = serde_json::from_value(v["data"]["rust"].clone()).unwrap();
    assert_eq!(rust.last().unwrap(), "sum by (status) per step");
    assert!(rust.iter().any(|s| s == "rate() per step"), "{rust:?}");
    // LogQL through the same endpoint: the line filter is a bound value, not SQL text.
    let (status, v) = get(
        &format!("{base}/api/v1/explain"),
        &[
            ("query", r#"{job="api"} |= "x' OR 1=1""#),
            ("language", "logql"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let plan = v["data"]["plan"].as_str().unwrap();
    assert!(plan.contains("FROM otel_logs"), "{plan}");
    assert!(!plan.lines().next().unwrap().contains("1=1"), "{plan}");
    assert!(plan.contains(r#""x' OR 1=1""#), "{plan}");
    let out = stack
        .run_obs(&[
            "explain", q, "--url", &base, "--start", &start_s, "--end", &end_s, "--step", "60",
        ])
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("FROM metrics_samples"), "{printed}");
    assert!(printed.contains("sum by (status) per step"), "{printed}");
}

/// A query that would read more samples than `[query] promql_max_samples` is refused with
/// Prometheus's wording and the setting's name, never answered from part of the data.
#[tokio::test(flavor = "multi_thread")]
async fn a_query_past_the_sample_bound_is_refused() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = now - now % 60;
    let stack = Stack::start_with(&[("OBS_QUERY__PROMQL_MAX_SAMPLES", "500")])
        .await
        .unwrap();
    let demo = Demo::generate(stack.dir(), end - 600, end).unwrap();
    demo.load_into(&stack).await.unwrap();
    let query = format!("{}/api/v1/query", stack.query_url());
    let end_s = demo.end.to_string();
    // 12 series × 21 samples in 5 minutes: under the bound.
    let (status, v) = get(
        &query,
        &[
            ("query", "count_over_time(demo_cpu_usage_ratio[5m])"),
            ("time", &end_s),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 12);
    // Every histogram bucket for 10 minutes: 66 series × 41 samples, past it.
    let (status, v) = get(
        &query,
        &[
            (
                "query",
                "count_over_time(demo_request_duration_seconds_bucket[10m])",
            ),
            ("time", &end_s),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, v["errorType"].as_str()),
        (422, Some("execution")),
        "{v}"
    );
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("too many samples") && msg.contains("promql_max_samples"),
        "{msg}"
    );
}

/// One series of `labels_kept_total` with `job` = `job`, one sample a minute over
/// `[from_ms, to_ms)`, sent by remote write.
async fn write_job(stack: &Stack, job: &str, from_ms: i64, to_ms: i64) {
    use obs_e2e::remote_write::{self, Series};
    let series = [Series {
        name: "labels_kept_total",
        labels: vec![("job", job.to_string())],
        samples: (from_ms..to_ms).step_by(60_000).map(|t| (t, 1.0)).collect(),
    }];
    let url = format!("{}/api/v1/write", stack.collector_url());
    let (status, text) = remote_write::post(&url, remote_write::body(&series)).await;
    assert_eq!(status, 204, "{text}");
}

/// The labels of a query's series are kept between queries (by fingerprint, a hash of the
/// labels): asked again, a query reads no `metrics_series` and answers the same; a series
/// new to the metric still appears, with its own labels, because its fingerprint is new.
#[tokio::test(flavor = "multi_thread")]
async fn series_labels_are_kept_between_queries_and_new_series_still_appear() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let end = now - now % 60_000;
    let stack = Stack::start().await.unwrap();
    for job in ["a", "b"] {
        write_job(&stack, job, end - 600_000, end).await;
    }
    let query = format!("{}/api/v1/query", stack.query_url());
    let at = ((end - 60_000) / 1000).to_string();
    let jobs = |v: &Value| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let m = &s["metric"];
                assert_eq!(m.as_object().unwrap().len(), 2, "{m}");
                assert_eq!(m["__name__"], "labels_kept_total", "{m}");
                (
                    m["job"].as_str().unwrap().to_string(),
                    s["value"][1].to_string(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let params = [("query", "labels_kept_total"), ("time", at.as_str())];
    let ask = || get(&query, &params, None);
    let first = obs_e2e::wait_for("both series queryable", Duration::from_secs(60), || async {
        let (_, v) = ask().await;
        let j = jobs(&v);
        (j.len() == 2).then_some(j)
    })
    .await
    .unwrap();
    let counted = |outcome: &'static str| {
        let stack = &stack;
        async move {
            stack
                .query_metric(&format!(
                    "obs_query_series_lookups_total{{outcome=\"{outcome}\"}}"
                ))
                .await
                .unwrap_or(0.0)
        }
    };
    let (read, kept) = (counted("read").await, counted("kept").await);
    assert!(read >= 1.0, "the first answer read metrics_series");
    let (status, v) = ask().await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(jobs(&v), first);
    assert_eq!(
        (counted("read").await, counted("kept").await),
        (read, kept + 1.0),
        "asked again, the labels are the kept ones"
    );
    write_job(&stack, "c", end - 600_000, end).await;
    let third = obs_e2e::wait_for(
        "the new series queryable",
        Duration::from_secs(60),
        || async {
            let (_, v) = ask().await;
            let j = jobs(&v);
            (j.len() == 3).then_some(j)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        third,
        [("a", "\"1\""), ("b", "\"1\""), ("c", "\"1\"")]
            .map(|(j, v)| (j.to_string(), v.to_string()))
    );
    assert!(
        counted("read").await > read,
        "the new series' labels were read"
    );
}
