//! Scale-out on Kafka partitions: 2 collectors behind a round-robin "load balancer" (the
//! load alternates between them), 3 sink instances and 2 processor instances (each owning
//! its share of the topics' partitions), under continuous load of logs, spans and samples.
//! Twice, one member of each kind is killed with SIGKILL while the load goes on, and
//! started again. Afterwards: every acknowledged record is stored exactly once; the trace
//! processors' outputs count exactly the spans stored (span metrics, one summary per trace,
//! service-graph edges); and every sink instance's consumer lag is back to 0.

use std::collections::BTreeSet;
use std::time::Duration;

use obs_e2e::load::{Collector, Load, spans_counted, verify_exactly_once};
use obs_e2e::{Proc, Stack, free_port, http, lag_groups, wait_for};

const SINKS: usize = 3;
const PROCESSORS: usize = 2;

/// The pipeline's members besides `obs up` (registry, query API and collector A).
struct Members {
    collector_b: Option<Proc>,
    collector_b_ports: (u16, u16),
    sinks: Vec<Option<Proc>>,
    sink_ports: Vec<u16>,
    processors: Vec<Option<Proc>>,
    processor_ports: Vec<u16>,
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

impl Members {
    async fn start(stack: &Stack) -> Members {
        let mut m = Members {
            collector_b: None,
            collector_b_ports: (free_port(), free_port()),
            sinks: (0..SINKS).map(|_| None).collect(),
            sink_ports: (0..SINKS).map(|_| free_port()).collect(),
            processors: (0..PROCESSORS).map(|_| None).collect(),
            processor_ports: (0..PROCESSORS).map(|_| free_port()).collect(),
        };
        m.start_collector_b(stack).await;
        for i in 0..SINKS {
            m.start_sink(stack, i).await;
        }
        for i in 0..PROCESSORS {
            m.start_processor(stack, i).await;
        }
        m
    }

    async fn start_collector_b(&mut self, stack: &Stack) {
        let (main, otlp) = self.collector_b_ports;
        let extra = env(&[
            ("OBS_COLLECTOR__LISTEN", format!("127.0.0.1:{main}")),
            (
                "OBS_COLLECTOR__OTLP_HTTP_LISTEN",
                format!("127.0.0.1:{otlp}"),
            ),
            ("OBS_COLLECTOR__OTLP_GRPC_LISTEN", String::new()),
            ("OBS_COLLECTOR__ZIPKIN_LISTEN", String::new()),
        ]);
        let p = stack.spawn_member("collector-b", "collector", &extra, main);
        self.collector_b = Some(p.await.expect("collector B started"));
    }

    async fn start_sink(&mut self, stack: &Stack, i: usize) {
        let port = self.sink_ports[i];
        let extra = env(&[
            ("OBS_SINK__INSTANCE", i.to_string()),
            ("OBS_SINK__INSTANCES", SINKS.to_string()),
            ("OBS_SINK__LISTEN", format!("127.0.0.1:{port}")),
        ]);
        let name = format!("sink-{i}");
        let p = stack.spawn_member(&name, "sink", &extra, port).await;
        self.sinks[i] = Some(p.expect("sink started"));
    }

    async fn start_processor(&mut self, stack: &Stack, i: usize) {
        let port = self.processor_ports[i];
        let extra = env(&[
            ("OBS_PROCESSOR__INSTANCE", i.to_string()),
            ("OBS_PROCESSOR__INSTANCES", PROCESSORS.to_string()),
            ("OBS_PROCESSOR__LISTEN", format!("127.0.0.1:{port}")),
        ]);
        let name = format!("processor-{i}");
        let p = stack.spawn_member(&name, "processor", &extra, port).await;
        self.processors[i] = Some(p.expect("processor started"));
    }

