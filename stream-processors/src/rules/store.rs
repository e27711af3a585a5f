//! The samples rules evaluate over, held in memory: the input series a rule selects and
//! the series rules write (recorded series, `ALERTS`, `ALERTS_FOR_STATE`), each kept for
//! the window its rules need. Appends follow Prometheus's storage rules (a sample older
//! than the series' newest is out of order; a second, different value at the same time is
//! a duplicate), so the engine's errors are the ones Prometheus reports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use obs_promql::{Labels, RawSeries, SelectFuture, SeriesSource, is_stale};
use promql_parser::parser::VectorSelector;

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The sample is older than the series' newest.
    OutOfOrder,
    /// The series already has a different value at that time.
    Duplicate,
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AppendError::OutOfOrder => "out of order sample",
            AppendError::Duplicate => "duplicate sample for timestamp",
        })
    }
}

/// Series by label set, samples in time order.
#[derive(Debug, Default)]
pub struct Store {
    series: BTreeMap<Labels, Vec<(i64, f64)>>,
    samples: usize,
}

impl Store {
    /// Appends one sample (a stale marker is a sample).
    pub fn append(&mut self, labels: &Labels, t: i64, v: f64) -> Result<(), AppendError> {
        let s = match self.series.get_mut(labels) {
            Some(s) => s,
            None => self.series.entry(labels.clone()).or_default(),
        };
        if let Some(&(last_t, last_v)) = s.last() {
            if t < last_t {
                return Err(AppendError::OutOfOrder);
            }
            if t == last_t {
                let same = last_v.to_bits() == v.to_bits() || (last_v == v && !is_stale(v));
                return if same {
                    Ok(())
                } else {
                    Err(AppendError::Duplicate)
                };
            }
        }
        s.push((t, v));
        self.samples += 1;
        Ok(())
    }

    /// Drops samples older than `before_ms` and series left without any.
    pub fn trim(&mut self, before_ms: i64) {
        let mut dropped = 0;
        self.series.retain(|_, s| {
            let cut = s.partition_point(|&(t, _)| t < before_ms);
            dropped += cut;
            s.drain(..cut);
            !s.is_empty()
        });
        self.samples -= dropped;
    }

    /// Samples held (for the memory limit and its metric).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Series held.
    pub fn series(&self) -> usize {
        self.series.len()
    }

    fn select(&self, vs: &VectorSelector, from_ms: i64, to_ms: i64) -> Vec<RawSeries> {
        let series = self.series.iter().map(|(l, s)| (l, s.as_slice()));
        obs_promql::memory::select_in(series, vs, from_ms, to_ms)
    }
}

/// A store shared between the engine (which appends) and the evaluations and template
/// queries that read it.
#[derive(Debug, Default, Clone)]
pub struct Shared(pub Arc<Mutex<Store>>);

impl Shared {
    /// Runs `f` on the store.
    pub fn with<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl SeriesSource for Shared {
    fn select<'a>(
        &'a mut self,
        vs: &'a VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> SelectFuture<'a> {
        let out = self.with(|s| s.select(vs, from_ms, to_ms));
        Box::pin(async move { Ok(out) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(name: &str) -> Labels {
        [("__name__".to_string(), name.to_string())].into()
    }

    #[test]
    fn appends_follow_prometheus_storage_rules() {
        let mut s = Store::default();
        s.append(&l("a"), 10, 1.0).unwrap();
        s.append(&l("a"), 10, 1.0).unwrap();
        assert_eq!(s.append(&l("a"), 10, 2.0), Err(AppendError::Duplicate));
        assert_eq!(s.append(&l("a"), 5, 2.0), Err(AppendError::OutOfOrder));
        s.append(&l("a"), 20, 2.0).unwrap();
        s.append(&l("b"), 5, 2.0).unwrap();
        assert_eq!((s.series(), s.samples()), (2, 3));
        s.trim(11);
        assert_eq!((s.series(), s.samples()), (1, 1));
    }
}
