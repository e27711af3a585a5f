//! Error groups end to end: exceptions raised in Python, recorded on spans with the
//! OpenTelemetry SDK's `record_exception` and logged through its logging handler
//! (tests/python/send_errors.py), come back from `/api/v1/errors` and `obs errors` as
//! exactly the designed groups, with exact counts, first and last seen, services,
//! releases and sample traces.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use obs_e2e::{Stack, http, run_python_sender, wait_for};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
struct Occurrence {
    group: String,
    source: String,
    timestamp_ns: i64,
    service: String,
    release: String,
    trace_id: String,
    #[serde(rename = "type")]
    exception_type: String,
}

/// What a group must look like, worked out from the occurrences sent.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    exception_type: String,
    normalized_message: String,
    top_frames: Vec<String>,
    count: u64,
    first_seen_ns: i64,
    last_seen_ns: i64,
    services: Vec<String>,
    releases: Vec<String>,
    trace_ids: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

async fn groups(stack: &Stack) -> Vec<Value> {
    let body: Value = http(30)
        .get(format!("{}/api/v1/errors", stack.query_url()))
        .header("X-Scope-OrgID", "acme")
        .send()
        .await
        .expect("query API answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["status"], "success", "{body}");
    body["data"].as_array().expect("groups").clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn exceptions_on_spans_and_in_logs_group_by_type_message_and_frames() {
    let stack = Stack::start().await.expect("stack started");
    let base = format!("http://127.0.0.1:{}", stack.ports.otlp_http);
    let sent: Vec<Occurrence> = run_python_sender(
        "send_errors.py",
        &[
            "--traces",
            &format!("{base}/v1/traces"),
            "--logs",
            &format!("{base}/v1/logs"),
        ],
    );
    assert_eq!(sent.len(), 9, "occurrences sent: {sent:?}");

    let frames = |innermost: &str, caller: &str, catcher: &str| -> Vec<String> {
        [innermost, caller, catcher]
            .iter()
            .map(|f| format!("send_errors.py:{f}"))
            .collect()
    };
    let design: BTreeMap<&str, (&str, Vec<String>)> = [
        (
            "quantity",
            (
                "invalid quantity <num> for item <num>",
                frames("parse_quantity", "place_order", "fail_quantity"),
            ),
        ),
        (
            "price",
            (
                "invalid quantity <num> for item <num>",
                frames("parse_price", "place_price", "fail_price"),
            ),
        ),
        (
            "sku",
            (
                "'sku-<num>'",
                vec![
                    "send_errors.py:lookup_sku".to_string(),
                    "send_errors.py:fail_sku".to_string(),
                ],
            ),
        ),
    ]
    .into();
    let mut want: BTreeSet<Group> = BTreeSet::new();
    for (name, (message, top_frames)) in &design {
        let of: Vec<&Occurrence> = sent.iter().filter(|o| o.group == *name).collect();
        let set = |f: &dyn Fn(&Occurrence) -> String| -> Vec<String> {
            of.iter()
                .map(|o| f(o))
                .filter(|s| !s.is_empty())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        want.insert(Group {
            exception_type: of[0].exception_type.clone(),
            normalized_message: message.to_string(),
            top_frames: top_frames.clone(),
            count: of.len() as u64,
            first_seen_ns: of.iter().map(|o| o.timestamp_ns).min().unwrap(),
            last_seen_ns: of.iter().map(|o| o.timestamp_ns).max().unwrap(),
            services: set(&|o| o.service.clone()),
            releases: set(&|o| o.release.clone()),
            trace_ids: set(&|o| o.trace_id.clone()),
        });
    }
    assert_eq!(
        sent.iter().filter(|o| o.source == "log").count(),
        2,
        "two occurrences came through the logging handler"
    );

    let got = wait_for(
        "every occurrence grouped",
        Duration::from_secs(60),
        || async {
            let g = groups(&stack).await;
            let total: u64 = g.iter().map(|g| g["count"].as_u64().unwrap_or(0)).sum();
            (total == sent.len() as u64).then_some(g)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.sink_log()));
    let got: BTreeSet<Group> = got
        .iter()
        .map(|g| Group {
            exception_type: g["exception_type"].as_str().unwrap().to_string(),
            normalized_message: g["normalized_message"].as_str().unwrap().to_string(),
            top_frames: strings(&g["top_frames"]),
            count: g["count"].as_u64().unwrap(),
            first_seen_ns: g["first_seen_ns"].as_i64().unwrap(),
            last_seen_ns: g["last_seen_ns"].as_i64().unwrap(),
            services: strings(&g["services"]),
            releases: strings(&g["releases"]),
            trace_ids: strings(&g["sample_trace_ids"]),
        })
        .collect();
    assert_eq!(got, want);

    // The CLI shows the same groups.
    let out = stack
        .run_obs(&[
            "errors",
            "--tenant",
            "acme",
            "--since",
            "1h",
            "--format",
            "json",
            "--url",
            &stack.query_url(),
        ])
        .expect("obs errors runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let counts: BTreeSet<u64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, want.iter().map(|g| g.count).collect());
    let table = stack
        .run_obs(&["errors", "--tenant", "acme", "--url", &stack.query_url()])
        .expect("obs errors runs");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("3 groups since 24h ago") && text.contains("ValueError"),
        "{text}"
    );
}