    fn logs(&self) -> String {
        let all = [&self.collector_b]
            .into_iter()
            .chain(self.sinks.iter())
            .chain(self.processors.iter());
        all.flatten()
            .map(Proc::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every `(topic, group)` the sink instances name in their lag metric (each instance
    /// reports its own partitions; together they cover every partition).
    async fn groups(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for port in &self.sink_ports {
            let text = http(10)
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .expect("a sink answers /metrics")
                .text()
                .await
                .unwrap();
            out.extend(lag_groups(&text, ""));
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_collectors_three_sinks_two_processors_lose_and_repeat_nothing() {
    let stack = Stack::start_without_sink_and_processor(&[
        ("OBS_SINK__BATCH_MAX_WAIT_MS", "100"),
        ("OBS_TRACES__DECISION_WAIT_MS", "1000"),
        ("OBS_TRACES__IDLE_PARTITION_MS", "500"),
        ("OBS_TRACES__METRICS_INTERVAL_MS", "1000"),
        ("OBS_TRACES__CHECKPOINT_INTERVAL_MS", "300"),
    ])
    .await
    .expect("stack started");
    let mut members = Members::start(&stack).await;
    let (b_main, b_otlp) = members.collector_b_ports;
    let load = Load::start_to(
        vec![
            Collector {
                otlp_http: stack.otlp_logs_url().replace("/v1/logs", ""),
                main: stack.collector_url(),
            },
            Collector {
                otlp_http: format!("http://127.0.0.1:{b_otlp}"),
                main: format!("http://127.0.0.1:{b_main}"),
            },
        ],
        Duration::from_millis(40),
    );
    let prefix = format!("{:016x}", load.ids.run_no);

    for (sink, processor) in [(1, 1), (2, 0)] {
        flowing(&load, &members).await;
        members.collector_b.take().unwrap().kill();
        members.sinks[sink].take().unwrap().kill();
        members.processors[processor].take().unwrap().kill();
        // One collector, two sinks and one processor carry on meanwhile.
        flowing(&load, &members).await;
        members.start_collector_b(&stack).await;
        members.start_sink(&stack, sink).await;
        members.start_processor(&stack, processor).await;
    }
    // The restarted members take load again before it stops.
    flowing(&load, &members).await;
    let ids = load.ids.clone();
    let sent = load.stop().await;
    let through_b = sent.logs.iter().filter(|n| *n % 2 == 1).count();
    assert!(
        through_b > 0 && through_b < sent.logs.len(),
        "both collectors acknowledged requests ({through_b} of {} through B)",
        sent.logs.len()
    );

    let (logs, spans, samples) = verify_exactly_once(&stack, &ids, &sent, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", members.logs()));
    eprintln!(
        "acknowledged and stored once: {logs} logs, {spans} spans, {samples} samples; {} requests failed while members were down",
        sent.failures
    );

    // Lag back to 0: every sink's group has committed up to the end its topic had once the
    // load stopped (the processors keep publishing span metrics every second, so the
    // instantaneous lag of obs.metrics is rarely 0).
    let groups = members.groups().await;
    assert_eq!(groups.len(), 14, "every sink (topic, group): {groups:?}");
    let started = std::time::Instant::now();
    stack
        .wait_groups_caught_up(&groups)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", members.logs()));
    eprintln!(
        "every sink group caught up {:?} after the check began",
        started.elapsed()
    );

    // Derived outputs count exactly what is stored (a request cut by a kill may be stored
    // without its acknowledgement, so the stored spans, final now that no sink lags, are
    // the reference).
    let db = stack.db();
    let (stored, traces): (u64, u64) = db
        .query("SELECT count(), uniqExact(TraceId) FROM otel_traces WHERE startsWith(TraceId, ?)")
        .bind(&prefix)
        .fetch_one()
        .await
        .unwrap();
    assert!(stored >= spans && stored % 4 == 0, "{stored} spans stored");
    let counted = wait_for(
        "every stored span counted",
        Duration::from_secs(120),
        || async { spans_counted(&stack).await.filter(|&n| n >= stored as f64) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", members.logs()));
    assert_eq!(
        counted, stored as f64,
        "span metrics: no span lost or repeated"
    );
    let sql = "SELECT count(), uniqExact(TraceId), countIf(SpanCount = 4) FROM obs_trace_summaries FINAL \
               WHERE startsWith(TraceId, ?)";
    let summaries: (u64, u64, u64) =
        wait_for("every trace summed up", Duration::from_secs(90), || {
            let q = db.query(sql).bind(&prefix);
            async move {
                let row: (u64, u64, u64) = q.fetch_one().await.ok()?;
                (row.1 >= traces).then_some(row)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", members.logs()));
    assert_eq!(
        summaries,
        (traces, traces, traces),
        "one summary per trace, each whole"
    );
    let edges_sql = "SELECT toUInt64(sum(RequestCount)) FROM obs_servicegraph_edges FINAL \
                     WHERE Server = 'load-svc'";
    let edges: u64 = wait_for(
        "every request in the edge table",
        Duration::from_secs(90),
        || {
            let q = db.query(edges_sql);
            async move {
                let n: u64 = q.fetch_one().await.ok()?;
                (n >= 2 * traces).then_some(n)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", members.logs()));
    assert_eq!(
        edges,
        2 * traces,
        "service-graph edges: two requests per trace"
    );
}

/// Waits until 10 more rounds of requests were acknowledged.
async fn flowing(load: &Load, members: &Members) {
    let before = load.sent().logs.len();
    wait_for("the load to flow", Duration::from_secs(60), || {
        let now = load.sent().logs.len();
        async move { (now >= before + 10).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", load.sent().reasons, members.logs()));
}
