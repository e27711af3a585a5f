//! Checks a metrics request must pass before anything of it is published: label limits,
//! the per-tenant cardinality limit, and Prometheus's rules for sample order.
//!
//! Prometheus (2.42, `storage/remote/write_handler.go`) refuses a whole remote-write request
//! with 400 when a sample is older than its series' newest sample (out of order) or has the
//! newest sample's timestamp with another value (duplicate); a sample equal to the stored
//! one is accepted and not stored twice. The guard applies the same rules against the
//! newest sample it has published per series. It remembers series for
//! `series_idle_secs`; after a collector restart it starts empty, so those rules hold for
//! what one collector process has seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use obs_runtime::config::CollectorConfig;
use obs_schemas::records::MetricSeries;

use super::{valid_label_name, valid_metric_name};
use crate::error::CollectorError;

/// The newest published sample of a series.
#[derive(Clone, Copy)]
struct Newest {
    ts: i64,
    bits: u64,
    seen: Instant,
}

#[derive(Default)]
struct TenantSeries {
    series: HashMap<i64, Newest>,
    swept: Option<Instant>,
}

/// Admission control for metric series (see the module doc).
pub struct SeriesGuard {
    max_labels: usize,
    max_name_bytes: usize,
    max_value_bytes: usize,
    max_series: usize,
    idle: Duration,
    tenants: Mutex<HashMap<String, TenantSeries>>,
}

/// What an admitted request will change once it is published (see [`SeriesGuard::commit`]).
#[derive(Debug)]
pub struct Admission {
    tenant: String,
    newest: Vec<(i64, i64, u64)>,
}

