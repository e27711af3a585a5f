//! Rule failures are named and counted, and do not stop the other rules: a bad rule file
//! stops `obs processor` at start with the file, group and rule named; at run time a rule
//! whose query fails and a template that fails are logged with file, group and rule,
//! counted in the processor's metrics and shown in `/api/v1/rules`, while the group's good
//! rule keeps recording.

use std::process::Command;

use obs_e2e::remote_write::Series;
use obs_e2e::rules::{RulesStack, now_ms};
use obs_e2e::{http, obs_bin, repo_root};

#[test]
fn a_bad_rule_file_stops_the_processor_naming_the_problem() {
    let file = repo_root().join("tests/rules/check/bad_for_on_record.yml");
    let out = Command::new(obs_bin())
        .arg("processor")
        .env(
            "OBS_PROCESSOR__RULE_FILES",
            format!("[\"{}\"]", file.display()),
        )
        .env("OBS_PROCESSOR__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: group \"a\", rule 1, \"job:up:sum\": invalid field 'for' in recording rule",
            file.display()
        )),
        "{err}"
    );
    assert!(err.contains("obs rules check"), "says what to do: {err}");
}

const RULES: &str = r#"
groups:
  - name: mixed
    interval: 10s
    rules:
      - record: instance:dup
        expr: up
        labels:
          instance: same
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Up
        expr: up == 1
        annotations:
          summary: '{{ humanize "not a number" }}'
"#;

#[tokio::test(flavor = "multi_thread")]
async fn failing_rules_are_named_counted_and_isolated() {
    let rs = RulesStack::start(RULES, &[("OBS_PROCESSOR__IDLE_PARTITION_MS", "2000")]).await;
    let (stack, rules) = (&rs.stack, &rs.rules);
    let t0 = (now_ms() - 120_000) / 10_000 * 10_000;
    let series: Vec<Series> = ["a", "b"]
        .iter()
        .map(|i| Series {
            name: "up",
            labels: vec![("job", "node".to_string()), ("instance", i.to_string())],
            samples: (0..6).map(|k| (t0 + k * 10_000, 1.0)).collect(),
        })
        .collect();
    rs.write(&series).await;

    // The good rule records despite the failing one before it.
    rs.rows_until::<u64>(
        "job:up:sum stored",
        "SELECT count() FROM metrics_samples WHERE MetricName = 'job:up:sum'",
        |n| n.first().is_some_and(|&n| n >= 6),
    )
    .await;
    // Everything published so far is stored: the failing rule's count is final.
    stack.wait_sink_caught_up("metrics_samples").await.unwrap();
    let db = stack.db();
    let n: u64 = db
        .query("SELECT count() FROM metrics_samples WHERE MetricName = 'instance:dup'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 0, "the failing rule wrote nothing");

    // Counted, per file, group and rule.
    let file = rules.display().to_string();
    let metrics = http(10)
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            stack.ports.processor
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = |name: &str, rule: &str| {
        metrics.lines().any(|l| {
            l.starts_with(name)
                && l.contains(&format!("rule=\"{rule}\""))
                && l.contains("group=\"mixed\"")
                && l.contains(&format!("file=\"{file}\""))
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(6.0)
        })
    };
    assert!(
        counted("obs_rule_evaluation_failures_total", "instance:dup"),
        "{metrics}"
    );
    assert!(
        counted("obs_rule_template_failures_total", "Up"),
        "{metrics}"
    );

    // Logged with file, group and rule.
    let log = stack.obs_log();
    assert!(
        log.lines().any(|l| l.contains("rule evaluation failed")
            && l.contains(&file)
            && l.contains("mixed")
            && l.contains("instance:dup")
            && l.contains(
                "vector contains metrics with the same labelset after applying rule labels"
            )),
        "no log line names the failing rule"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("template expansion failed") && l.contains("Up")),
        "no log line names the failing template"
    );

    // /api/v1/rules shows the failing rule's health and error, the others' health.
    let rules: serde_json::Value = http(10)
        .get(format!("{}/api/v1/rules", stack.query_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = &rules["data"]["groups"][0]["rules"];
    assert_eq!(r[0]["health"], "err", "{rules}");
    assert_eq!(
        r[0]["lastError"],
        "vector contains metrics with the same labelset after applying rule labels"
    );
    assert_eq!(r[1]["health"], "ok");
    assert_eq!(r[2]["health"], "ok");
    let summary = r[2]["alerts"][0]["annotations"]["summary"]
        .as_str()
        .unwrap_or("");
    assert!(
        summary.starts_with("<error expanding template: error executing template __alert_Up:"),
        "Prometheus's wording: {summary}"
    );
}
