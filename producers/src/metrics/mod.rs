//! Metric points from every protocol (remote write, scraping, OTLP) become the same
//! [`MetricSeries`]: a label set sent once with its samples as columns.
//!
//! * `guard`: label limits, the per-tenant cardinality limit, and Prometheus's rules for
//!   out-of-order and duplicate samples.
//! * `native`: exponential-bucket histograms as classic cumulative buckets.
//! * `families`: what kind each metric family is, from the metadata clients send.

pub mod families;
pub mod guard;
pub mod native;

use std::collections::HashMap;

use obs_schemas::records::{Attrs, MetricSeries};
use obs_schemas::series_fingerprint;

/// The NaN bit pattern Prometheus uses to mark a series as stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A series with its fingerprint computed from tenant, name and labels.
pub fn new_series(tenant: &str, name: String, labels: Attrs, kind: String) -> MetricSeries {
    let fingerprint = series_fingerprint(
        tenant,
        &name,
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    MetricSeries {
        fingerprint,
        name,
        labels,
        kind,
        tenant: tenant.to_string(),
        ..Default::default()
    }
}

/// The series of one request or scrape, accumulated by fingerprint in first-seen order, so
/// a label set that appears several times is still one series.
#[derive(Default)]
pub struct SeriesSet {
    series: Vec<MetricSeries>,
    index: HashMap<i64, usize>,
}

impl SeriesSet {
    /// The series of this label set (created without samples the first time).
    pub fn get(
        &mut self,
        tenant: &str,
        name: String,
        labels: Attrs,
        kind: &str,
    ) -> &mut MetricSeries {
        let s = new_series(tenant, name, labels, kind.to_string());
        let i = *self.index.entry(s.fingerprint).or_insert_with(|| {
            self.series.push(s);
            self.series.len() - 1
        });
        &mut self.series[i]
    }

    /// Appends one sample `(ts_ms, value)` to the series of this label set.
    pub fn push(
        &mut self,
        tenant: &str,
        name: String,
        labels: Attrs,
        kind: &str,
        sample: (i64, f64),
    ) -> &mut MetricSeries {
        let s = self.get(tenant, name, labels, kind);
        s.timestamps_ms.push(sample.0);
        s.values.push(sample.1);
        s
    }

    /// The series so far.
    pub fn iter(&self) -> impl Iterator<Item = &MetricSeries> {
        self.series.iter()
    }

    /// The series, in first-seen order.
    pub fn into_series(self) -> Vec<MetricSeries> {
        self.series
    }
}

/// How a classic histogram sample is stored: `<name>_bucket{le}` per cumulative
/// `(upper bound, count)`, `<name>_count`, and `<name>_sum` when known. Every histogram
/// source (native, OTLP explicit and exponential) goes through here.
pub fn classic_histogram(
    name: &str,
    labels: &Attrs,
    cumulative: impl IntoIterator<Item = (f64, f64)>,
    count: f64,
    sum: Option<f64>,
) -> Vec<(String, Attrs, f64)> {
    let mut out: Vec<(String, Attrs, f64)> = cumulative
        .into_iter()
        .map(|(le, c)| {
            let mut l = labels.clone();
            l.insert("le".into(), format_float(le));
            (format!("{name}_bucket"), l, c)
        })
        .collect();
    out.push((format!("{name}_count"), labels.clone(), count));
    if let Some(sum) = sum {
        out.push((format!("{name}_sum"), labels.clone(), sum));
    }
    out
}

pub use obs_runtime::labels::{valid_label_name, valid_metric_name};

/// Prometheus's text for a float label value such as `le` (`+Inf`, `0.25`, `1`).
pub fn format_float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(valid_metric_name("node_cpu_seconds_total"));
        assert!(valid_metric_name("job:rate5m:sum"));
        assert!(!valid_metric_name("1abc"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("__name__"));
        assert!(!valid_label_name("a:b"));
        assert!(!valid_label_name("a-b"));
    }

    #[test]
    fn floats_print_as_prometheus_prints_them() {
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(1e-9), "0.000000001");
    }
}
