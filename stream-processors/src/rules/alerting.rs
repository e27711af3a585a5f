//! An alerting rule's state: its active alerts and how one evaluation moves them between
//! pending, firing and inactive, with Prometheus 2.42's rules (`rules/alerting.go`): a new
//! result is pending, fires once it has held for `for`, keeps firing `keep_firing_for`
//! after its condition stopped, and a resolved alert is kept 15 minutes so it is sent
//! as resolved. The evaluation writes `ALERTS` and `ALERTS_FOR_STATE` as Prometheus does.

use std::collections::BTreeMap;

use obs_promql::Labels;
use serde::{Deserialize, Serialize};

use super::expand::{self, QueryFn};

/// How long a resolved alert is kept (and re-sent as resolved).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    /// Resolved (kept for [`RESOLVED_RETENTION_MS`]).
    Inactive,
    /// Its condition holds, not yet for `for`.
    Pending,
    /// Its condition has held for `for`.
    Firing,
}

impl State {
    /// Prometheus's name for the state (`alertstate` label, API).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
        }
    }
}

/// One alert of a rule: one label set of its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The result's labels without `__name__`, the rule's labels and `alertname`.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: Labels,
    /// Current state.
    pub state: State,
    /// The result's value at the last evaluation that had it.
    pub value: f64,
    /// When it became pending (ms).
    pub active_at: i64,
    /// When it started firing (ms).
    pub fired_at: Option<i64>,
    /// When it was resolved (ms).
    pub resolved_at: Option<i64>,
    /// When it was last sent to Alertmanager (ms).
    pub last_sent_at: Option<i64>,
    /// Until when the last notification holds (`endsAt` of a firing alert, ms).
    pub valid_until: Option<i64>,
    /// Since when it is kept firing without its condition (ms).
    pub keep_firing_since: Option<i64>,
}

/// A state change of one alert at one evaluation (for `obs.alerts` and backtests).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The alert's labels.
    pub labels: Labels,
    /// Its annotations at the change.
    pub annotations: Labels,
    /// State before (`None`: the alert did not exist).
    pub from: Option<State>,
    /// State after (`Inactive` for a pending alert that went away, too).
    pub to: State,
    /// Evaluation time (ms).
    pub at: i64,
    /// The value at the change.
    pub value: f64,
    /// When the alert became pending (ms).
    pub active_at: i64,
}

/// An evaluation's `ALERTS`/`ALERTS_FOR_STATE` samples and its transitions.
pub type Applied = (Vec<(Labels, f64)>, Vec<Transition>);

/// What templates see besides the alert: external labels and URL, and `query`.
pub struct TemplateEnv<'a> {
    /// External labels (`$externalLabels`).
    pub external_labels: &'a Labels,
    /// External URL (`$externalURL`).
    pub external_url: &'a str,
    /// Instant queries at the evaluation time.
    pub query: Option<QueryFn>,
    /// Templates that failed at this evaluation (their text became Prometheus's
    /// `<error expanding template: …>`), for the log and the failure metric.
    pub failures: std::cell::RefCell<Vec<String>>,
}

/// An alerting rule with its active alerts.
#[derive(Debug, Clone)]
pub struct AlertingRule {
    /// The alert's name.
    pub name: String,
    /// `for` (ms).
    pub hold_ms: i64,
    /// `keep_firing_for` (ms).
    pub keep_firing_ms: i64,
    /// Label templates.
    pub labels: BTreeMap<String, String>,
    /// Annotation templates.
    pub annotations: BTreeMap<String, String>,
    /// Active alerts by label set.
    pub active: BTreeMap<Labels, Alert>,
    /// Whether `for` state has been restored (Prometheus writes `ALERTS` only then).
    pub restored: bool,
}

