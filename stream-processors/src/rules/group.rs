//! A rule group evaluated at one time, as Prometheus's `Group.Eval` does: rules in order,
//! each reading the store (so a rule sees what the rules before it recorded at the same
//! time), its output appended to the store, and a stale marker for every series a rule
//! wrote at the previous evaluation and not at this one. One rule's failure is recorded on
//! that rule and the others still run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use obs_promql::{Labels, Value, evaluate_now, stale_nan};
use promql_parser::parser::Expr;

use super::alerting::{Alert, AlertingRule, Applied, TemplateEnv, Transition};
use super::expand::QueryFn;
use super::file::GroupDef;
use super::store::Shared;
use serde::{Deserialize, Serialize};

/// Prometheus's default lookback of instant selectors (ms).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Settings every group shares.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// External labels (templates; added to alerts sent).
    pub external_labels: Labels,
    /// External URL (templates; generator URLs).
    pub external_url: String,
    /// Interval of groups that set none (ms).
    pub default_interval_ms: i64,
}

/// A rule of a group.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its PromQL, as written.
    pub query: String,
    /// Parsed.
    pub expr: Expr,
    /// Recording or alerting.
    pub kind: Kind,
    /// Error of the last evaluation (`None`: it succeeded).
    pub last_error: Option<String>,
    /// Time of the last evaluation (ms).
    pub last_eval_ms: Option<i64>,
    /// How long the last evaluation took (s).
    pub last_duration_s: f64,
}

/// What a rule does with its result.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Writes its result as a series.
    Recording {
        /// The series name.
        record: String,
        /// Labels set on the result.
        labels: BTreeMap<String, String>,
    },
    /// Turns its result into alerts.
    Alerting(AlertingRule),
}

impl Rule {
    /// The rule's name (`record` or `alert`).
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Recording { record, .. } => record,
            Kind::Alerting(a) => &a.name,
        }
    }
}

/// A rule that failed at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The rule's name.
    pub rule: String,
    /// The error.
    pub error: String,
}

/// What one evaluation of a group produced.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Samples written (recorded series, `ALERTS`, `ALERTS_FOR_STATE`, stale markers).
    pub written: Vec<(Labels, i64, f64)>,
    /// Alert state changes.
    pub transitions: Vec<Transition>,
    /// Rules that failed.
    pub errors: Vec<RuleError>,
    /// Label and annotation templates that failed (the rule still ran; the text holds
    /// Prometheus's `<error expanding template: …>`).
    pub template_errors: Vec<RuleError>,
}

/// What a group keeps between evaluations, as saved with each evaluation's output and read
/// back after a restart (Prometheus restores only `for` from `ALERTS_FOR_STATE`; this is the
/// whole state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// Per rule, by name and position.
    pub rules: Vec<RuleState>,
}

/// One rule's saved state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// The rule's name (a changed rule file restores only rules still there).
    pub name: String,
    /// Series written at the last evaluation (for stale markers).
    pub previous: Vec<Labels>,
    /// Active alerts of an alerting rule.
    pub alerts: Vec<Alert>,
}

/// Loads and checks rule files and builds their groups, in file order; `Err` lists every
/// problem, each named with file, group and rule.
pub fn load(files: &[std::path::PathBuf], env: &Env) -> Result<Vec<Group>, Vec<String>> {
    let mut groups = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match super::file::load(f) {
            Ok(rf) => {
                for g in &rf.groups {
                    match Group::new(&f.display().to_string(), g, env) {
                        Ok(g) => groups.push(g),
                        Err(e) => problems.push(e),
                    }
                }
            }
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(problems)
    }
}

/// A group of rules and the state it keeps between evaluations.
#[derive(Debug, Clone)]
pub struct Group {
    /// The file it came from.
    pub file: String,
    /// Its name.
    pub name: String,
    /// Evaluation interval (ms).
    pub interval_ms: i64,
    /// Series (or alerts) a rule may produce per evaluation (0: no limit).
    pub limit: usize,
    /// How far in the past the rules are evaluated (ms).
    pub query_offset_ms: i64,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
    previous: Vec<BTreeSet<Labels>>,
}

