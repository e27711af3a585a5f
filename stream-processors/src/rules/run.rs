//! `obs processor`: the rule engine on Kafka.
//!
//! In: every partition of `obs.metrics` (rules aggregate across series), from the consumer
//! group `<group_prefix>-<instance>`. Out, per (tenant, group) evaluation: one message on
//! `obs.metrics` with the recorded series, `ALERTS` and `ALERTS_FOR_STATE` (stored and
//! queryable like any series) and, in its `obs-rule-eval` header, the evaluation's time and
//! the group's state after it; alert transitions on `obs.alerts`; alerts to Alertmanager.
//!
//! Exactly once without Kafka transactions:
//! * transitions go out before the evaluation message (the alerts table is a replacing
//!   table, so one sent twice is stored once); the evaluation message is one Kafka
//!   message, so it is there or not;
//! * offsets are committed only after a round's messages are acknowledged, and only up to
//!   the first message the windows still need ([`crate::window::Watermarks`]), which is
//!   before every group's latest evaluation message;
//! * at start the processor reads from its commits up to the end offsets it found, before
//!   evaluating anything: the windows fill again and each group's latest evaluation
//!   message gives back its state and time, so no evaluation already published is
//!   published again and no `for` starts over.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_runtime::config::ProcessorConfig;
use obs_runtime::kafka::{self, SharedProducer};
use obs_runtime::publish::{Outgoing, Publisher, partition_of};
use obs_runtime::{Config, ops, shutdown};
use obs_schemas::Topic;
use obs_schemas::records::{Alert as AlertRecord, MetricBatch, MetricSeries};
use obs_schemas::wire::Codec;
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Headers;
use serde::{Deserialize, Serialize};

use super::alerting::State;
use super::api::RulesView;
use super::engine::{Engine, GroupRun, NotifyPolicy};
use super::group::{Env, Group, GroupState};
use super::notify::Notifier;

/// Header of an evaluation message.
pub const EVAL_HEADER: &str = "obs-rule-eval";

/// What the evaluation header carries.
#[derive(Debug, Serialize, Deserialize)]
struct EvalHeader {
    instance: u32,
    tenant: String,
    group: String,
    t: i64,
    state: GroupState,
}

/// Loads and checks the configured rule files (globs expanded); every problem named.
pub fn load_groups(patterns: &[String], env: &Env) -> anyhow::Result<Vec<Group>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in patterns {
        let found: Vec<PathBuf> = glob::glob(p)
            .with_context(|| format!("rule_files pattern {p:?}"))?
            .filter_map(Result::ok)
            .collect();
        anyhow::ensure!(!found.is_empty(), "rule_files: no file matches {p:?}");
        files.extend(found);
    }
    super::group::load(&files, env).map_err(|problems| {
        anyhow::anyhow!(
            "the rule files have problems (check them with `obs rules check`):\n{}",
            problems.join("\n")
        )
    })
}

/// The engine settings the processor configuration gives.
pub(crate) fn env_of(pc: &ProcessorConfig) -> Env {
    Env {
        external_labels: pc.external_labels.clone().into_iter().collect(),
        external_url: pc.external_url.clone(),
        default_interval_ms: pc.evaluation_interval_secs as i64 * 1000,
    }
}

