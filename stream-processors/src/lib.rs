//! Stream processors: event-time windows over the raw topics that emit the derived topics
//! (`obs.metrics.rollup`, `obs.traces`, `obs.servicegraph`, `obs.alerts`).
//!
//! * [`window`]: event time over partitions (watermarks, idle partitions) and the offsets
//!   a processor may commit.
//! * [`rules`]: Prometheus rule files (`obs rules check`, `obs rules test`) and the rule
//!   processor ([`rules::run`]) that evaluates them on `obs.metrics`.
//! * [`traces`]: the trace processor ([`traces::run::run`]) that correlates `obs.spans`
//!   per trace: span metrics, service graph, tail sampling, trace summaries.
//! * [`logs`]: log pipelines ([`logs::pipeline`], PII redaction in [`logs::redact`]) and
//!   the log processor ([`logs::run::run`]) that runs them between `obs.logs.ingest` and
//!   `obs.logs`.
//!
//! * [`rollups`]: the rollup processor ([`rollups::run::run`]): per series and event-time
//!   window, count, sum, min, max, first, last and counter increase into
//!   `obs.metrics.rollup`.
//! * [`sql`]: SQL over topics with DataFusion: `obs sql --topic`, and the SQL processor
//!   ([`sql::run::run`]) that runs `[sql]` queries in event-time windows into
//!   `obs.sql.<query>`.
//! * [`processor`]: connecting a processor to Kafka and the consume → step loop.
//! * [`state`]: checkpoints of the processors' partitions on `obs.processor.state`.
//!
//! The derived records' shapes live in `obs_schemas::records`.

pub mod logs;
pub mod processor;
pub mod rollups;
pub mod rules;
pub mod sql;
pub mod state;
pub mod traces;
pub mod window;

pub use rules::api::RulesView;

/// Runs every stream processor (`obs processor`): the rule, trace, log, rollup and SQL processors, until
/// a shutdown is asked for or one of them fails. `spans`: the sinks' reader of `obs.spans`
/// in this process, which the trace processor may read along with.
pub async fn run(
    cfg: obs_runtime::Config,
    ready: obs_runtime::ops::Readiness,
    view: RulesView,
    spans: Option<obs_runtime::tap::Joiner>,
) -> anyhow::Result<()> {
    tokio::try_join!(
        rules::run::run(cfg.clone(), ready.clone(), view),
        traces::run::run(cfg.clone(), ready.clone(), spans),
        rollups::run::run(cfg.clone(), ready.clone()),
        sql::run::run(cfg.clone(), ready.clone()),
        logs::run::run(cfg, ready)
    )
    .map(|_| ())
}
