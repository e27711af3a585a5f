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

use obs_schemas::records::{Attrs, MetricSeries};
use obs_schemas::series_fingerprint;

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

/// Whether `s` is a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `s` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

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
