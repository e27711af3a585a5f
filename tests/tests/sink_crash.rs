//! The sink killed again and again while logs, spans and metrics flow — with SIGKILL at
//! random moments, and by aborting right after an insert before its offset commit (the
//! worst moment) — afterwards every record the collectors acknowledged is in ClickHouse
//! exactly once.

use std::time::Duration;

use obs_e2e::load::{self, Load, now_ns};
use obs_e2e::{Stack, wait_for};

const KILLS: usize = 20;
const CRASHES_AFTER_INSERT: usize = 8;

#[tokio::test(flavor = "multi_thread")]
async fn sink_killed_at_random_points_stores_every_acknowledged_record_once() {
    let mut stack = Stack::start_with_separate_sink(&[("OBS_SINK__BATCH_MAX_WAIT_MS", "100")])
        .await
        .unwrap();
    let load = Load::start(&stack, Duration::from_millis(20));

    // Kill at pseudo-random moments between 0.2 and 2 s after the sink became ready.
    let mut seed = now_ns();
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..KILLS {
        // The random kill moment is the fault being tested.
        tokio::time::sleep(Duration::from_millis(200 + next(1800))).await;
        stack.kill_sink();
        stack.start_sink().await.unwrap();
    }
    // Now crash exactly between insert and commit, again and again.
    for _ in 0..CRASHES_AFTER_INSERT {
        stack.kill_sink();
        // It may crash before its readiness is seen; the wait below is what counts.
        let after = (1 + next(3)).to_string();
        let _ = stack
            .start_sink_with(&[("OBS_SINK_CRASH_AFTER_INSERTS", &after)])
            .await;
        wait_for(
            "the sink to crash after an insert",
            Duration::from_secs(120),
            || {
                let exited = stack.sink_exited();
                async move { exited.then_some(()) }
            },
        )
        .await
        .unwrap();
    }
    // Each of those exits was the failpoint (a build without it would just run on).
    let fired = stack
        .log_text("sink")
        .matches("OBS_SINK_CRASH_AFTER_INSERTS reached")
        .count();
    assert_eq!(
        fired, CRASHES_AFTER_INSERT,
        "the failpoint fired {fired} times; obs must be built with --features failpoints \
         (scripts/stack test does)"
    );
    stack.kill_sink();
    stack.start_sink().await.unwrap();
    let ids = load.ids.clone();
    let sent = load.stop().await;
    assert_eq!(
        sent.failures, 0,
        "the collector does not depend on the sink: {:?}",
        sent.reasons
    );
    assert!(
        sent.logs.len() >= 20,
        "only {} requests were sent",
        sent.logs.len()
    );
    let (logs, spans, samples) =
        load::verify_exactly_once(&stack, &ids, &sent, Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", stack.sink_log()));
    eprintln!(
        "crash test: {logs} logs, {spans} spans, {samples} samples acknowledged; each stored once"
    );
}
