//! Counters and classic histograms of the metrics derived from spans (span metrics, service
//! graph), per tenant and label set: updated in input order, checkpointed with the
//! partition's state, and written out as cumulative samples at each event-time interval.
//!
//! Every series carries the label `obs_partition`: one input partition's counters are one
//! series, so instances that split the partitions never write the same series with
//! different values, and a partition's samples are a deterministic function of its input.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};
use obs_schemas::records::{MetricBatch, MetricMetadata, MetricSeries};
use serde::{Deserialize, Serialize};

/// The label naming the input partition a series counts.
pub const PARTITION_LABEL: &str = "obs_partition";

/// Identifies one series: tenant, metric name and labels (sorted by name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Tenant.
    pub tenant: String,
    /// Metric name (for a histogram, the family name without `_bucket`).
    pub name: String,
    /// Labels, sorted by name.
    pub labels: Vec<(String, String)>,
}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let labels = self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        hash_series(h, &self.tenant, &self.name, labels);
    }
}

/// A series named by borrowed parts: counting a span looks its series up without building
/// a string, and copies the parts only when the series is new (this runs for every span).
#[derive(Debug, Clone, Copy)]
pub struct SeriesRef<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Metric name.
    pub name: &'a str,
    /// Labels, sorted by name.
    pub labels: &'a [(&'a str, &'a str)],
}

impl SeriesRef<'_> {
    /// The owned key of the same series, stored when the series is new.
    fn to_key(self) -> SeriesKey {
        SeriesKey {
            tenant: self.tenant.to_string(),
            name: self.name.to_string(),
            labels: self
                .labels
                .iter()
                .map(|&(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl Hash for SeriesRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_series(h, self.tenant, self.name, self.labels.iter().copied());
    }
}

impl Equivalent<SeriesKey> for SeriesRef<'_> {
    fn equivalent(&self, key: &SeriesKey) -> bool {
        self.tenant == key.tenant
            && self.name == key.name
            && self.labels.len() == key.labels.len()
            && self
                .labels
                .iter()
                .zip(&key.labels)
                .all(|(&(k, v), (kk, vv))| k == kk && v == vv)
    }
}

/// The one hash of a series, whether named by a [`SeriesKey`] or a [`SeriesRef`] (a map
/// finds a key by either only if both hash alike).
fn hash_series<'a, H: Hasher>(
    h: &mut H,
    tenant: &str,
    name: &str,
    labels: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) {
    tenant.hash(h);
    name.hash(h);
    h.write_usize(labels.len());
    for (k, v) in labels {
        k.hash(h);
        v.hash(h);
    }
}

/// A classic histogram's state: per-bucket (not cumulative) counts, the `+Inf` overflow
/// last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry<T> {
    value: T,
    /// Event time of the last update (ms): series untouched for the stale time are dropped.
    updated_ms: i64,
    /// Not written yet: its first write starts with a zero at the interval's start, so
    /// `rate()` and `increase()` see its first increments (as Tempo does).
    #[serde(default)]
    fresh: bool,
}

/// Derived counters and histograms of one input partition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Registry {
    /// Hashed, not ordered: a lookup hashes the key once instead of comparing it with
    /// several others; output is sorted by key.
    counters: HashMap<SeriesKey, Entry<f64>>,
    histograms: HashMap<SeriesKey, Entry<Hist>>,
    /// Kind of each metric family, for the metadata written with the samples.
    kinds: BTreeMap<String, &'static str>,
}

/// A registry as a checkpoint stores it (JSON maps need string keys, so lists of pairs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    counters: Vec<(SeriesKey, Entry<f64>)>,
    histograms: Vec<(SeriesKey, Entry<Hist>)>,
}

