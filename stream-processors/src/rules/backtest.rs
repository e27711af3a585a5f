//! `obs rules backtest`: the retained `obs.metrics` history of a time range replayed through
//! the rule engine the processor runs ([`super::engine::Engine`]), at the same aligned
//! evaluation times, notifying nobody. Reports each alert's pending/firing/resolved
//! timeline and how many pages it would have sent (one per time it started firing), for
//! the rules' own `for` and for other `for` values asked for.
//!
//! Reading: every partition from the first message produced at or after
//! `from - window - slack` (Kafka's produce times; samples are never produced before they
//! happen) to its end offset when the backtest started. Evaluation times are those of the
//! live processor; the window before `from` warms the engine up, and only transitions at
//! or after `from` and at or before `to` are reported. The processor's own outputs (its
//! evaluation messages) are skipped: the backtest computes its recordings itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_promql::Labels;
use obs_runtime::{Config, kafka};
use obs_schemas::Topic;
use obs_schemas::records::MetricBatch;
use rdkafka::consumer::Consumer;
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use super::alerting::State;
use super::engine::Engine;
use super::group::{Group, Kind};
use super::run::EVAL_HEADER;

/// What to backtest.
pub struct Options {
    /// Rule files.
    pub files: Vec<String>,
    /// Start of the reported range (ms).
    pub from_ms: i64,
    /// End of the reported range (ms, inclusive).
    pub to_ms: i64,
    /// Other `for` values to try (ms), beside the rules' own.
    pub for_values: Vec<i64>,
    /// How far produce times may trail... lead the samples' times (ms).
    pub slack_ms: i64,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// One state change in a timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// `pending`, `firing`, `resolved` or `inactive` (a pending alert that ended).
    pub state: String,
    /// Evaluation time (ms).
    pub at_ms: i64,
    /// The expression's value.
    pub value: f64,
}

/// One alert's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Tenant.
    pub tenant: String,
    /// The alert's labels.
    pub labels: Labels,
    /// Its state changes, in time order.
    pub steps: Vec<Step>,
    /// How many times it started firing (pages Alertmanager would have sent).
    pub pages: usize,
}

/// The timelines for one `for` setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// `None`: each rule's own `for`; else this `for` (ms) for every alerting rule.
    pub for_ms: Option<i64>,
    /// The alerts, by tenant and labels.
    pub alerts: Vec<Timeline>,
    /// Pages over all alerts.
    pub pages: usize,
}

/// The backtest's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Reported range start (ms).
    pub from_ms: i64,
    /// Reported range end (ms).
    pub to_ms: i64,
    /// Messages read.
    pub messages: u64,
    /// Evaluations per group and tenant.
    pub evaluations: u64,
    /// One run per `for` setting.
    pub runs: Vec<Run>,
}

fn with_for(groups: &[Group], for_ms: Option<i64>) -> Vec<Group> {
    let mut out = groups.to_vec();
    if let Some(f) = for_ms {
        for g in &mut out {
            for r in &mut g.rules {
                if let Kind::Alerting(a) = &mut r.kind {
                    a.hold_ms = f;
                }
            }
        }
    }
    out
}

fn state_name(from: Option<State>, to: State) -> &'static str {
    match (from, to) {
        (Some(State::Firing), State::Inactive) => "resolved",
        (_, s) => s.as_str(),
    }
}

