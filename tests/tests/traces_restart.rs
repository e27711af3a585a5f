//! The trace processor killed with SIGKILL while spans keep arriving, as its own process
//! (`obs processor`, 10 times, its checkpoints written in parts) and inside `obs up`, where it reads `obs.spans` along with
//! the sinks' reader (6 times, the sinks killed with it): afterwards
//! `sum(traces_spanmetrics_calls_total)` equals the number of spans acknowledged, exactly,
//! every trace has exactly one summary holding all of its spans, and the service graph
//! (metrics and the edge table) counts every trace's two requests exactly once.

use std::time::Duration;

use obs_e2e::load::{Load, SPANS, spans_counted};
use obs_e2e::{Stack, Stop, wait_for};

const SETTINGS: [(&str, &str); 4] = [
    ("OBS_TRACES__DECISION_WAIT_MS", "1000"),
    ("OBS_TRACES__IDLE_PARTITION_MS", "500"),
    ("OBS_TRACES__METRICS_INTERVAL_MS", "1000"),
    ("OBS_TRACES__CHECKPOINT_INTERVAL_MS", "300"),
];

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_neither_loses_nor_repeats_span_metrics_or_summaries() {
    // Checkpoints of over 4 KiB go in parts: restarts restore from parts.
    let mut settings = SETTINGS.to_vec();
    settings.push(("OBS_PROCESSOR__STATE_PART_BYTES", "4096"));
    let stack = Stack::start_with_separate_processor(&settings)
        .await
        .expect("stack started");
    sigkill_while_spans_flow(stack, 10, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_obs_up_reading_spans_along_neither_loses_nor_repeats() {
    let stack = Stack::start_with(&SETTINGS).await.expect("stack started");
    sigkill_while_spans_flow(stack, 6, false).await;
}

/// Whether the trace processor of `obs up` reads `obs.spans` along with the sinks' reader.
async fn reads_along(stack: &Stack) -> bool {
    let series = "obs_shared_reader_joined{topic=\"obs.spans\"}";
    stack.sink_metric(series).await == Some(1.0)
}

/// Kills the processor (`separate`) or `obs up` `kills` times while spans flow, then
/// checks that nothing was lost or repeated. `obs up` takes the collector down with it, so
/// there the load stops before each kill (every span sent is acknowledged) and a new one
/// starts after it.
async fn sigkill_while_spans_flow(mut stack: Stack, kills: u64, separate: bool) {
    let log = |stack: &Stack| {
        if separate {
            stack.processor_log()
        } else {
            stack.obs_log()
        }
    };
    let pace = Duration::from_millis(40);
    let mut load = Load::start(&stack, pace);
    let (mut prefixes, mut spans) = (Vec::new(), 0u64);
    let mut finish = |sent: obs_e2e::load::Sent, ids: &obs_e2e::load::Ids| {
        assert_eq!(
            sent.failures, 0,
            "the collector acknowledged every request: {:?}",
            sent.reasons
        );
        spans += sent.spans.len() as u64 * SPANS;
        prefixes.push(format!("startsWith(TraceId, '{:016x}')", ids.run_no));
    };

    let mut last = 0.0;
    for kill in 0..kills {
        // The processor has counted more than before the last kill: it made progress.
        last = wait_for(
            "the span metrics to grow",
            Duration::from_secs(60),
            || async { spans_counted(&stack).await.filter(|&n| n > last) },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log(&stack)));
        // Kill at different points of the input: after a growing number of spans handled
        // since this start (the processor's own counter).
        let handled = 200 + kill * 150;
        wait_for(
            "the processor to handle more spans",
            Duration::from_secs(60),
            || async {
                let n = stack.processor_metric("obs_traces_spans_total").await?;
                (n as u64 >= handled).then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log(&stack)));
        if separate {
            wait_for("a checkpoint in parts", Duration::from_secs(60), || async {
                let n = stack
                    .processor_metric("obs_processor_state_split_total")
                    .await?;
                (n > 0.0).then_some(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", log(&stack)));
            stack.crash_processor(&kill.to_string()).await;
        } else {
            assert!(
                reads_along(&stack).await,
                "start {kill}: the processor reads along"
            );
            let ids = load.ids.clone();
            finish(load.stop().await, &ids);
            stack.restart_obs(Stop::Kill).await.unwrap();
            load = Load::start(&stack, pace);
        }
    }
    let ids = load.ids.clone();
    finish(load.stop().await, &ids);
    let spans = spans as f64;

    wait_for(
        "every acknowledged span counted",
        Duration::from_secs(90),
        || async { spans_counted(&stack).await.filter(|&n| n >= spans) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log(&stack)));
    let traces = spans as u64 / 4;
    let db = stack.db();
    let sql = format!(
        "SELECT count(), uniqExact(TraceId), countIf(SpanCount = 4) FROM obs_trace_summaries FINAL \
         WHERE {}",
        prefixes.join(" OR ")
    );
    let got: (u64, u64, u64) = wait_for("every trace summed up", Duration::from_secs(90), || {
        let q = db.query(&sql);
        async move {
            let row: (u64, u64, u64) = q.fetch_one().await.ok()?;
            (row.1 >= traces).then_some(row)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log(&stack)));
    assert_eq!(
        got,
        (traces, traces, traces),
        "one summary per trace, each with its 4 spans"
    );
    assert_eq!(
        spans_counted(&stack).await,
        Some(spans),
        "every span counted exactly once"
    );

    // Each trace makes two requests: user → load-svc (its root) and load-svc → load-svc.
    let want = [
        ("load-svc".to_string(), traces),
        ("user".to_string(), traces),
    ];
    let sql = "SELECT Client, toUInt64(sum(RequestCount)) FROM obs_servicegraph_edges FINAL \
               WHERE Server = 'load-svc' GROUP BY Client ORDER BY Client";
    let edges: Vec<(String, u64)> = wait_for(
        "every request in the edge table",
        Duration::from_secs(90),
        || {
            let q = db.query(sql);
            async move {
                let rows: Vec<(String, u64)> = q.fetch_all().await.ok()?;
                (rows.iter().map(|r| r.1).sum::<u64>() >= 2 * traces).then_some(rows)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log(&stack)));
    assert_eq!(edges, want, "edge windows: no request lost or repeated");
    let q = "sum by (client) (traces_service_graph_request_total{server=\"load-svc\"})";
    let got = wait_for("every request counted", Duration::from_secs(60), || async {
        let v = query_values(&stack, q, "client").await?;
        (v.iter().map(|r| r.1).sum::<u64>() >= 2 * traces).then_some(v)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log(&stack)));
    assert_eq!(got, want, "request metrics: no request lost or repeated");
}

/// An instant query's values by one label, ordered by it.
async fn query_values(stack: &Stack, q: &str, label: &str) -> Option<Vec<(String, u64)>> {
    let body = stack.instant_query(q).await?;
    let mut rows: Vec<(String, u64)> = body["data"]["result"]
        .as_array()?
        .iter()
        .map(|r| {
            let v: f64 = r["value"][1].as_str()?.parse().ok()?;
            Some((r["metric"][label].as_str()?.to_string(), v as u64))
        })
        .collect::<Option<_>>()?;
    rows.sort();
    Some(rows)
}
