//! The rule processor's state, apart from Kafka: per tenant, the windows of the series its
//! rules select and its groups' state; evaluation rounds on event time.
//!
//! * Ingest keeps only samples of series some rule selects (a cache per fingerprint
//!   remembers the decision), per tenant, up to `max_samples_per_tenant`.
//! * Each group is evaluated at the multiples of its interval; a round evaluates every
//!   (tenant, group) due at the earliest due time, once the watermark has passed it.
//! * Windows keep, behind each tenant's earliest next evaluation, the longest range any
//!   rule reads plus the lookback.
//! * A round's result per (tenant, group) carries the group's state after it, which the
//!   processor saves with the output and [`Engine::restore`] takes back after a restart.

use std::collections::{BTreeMap, HashMap};

use obs_promql::Labels;
use obs_promql::memory::selects;
use obs_schemas::records::MetricBatch;
use promql_parser::parser::{Expr, VectorSelector};

use super::alerting::{Alert, State};
use super::group::{Env, Evaluation, Group, GroupState, Kind, LOOKBACK_MS};
use super::store::{AppendError, Shared};

/// Most fingerprints whose selection decision is remembered.
const SELECTED_CACHE: usize = 1_000_000;

/// What one ingest did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// Samples added to a window.
    pub appended: u64,
    /// Samples older than their series' newest (out of order) or a different value at a
    /// time already held.
    pub refused: u64,
    /// Samples refused because their tenant holds `max_samples_per_tenant`.
    pub over_limit: u64,
    /// Samples at or before the watermark when they arrived (evaluations already made did
    /// not see them).
    pub late: u64,
}

/// An alert for Alertmanager, with Prometheus's sending rules applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Labels (external labels added).
    pub labels: Labels,
    /// Annotations.
    pub annotations: Labels,
    /// `startsAt` (ms).
    pub starts_at: i64,
    /// `endsAt` (ms): the resolve time, or how long the firing alert holds unless re-sent.
    pub ends_at: i64,
    /// Link to the rule's expression in the query API.
    pub generator_url: String,
}

/// One (tenant, group) evaluation of a round.
#[derive(Debug)]
pub struct GroupRun {
    /// The tenant.
    pub tenant: String,
    /// The group's key (`file:name`).
    pub group: String,
    /// The group's file.
    pub file: String,
    /// The group's name.
    pub name: String,
    /// Evaluation time (ms).
    pub t: i64,
    /// What the evaluation wrote, changed and failed.
    pub eval: Evaluation,
    /// The group's state after it.
    pub state: GroupState,
    /// Alerts to send (empty when notifications are off or the evaluation is too old).
    pub notify: Vec<Notification>,
}

/// When alerts are sent.
#[derive(Debug, Clone, Copy)]
pub struct NotifyPolicy {
    /// Re-send a firing alert after this long (ms).
    pub resend_delay_ms: i64,
    /// Evaluations before this time (ms) notify nobody.
    pub not_before_ms: i64,
}

struct Tenant {
    store: Shared,
    groups: Vec<Group>,
    next: Vec<i64>,
}

/// Per-tenant windows and groups.
pub struct Engine {
    template: Vec<Group>,
    env: Env,
    selectors: Vec<VectorSelector>,
    window_ms: i64,
    max_samples: usize,
    owns: Box<dyn Fn(&str) -> bool + Send + Sync>,
    tenants: BTreeMap<String, Tenant>,
    selected: HashMap<i64, bool>,
}

fn align_up(t: i64, interval: i64) -> i64 {
    t.div_euclid(interval) * interval
        + if t.rem_euclid(interval) == 0 {
            0
        } else {
            interval
        }
}