impl Group {
    /// Builds a group from its (checked) definition.
    pub fn new(file: &str, def: &GroupDef, env: &Env) -> Result<Group, String> {
        let mut rules = Vec::new();
        for r in &def.rules {
            let expr = obs_promql::parse(&r.expr)
                .map_err(|e| format!("{file}: group {:?}, rule {:?}: {e}", def.name, r.name()))?;
            let mut labels = def.labels.clone();
            labels.extend(r.labels.clone());
            let kind = match (&r.record, &r.alert) {
                (Some(record), _) => Kind::Recording {
                    record: record.clone(),
                    labels,
                },
                (None, Some(alert)) => Kind::Alerting(AlertingRule {
                    name: alert.clone(),
                    hold_ms: r.for_.map_or(0, |d| d.as_millis() as i64),
                    keep_firing_ms: r.keep_firing_for.map_or(0, |d| d.as_millis() as i64),
                    labels,
                    annotations: r.annotations.clone(),
                    active: BTreeMap::new(),
                    restored: true,
                }),
                (None, None) => {
                    return Err(format!(
                        "{file}: group {:?}: one of 'record' or 'alert' must be set",
                        def.name
                    ));
                }
            };
            rules.push(Rule {
                query: r.expr.clone(),
                expr,
                kind,
                last_error: None,
                last_eval_ms: None,
                last_duration_s: 0.0,
            });
        }
        Ok(Group {
            file: file.to_string(),
            name: def.name.clone(),
            interval_ms: def
                .interval
                .map_or(env.default_interval_ms, |d| d.as_millis() as i64),
            limit: def.limit as usize,
            query_offset_ms: def.query_offset.map_or(0, |d| d.as_millis() as i64),
            previous: vec![BTreeSet::new(); rules.len()],
            rules,
        })
    }

    /// `file:name`, unique among the loaded groups.
    pub fn key(&self) -> String {
        format!("{}:{}", self.file, self.name)
    }

    /// The state to save.
    pub fn snapshot(&self) -> GroupState {
        GroupState {
            rules: self
                .rules
                .iter()
                .zip(&self.previous)
                .map(|(r, prev)| RuleState {
                    name: r.name().to_string(),
                    previous: prev.iter().cloned().collect(),
                    alerts: match &r.kind {
                        Kind::Alerting(a) => a.active.values().cloned().collect(),
                        Kind::Recording { .. } => Vec::new(),
                    },
                })
                .collect(),
        }
    }

    /// Takes back a saved state; rules are matched by position and name.
    pub fn restore(&mut self, state: GroupState) {
        for (i, saved) in state.rules.into_iter().enumerate() {
            let Some(rule) = self.rules.get_mut(i) else {
                break;
            };
            if rule.name() != saved.name {
                continue;
            }
            self.previous[i] = saved.previous.into_iter().collect();
            if let Kind::Alerting(a) = &mut rule.kind {
                a.active = saved
                    .alerts
                    .into_iter()
                    .map(|al| (al.labels.clone(), al))
                    .collect();
            }
        }
    }

    /// Whether the group holds nothing between evaluations (no alert, no written series).
    pub fn is_idle(&self) -> bool {
        self.previous.iter().all(BTreeSet::is_empty)
            && self.rules.iter().all(|r| match &r.kind {
                Kind::Alerting(a) => a.active.is_empty(),
                Kind::Recording { .. } => true,
            })
    }

    /// The longest time range any rule reads back from its evaluation time (ms): what the
    /// store must keep.
    pub fn window_ms(&self) -> i64 {
        self.rules
            .iter()
            .map(|r| reach_ms(&r.expr) + LOOKBACK_MS + self.query_offset_ms)
            .max()
            .unwrap_or(0)
    }