impl Registry {
    /// Adds `by` to a counter (the key is copied only for a new series: this runs for
    /// every span).
    pub fn add(&mut self, key: &SeriesRef, by: f64, now_ms: i64) {
        let e = match self.counters.get_mut(key) {
            Some(e) => e,
            None => {
                note_kind(&mut self.kinds, key.name, "counter");
                self.counters.entry(key.to_key()).or_insert(Entry {
                    value: 0.0,
                    updated_ms: now_ms,
                    fresh: true,
                })
            }
        };
        e.value += by;
        e.updated_ms = e.updated_ms.max(now_ms);
    }

    /// Observes `value` in a histogram with upper bounds `bounds` (ascending).
    pub fn observe(&mut self, key: &SeriesRef, bounds: &[f64], value: f64, now_ms: i64) {
        let e = match self.histograms.get_mut(key) {
            Some(e) => e,
            None => {
                note_kind(&mut self.kinds, key.name, "histogram");
                self.histograms
                    .entry(key.to_key())
                    .or_insert_with(|| Entry {
                        value: Hist {
                            counts: vec![0; bounds.len() + 1],
                            sum: 0.0,
                            count: 0,
                        },
                        updated_ms: now_ms,
                        fresh: true,
                    })
            }
        };
        let i = bounds.partition_point(|&b| b < value);
        let last = e.value.counts.len() - 1;
        e.value.counts[i.min(last)] += 1;
        e.value.sum += value;
        e.value.count += 1;
        e.updated_ms = e.updated_ms.max(now_ms);
    }

    /// Drops series not updated since `before_ms` (Tempo's stale series removal).
    pub fn drop_stale(&mut self, before_ms: i64) {
        self.counters.retain(|_, e| e.updated_ms >= before_ms);
        self.histograms.retain(|_, e| e.updated_ms >= before_ms);
    }

    /// How many series (histograms count once) it holds.
    pub fn len(&self) -> usize {
        self.counters.len() + self.histograms.len()
    }

    /// Whether it holds no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A counter's value, for tests and diagnostics.
    pub fn counter(&self, key: &SeriesRef) -> Option<f64> {
        self.counters.get(key).map(|e| e.value)
    }

    /// Every series' value at `t_ms` as metric batches (one per tenant), histograms as
    /// `_bucket` (with `le`, cumulative, `+Inf` last), `_sum` and `_count`; `bounds` gives
    /// each histogram family's upper bounds. A series written for the first time also gets
    /// a zero at `start_ms` (the interval's start).
    pub fn samples(
        &mut self,
        start_ms: i64,
        t_ms: i64,
        partition: i32,
        bounds: &dyn Fn(&str) -> Vec<f64>,
    ) -> Vec<MetricBatch> {
        let mut out = Out {
            by_tenant: BTreeMap::new(),
            start_ms,
            t_ms,
            partition: partition.to_string(),
        };
        for (k, e) in in_key_order(self.counters.iter_mut()) {
            out.push(k, k.name.clone(), None, "counter", e.value, e.fresh);
            e.fresh = false;
        }
        for (k, e) in in_key_order(self.histograms.iter_mut()) {
            let b = bounds(&k.name);
            let mut cumulative = 0u64;
            let fresh = std::mem::take(&mut e.fresh);
            for (i, c) in e.value.counts.iter().enumerate() {
                cumulative += c;
                let le = b.get(i).map_or("+Inf".to_string(), |v| v.to_string());
                let name = format!("{}_bucket", k.name);
                out.push(k, name, Some(le), "histogram", cumulative as f64, fresh);
            }
            out.push(
                k,
                format!("{}_sum", k.name),
                None,
                "histogram",
                e.value.sum,
                fresh,
            );
            let count = e.value.count as f64;
            out.push(
                k,
                format!("{}_count", k.name),
                None,
                "histogram",
                count,
                fresh,
            );
        }
        out.by_tenant
            .into_iter()
            .map(|(tenant, mut batch)| {
                batch.metadata = self
                    .kinds
                    .iter()
                    .map(|(name, kind)| MetricMetadata {
                        tenant: tenant.clone(),
                        name: name.clone(),
                        kind: kind.to_string(),
                        help: String::new(),
                        unit: String::new(),
                    })
                    .collect();
                batch
            })
            .collect()
    }

