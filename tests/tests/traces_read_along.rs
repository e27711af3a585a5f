//! In `obs up` the trace processor reads `obs.spans` along with the sinks' reader (one
//! fetch for both): traces are summarised and stored through that one read, and when
//! ClickHouse stops the processor is let go to its own consumer and summarises every trace
//! sent during the outage while the span sink waits; afterwards every span and every
//! summary is stored exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::{Stack, http, wait_for};
use obs_schemas::records::TraceSummaryBatch;
use serde_json::json;

const MS: i64 = 1_000_000;

/// The value of `obs_shared_reader_joined{topic="obs.spans"}` on the sink's /metrics.
async fn joined(stack: &Stack) -> Option<f64> {
    stack
        .sink_metric("obs_shared_reader_joined{topic=\"obs.spans\"}")
        .await
}

/// Trace `i`'s id: 32 hex digits.
fn trace_id(i: usize) -> String {
    format!("{:032x}", 0xa10_0000 + i)
}

/// Sends traces `range`, one request (one `obs.spans` message) each: a server span with a
/// client child, 5 s ago.
async fn send(stack: &Stack, range: std::ops::Range<usize>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let start = now - 5_000 * MS;
    let url = format!("http://127.0.0.1:{}/v1/traces", stack.ports.otlp_http);
    for i in range {
        let id = trace_id(i);
        let span = |span_id: &str, parent: &str, kind: i32, offset_ms: i64| {
            json!({
                "traceId": id, "spanId": span_id, "parentSpanId": parent,
                "name": format!("op-{kind}"), "kind": kind,
                "startTimeUnixNano": (start + offset_ms * MS).to_string(),
                "endTimeUnixNano": (start + (offset_ms + 3) * MS).to_string()
            })
        };
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "along"}}]},
            "scopeSpans": [{"spans": [
                span("00000000000000a1", "", 2, 0),
                span("00000000000000a2", "00000000000000a1", 3, 1),
            ]}]
        }]});
        let r = http(30).post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "trace {i} refused");
    }
}

/// The trace ids of every summary on `obs.traces` for traces of this test.
async fn summarised(stack: &Stack) -> BTreeSet<String> {
    let Ok(batches) = stack
        .read_topic::<TraceSummaryBatch>(
            "obs.traces",
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
        .await
    else {
        return BTreeSet::new();
    };
    batches
        .into_iter()
        .flat_map(|(_, b)| b.summaries)
        .filter(|s| s.root_service == "along")
        .map(|s| s.trace_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_processor_reads_spans_along_with_the_sink_and_goes_on_alone_while_clickhouse_is_down()
{
    let mut stack = Stack::start_with(&[
        ("OBS_TRACES__DECISION_WAIT_MS", "1000"),
        // Patience (half of it): 1 s held back, then the processor reads alone.
        ("OBS_TRACES__IDLE_PARTITION_MS", "2000"),
        ("OBS_TRACES__CHECKPOINT_INTERVAL_MS", "500"),
    ])
    .await
    .expect("stack started");
    wait_for(
        "the processor to read along",
        Duration::from_secs(60),
        || async { (joined(&stack).await == Some(1.0)).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.obs_log()));

    // Through the one read: every span stored, every trace summarised.
    send(&stack, 0..20).await;
    let db = stack.db();
    let stored = |table: &'static str, q: &'static str, want: u64| {
        let db = db.clone();
        wait_for(table, Duration::from_secs(90), move || {
            let db = db.clone();
            async move { (db.query(q).fetch_one::<u64>().await.ok()? == want).then_some(()) }
        })
    };
    const SPANS: &str = "SELECT count() FROM otel_traces WHERE ServiceName = 'along'";
    const SUMMARIES: &str =
        "SELECT count() FROM obs_trace_summaries FINAL WHERE RootService = 'along'";
    stored("otel_traces", SPANS, 40)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.obs_log()));
    stored("obs_trace_summaries", SUMMARIES, 20)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.obs_log()));
    assert_eq!(joined(&stack).await, Some(1.0), "still reading along");

    // ClickHouse down: the span sink's queue fills after a few messages; the processor,
    // held back, is let go and summarises all 100 traces from its own consumer.
    stack.clickhouse.stop();
    send(&stack, 20..120).await;
    let want: BTreeSet<String> = (0..120).map(trace_id).collect();
    wait_for(
        "every trace summarised on obs.traces",
        Duration::from_secs(90),
        || async { (summarised(&stack).await == want).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.obs_log()));
    assert_eq!(joined(&stack).await, Some(0.0), "the processor was let go");

    // ClickHouse back: the sink stores what it waited with, once.
    stack.clickhouse.restart().await.unwrap();
    stored("otel_traces", SPANS, 240)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.obs_log()));
    stored("obs_trace_summaries", SUMMARIES, 120)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.obs_log()));
    stack.wait_sink_caught_up("otel_traces").await.unwrap();
    let spans: u64 = db.query(SPANS).fetch_one().await.unwrap();
    assert_eq!(spans, 240, "each span stored once");
}