/// Runs the backtest.
pub async fn run(cfg: &Config, opts: &Options) -> anyhow::Result<Report> {
    let env = super::run::env_of(&cfg.processor);
    let groups = super::run::load_groups(&opts.files, &env)?;
    let settings: Vec<Option<i64>> = std::iter::once(None)
        .chain(opts.for_values.iter().map(|&f| Some(f)))
        .collect();
    let mut engines: Vec<Engine> = settings
        .iter()
        .map(|&f| {
            Engine::new(
                with_for(&groups, f),
                env.clone(),
                cfg.processor.max_samples_per_tenant,
                Box::new(|_| true),
            )
        })
        .collect();
    let window = engines[0].window_ms();

    let group_id = format!("obs-backtest-{}", std::process::id());
    let topic = Topic::Metrics.name();
    let consumer = kafka::consumer(&cfg.kafka, &group_id, topic)?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("reading the partitions of obs.metrics")?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut lookup = TopicPartitionList::new();
    for &p in &parts {
        lookup.add_partition_offset(
            topic,
            p,
            Offset::Offset(opts.from_ms - window - opts.slack_ms),
        )?;
    }
    let starts = consumer
        .offsets_for_times(lookup, Duration::from_secs(10))
        .context("finding where the range starts")?;
    let mut assign = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut total: i64 = 0;
    for &p in &parts {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let start = match starts.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => high,
        };
        if start < high {
            assign.add_partition_offset(topic, p, Offset::Offset(start))?;
            ends.insert(p, high);
            total += high - start;
        }
    }
    consumer.assign(&assign)?;
    let codec = obs_runtime::registry::codec(cfg);
    let mut newest: BTreeMap<i32, i64> = BTreeMap::new();
    let mut messages: u64 = 0;
    let mut evaluations: u64 = 0;
    let mut transitions: Vec<Vec<(String, super::alerting::Transition)>> =
        vec![Vec::new(); engines.len()];
    let mut last_progress = Instant::now();
    let mut evaluate = |engines: &mut Vec<Engine>, watermark: i64, evaluations: &mut u64| {
        for (i, e) in engines.iter_mut().enumerate() {
            while let Some(runs) = e.evaluate_round(watermark, None) {
                for r in runs {
                    if i == 0 {
                        *evaluations += 1;
                    }
                    for t in r.eval.transitions {
                        if t.at >= opts.from_ms && t.at <= opts.to_ms {
                            transitions[i].push((r.tenant.clone(), t));
                        }
                    }
                }
            }
        }
    };
    while !ends.is_empty() {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("obs.metrics sent nothing for 30 s before the backtest's end offsets")?
            .context("reading obs.metrics")?;
        let (p, offset) = (m.partition(), m.offset());
        messages += 1;
        if ends.get(&p).is_some_and(|&end| offset + 1 >= end) {
            ends.remove(&p);
        }
        let own = m
            .headers()
            .is_some_and(|h| h.iter().any(|h| h.key == EVAL_HEADER));
        if !own && let Some(payload) = m.payload() {
            match obs_runtime::registry::decode::<MetricBatch>(&codec, payload).await {
                Ok(batch) => {
                    if let Some(t) = batch
                        .series
                        .iter()
                        .flat_map(|s| s.timestamps_ms.iter().copied())
                        .max()
                    {
                        let n = newest.entry(p).or_insert(t);
                        *n = (*n).max(t);
                    }
                    for e in &mut engines {
                        e.ingest(&batch, None);
                    }
                }
                Err(e) => {
                    tracing::debug!(partition = p, offset, error = %e, "undecodable message skipped")
                }
            }
        }
        // Time: the slowest partition still being read (finished ones no longer count).
        let unfinished: Vec<i64> = ends
            .keys()
            .map(|p| newest.get(p).copied().unwrap_or(i64::MIN))
            .collect();
        if let Some(&w) = unfinished.iter().min()
            && w > i64::MIN
        {
            evaluate(
                &mut engines,
                (w - cfg.processor.allowed_lateness_ms as i64).min(opts.to_ms),
                &mut evaluations,
            );
        }
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "backtest: {messages}/{total} messages read ({}%), {evaluations} evaluations",
                messages * 100 / total.max(1) as u64
            );
        }
    }
    evaluate(&mut engines, opts.to_ms, &mut evaluations);
    if opts.progress {
        eprintln!("backtest: {messages} messages read, {evaluations} evaluations");
    }

    let runs = settings
        .iter()
        .zip(transitions)
        .map(|(&for_ms, ts)| {
            let mut by_alert: BTreeMap<(String, Labels), Vec<Step>> = BTreeMap::new();
            for (tenant, t) in ts {
                by_alert
                    .entry((tenant, t.labels.clone()))
                    .or_default()
                    .push(Step {
                        state: state_name(t.from, t.to).to_string(),
                        at_ms: t.at,
                        value: t.value,
                    });
            }
            let alerts: Vec<Timeline> = by_alert
                .into_iter()
                .map(|((tenant, labels), steps)| Timeline {
                    pages: steps.iter().filter(|s| s.state == "firing").count(),
                    tenant,
                    labels,
                    steps,
                })
                .collect();
            Run {
                for_ms,
                pages: alerts.iter().map(|a| a.pages).sum(),
                alerts,
            }
        })
        .collect();
    Ok(Report {
        from_ms: opts.from_ms,
        to_ms: opts.to_ms,
        messages,
        evaluations,
        runs,
    })
}