    /// The state a checkpoint keeps.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counters: in_key_order(self.counters.iter())
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            histograms: in_key_order(self.histograms.iter())
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The registry a checkpoint kept.
    pub fn restore(s: Snapshot) -> Registry {
        let mut r = Registry::default();
        for (k, _) in &s.counters {
            r.kinds.entry(k.name.clone()).or_insert("counter");
        }
        for (k, _) in &s.histograms {
            r.kinds.entry(k.name.clone()).or_insert("histogram");
        }
        r.counters = s.counters.into_iter().collect();
        r.histograms = s.histograms.into_iter().collect();
        r
    }
}

/// Records the kind of metric family `name` when its first series is counted.
fn note_kind(kinds: &mut BTreeMap<String, &'static str>, name: &str, kind: &'static str) {
    if !kinds.contains_key(name) {
        kinds.insert(name.to_string(), kind);
    }
}

/// A map's entries in key order: what is written and checkpointed does not depend on the
/// hasher's seed.
fn in_key_order<'a, V>(
    entries: impl Iterator<Item = (&'a SeriesKey, V)>,
) -> Vec<(&'a SeriesKey, V)> {
    let mut entries: Vec<_> = entries.collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

/// Samples being written out, grouped by tenant.
struct Out {
    by_tenant: BTreeMap<String, MetricBatch>,
    start_ms: i64,
    t_ms: i64,
    partition: String,
}

impl Out {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        k: &SeriesKey,
        name: String,
        le: Option<String>,
        kind: &str,
        value: f64,
        fresh: bool,
    ) {
        let mut labels: obs_schemas::records::Attrs = k.labels.iter().cloned().collect();
        labels.insert(PARTITION_LABEL.into(), self.partition.clone());
        if let Some(le) = le {
            labels.insert("le".into(), le);
        }
        let fingerprint = obs_schemas::series_fingerprint(
            &k.tenant,
            &name,
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let batch = self.by_tenant.entry(k.tenant.clone()).or_default();
        batch.series.push(MetricSeries {
            fingerprint,
            name,
            labels,
            kind: kind.into(),
            timestamps_ms: if fresh && self.start_ms < self.t_ms {
                vec![self.start_ms, self.t_ms]
            } else {
                vec![self.t_ms]
            },
            values: if fresh && self.start_ms < self.t_ms {
                vec![0.0, value]
            } else {
                vec![value]
            },
            tenant: k.tenant.clone(),
            ..MetricSeries::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tenant `t`'s series `name` with `labels` (sorted by name).
    fn key<'a>(name: &'a str, labels: &'a [(&'a str, &'a str)]) -> SeriesRef<'a> {
        SeriesRef {
            tenant: "t",
            name,
            labels,
        }
    }

    fn value(batches: &[MetricBatch], name: &str, le: Option<&str>) -> f64 {
        batches
            .iter()
            .flat_map(|b| &b.series)
            .find(|s| s.name == name && s.labels.get("le").map(String::as_str) == le)
            .map(|s| *s.values.last().unwrap())
            .unwrap_or_else(|| panic!("no {name} {le:?}"))
    }

    #[test]
    fn histograms_come_out_cumulative_with_sum_and_count() {
        let mut r = Registry::default();
        let lat = key("lat", &[("service", "a")]);
        let bounds = [0.1, 0.2, 0.4];
        for v in [0.05, 0.1, 0.15, 0.3, 7.0] {
            r.observe(&lat, &bounds, v, 1_000);
        }
        r.add(&key("calls_total", &[]), 5.0, 1_000);
        let out = r.samples(0, 15_000, 2, &|_| bounds.to_vec());
        assert_eq!(
            value(&out, "lat_bucket", Some("0.1")),
            2.0,
            "le is inclusive"
        );
        assert_eq!(value(&out, "lat_bucket", Some("0.2")), 3.0);
        assert_eq!(value(&out, "lat_bucket", Some("0.4")), 4.0);
        assert_eq!(value(&out, "lat_bucket", Some("+Inf")), 5.0);
        assert_eq!(value(&out, "lat_count", None), 5.0);
        assert!((value(&out, "lat_sum", None) - 7.6).abs() < 1e-12);
        assert_eq!(value(&out, "calls_total", None), 5.0);
        let s = &out[0].series[0];
        assert_eq!(s.labels.get(PARTITION_LABEL).map(String::as_str), Some("2"));
        assert_eq!(
            s.timestamps_ms,
            vec![0, 15_000],
            "a new series starts from zero"
        );
        assert_eq!(s.values[0], 0.0);
        let again = r.samples(15_000, 30_000, 2, &|_| bounds.to_vec());
        assert_eq!(again[0].series[0].timestamps_ms, vec![30_000]);
    }

    #[test]
    fn a_series_stored_under_its_owned_key_is_found_by_its_borrowed_parts() {
        let mut r = Registry::default();
        let labels = [("a", "1"), ("b", "2")];
        let by_ref = key("x_total", &labels);
        r.add(&by_ref, 1.0, 1_000);
        // A restored registry's keys were built from owned strings, not from a lookup.
        let mut r = Registry::restore(r.snapshot());
        let (a, b) = (String::from("a"), String::from("2"));
        let built_apart = [(a.as_str(), "1"), ("b", b.as_str())];
        r.add(&key("x_total", &built_apart), 2.0, 1_000);
        r.add(&by_ref, 4.0, 1_000);
        assert_eq!(r.len(), 1, "one series whichever way it is named");
        assert_eq!(r.counter(&by_ref), Some(7.0));
        // The same characters split differently ("" "a1" "b" "2" against "a" "1" "b"
        // "2") are another series: each string's end is part of the hash and the match.
        let other = [("", "a1"), ("b", "2")];
        r.add(
            &SeriesRef {
                labels: &other,
                ..by_ref
            },
            1.0,
            1_000,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r.counter(&by_ref), Some(7.0));
    }

    #[test]
    fn samples_and_snapshots_come_out_in_key_order_whatever_the_insertion_order() {
        let names = ["c_total", "a_total", "b_total", "e_total", "d_total"];
        let mut forward = Registry::default();
        let mut backward = Registry::default();
        for n in names {
            forward.add(&key(n, &[]), 1.0, 1_000);
        }
        for n in names.iter().rev() {
            backward.add(&key(n, &[]), 1.0, 1_000);
        }
        let written = |r: &mut Registry| -> Vec<String> {
            r.samples(0, 15_000, 0, &|_| vec![])
                .iter()
                .flat_map(|b| b.series.iter().map(|s| s.name.clone()))
                .collect()
        };
        let sorted = vec!["a_total", "b_total", "c_total", "d_total", "e_total"];
        assert_eq!(written(&mut forward), sorted);
        assert_eq!(written(&mut backward), sorted);
        let json = |r: &Registry| serde_json::to_string(&r.snapshot()).unwrap();
        assert_eq!(json(&forward), json(&backward));
    }

    #[test]
    fn a_snapshot_restores_the_same_registry_and_stale_series_go() {
        let mut r = Registry::default();
        r.add(&key("a_total", &[]), 1.0, 1_000);
        r.observe(&key("h", &[]), &[1.0], 0.5, 5_000);
        let json = serde_json::to_string(&r.snapshot()).unwrap();
        let back = Registry::restore(serde_json::from_str(&json).unwrap());
        assert_eq!(back, r);
        let mut r = back;
        r.drop_stale(2_000);
        assert_eq!(r.len(), 1);
        assert_eq!(r.counter(&key("a_total", &[])), None);
    }
}
