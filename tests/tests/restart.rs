//! The pipeline survives its own restarts. Under continuous load of OTLP logs, OTLP spans
//! and remote-write samples, each of these happens 5 times: `obs up` stopped by SIGTERM
//! (and must exit 0), `obs up` killed by SIGKILL, the broker killed, the ClickHouse endpoint
//! killed, and the whole stack stopped and started again on the same data. After every
//! restart a new record must be queryable through the query API within 15 s; at the end
//! every acknowledged record must be stored exactly once (counted by id), and nothing twice.
//!
//! Before the fix, the first restart already failed: tansu handed the restarted sinks no
//! partitions, records were acknowledged and never stored.

use std::time::Duration;

use obs_e2e::load::{self, Load};
use obs_e2e::{Stack, Stop, wait_for};

const ROUNDS: usize = 5;
const QUERYABLE_WITHIN: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
enum Restart {
    ObsTerm,
    ObsKill,
    Broker,
    ClickHouse,
    WholeStack,
}

async fn restart(stack: &mut Stack, what: Restart) -> anyhow::Result<()> {
    match what {
        Restart::ObsTerm => {
            stack.restart_obs(Stop::Term).await?;
        }
        Restart::ObsKill => stack.restart_obs(Stop::Kill).await?,
        Restart::Broker => stack.broker.restart().await?,
        Restart::ClickHouse => stack.clickhouse.restart().await?,
        Restart::WholeStack => stack.restart_all().await?,
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_restart_stores_each_acknowledged_record_once() {
    let mut stack = Stack::start_with(&[("OBS_SINK__BATCH_MAX_WAIT_MS", "100")])
        .await
        .unwrap();
    let load = Load::start(&stack, Duration::from_millis(50));
    let mut slowest = Duration::ZERO;
    let kinds = [
        Restart::ObsTerm,
        Restart::ObsKill,
        Restart::Broker,
        Restart::ClickHouse,
        Restart::WholeStack,
    ];
    for round in 1..=ROUNDS {
        for what in kinds {
            // Restart while requests are flowing: wait until a few more were acknowledged.
            let before = load.sent().logs.len();
            wait_for("the load to flow", Duration::from_secs(60), || {
                let now = load.sent().logs.len();
                async move { (now >= before + 3).then_some(()) }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", load.sent().reasons, stack.obs_log()));
            restart(&mut stack, what)
                .await
                .unwrap_or_else(|e| panic!("round {round}, {what:?}: {e:#}"));
            if matches!(what, Restart::ObsTerm | Restart::WholeStack) {
                // restart_* stopped it with SIGTERM first: the old process exited cleanly.
                assert_eq!(
                    stack.last_obs_exit_code(),
                    Some(0),
                    "round {round}, {what:?}: obs did not exit 0 on SIGTERM\n{}",
                    stack.obs_log()
                );
            }
            let took = load::time_to_queryable(&stack, QUERYABLE_WITHIN)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "round {round}, after {what:?}: a new record was not queryable within {QUERYABLE_WITHIN:?}: {e}\n{}",
                        stack.obs_log()
                    )
                });
            eprintln!("round {round}, {what:?}: new record queryable after {took:?}");
            slowest = slowest.max(took);
        }
    }
    let ids = load.ids.clone();
    let sent = load.stop().await;
    assert!(
        sent.logs.len() >= 100,
        "too little load got through: {sent:?}"
    );
    let (logs, spans, samples) =
        load::verify_exactly_once(&stack, &ids, &sent, Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));
    eprintln!(
        "{} restarts: {logs} logs, {spans} spans, {samples} samples acknowledged, each stored once \
         ({} requests refused while parts were down); slowest time to queryable {slowest:?}",
        ROUNDS * kinds.len(),
        sent.failures
    );
}