fn collect_selectors(e: &Expr, out: &mut Vec<VectorSelector>) {
    match e {
        Expr::Paren(p) => collect_selectors(&p.expr, out),
        Expr::Unary(u) => collect_selectors(&u.expr, out),
        Expr::VectorSelector(vs) => out.push(vs.clone()),
        Expr::MatrixSelector(ms) => out.push(ms.vs.clone()),
        Expr::Subquery(sq) => collect_selectors(&sq.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| collect_selectors(a, out)),
        Expr::Aggregate(a) => collect_selectors(&a.expr, out),
        Expr::Binary(b) => {
            collect_selectors(&b.lhs, out);
            collect_selectors(&b.rhs, out);
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

impl Engine {
    /// An engine for `groups` (fresh state is copied per tenant); `owns` says which tenants
    /// this instance evaluates.
    pub fn new(
        groups: Vec<Group>,
        env: Env,
        max_samples: usize,
        owns: Box<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Engine {
        let mut selectors = Vec::new();
        for g in &groups {
            for r in &g.rules {
                collect_selectors(&r.expr, &mut selectors);
            }
        }
        let window_ms = groups
            .iter()
            .map(|g| g.window_ms().max(2 * g.interval_ms))
            .max()
            .unwrap_or(LOOKBACK_MS);
        Engine {
            template: groups,
            env,
            selectors,
            window_ms,
            max_samples,
            owns,
            tenants: BTreeMap::new(),
            selected: HashMap::new(),
        }
    }

    /// How far behind its next evaluation a tenant's windows reach (ms).
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Tenants held.
    pub fn tenants(&self) -> usize {
        self.tenants.len()
    }

    /// Samples held over all tenants.
    pub fn samples(&self) -> usize {
        self.tenants
            .values()
            .map(|t| t.store.with(|s| s.samples()))
            .sum()
    }

    fn tenant(&mut self, name: &str, first_ms: i64) -> &mut Tenant {
        let template = &self.template;
        self.tenants
            .entry(name.to_string())
            .or_insert_with(|| Tenant {
                store: Shared::default(),
                groups: template.clone(),
                next: template
                    .iter()
                    .map(|g| align_up(first_ms, g.interval_ms))
                    .collect(),
            })
    }

    /// Adds a batch's samples of selected series of this instance's tenants.
    pub fn ingest(&mut self, batch: &MetricBatch, watermark: Option<i64>) -> Ingested {
        let mut out = Ingested::default();
        for s in &batch.series {
            if s.timestamps_ms.is_empty() || !(self.owns)(&s.tenant) {
                continue;
            }
            // A series no rule selects costs a lookup, not a label set.
            if self.selected.get(&s.fingerprint) == Some(&false) {
                continue;
            }
            let mut labels: Labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.insert("__name__".into(), s.name.clone());
            if !self.selected.contains_key(&s.fingerprint) {
                if self.selected.len() >= SELECTED_CACHE {
                    self.selected.clear();
                }
                let chosen = self.selectors.iter().any(|vs| selects(vs, &labels));
                self.selected.insert(s.fingerprint, chosen);
                if !chosen {
                    continue;
                }
            }
            let first = s.timestamps_ms.iter().copied().min().unwrap_or(0);
            let max = self.max_samples;
            let tenant = self.tenant(&s.tenant, first);
            tenant.store.with(|store| {
                for (&t, &v) in s.timestamps_ms.iter().zip(&s.values) {
                    if store.samples() >= max {
                        out.over_limit += 1;
                        continue;
                    }
                    if watermark.is_some_and(|w| t <= w) {
                        out.late += 1;
                    }
                    match store.append(&labels, t, v) {
                        Ok(()) => out.appended += 1,
                        Err(AppendError::OutOfOrder | AppendError::Duplicate) => out.refused += 1,
                    }
                }
            });
        }
        out
    }

    /// The earliest time some group is due (ms).
    pub fn next_due(&self) -> Option<i64> {
        self.tenants
            .values()
            .flat_map(|t| t.next.iter().copied())
            .min()
    }

    /// From which event time on the input is still needed (ms): the windows' start.
    pub fn needed_from(&self) -> Option<i64> {
        self.next_due().map(|t| t - self.window_ms)
    }

    /// Evaluates every (tenant, group) due at the earliest due time, if the watermark has
    /// passed it.
    pub fn evaluate_round(
        &mut self,
        watermark: i64,
        notify: Option<NotifyPolicy>,
    ) -> Option<Vec<GroupRun>> {
        let t = self.next_due().filter(|&t| t <= watermark)?;
        let mut runs = Vec::new();
        for (name, tenant) in self.tenants.iter_mut() {
            for (i, g) in tenant.groups.iter_mut().enumerate() {
                if tenant.next[i] != t {
                    continue;
                }
                let eval = g.eval(t, &tenant.store, &self.env);
                let notify = notify
                    .filter(|p| t >= p.not_before_ms)
                    .map(|p| notifications(g, t, p, &self.env))
                    .unwrap_or_default();
                tenant.next[i] = t + g.interval_ms;
                runs.push(GroupRun {
                    tenant: name.clone(),
                    group: g.key(),
                    file: g.file.clone(),
                    name: g.name.clone(),
                    t,
                    eval,
                    state: g.snapshot(),
                    notify,
                });
            }
            let from = tenant.next.iter().copied().min().unwrap_or(t) - self.window_ms;
            tenant.store.with(|s| s.trim(from));
        }
        self.tenants.retain(|_, tenant| {
            tenant.store.with(|s| s.series()) > 0 || !tenant.groups.iter().all(Group::is_idle)
        });
        Some(runs)
    }

    /// Takes back a group's state saved with its evaluation at `t`.
    pub fn restore(&mut self, tenant: &str, group: &str, t: i64, state: GroupState) {
        let Some(i) = self.template.iter().position(|g| g.key() == group) else {
            return;
        };
        let interval = self.template[i].interval_ms;
        let tenant = self.tenant(tenant, t + interval);
        tenant.groups[i].restore(state);
        tenant.next[i] = align_up(t + 1, interval);
    }

    /// Every tenant's groups (for the rules and alerts API).
    pub fn groups(&self) -> impl Iterator<Item = (&str, &Group)> {
        self.tenants
            .iter()
            .flat_map(|(name, t)| t.groups.iter().map(move |g| (name.as_str(), g)))
    }

    /// A tenant's group by key.
    pub fn group(&self, tenant: &str, key: &str) -> Option<&Group> {
        self.tenants
            .get(tenant)
            .and_then(|t| t.groups.iter().find(|g| g.key() == key))
    }

    /// The loaded groups without tenant state.
    pub fn templates(&self) -> &[Group] {
        &self.template
    }
}

/// Prometheus's `sendAlerts`: a pending alert is never sent, a resolved one until it is
/// sent once after resolving, a firing one again after the resend delay.
fn notifications(g: &mut Group, t: i64, p: NotifyPolicy, env: &Env) -> Vec<Notification> {
    let mut out = Vec::new();
    let interval = g.interval_ms;
    for rule in &mut g.rules {
        let query = rule.query.clone();
        let Kind::Alerting(a) = &mut rule.kind else {
            continue;
        };
        for alert in a.active.values_mut() {
            if !needs_sending(alert, t, p.resend_delay_ms) {
                continue;
            }
            alert.last_sent_at = Some(t);
            alert.valid_until = Some(t + 4 * p.resend_delay_ms.max(interval));
            let mut labels = alert.labels.clone();
            for (k, v) in &env.external_labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            out.push(Notification {
                labels,
                annotations: alert.annotations.clone(),
                starts_at: alert.active_at,
                ends_at: alert.resolved_at.or(alert.valid_until).unwrap_or(t),
                generator_url: format!(
                    "{}/graph?g0.expr={}&g0.tab=1",
                    env.external_url.trim_end_matches('/'),
                    form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
                ),
            });
        }
    }
    out
}

fn needs_sending(a: &Alert, t: i64, resend_delay_ms: i64) -> bool {
    if a.state == State::Pending {
        return false;
    }
    if let Some(resolved) = a.resolved_at
        && a.last_sent_at.is_none_or(|s| resolved > s)
    {
        return true;
    }
    a.last_sent_at.is_none_or(|s| s + resend_delay_ms < t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::file;
    use obs_schemas::records::MetricSeries;

    fn engine(rules: &str) -> Engine {
        let rf = file::parse("r.yml", rules).unwrap();
        let env = Env {
            default_interval_ms: 60_000,
            external_url: "http://q:8090".into(),
            ..Env::default()
        };
        let groups = rf
            .groups
            .iter()
            .map(|g| Group::new("r.yml", g, &env).unwrap())
            .collect();
        Engine::new(groups, env, 1_000, Box::new(|_| true))
    }

    fn batch(
        tenant: &str,
        name: &str,
        labels: &[(&str, &str)],
        points: &[(i64, f64)],
    ) -> MetricBatch {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        MetricBatch {
            series: vec![MetricSeries {
                fingerprint: obs_schemas::series_fingerprint(
                    tenant,
                    name,
                    labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ),
                name: name.into(),
                labels: labels.into_iter().collect(),
                kind: "gauge".into(),
                timestamps_ms: points.iter().map(|p| p.0).collect(),
                values: points.iter().map(|p| p.1).collect(),
                tenant: tenant.into(),
                ..MetricSeries::default()
            }],
            metadata: vec![],
        }
    }

    const RULES: &str = r#"
groups:
  - name: g
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: up == 0
        for: 2m
"#;

    #[test]
    fn rounds_follow_the_watermark_per_tenant() {
        let mut e = engine(RULES);
        let points: Vec<(i64, f64)> = (0..6).map(|i| (i * 60_000, 0.0)).collect();
        e.ingest(&batch("a", "up", &[("job", "x")], &points), None);
        e.ingest(&batch("b", "up", &[("job", "y")], &points[..2]), None);
        e.ingest(&batch("a", "other", &[], &points), None);
        assert_eq!(e.samples(), 8, "unselected series are not kept");
        assert!(e.evaluate_round(-1, None).is_none());
        let runs = e.evaluate_round(0, None).unwrap();
        assert_eq!(runs.len(), 2, "both tenants at t=0");
        assert_eq!(runs[0].eval.written[0].0["__name__"], "job:up:sum");
        // Tenant a fires at 2m.
        let mut fired = None;
        while let Some(runs) = e.evaluate_round(300_000, None) {
            for r in runs {
                if r.eval.transitions.iter().any(|t| t.to == State::Firing) {
                    fired.get_or_insert((r.tenant.clone(), r.t));
                }
            }
        }
        assert_eq!(fired, Some(("a".to_string(), 120_000)));
    }

    #[test]
    fn a_tenant_over_its_sample_limit_is_refused_and_others_are_not() {
        let mut e = engine(RULES);
        e.max_samples = 4;
        let points: Vec<(i64, f64)> = (0..6).map(|i| (i * 60_000, 1.0)).collect();
        let a = e.ingest(&batch("a", "up", &[("job", "x")], &points), None);
        assert_eq!((a.appended, a.over_limit), (4, 2));
        let b = e.ingest(&batch("b", "up", &[("job", "y")], &points[..3]), None);
        assert_eq!(
            (b.appended, b.over_limit),
            (3, 0),
            "tenants are bounded apart"
        );
    }

    #[test]
    fn restored_state_continues_where_it_stopped() {
        let points: Vec<(i64, f64)> = (0..6).map(|i| (i * 60_000, 0.0)).collect();
        let mut a = engine(RULES);
        a.ingest(&batch("a", "up", &[("job", "x")], &points), None);
        let mut saved = None;
        while let Some(runs) = a.evaluate_round(60_000, None) {
            saved = Some((runs[0].t, runs[0].state.clone()));
        }
        let (t, state) = saved.unwrap();
        // A new engine: the same input, the saved state; the alert keeps its active time.
        let mut b = engine(RULES);
        b.ingest(&batch("a", "up", &[("job", "x")], &points), None);
        b.restore("a", "r.yml:g", t, state);
        let runs = b.evaluate_round(120_000, None).unwrap();
        assert_eq!(runs[0].t, 120_000);
        let firing: Vec<_> = runs[0]
            .eval
            .transitions
            .iter()
            .map(|t| (t.from, t.to, t.active_at))
            .collect();
        assert_eq!(firing, vec![(Some(State::Pending), State::Firing, 0)]);
    }

    #[test]
    fn firing_alerts_are_sent_and_resent_as_prometheus_does() {
        let mut e = engine(RULES);
        let points: Vec<(i64, f64)> = (0..12).map(|i| (i * 60_000, 0.0)).collect();
        e.ingest(&batch("a", "up", &[("job", "x")], &points), None);
        let policy = NotifyPolicy {
            resend_delay_ms: 120_000,
            not_before_ms: 0,
        };
        let mut sent = Vec::new();
        while let Some(runs) = e.evaluate_round(600_000, Some(policy)) {
            for r in runs {
                sent.extend(r.notify.iter().map(|n| (r.t, n.starts_at, n.ends_at)));
            }
        }
        // Pending at 0 and 1m: not sent; firing from 2m, sent at 2m, then after more than
        // the 2m resend delay (5m, 8m), endsAt 4 x max(resend, interval) ahead.
        assert_eq!(
            sent,
            vec![
                (120_000, 0, 600_000),
                (300_000, 0, 780_000),
                (480_000, 0, 960_000)
            ]
        );
    }
}
