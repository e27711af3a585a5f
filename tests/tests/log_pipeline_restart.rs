//! The log processor (`obs processor`, its own process) killed with SIGKILL 5 times while
//! logs keep arriving through a pipeline: afterwards `otel_logs` holds exactly the
//! acknowledged records the pipeline keeps (those whose `seq` does not end in 7), each
//! once and marked by the pipeline.

use std::time::Duration;

use obs_e2e::load::{LOGS, Load};
use obs_e2e::{Stack, repo_root, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_neither_loses_nor_repeats_piped_logs() {
    let file = repo_root().join("tests/logs/restart_pipeline.toml");
    let mut stack = Stack::start_with_separate_processor(&[(
        "OBS_LOGS__PIPELINES_FILE",
        file.to_str().unwrap(),
    )])
    .await
    .expect("stack started");
    let load = Load::start(&stack, Duration::from_millis(40));
    let run = load.ids.run.clone();
    let db = stack.db();
    let count_sql = format!("SELECT count() FROM otel_logs WHERE LogAttributes['run'] = '{run}'");
    let mut last = 0u64;
    for kill in 0..5 {
        // Stored rows grew since the last kill: the restarted processor made progress.
        last = wait_for("piped logs to grow", Duration::from_secs(60), || {
            let q = db.query(&count_sql);
            async move {
                let n: u64 = q.fetch_one().await.ok()?;
                (n > last).then_some(n)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.processor_log()));
        stack.crash_processor(&kill.to_string()).await;
    }
    let sent = load.stop().await;
    assert_eq!(
        sent.failures, 0,
        "every request acknowledged: {:?}",
        sent.reasons
    );
    // Of each request's 50 records (seq n*50 .. n*50+49), the 5 ending in 7 are dropped.
    let want = sent.logs.len() as u64 * (LOGS - LOGS / 10);
    stack
        .wait_log_count(
            &format!("LogAttributes['run'] = '{run}'"),
            want,
            Duration::from_secs(90),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.processor_log()));
    let (piped, distinct, sevens): (u64, u64, u64) = db
        .query(&format!(
            "SELECT countIf(LogAttributes['piped'] = 'yes'), uniqExact(LogAttributes['seq']), \
             countIf(endsWith(LogAttributes['seq'], '7')) \
             FROM otel_logs WHERE LogAttributes['run'] = '{run}'"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((piped, distinct, sevens), (want, want, 0));
}
