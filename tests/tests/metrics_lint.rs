//! Every `/metrics` page of a running stack passes `promtool check metrics` (Prometheus's
//! own linter of the exposition format): every metric has HELP text, names follow the
//! conventions. The pipeline first carries some of every signal so the pages hold the
//! collector's, sink's and processors' metrics, not only the idle ones.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use obs_e2e::{Stack, run_python_sender, wait_for};
use serde_json::Value;

/// `promtool check metrics` of `page`: its problem lines (none when it passes).
fn promtool_problems(page: &str) -> Vec<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    assert_eq!(
        out.status.success(),
        problems.is_empty(),
        "promtool's exit status disagrees with its output: {text}"
    );
    problems
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metrics_page_passes_promtool_check_metrics() {
    let stack = Stack::start().await.unwrap();
    let sent: Vec<Value> = run_python_sender(
        "send_otlp_logs.py",
        &[
            "--endpoint",
            &stack.otlp_logs_url(),
            "--run-id",
            "lint",
            "--count",
            "3",
        ],
    );
    assert_eq!(sent.len(), 3);
    stack.wait_sink_caught_up("otel_logs").await.unwrap();
    let client = stack.client().clone();
    for (what, port) in [
        ("collector", stack.ports.collector),
        ("query API", stack.ports.query),
        ("registry", stack.ports.registry),
        ("sink", stack.ports.sink),
        ("processor", stack.ports.processor),
    ] {
        let url = format!("{}/metrics", stack.url_of(port));
        // The sink's page holds its rows counter once the insert is counted.
        let page = wait_for(
            &format!("{what}'s /metrics"),
            Duration::from_secs(30),
            || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let page = client.get(&url).send().await.ok()?.text().await.ok()?;
                    page.contains("obs_").then_some(page)
                }
            },
        )
        .await
        .unwrap();
        let problems = promtool_problems(&page);
        assert!(problems.is_empty(), "{what} /metrics: {problems:#?}");
        let helps = page
            .lines()
            .filter(|l| l.starts_with("# HELP obs_"))
            .count();
        let families = page
            .lines()
            .filter(|l| l.starts_with("# TYPE obs_"))
            .count();
        assert_eq!(
            helps, families,
            "{what}: a metric family without HELP\n{page}"
        );
    }
}
