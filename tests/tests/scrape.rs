//! Scraping end to end: the collector scrapes a real node_exporter (static target, metric
//! relabelling) and its own /metrics (file SD, target relabelling), probes HTTP and TCP
//! targets; when node_exporter stops, `up` turns 0 and its series get stale markers; when
//! a file SD target is removed, its series go stale.

use std::process::Command;
use std::time::Duration;

use obs_e2e::{Proc, Stack, free_port, wait_for};

/// Prometheus's stale-marker NaN, as stored.
const STALE: u64 = 0x7ff0_0000_0000_0002;

fn node_exporter_bin() -> String {
    std::env::var("OBS_NODE_EXPORTER_BIN").unwrap_or_else(|_| "prometheus-node-exporter".into())
}

/// `SELECT <expr> FROM samples of series matching <series filter>` as u64s.
async fn query_u64(stack: &Stack, sql: &str) -> Option<u64> {
    match stack.db().query(sql).fetch_one::<u64>().await {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("{sql}: {e}");
            None
        }
    }
}

fn of(filter: &str) -> String {
    format!("Fingerprint IN (SELECT Fingerprint FROM metrics_series WHERE {filter})")
}

#[tokio::test(flavor = "multi_thread")]
async fn node_exporter_is_scraped_and_goes_stale_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let node_port = free_port();
    let mut cmd = Command::new(node_exporter_bin());
    cmd.arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
        .args([
            "--collector.disable-defaults",
            "--collector.loadavg",
            "--collector.meminfo",
            "--collector.time",
        ]);
    let mut node = Proc::spawn("node_exporter", cmd, dir.path()).unwrap();
    let node_addr = format!("127.0.0.1:{node_port}");
    // A plain web server that answers 404 for a missing page.
    let web_port = free_port();
    let mut web = Command::new(obs_e2e::python());
    web.args([
        "-m",
        "http.server",
        &web_port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .arg("--directory")
    .arg(dir.path());
    let _web = Proc::spawn("http_server", web, dir.path()).unwrap();
    let sd = dir.path().join("targets-a.json");
    let config = dir.path().join("scrape.yml");
    std::fs::write(
        &config,
        format!(
            r#"
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ['{node_addr}'], labels: {{env: e2e}}}}]
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: 'go_.*', action: drop}}
  - job_name: files
    file_sd_configs: [{{files: ['{}/targets-*.json'], refresh_interval: 1s}}]
    relabel_configs:
      - {{source_labels: [team], regex: blue, action: keep}}
