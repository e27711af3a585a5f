//! A stalled sink cannot look healthy: with its table moved away, the logs sink keeps
//! retrying and commits nothing, so `/readyz` must turn 503 naming the table, topic and
//! partitions, and `obs_sink_stalled_partitions` must count them. With the table back, the
//! sink recovers by itself, `/readyz` is 200 again and every record is stored once.

use std::time::Duration;

use obs_e2e::load::{LOGS, logs_request, now_ns};
use obs_e2e::{Stack, http, wait_for};

async fn readyz(stack: &Stack) -> (u16, String) {
    let r = http(5)
        .get(format!("http://127.0.0.1:{}/readyz", stack.ports.sink))
        .send()
        .await
        .expect("sink ops answers");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn send_logs(stack: &Stack, run: &str, n: u64) {
    let r = http(30)
        .post(stack.otlp_logs_url())
        .header("Content-Type", "application/x-protobuf")
        .body(logs_request(run, n))
        .send()
        .await
        .expect("collector reachable");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_sink_is_not_ready_and_says_why() {
    let stack = Stack::start_with(&[("OBS_SINK__STALL_AFTER_SECS", "3")])
        .await
        .unwrap();
    let run = format!("stall-{}", now_ns());
    let filter = format!("LogAttributes['run'] = '{run}'");
    send_logs(&stack, &run, 0).await;
    stack
        .wait_log_count(&filter, LOGS, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(readyz(&stack).await.0, 200, "ready while storing");

    stack
        .db()
        .query("RENAME TABLE otel_logs TO otel_logs_parked")
        .execute()
        .await
        .unwrap();
    // Three requests of three services: messages wait on several partitions.
    for n in 1..=3 {
        send_logs(&stack, &run, n).await;
    }
    let (code, body) = wait_for(
        "/readyz to report the stall",
        Duration::from_secs(30),
        || {
            let stack = &stack;
            async move {
                let (code, body) = readyz(stack).await;
                (code == 503 && body.contains("stalled")).then_some((code, body))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));
    assert_eq!(code, 503);
    assert!(
        body.contains("sink otel_logs <- obs.logs is stalled: partitions ")
            && body.contains("messages waiting, stuck ")
            && body.contains("no offset committed"),
        "{body}"
    );
    let metrics = stack.sink_metrics().await.unwrap();
    let stalled: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("obs_sink_stalled_partitions{")
                && l.contains("table=\"otel_logs\"")
                && l.contains("topic=\"obs.logs\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no stalled-partitions gauge for otel_logs:\n{metrics}"));
    assert!(stalled >= 1.0, "stalled partitions {stalled}");
    assert!(
        stack.obs_log().contains("is stalled"),
        "the stall is logged at WARN"
    );

    stack
        .db()
        .query("RENAME TABLE otel_logs_parked TO otel_logs")
        .execute()
        .await
        .unwrap();
    stack
        .wait_log_count(&filter, 4 * LOGS, Duration::from_secs(60))
        .await
        .unwrap();
    wait_for("/readyz to be 200 again", Duration::from_secs(30), || {
        let stack = &stack;
        async move { (readyz(stack).await.0 == 200).then_some(()) }
    })
    .await
    .unwrap();
    let distinct: u64 = stack
        .db()
        .query(&format!(
            "SELECT uniqExact(LogAttributes['seq']) FROM otel_logs WHERE {filter}"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(distinct, 4 * LOGS, "each record once");
}