impl SeriesGuard {
    /// A guard with the `[collector]` limits.
    pub fn new(cfg: &CollectorConfig) -> Self {
        SeriesGuard {
            max_labels: cfg.max_labels_per_series,
            max_name_bytes: cfg.max_label_name_bytes,
            max_value_bytes: cfg.max_label_value_bytes,
            max_series: cfg.max_series_per_tenant,
            idle: Duration::from_secs(cfg.series_idle_secs),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `series` (all of `tenant`) and drops samples equal to ones already published.
    /// Any violation refuses the whole request. Call [`SeriesGuard::commit`] once the
    /// series are published.
    pub fn admit(
        &self,
        tenant: &str,
        series: &mut Vec<MetricSeries>,
    ) -> Result<Admission, CollectorError> {
        for s in series.iter() {
            self.check_labels(s)?;
        }
        let mut tenants = self.tenants.lock().expect("series guard lock");
        let state = tenants.entry(tenant.to_string()).or_default();
        let now = Instant::now();
        if state
            .swept
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(60))
        {
            let idle = self.idle;
            state
                .series
                .retain(|_, n| now.duration_since(n.seen) < idle);
            state.swept = Some(now);
        }
        // The newest sample per series as this request would leave it (a series may appear
        // more than once in a request).
        let mut pending: HashMap<i64, (i64, u64)> = HashMap::new();
        for s in series.iter_mut() {
            let mut last = pending
                .get(&s.fingerprint)
                .copied()
                .or_else(|| state.series.get(&s.fingerprint).map(|n| (n.ts, n.bits)));
            let mut keep = Vec::with_capacity(s.timestamps_ms.len());
            for (i, (&ts, &v)) in s.timestamps_ms.iter().zip(&s.values).enumerate() {
                if let Some((lts, lbits)) = last {
                    if ts < lts {
                        return Err(CollectorError::OutOfOrder(format!(
                            "out of order sample: series {} has a sample at {lts} ms, this one is at {ts} ms; nothing of this request was stored",
                            describe(s)
                        )));
                    }
                    if ts == lts {
                        if v.to_bits() == lbits {
                            continue; // the same sample again: stored once
                        }
                        return Err(CollectorError::OutOfOrder(format!(
                            "duplicate sample for timestamp: series {} already has value {} at {ts} ms, this one is {v}; nothing of this request was stored",
                            describe(s),
                            f64::from_bits(lbits)
                        )));
                    }
                }
                keep.push(i);
                last = Some((ts, v.to_bits()));
            }
            if keep.len() != s.timestamps_ms.len() {
                s.timestamps_ms = keep.iter().map(|&i| s.timestamps_ms[i]).collect();
                s.values = keep.iter().map(|&i| s.values[i]).collect();
            }
            if let Some(l) = last {
                pending.insert(s.fingerprint, l);
            }
        }
        let new = pending
            .keys()
            .filter(|fp| !state.series.contains_key(fp))
            .count();
        if state.series.len() + new > self.max_series {
            return Err(CollectorError::Limit {
                kind: "series_limit",
                message: format!(
                    "series limit reached: tenant {tenant:?} has {} active series and this request would add {new}, past the limit of {}; nothing of this request was stored. Reduce label cardinality or raise collector.max_series_per_tenant",
                    state.series.len(),
                    self.max_series
                ),
            });
        }
        series.retain(|s| {
            !s.timestamps_ms.is_empty() || !s.histograms.is_empty() || !s.exemplars.is_empty()
        });
        Ok(Admission {
            tenant: tenant.to_string(),
            newest: pending
                .into_iter()
                .map(|(fp, (ts, b))| (fp, ts, b))
                .collect(),
        })
    }

    /// Records an admitted request as published.
    pub fn commit(&self, admission: Admission) {
        let mut tenants = self.tenants.lock().expect("series guard lock");
        let state = tenants.entry(admission.tenant.clone()).or_default();
        let seen = Instant::now();
        for (fp, ts, bits) in admission.newest {
            let e = state.series.entry(fp).or_insert(Newest { ts, bits, seen });
            if ts >= e.ts {
                *e = Newest { ts, bits, seen };
            }
        }
        metrics::gauge!("obs_collector_active_series", "tenant" => admission.tenant)
            .set(state.series.len() as f64);
    }

    fn check_labels(&self, s: &MetricSeries) -> Result<(), CollectorError> {
        let bad = |kind: &'static str, message: String| CollectorError::Limit { kind, message };
        if !valid_metric_name(&s.name) {
            return Err(CollectorError::BadRequest(format!(
                "invalid metric name {:?}: use [a-zA-Z_:][a-zA-Z0-9_:]*",
                s.name
            )));
        }
        if s.labels.len() + 1 > self.max_labels {
            return Err(bad(
                "too_many_labels",
                format!(
                    "series {} has {} labels, more than the limit of {} (collector.max_labels_per_series)",
                    describe(s),
                    s.labels.len() + 1,
                    self.max_labels
                ),
            ));
        }
        for (k, v) in &s.labels {
            if !valid_label_name(k) {
                return Err(CollectorError::BadRequest(format!(
                    "invalid label name {k:?} in series {}: use [a-zA-Z_][a-zA-Z0-9_]*",
                    describe(s)
                )));
            }
            if k.len() > self.max_name_bytes {
                return Err(bad(
                    "label_name_too_long",
                    format!(
                        "label name {k:?} is {} bytes, longer than the limit of {} (collector.max_label_name_bytes)",
                        k.len(),
                        self.max_name_bytes
                    ),
                ));
            }
            if v.len() > self.max_value_bytes {
                return Err(bad(
                    "label_value_too_long",
                    format!(
                        "the value of label {k:?} in series {} is {} bytes, longer than the limit of {} (collector.max_label_value_bytes)",
                        s.name,
                        v.len(),
                        self.max_value_bytes
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `name{a="b",...}`, shortened, for error messages.
fn describe(s: &MetricSeries) -> String {
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|(k, v)| {
            let v: String = v.chars().take(64).collect();
            format!("{k}={v:?}")
        })
        .collect();
    let mut out = format!("{}{{{}}}", s.name, labels.join(","));
    if out.len() > 300 {
        out = out.chars().take(300).collect::<String>() + "...";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::new_series;
    use obs_schemas::records::Attrs;

    fn guard(max_series: usize) -> SeriesGuard {
        SeriesGuard::new(&CollectorConfig {
            max_series_per_tenant: max_series,
            max_labels_per_series: 3,
            ..Default::default()
        })
    }

    fn series(name: &str, job: &str, points: &[(i64, f64)]) -> MetricSeries {
        let mut s = new_series(
            "t",
            name.into(),
            Attrs::from_iter([("job".to_string(), job.to_string())]),
            "gauge".into(),
        );
        s.timestamps_ms = points.iter().map(|p| p.0).collect();
        s.values = points.iter().map(|p| p.1).collect();
        s
    }

    #[test]
    fn identical_resend_is_dropped_and_conflicts_are_refused() {
        let g = guard(10);
        let mut req = vec![series("up", "a", &[(1000, 1.0), (2000, 1.0)])];
        let a = g.admit("t", &mut req).unwrap();
        g.commit(a);
        let mut again = vec![series("up", "a", &[(2000, 1.0), (3000, 0.0)])];
        g.admit("t", &mut again).unwrap();
        assert_eq!(again[0].timestamps_ms, vec![3000]);
        let mut conflict = vec![series("up", "a", &[(2000, 5.0)])];
        let e = g.admit("t", &mut conflict).unwrap_err();
        assert!(e.to_string().contains("duplicate sample"), "{e}");
        let mut old = vec![series("up", "a", &[(1500, 1.0)])];
        let e = g.admit("t", &mut old).unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
    }

    #[test]
    fn unpublished_requests_change_nothing() {
        let g = guard(10);
        let mut req = vec![series("up", "a", &[(1000, 1.0)])];
        g.admit("t", &mut req).unwrap(); // never committed: the publish failed
        let mut retry = vec![series("up", "a", &[(1000, 1.0)])];
        g.admit("t", &mut retry).unwrap();
        assert_eq!(retry[0].timestamps_ms, vec![1000]);
    }

    #[test]
    fn cardinality_limit_refuses_the_whole_request() {
        let g = guard(2);
        let mut req = vec![series("m", "a", &[(1, 1.0)]), series("m", "b", &[(1, 1.0)])];
        let a = g.admit("t", &mut req).unwrap();
        g.commit(a);
        let mut storm = vec![series("m", "a", &[(2, 1.0)]), series("m", "c", &[(2, 1.0)])];
        let e = g.admit("t", &mut storm).unwrap_err();
        assert_eq!(e.reason(), "series_limit");
        // Another tenant has its own budget.
        let mut other = vec![series("m", "c", &[(2, 1.0)])];
        other[0].tenant = "u".into();
        g.admit("u", &mut other).unwrap();
    }

    #[test]
    fn label_limits_are_named() {
        let g = guard(10);
        let mut s = series("m", "a", &[(1, 1.0)]);
        s.labels.insert("b".into(), "x".into());
        s.labels.insert("c".into(), "x".into());
        let e = g.admit("t", &mut vec![s]).unwrap_err();
        assert_eq!(e.reason(), "too_many_labels");
        let mut s = series("m", "a", &[(1, 1.0)]);
        s.labels.insert("bad-name".into(), "x".into());
        let e = g.admit("t", &mut vec![s]).unwrap_err();
        assert!(e.to_string().contains("invalid label name"), "{e}");
    }
}