probe_configs:
  - job_name: http_probe
    module: http
    interval: 1s
    targets: ['http://{node_addr}/metrics', 'http://127.0.0.1:{web_port}/nope']
  - job_name: tcp_probe
    module: tcp
    interval: 1s
    targets: ['{node_addr}', '127.0.0.1:1']
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let stack = Stack::start_with(&[("OBS_COLLECTOR__SCRAPE_CONFIG", config.to_str().unwrap())])
        .await
        .unwrap();
    // The collector's own /metrics as a file SD target (blue: kept), node_exporter as a red
    // one (dropped by the keep rule).
    let collector_addr = format!("127.0.0.1:{}", stack.ports.collector);
    std::fs::write(
        &sd,
        serde_json::json!([
            {"targets": [collector_addr], "labels": {"team": "blue"}},
            {"targets": [node_addr], "labels": {"team": "red"}}
        ])
        .to_string(),
    )
    .unwrap();

    let node_up = of(&format!(
        "MetricName = 'up' AND Labels['job'] = 'node' AND Labels['instance'] = '{node_addr}' AND Labels['env'] = 'e2e'"
    ));
    wait_for("3 scrapes of node_exporter with up = 1", Duration::from_secs(60), || {
        let sql = format!("SELECT countIf(Value = 1) FROM metrics_samples WHERE MetricName = 'up' AND {node_up}");
        let stack = &stack;
        async move { (query_u64(stack, &sql).await? >= 3).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));

    // node_exporter's series carry job, instance and the static label; go_* were dropped.
    let load = of(&format!(
        "MetricName = 'node_load1' AND Labels['job'] = 'node' AND Labels['instance'] = '{node_addr}' AND Labels['env'] = 'e2e'"
    ));
    let n = query_u64(
        &stack,
        &format!("SELECT count() FROM metrics_samples WHERE MetricName = 'node_load1' AND {load}"),
    )
    .await;
    assert!(n.unwrap_or(0) >= 1, "node_load1 samples: {n:?}");
    let go = query_u64(&stack, "SELECT count() FROM metrics_series WHERE MetricName LIKE 'go_%' AND Labels['job'] = 'node'").await;
    assert_eq!(
        go,
        Some(0),
        "go_* series must be dropped by metric_relabel_configs"
    );
    let kind = stack
        .db()
        .query("SELECT Kind FROM metrics_series FINAL WHERE MetricName = 'node_load1' LIMIT 1")
        .fetch_one::<String>()
        .await
        .unwrap();
    assert_eq!(kind, "gauge");

    // File SD: the blue target is scraped, the red one is not.
    wait_for("the file SD target", Duration::from_secs(60), || {
        let sql = format!(
            "SELECT count() FROM metrics_samples WHERE MetricName = 'up' AND Value = 1 AND {}",
            of(&format!("Labels['job'] = 'files' AND Labels['team'] = 'blue' AND Labels['instance'] = '{collector_addr}'"))
        );
        let stack = &stack;
        async move { (query_u64(stack, &sql).await? >= 2).then_some(()) }
    })
    .await
    .unwrap();
    let red = query_u64(
        &stack,
        "SELECT count() FROM metrics_series WHERE Labels['team'] = 'red'",
    )
    .await;
    assert_eq!(red, Some(0));

    // Probes: success and status per target.
    wait_for("probe results", Duration::from_secs(30), || {
        let stack = &stack;
        let node_addr = node_addr.clone();
        async move {
            let last = |name: &str, instance: String| {
                format!(
                    "SELECT toUInt64(argMax(Value, TimestampMs)) FROM metrics_samples WHERE MetricName = '{name}' AND {}",
                    of(&format!("MetricName = '{name}' AND Labels['instance'] = '{instance}'"))
                )
            };
            let ok = query_u64(stack, &last("probe_success", format!("http://{node_addr}/metrics"))).await?;
            let code = query_u64(stack, &last("probe_http_status_code", format!("http://{node_addr}/metrics"))).await?;
            let nope = format!("http://127.0.0.1:{web_port}/nope");
            let missing = query_u64(stack, &last("probe_http_status_code", nope.clone())).await?;
            let missing_ok = query_u64(stack, &last("probe_success", nope)).await?;
            let tcp_ok = query_u64(stack, &last("probe_success", node_addr.clone())).await?;
            let tcp_closed = query_u64(stack, &last("probe_success", "127.0.0.1:1".into())).await?;
            ((ok, code, missing, missing_ok, tcp_ok, tcp_closed) == (1, 200, 404, 0, 1, 0))
                .then_some(())
        }
    })
    .await
    .unwrap();

    // node_exporter stops: up turns 0, its series get stale markers.
    node.kill();
    wait_for("up = 0 and node_load1 stale", Duration::from_secs(60), || {
        let up0 = format!("SELECT countIf(Value = 0) FROM metrics_samples WHERE MetricName = 'up' AND {node_up}");
        let stale = format!(
            "SELECT reinterpretAsUInt64(argMax(Value, TimestampMs)) FROM metrics_samples WHERE MetricName = 'node_load1' AND {load}"
        );
        let stack = &stack;
        async move {
            let zeros = query_u64(stack, &up0).await?;
            let last = query_u64(stack, &stale).await?;
            (zeros >= 1 && last == STALE).then_some(())
        }
    })
    .await
    .unwrap();

    // The file SD target is removed: its series (up included) go stale.
    std::fs::write(&sd, "[]").unwrap();
    wait_for("the removed target's up stale", Duration::from_secs(60), || {
        let sql = format!(
            "SELECT reinterpretAsUInt64(argMax(Value, TimestampMs)) FROM metrics_samples WHERE MetricName = 'up' AND {}",
            of("Labels['job'] = 'files'")
        );
        let stack = &stack;
        async move { (query_u64(stack, &sql).await? == STALE).then_some(()) }
    })
    .await
    .unwrap();
}
