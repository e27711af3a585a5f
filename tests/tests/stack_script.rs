//! The README's commands, as a new user runs them: `scripts/stack up`, `scripts/stack
//! down`, `scripts/stack up` again on the same state directory. The second `up` must store
//! its own demo records (it checks them by run id and fails otherwise), and afterwards both
//! runs' 200 demo records are in ClickHouse, each once, and the stack scrapes itself
//! (`sum by (job) (up)` answers 1 for `obs` and `alertmanager`), and the live demo's traces,
//! trace-linked logs, span metrics, service graph and deploy event arrive, every panel
//! of every Grafana dashboard shows data, and the status page shows live numbers in
//! headless Chromium. Uses the stack's fixed loopback
//! ports (9092, 8123, 8080, ...), which no other test uses.

use std::process::Command;

use obs_e2e::repo_root;

fn stack(args: &[&str], state: &std::path::Path) -> std::process::Output {
    Command::new(repo_root().join("scripts/stack"))
        .args(args)
        .env("OBS_STATE", state)
        .output()
        .expect("scripts/stack runs")
}

fn ok(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "scripts/stack {what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the stack even when an assertion fails.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = stack(&["down"], &self.0);
    }
}

#[test]
fn stack_up_down_up_stores_the_second_runs_demo_records() {
    let state = tempfile::Builder::new()
        .prefix("obs-stack-")
        .tempdir()
        .unwrap();
    let _down = Down(state.path().to_path_buf());
    ok("up", &stack(&["up"], state.path()));
    ok("down", &stack(&["down"], state.path()));
    let second = stack(&["up"], state.path());
    ok("up (second run)", &second);
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("this run's 200 demo logs arrived"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let out = Command::new(obs_e2e::obs_bin())
        .args([
            "sql",
            "SELECT uniqExact(LogAttributes['demo.run']) AS runs, count() AS n, \
             uniqExact(LogAttributes['demo.run'], LogAttributes['demo.seq']) AS distinct_records \
             FROM otel_logs WHERE ScopeName = 'obs-demo' AND mapContains(LogAttributes, 'demo.run')",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().last(),
        Some("2,400,400"),
        "two runs of 200 demo records, each once: {text}"
    );
    // The stack scrapes itself: the README's `sum by (job) (up)` answers for both jobs.
    let out = Command::new("curl")
        .args([
            "-s",
            "http://127.0.0.1:8090/api/v1/query",
            "--data-urlencode",
        ])
        .arg("query=sum by (job) (up)")
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut jobs: Vec<(String, String)> = answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        [
            ("alertmanager".to_string(), "1".to_string()),
            ("obs".to_string(), "1".to_string())
        ],
        "{answer}"
    );
    // The live demo sends all four signals: traces through three services with errors,
    // logs carrying their trace ids, RED and service-graph metrics derived from the spans,
    // and a deploy event.
    wait_until(
        "the live demo's traces, linked logs and deploy event",
        || {
            let row = sql("SELECT \
               ifNull((SELECT uniqExact(ServiceName) FROM otel_traces WHERE ScopeName = 'obs-demo'), 0), \
               ifNull((SELECT countIf(StatusCode = 'Error') FROM otel_traces WHERE ScopeName = 'obs-demo'), 0) > 0, \
               ifNull((SELECT count() FROM otel_logs WHERE ScopeName = 'obs-demo' AND TraceId IN \
                 (SELECT TraceId FROM otel_traces WHERE ScopeName = 'obs-demo')), 0) > 0, \
               ifNull((SELECT count() FROM obs_events WHERE Type = 'deploy' AND Source = 'obs-demo'), 0) > 0");
            row == "3,1,1,1"
        },
    )
    .unwrap();
    wait_until(
        "RED metrics and the service graph from the demo's spans",
        || {
            let calls = promql(
                r#"sum by (service) (traces_spanmetrics_calls_total{service=~"frontend|checkout|payments"})"#,
            );
            let edges = promql(r#"sum by (client, server) (traces_service_graph_request_total)"#);
            calls.len() == 3
                && edges
                    .iter()
                    .any(|m| m["client"] == "frontend" && m["server"] == "checkout")
                && edges
                    .iter()
                    .any(|m| m["client"] == "checkout" && m["server"] == "payments")
        },
    )
    .unwrap();
    // Every panel of every Grafana dashboard answers with data, run as Grafana runs it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(every_panel_shows_data());
    the_status_page_shows_live_numbers_in_a_browser();
    ok("restart", &stack(&["restart"], state.path()));
}

/// Debian's headless Chromium opens the query API's status page: it shows both scrape
/// targets up and logs coming in. With `OBS_STATUS_SCREENSHOT=<png>` it also saves a
/// screenshot (the README's, docs/status.png).
fn the_status_page_shows_live_numbers_in_a_browser() {
    let url = "http://127.0.0.1:8090/status";
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ])
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium runs (scripts/stack test installs Debian's chromium)")
    };
    let mut dom = String::new();
    // Both numbers are rates over the last minute of 15-s self-scrapes, and that minute
    // may still hold the first run's samples (a counter reset to this run's): they show
    // this run's logs once two of its scrapes saw them accepted and stored.
    let shown = wait_until("the status page to show logs accepted and stored", || {
        let out = chromium(&["--dump-dom"]);
        dom = String::from_utf8_lossy(&out.stdout).into_owned();
        cell(&dom, "Records accepted, by signal", "logs").is_some_and(|v| v > 0.0)
            && cell(&dom, "Rows stored, by table", "otel_logs").is_some_and(|v| v > 0.0)
    });
    if let Err(e) = shown {
        panic!("{e}; the page last shown:\n{dom}");
    }
    assert!(dom.contains("<h1>obs status</h1>"), "{dom}");
    assert_eq!(cell(&dom, "Scrape targets up", "obs"), Some(1.0), "{dom}");
    assert_eq!(
        cell(&dom, "Scrape targets up", "alertmanager"),
        Some(1.0),
        "{dom}"
    );
    if let Ok(png) = std::env::var("OBS_STATUS_SCREENSHOT") {
        let out = chromium(&[&format!("--screenshot={png}"), "--window-size=1000,1500"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The number in the row `row` of the table under the heading `section` of the page.
fn cell(dom: &str, section: &str, row: &str) -> Option<f64> {
    let table = &dom[dom.find(&format!("<h2>{section}</h2>"))?..];
    let table = &table[..table.find("</table>")?];
    let at = table.find(&format!("<td>{row}</td>"))?;
    let rest = &table[at..];
    let value = &rest[rest.find("data-value=\"")? + 12..];
    value[..value.find('"')?].parse().ok()
}

/// Runs each dashboard's panel queries against the stack until all of them return data
/// (some derived series, such as the SLO burn rates, need a few rule evaluations), then
/// checks that a broken query and a query without data are reported.
async fn every_panel_shows_data() {
    use obs_e2e::dashboards::{self, Endpoints, PanelQuery};
    let at = Endpoints {
        query_api: "http://127.0.0.1:8090".into(),
        clickhouse: "http://127.0.0.1:8123".into(),
        database: "obs".into(),
    };
    let client = reqwest::Client::new();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let queries = |now: i64| -> Vec<PanelQuery> {
        dashboards::dashboard_files()
            .iter()
            .flat_map(|f| dashboards::panel_queries(f, now).unwrap())
            .collect()
    };
    assert!(queries(now()).len() >= 20, "{:?}", queries(now()));
    let started = std::time::Instant::now();
    let last = std::sync::Mutex::new(Vec::new());
    let shown = obs_e2e::wait_for(
        "every dashboard panel to show data",
        std::time::Duration::from_secs(180),
        || {
            let (client, at, last) = (client.clone(), at.clone(), &last);
            async move {
                let t = now();
                let mut failures = Vec::new();
                for q in queries(t) {
                    if let Err(e) = dashboards::run(&client, &at, &q, t).await {
                        failures.push(format!(
                            "{} / {}: {e:#}\n  {}",
                            q.dashboard, q.panel, q.query
                        ));
                    }
                }
                let done = failures.is_empty();
                *last.lock().unwrap() = failures;
                done.then_some(())
            }
        },
    )
    .await;
    if let Err(e) = shown {
        panic!(
            "{e}; panels without data:\n{}",
            last.lock().unwrap().join("\n")
        );
    }
    eprintln!(
        "every dashboard panel showed data after {:?}",
        started.elapsed()
    );
    // The check fails a panel whose query is broken or finds nothing.
    let t = now();
    let mut panel = queries(t).remove(0);
    let good = panel.query.clone();
    panel.query = format!("{good})");
    let broken = dashboards::run(&client, &at, &panel, t).await;
    assert!(broken.is_err(), "{good}) answered {broken:?}");
    let mut panel = queries(t)
        .into_iter()
        .find(|q| q.datasource == "obs-prometheus")
        .unwrap();
    panel.query = "sum(rate(no_such_metric_total[1m]))".into();
    let empty = dashboards::run(&client, &at, &panel, t).await;
    assert!(
        empty.as_ref().is_err_and(|e| e.to_string() == "no data"),
        "{empty:?}"
    );
}

/// `obs sql` against the stack's ClickHouse: the CSV answer's last line.
fn sql(query: &str) -> String {
    let out = Command::new(obs_e2e::obs_bin())
        .args(["sql", query, "--format", "csv"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// The label sets of a PromQL instant query's answer from the stack's query API.
fn promql(query: &str) -> Vec<serde_json::Value> {
    let out = Command::new("curl")
        .args([
            "-s",
            "http://127.0.0.1:8090/api/v1/query",
            "--data-urlencode",
        ])
        .arg(format!("query={query}"))
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    answer["data"]["result"]
        .as_array()
        .map(|r| r.iter().map(|s| s["metric"].clone()).collect())
        .unwrap_or_default()
}

/// Polls `check` (with the suite's [`obs_e2e::wait_for`]) for two minutes; the error names
/// `what`.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(obs_e2e::wait_for(
        what,
        std::time::Duration::from_secs(120),
        || {
            let done = check();
            async move { done.then_some(()) }
        },
    ))
}
