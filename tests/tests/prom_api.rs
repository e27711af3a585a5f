//! The Prometheus HTTP API's labels, series and metadata endpoints answer as a real
//! Prometheus 2.42 does on the same data (Prometheus scrapes itself and remote-writes to the
//! pipeline); selectors with hostile values stay values.

use std::collections::BTreeSet;
use std::time::Duration;

use obs_e2e::prometheus::Prometheus;
use obs_e2e::{Stack, http, wait_for};
use serde_json::Value;

const TENANT: &str = "prom-api";

async fn get(base: &str, path: &str, params: &[(&str, &str)], tenant: bool) -> Value {
    let mut req = http(30).get(format!("{base}{path}")).query(params);
    if tenant {
        req = req.header("X-Scope-OrgID", TENANT);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// `data` as a set of JSON texts (answers whose order is not specified).
fn set(v: &Value) -> BTreeSet<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_series_and_metadata_match_prometheus() {
    let stack = Stack::start_with(&[("OBS_COLLECTOR__DEFAULT_TENANT", TENANT)])
        .await
        .unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
         scrape_configs: [{{job_name: prometheus, static_configs: [{{targets: ['127.0.0.1:{{port}}']}}]}}]\n\
         remote_write: [{{url: '{}/api/v1/write', queue_config: {{batch_send_deadline: 1s}}, metadata_config: {{send: true, send_interval: 2s}}}}]\n",
        stack.collector_url()
    );
    let prom = Prometheus::start(
        stack.dir(),
        "prometheus",
        &config,
        &stack.dir().join("tsdb"),
    )
    .await
    .unwrap();
    let ours = stack.query_url();
    let theirs = prom.url();

    // Stable series sets (present from the first scrape on), compared once the pipeline has
    // caught up.
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/api/v1/series",
            vec![("match[]", "up"), ("match[]", "go_gc_duration_seconds")],
        ),
        (
            "/api/v1/series",
            vec![("match[]", r#"{__name__=~"go_gc.*", quantile!="0"}"#)],
        ),
        (
            "/api/v1/labels",
            vec![("match[]", r#"{__name__=~"go_.*"}"#)],
        ),
        (
            "/api/v1/label/__name__/values",
            vec![("match[]", r#"{__name__=~"go_.*"}"#)],
        ),
        (
            "/api/v1/label/quantile/values",
            vec![("match[]", "go_gc_duration_seconds")],
        ),
        ("/api/v1/label/job/values", vec![("match[]", "up")]),
    ];
    for (path, params) in &cases {
        wait_for(
            "Prometheus to have scraped",
            Duration::from_secs(60),
            || {
                let theirs = theirs.clone();
                async move {
                    let v = get(&theirs, path, params, false).await;
                    (v["status"] == "success" && !set(&v).is_empty()).then_some(())
                }
            },
        )
        .await
        .unwrap();
        let got = wait_for(
            &format!("{path} {params:?} like Prometheus"),
            Duration::from_secs(60),
            || {
                let (ours, theirs) = (ours.clone(), theirs.clone());
                async move {
                    let want = get(&theirs, path, params, false).await;
                    let got = get(&ours, path, params, true).await;
                    (got["status"] == "success" && set(&got) == set(&want)).then_some(got)
                }
            },
        )
        .await;
        if let Err(e) = got {
            let want = get(&theirs, path, params, false).await;
            let got = get(&ours, path, params, true).await;
            panic!("{e}\nPrometheus: {want}\nobs: {got}");
        }
    }

    // Metadata: type and help as Prometheus has them.
    let want = get(
        &theirs,
        "/api/v1/metadata",
        &[("metric", "go_goroutines")],
        false,
    )
    .await;
    let got = wait_for("go_goroutines metadata", Duration::from_secs(60), || {
        let ours = ours.clone();
        async move {
            let got = get(
                &ours,
                "/api/v1/metadata",
                &[("metric", "go_goroutines")],
                true,
            )
            .await;
            got["data"]["go_goroutines"].is_array().then_some(got)
        }
    })
    .await
    .unwrap();
    let w = &want["data"]["go_goroutines"][0];
    let g = &got["data"]["go_goroutines"][0];
    assert_eq!((&g["type"], &g["help"]), (&w["type"], &w["help"]));

    // Another tenant sees none of it.
    let other = get(&ours, "/api/v1/series", &[("match[]", "up")], false).await;
    assert_eq!(other["data"], serde_json::json!([]));

    // Hostile input: values stay values; bad selectors and label names are refused.
    let inj = get(
        &ours,
        "/api/v1/series",
        &[("match[]", r#"{job="x' OR 1=1 --"}"#)],
        true,
    )
    .await;
    assert_eq!(
        (inj["status"].as_str(), &inj["data"]),
        (Some("success"), &serde_json::json!([]))
    );
    let inj = get(
        &ours,
        "/api/v1/series",
        &[("match[]", r#"{job=~"x') OR (1=1"}"#)],
        true,
    )
    .await;
    assert_eq!(inj["data"], serde_json::json!([]));
    let bad = get(
        &ours,
        "/api/v1/series",
        &[("match[]", "rate(up[5m])")],
        true,
    )
    .await;
    assert_eq!(
        (bad["status"].as_str(), bad["errorType"].as_str()),
        (Some("error"), Some("bad_data"))
    );
    let bad = get(&ours, "/api/v1/label/a'b/values", &[], true).await;
    assert_eq!(bad["errorType"], "bad_data");
    let missing = get(&ours, "/api/v1/series", &[], true).await;
    assert_eq!(missing["error"], "no match[] parameter provided");
    // PromQL over the same scraped data: Prometheus's own `up` is 1 (its samples table may
    // trail the series table by a sink batch).
    let q = wait_for("up through PromQL", Duration::from_secs(60), || {
        let ours = ours.clone();
        async move {
            let q = get(&ours, "/api/v1/query", &[("query", "up")], true).await;
            q["data"]["result"][0].is_object().then_some(q)
        }
    })
    .await
    .unwrap();
    assert_eq!(q["data"]["result"][0]["value"][1], "1", "{q}");
    assert_eq!(q["data"]["result"][0]["metric"]["job"], "prometheus", "{q}");
}