/// Runs the rule processor until a shutdown is asked for; `view` is what its rule API
/// shows.
pub async fn run(cfg: Config, ready: ops::Readiness, view: RulesView) -> anyhow::Result<()> {
    let pc = cfg.processor.clone();
    if pc.rule_files.is_empty() {
        tracing::info!(
            "no [processor] rule_files configured: the rule processor has nothing to do"
        );
        ready.set(true);
        shutdown::wait().await;
        return Ok(());
    }
    let env = env_of(&pc);
    let groups = load_groups(&pc.rule_files, &env)?;
    view.load(&groups, &cfg.collector.default_tenant);
    tracing::info!(
        groups = groups.len(),
        rules = groups.iter().map(|g| g.rules.len()).sum::<usize>(),
        "rule files loaded"
    );
    kafka::ensure_topics(&cfg.kafka).await?;
    let counts = kafka::partition_counts(&cfg.kafka).await?;
    let codec = Arc::new(obs_runtime::registry::codec(&cfg));
    let publisher = Publisher::new(
        SharedProducer::for_process(&cfg.kafka)?,
        codec.clone(),
        counts,
    );
    let group_id = format!("{}-{}", pc.group_prefix, pc.instance);
    let topic = Topic::Metrics.name();
    let consumer = kafka::consumer(&cfg.kafka, &group_id, topic)?;
    let parts = kafka::assign(&consumer, topic, 0, 1)?;
    let catch_up = end_offsets(&consumer, topic, &parts)?;
    let (instance, instances) = (pc.instance, pc.instances);
    let owns = move |tenant: &str| {
        instances <= 1
            || xxhash_rust::xxh3::xxh3_64(tenant.as_bytes()) % instances as u64 == instance as u64
    };
    let mut p = Processor {
        engine: Engine::new(groups, env, pc.max_samples_per_tenant, Box::new(owns)),
        watermarks: crate::window::Watermarks::new(
            &parts,
            pc.allowed_lateness_ms as i64,
            Duration::from_millis(pc.idle_partition_ms),
            Instant::now(),
        ),
        restoring: Some(HashMap::new()),
        catch_up,
        publisher,
        codec,
        notifier: Notifier::new(&pc.alertmanagers),
        notify: !pc.alertmanagers.is_empty(),
        resend_delay_ms: pc.resend_delay_secs as i64 * 1000,
        notify_max_age_ms: pc.notify_max_age_secs as i64 * 1000,
        instance,
        view,
        committed: BTreeMap::new(),
        last_commit: Instant::now(),
    };
    tracing::info!(
        partitions = parts.len(),
        behind = p.catch_up.len(),
        "reading obs.metrics from the committed offsets before evaluating"
    );
    p.finish_catch_up_if_done(&ready);
    loop {
        let message = tokio::select! {
            m = consumer.recv() => Some(m),
            _ = tokio::time::sleep(Duration::from_millis(200)) => None,
            _ = shutdown::wait() => break,
        };
        if let Some(m) = message {
            match m {
                Ok(m) => p.handle(&m).await,
                Err(e) => {
                    tracing::warn!(error = %e, "reading obs.metrics");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        p.finish_catch_up_if_done(&ready);
        if p.restoring.is_none() {
            p.evaluate().await;
            // A round cut short by the shutdown is not acknowledged: commit nothing after it.
            if shutdown::requested() {
                break;
            }
            p.commit(&consumer, topic);
        }
    }
    tracing::info!("rule processor stopped");
    Ok(())
}

/// Partitions with messages past the committed offset, and the end offset to read to.
fn end_offsets(
    consumer: &rdkafka::consumer::StreamConsumer,
    topic: &str,
    parts: &[i32],
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let committed = consumer
        .committed(Duration::from_secs(10))
        .context("reading the committed offsets")?;
    let mut out = BTreeMap::new();
    for &p in parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("reading the end offset of {topic}/{p}"))?;
        let start = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        if start < high {
            out.insert(p, high);
        }
    }
    Ok(out)
}

struct Processor {
    engine: Engine,
    watermarks: crate::window::Watermarks,
    /// While catching up: each group's latest evaluation seen, by (tenant, group).
    restoring: Option<HashMap<(String, String), (i64, GroupState)>>,
    catch_up: BTreeMap<i32, i64>,
    publisher: Publisher,
    codec: Arc<Codec>,
    notifier: Notifier,
    notify: bool,
    resend_delay_ms: i64,
    notify_max_age_ms: i64,
    instance: u32,
    view: RulesView,
    committed: BTreeMap<i32, i64>,
    last_commit: Instant,
}

impl Processor {
    async fn handle(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let (partition, offset) = (m.partition(), m.offset());
        if let Some(&end) = self.catch_up.get(&partition)
            && offset + 1 >= end
        {
            self.catch_up.remove(&partition);
        }
        let header = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == EVAL_HEADER)
                .and_then(|h| h.value)
                .and_then(|v| serde_json::from_slice::<EvalHeader>(v).ok())
        });
        if let (Some(h), Some(restoring)) = (&header, self.restoring.as_mut())
            && h.instance == self.instance
        {
            let key = (h.tenant.clone(), h.group.clone());
            if restoring.get(&key).is_none_or(|(t, _)| *t < h.t) {
                restoring.insert(key, (h.t, h.state.clone()));
            }
        }
        let batch = match m.payload() {
            Some(bytes) => {
                match obs_runtime::registry::decode::<MetricBatch>(&self.codec, bytes).await {
                    Ok(b) => b,
                    Err(e) => {
                        metrics::counter!("obs_processor_undecodable_messages_total").increment(1);
                        tracing::debug!(partition, offset, error = %e, "undecodable obs.metrics message");
                        self.watermarks
                            .observe(partition, offset, None, Instant::now());
                        return;
                    }
                }
            }
            None => MetricBatch::default(),
        };
        let watermark = if self.restoring.is_none() {
            self.watermarks
                .watermark(Instant::now(), crate::processor::wall_ms())
        } else {
            None
        };
        // Once caught up, this instance's own outputs read back are already in its windows.
        let own = header.as_ref().is_some_and(|h| h.instance == self.instance);
        let got = if own && self.restoring.is_none() {
            Default::default()
        } else {
            self.engine.ingest(&batch, watermark)
        };
        match &header {
            // An evaluation output read back: needed until its group evaluates past it.
            Some(h) => self
                .watermarks
                .observe_output(partition, offset, h.t, Instant::now()),
            None => {
                let newest = batch
                    .series
                    .iter()
                    .flat_map(|s| s.timestamps_ms.iter().copied())
                    .max();
                self.watermarks
                    .observe(partition, offset, newest, Instant::now());
            }
        }
        metrics::counter!("obs_processor_samples_total", "outcome" => "kept")
            .increment(got.appended);
        metrics::counter!("obs_processor_samples_total", "outcome" => "refused")
            .increment(got.refused);
        metrics::counter!("obs_processor_samples_total", "outcome" => "late").increment(got.late);
        if got.over_limit > 0 {
            metrics::counter!("obs_processor_samples_total", "outcome" => "over_tenant_limit")
                .increment(got.over_limit);
            tracing::warn!(
                refused = got.over_limit,
                "a tenant holds max_samples_per_tenant samples in the rule windows: its new samples are refused (raise [processor] max_samples_per_tenant or narrow the rules' selectors)"
            );
        }
    }

    fn finish_catch_up_if_done(&mut self, ready: &ops::Readiness) {
        if !self.catch_up.is_empty() {
            return;
        }
        let Some(restoring) = self.restoring.take() else {
            return;
        };
        let restored = restoring.len();
        for ((tenant, group), (t, state)) in restoring {
            self.engine.restore(&tenant, &group, t, state);
        }
        tracing::info!(
            restored_groups = restored,
            tenants = self.engine.tenants(),
            "caught up: evaluating rules"
        );
        ready.set(true);
    }

    async fn evaluate(&mut self) {
        let Some(watermark) = self
            .watermarks
            .watermark(Instant::now(), crate::processor::wall_ms())
        else {
            return;
        };
        metrics::gauge!("obs_processor_watermark_seconds").set(watermark as f64 / 1000.0);
        let policy = self.notify.then(|| NotifyPolicy {
            resend_delay_ms: self.resend_delay_ms,
            not_before_ms: crate::processor::wall_ms() - self.notify_max_age_ms,
        });
        while let Some(runs) = self.engine.evaluate_round(watermark, policy) {
            for r in &runs {
                if let Some(g) = self.engine.group(&r.tenant, &r.group) {
                    self.view.update(&r.tenant, g);
                }
            }
            if !self.publish(runs).await {
                return;
            }
        }
    }

    /// Publishes a round; false when a shutdown interrupted it.
    async fn publish(&mut self, runs: Vec<GroupRun>) -> bool {
        let mut alerts = Vec::new();
        for r in &runs {
            let (file, group) = (r.file.as_str(), r.name.as_str());
            for e in &r.eval.errors {
                metrics::counter!("obs_rule_evaluation_failures_total", "file" => file.to_string(), "group" => group.to_string(), "rule" => e.rule.clone())
                    .increment(1);
                tracing::warn!(tenant = %r.tenant, file, group, rule = %e.rule, time_ms = r.t, error = %e.error, "rule evaluation failed; the group's other rules ran");
            }
            for e in &r.eval.template_errors {
                metrics::counter!("obs_rule_template_failures_total", "file" => file.to_string(), "group" => group.to_string(), "rule" => e.rule.clone())
                    .increment(1);
                tracing::warn!(tenant = %r.tenant, file, group, rule = %e.rule, time_ms = r.t, error = %e.error, "template expansion failed");
            }
            metrics::counter!("obs_rule_evaluations_total", "group" => r.group.clone())
                .increment(1);
            for t in &r.eval.transitions {
                alerts.push(Outgoing {
                    partition: 0,
                    value: AlertRecord {
                        tenant: r.tenant.clone(),
                        group: r.group.clone(),
                        rule: t.labels.get("alertname").cloned().unwrap_or_default(),
                        state: match (t.from, t.to) {
                            (Some(State::Firing), State::Inactive) => "resolved",
                            (_, s) => s.as_str(),
                        }
                        .into(),
                        labels: to_attrs(&t.labels),
                        annotations: to_attrs(&t.annotations),
                        value: t.value,
                        active_at_ms: t.active_at,
                        evaluated_at_ms: t.at,
                    },
                    headers: Vec::new(),
                });
            }
            if !r.notify.is_empty() {
                self.notifier.send(r.notify.clone());
            }
        }
        if !self.deliver(Topic::Alerts, alerts).await {
            return false;
        }
        let n = self.publisher.partitions(Topic::Metrics);
        let mut evals = Vec::with_capacity(runs.len());
        for r in runs {
            let key = format!("{}\u{1f}{}", r.tenant, r.group);
            let header = EvalHeader {
                instance: self.instance,
                tenant: r.tenant.clone(),
                group: r.group.clone(),
                t: r.t,
                state: r.state,
            };
            evals.push(Outgoing {
                partition: partition_of(xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as i64, n),
                value: batch_of(&r.tenant, &r.eval.written),
                headers: vec![(
                    EVAL_HEADER.to_string(),
                    serde_json::to_vec(&header).expect("state serialises"),
                )],
            });
        }
        self.deliver(Topic::Metrics, evals).await
    }

    async fn deliver<T: Serialize + Clone>(
        &self,
        topic: Topic,
        messages: Vec<Outgoing<T>>,
    ) -> bool {
        self.publisher.deliver(topic, messages).await.is_some()
    }

    fn commit(&mut self, consumer: &rdkafka::consumer::StreamConsumer, topic: &str) {
        if self.last_commit.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_commit = Instant::now();
        // Once a second, not per message: counting the windows' samples locks every tenant.
        metrics::gauge!("obs_processor_window_samples").set(self.engine.samples() as f64);
        metrics::gauge!("obs_processor_tenants").set(self.engine.tenants() as f64);
        let needed = self.engine.needed_from().unwrap_or(i64::MAX);
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in self.watermarks.commit_offsets(needed) {
            if self.committed.get(&p) == Some(&offset) {
                continue;
            }
            if tpl
                .add_partition_offset(topic, p, Offset::Offset(offset))
                .is_ok()
            {
                self.committed.insert(p, offset);
            }
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::warn!(error = %e, "committing obs.metrics offsets");
            self.committed.clear();
        }
    }
}

/// A PromQL label set (or annotations) as record attributes.
fn to_attrs(labels: &obs_promql::Labels) -> obs_schemas::records::Attrs {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The samples an evaluation wrote as one metrics batch (series in label order).
fn batch_of(tenant: &str, written: &[(obs_promql::Labels, i64, f64)]) -> MetricBatch {
    let mut series: BTreeMap<&obs_promql::Labels, (Vec<i64>, Vec<f64>)> = BTreeMap::new();
    for (labels, t, v) in written {
        let s = series.entry(labels).or_default();
        s.0.push(*t);
        s.1.push(*v);
    }
    MetricBatch {
        series: series
            .into_iter()
            .map(|(labels, (timestamps_ms, values))| {
                let mut labels = labels.clone();
                let name = labels.remove("__name__").unwrap_or_default();
                MetricSeries {
                    fingerprint: obs_schemas::series_fingerprint(
                        tenant,
                        &name,
                        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    ),
                    name,
                    labels: labels.into_iter().collect(),
                    kind: "gauge".into(),
                    timestamps_ms,
                    values,
                    tenant: tenant.to_string(),
                    ..MetricSeries::default()
                }
            })
            .collect(),
        metadata: Vec::new(),
    }
}