impl AlertingRule {
    /// Applies one evaluation's result at `ts`; returns the `ALERTS` and
    /// `ALERTS_FOR_STATE` samples and the transitions.
    pub fn apply(
        &mut self,
        ts: i64,
        result: &[(Labels, f64)],
        limit: usize,
        env: &TemplateEnv,
    ) -> Result<Applied, String> {
        let template = format!("__alert_{}", self.name);
        let mut current: BTreeMap<Labels, Alert> = BTreeMap::new();
        for (metric, value) in result {
            let data = expand::Data {
                labels: metric,
                external_labels: env.external_labels,
                external_url: env.external_url,
                value: *value,
            };
            let exp = |text: &str| {
                expand::expand(&template, text, &data, env.query.clone()).unwrap_or_else(|e| {
                    env.failures.borrow_mut().push(e.clone());
                    format!("<error expanding template: {e}>")
                })
            };
            let mut labels = metric.clone();
            labels.remove("__name__");
            for (k, v) in &self.labels {
                labels.insert(k.clone(), exp(v));
            }
            labels.insert("alertname".into(), self.name.clone());
            let annotations: Labels = self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), exp(v)))
                .collect();
            if current.contains_key(&labels) {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                );
            }
            current.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations,
                    state: State::Pending,
                    value: *value,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    last_sent_at: None,
                    valid_until: None,
                    keep_firing_since: None,
                },
            );
        }

        let mut transitions = Vec::new();
        let before: BTreeMap<Labels, State> = self
            .active
            .iter()
            .map(|(l, a)| (l.clone(), a.state))
            .collect();
        for (labels, alert) in &current {
            match self.active.get_mut(labels) {
                Some(a) if a.state != State::Inactive => {
                    a.value = alert.value;
                    a.annotations = alert.annotations.clone();
                }
                _ => {
                    self.active.insert(labels.clone(), alert.clone());
                }
            }
        }

        let mut samples = Vec::new();
        let mut active_pending = 0;
        let mut remove = Vec::new();
        for (labels, a) in self.active.iter_mut() {
            if !current.contains_key(labels) {
                let mut keep_firing = false;
                if a.state == State::Firing && self.keep_firing_ms > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    keep_firing = ts - since < self.keep_firing_ms;
                }
                if a.state == State::Pending
                    || a.resolved_at
                        .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
                {
                    remove.push(labels.clone());
                }
                if a.state != State::Inactive && !keep_firing {
                    a.state = State::Inactive;
                    a.resolved_at = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = None;
            }
            active_pending += 1;
            if a.state == State::Pending && ts - a.active_at >= self.hold_ms {
                a.state = State::Firing;
                a.fired_at = Some(ts);
            }
            if self.restored {
                let mut l = a.labels.clone();
                l.insert("__name__".into(), "ALERTS".into());
                l.insert("alertstate".into(), a.state.as_str().into());
                samples.push((l, 1.0));
                let mut l = a.labels.clone();
                l.insert("__name__".into(), "ALERTS_FOR_STATE".into());
                samples.push((l, a.active_at.div_euclid(1000) as f64));
            }
        }
        // Transitions, from the states before and after (a pending alert that went away
        // is inactive here and removed below).
        for (labels, a) in &self.active {
            let from = before.get(labels).copied();
            let from = match from {
                // A resolved alert that came back was replaced by a new pending one.
                Some(State::Inactive) if a.state != State::Inactive => None,
                f => f,
            };
            if from != Some(a.state) {
                transitions.push(Transition {
                    labels: labels.clone(),
                    annotations: a.annotations.clone(),
                    from,
                    to: a.state,
                    at: ts,
                    value: a.value,
                    active_at: a.active_at,
                });
            }
        }
        for labels in remove {
            self.active.remove(&labels);
        }
        if limit > 0 && active_pending > limit {
            self.active.clear();
            return Err(format!(
                "exceeded limit of {limit} with {active_pending} alerts"
            ));
        }
        Ok((samples, transitions))
    }

    /// Alerts in `state`.
    pub fn alerts_in(&self, state: State) -> impl Iterator<Item = &Alert> {
        self.active.values().filter(move |a| a.state == state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(hold_ms: i64, keep_ms: i64) -> AlertingRule {
        AlertingRule {
            name: "High".into(),
            hold_ms,
            keep_firing_ms: keep_ms,
            labels: [("severity".to_string(), "page".to_string())].into(),
            annotations: [(
                "summary".to_string(),
                "{{ $labels.job }} at {{ $value }}".to_string(),
            )]
            .into(),
            active: BTreeMap::new(),
            restored: true,
        }
    }

    fn result(v: f64) -> Vec<(Labels, f64)> {
        vec![(
            [("__name__", "x"), ("job", "api")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            v,
        )]
    }

    fn step(r: &mut AlertingRule, ts: i64, res: &[(Labels, f64)]) -> Vec<(Option<State>, State)> {
        let empty = Labels::new();
        let env = TemplateEnv {
            external_labels: &empty,
            external_url: "",
            query: None,
            failures: Default::default(),
        };
        let (_, t) = r.apply(ts, res, 0, &env).unwrap();
        t.into_iter().map(|t| (t.from, t.to)).collect()
    }

    #[test]
    fn pending_fires_after_for_and_resolves() {
        let mut r = rule(120_000, 0);
        assert_eq!(step(&mut r, 0, &result(5.0)), [(None, State::Pending)]);
        assert_eq!(step(&mut r, 60_000, &result(6.0)), []);
        assert_eq!(
            step(&mut r, 120_000, &result(7.0)),
            [(Some(State::Pending), State::Firing)]
        );
        let a = r.alerts_in(State::Firing).next().unwrap();
        assert_eq!(a.annotations["summary"], "api at 7");
        assert_eq!(a.labels["severity"], "page");
        assert_eq!(a.labels["alertname"], "High");
        assert!(!a.labels.contains_key("__name__"));
        assert_eq!(
            step(&mut r, 180_000, &[]),
            [(Some(State::Firing), State::Inactive)]
        );
        // Kept 15 minutes, then dropped.
        assert_eq!(r.active.len(), 1);
        step(&mut r, 180_000 + RESOLVED_RETENTION_MS + 1, &[]);
        assert!(r.active.is_empty());
    }

    #[test]
    fn a_pending_alert_that_goes_away_is_dropped() {
        let mut r = rule(120_000, 0);
        step(&mut r, 0, &result(5.0));
        assert_eq!(
            step(&mut r, 60_000, &[]),
            [(Some(State::Pending), State::Inactive)]
        );
        assert!(r.active.is_empty());
        assert_eq!(
            step(&mut r, 120_000, &result(5.0)),
            [(None, State::Pending)]
        );
        assert_eq!(r.active.values().next().unwrap().active_at, 120_000);
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let mut r = rule(0, 120_000);
        assert_eq!(step(&mut r, 0, &result(1.0)), [(None, State::Firing)]);
        assert_eq!(step(&mut r, 60_000, &[]), []);
        assert_eq!(step(&mut r, 120_000, &[]), []);
        assert_eq!(
            step(&mut r, 180_000, &[]),
            [(Some(State::Firing), State::Inactive)]
        );
    }
}
