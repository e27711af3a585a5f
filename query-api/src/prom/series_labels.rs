//! The labels of series by fingerprint, kept between PromQL queries. A fingerprint is a
//! hash of its series' tenant, name and labels (`obs_schemas::fingerprint`), so what it
//! names never changes: a query whose samples belong to series read before needs no read
//! of `metrics_series` (on chDB a second table in a statement costs ~4 ms however few its
//! rows, more than a whole Prometheus query over an hour of one metric).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use obs_promql::Labels;

/// Labels by (tenant, fingerprint), at most `capacity` of them. Two generations: a lookup
/// in the older moves the entry to the newer, and when the newer is full the older is
/// dropped, so the series read recently stay (an LRU without a list).
pub struct SeriesLabels {
    capacity: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    newer: HashMap<String, HashMap<i64, Arc<Labels>>>,
    newer_len: usize,
    older: HashMap<String, HashMap<i64, Arc<Labels>>>,
}

impl SeriesLabels {
    /// A cache of at most `capacity` series (0: nothing is kept, every query reads
    /// `metrics_series`).
    pub fn new(capacity: usize) -> SeriesLabels {
        SeriesLabels {
            capacity,
            generations: Mutex::new(Generations::default()),
        }
    }

    /// The labels of `tenant`'s series `fp`, if kept.
    pub fn get(&self, tenant: &str, fp: i64) -> Option<Arc<Labels>> {
        let mut g = self.generations.lock().expect("series labels lock");
        if let Some(l) = g.newer.get(tenant).and_then(|m| m.get(&fp)) {
            return Some(l.clone());
        }
        let l = g.older.get_mut(tenant)?.remove(&fp)?;
        g.insert(self.capacity, tenant, fp, l.clone());
        Some(l)
    }

    /// Keeps the labels of `tenant`'s series `fp`.
    pub fn put(&self, tenant: &str, fp: i64, labels: Arc<Labels>) {
        if self.capacity == 0 {
            return;
        }
        let mut g = self.generations.lock().expect("series labels lock");
        g.insert(self.capacity, tenant, fp, labels);
    }

    /// Series kept (both generations; an entry is in at most one).
    pub fn len(&self) -> usize {
        let g = self.generations.lock().expect("series labels lock");
        g.newer_len + g.older.values().map(HashMap::len).sum::<usize>()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Generations {
    fn insert(&mut self, capacity: usize, tenant: &str, fp: i64, labels: Arc<Labels>) {
        if self.newer_len >= capacity.div_ceil(2) {
            self.older = std::mem::take(&mut self.newer);
            self.newer_len = 0;
        }
        if let Some(m) = self.older.get_mut(tenant) {
            m.remove(&fp);
        }
        let per_tenant = match self.newer.get_mut(tenant) {
            Some(m) => m,
            None => self.newer.entry(tenant.to_string()).or_default(),
        };
        if per_tenant.insert(fp, labels).is_none() {
            self.newer_len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &str) -> Arc<Labels> {
        Arc::new([("job".to_string(), v.to_string())].into())
    }

    #[test]
    fn keeps_labels_per_tenant_and_fingerprint() {
        let c = SeriesLabels::new(10);
        c.put("a", 1, labels("x"));
        assert_eq!(c.get("a", 1).as_deref(), Some(&*labels("x")));
        assert!(c.get("b", 1).is_none(), "another tenant's series");
        assert!(c.get("a", 2).is_none());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn holds_at_most_its_capacity_keeping_the_recently_read() {
        let c = SeriesLabels::new(4);
        for fp in 0..2 {
            c.put("t", fp, labels("old"));
        }
        // Reading 0 keeps it; 1, not read, goes when the newer generation fills twice.
        for fp in 2..4 {
            c.put("t", fp, labels("new"));
        }
        assert!(c.get("t", 0).is_some());
        c.put("t", 4, labels("new"));
        assert!(c.len() <= 4, "{}", c.len());
        assert!(c.get("t", 0).is_some(), "read recently");
        assert!(c.get("t", 1).is_none(), "not read since two generations");
        for fp in 100..1000 {
            c.put("t", fp, labels("many"));
            assert!(c.len() <= 4);
        }
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let c = SeriesLabels::new(0);
        c.put("t", 1, labels("x"));
        assert!(c.is_empty() && c.get("t", 1).is_none());
    }
}