    /// Evaluates every rule at `ts` over `store`, appending what they write to it.
    pub fn eval(&mut self, ts: i64, store: &Shared, env: &Env) -> Evaluation {
        let mut out = Evaluation::default();
        let at = ts - self.query_offset_ms;
        for (i, rule) in self.rules.iter_mut().enumerate() {
            let started = Instant::now();
            let failures = Default::default();
            let result = run(
                rule,
                ts,
                at,
                store,
                env,
                self.limit,
                self.interval_ms,
                &failures,
            );
            out.template_errors
                .extend(failures.into_inner().into_iter().map(|error| RuleError {
                    rule: rule.name().to_string(),
                    error,
                }));
            rule.last_eval_ms = Some(ts);
            rule.last_duration_s = started.elapsed().as_secs_f64();
            let (samples, transitions) = match result {
                Ok(r) => r,
                Err(e) => {
                    rule.last_error = Some(e.clone());
                    out.errors.push(RuleError {
                        rule: rule.name().to_string(),
                        error: e,
                    });
                    continue;
                }
            };
            rule.last_error = None;
            out.transitions.extend(transitions);
            let mut returned = BTreeSet::new();
            let mut append_error = None;
            store.with(|s| {
                for (labels, v) in samples {
                    match s.append(&labels, at, v) {
                        Ok(()) => {
                            out.written.push((labels.clone(), at, v));
                            returned.insert(labels);
                        }
                        Err(e) => append_error = Some(e.to_string()),
                    }
                }
                for gone in self.previous[i].difference(&returned) {
                    // Errors are expected when another rule writes the same series.
                    if s.append(gone, at, stale_nan()).is_ok() {
                        out.written.push((gone.clone(), at, stale_nan()));
                    }
                }
            });
            self.previous[i] = returned;
            if let Some(e) = append_error {
                rule.last_error = Some(e.clone());
                out.errors.push(RuleError {
                    rule: rule.name().to_string(),
                    error: e,
                });
            }
        }
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    rule: &mut Rule,
    ts: i64,
    at: i64,
    store: &Shared,
    env: &Env,
    limit: usize,
    interval_ms: i64,
    failures: &std::cell::RefCell<Vec<String>>,
) -> Result<Applied, String> {
    let result = query(store, &rule.expr, at, interval_ms)?;
    match &mut rule.kind {
        Kind::Recording { record, labels } => {
            let mut seen = BTreeSet::new();
            let mut samples = Vec::with_capacity(result.len());
            for (mut l, v) in result {
                l.insert("__name__".into(), record.clone());
                l.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                if !seen.insert(l.clone()) {
                    return Err(
                        "vector contains metrics with the same labelset after applying rule labels"
                            .into(),
                    );
                }
                samples.push((l, v));
            }
            if limit > 0 && samples.len() > limit {
                return Err(format!(
                    "exceeded limit of {limit} with {} series",
                    samples.len()
                ));
            }
            Ok((samples, Vec::new()))
        }
        Kind::Alerting(a) => {
            let store = store.clone();
            let query: QueryFn = Arc::new(move |q: &str| {
                let expr = obs_promql::parse(q)?;
                query(&store, &expr, at, interval_ms)
            });
            let tenv = TemplateEnv {
                external_labels: &env.external_labels,
                external_url: &env.external_url,
                query: Some(query),
                failures: Default::default(),
            };
            let applied = a.apply(ts, &result, limit, &tenv);
            failures.borrow_mut().extend(tenv.failures.into_inner());
            applied
        }
    }
}

/// An instant query at `at`: its vector, or its scalar as one sample without labels.
pub fn query(
    store: &Shared,
    expr: &Expr,
    at: i64,
    interval_ms: i64,
) -> Result<Vec<(Labels, f64)>, String> {
    match evaluate_now(Box::new(store.clone()), expr, at, LOOKBACK_MS, interval_ms)
        .map_err(|e| e.to_string())?
    {
        Value::Vector(series) => Ok(series
            .into_iter()
            .filter_map(|s| s.points[0].map(|v| (s.labels, v)))
            .collect()),
        Value::Scalar(v) => Ok(vec![(Labels::new(), v[0])]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

/// How far before its evaluation time an expression reads (ranges, offsets, subqueries).
fn reach_ms(e: &Expr) -> i64 {
    use promql_parser::parser::Offset;
    let off = |o: &Option<Offset>| match o {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        _ => 0,
    };
    match e {
        Expr::Paren(p) => reach_ms(&p.expr),
        Expr::Unary(u) => reach_ms(&u.expr),
        Expr::VectorSelector(vs) => off(&vs.offset),
        Expr::MatrixSelector(ms) => ms.range.as_millis() as i64 + off(&ms.vs.offset),
        Expr::Subquery(sq) => {
            sq.range.as_millis() as i64 + off(&sq.offset) + reach_ms(&sq.expr) + LOOKBACK_MS
        }
        Expr::Call(c) => c.args.args.iter().map(|a| reach_ms(a)).max().unwrap_or(0),
        Expr::Aggregate(a) => reach_ms(&a.expr),
        Expr::Binary(b) => reach_ms(&b.lhs).max(reach_ms(&b.rhs)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => 0,
    }
}
