use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Attrs;

/// Value of `obs.metrics`: series of one partition, each label set once with its samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MetricBatch {
    /// The series with their samples.
    pub series: Vec<MetricSeries>,
    /// Descriptions of metric families (type, help, unit), sent when the client sends them.
    #[serde(default)]
    pub metadata: Vec<MetricMetadata>,
}

/// What a metric family is: its type, help text and unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MetricMetadata {
    /// Tenant the family belongs to.
    pub tenant: String,
    /// Metric family name.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`, `stateset` or
    /// `unknown`.
    pub kind: String,
    /// Help text.
    pub help: String,
    /// Unit.
    pub unit: String,
}

/// One series and its samples in column form (timestamps and values side by side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MetricSeries {
    /// [`crate::fingerprint`] of tenant, name and labels.
    pub fingerprint: i64,
    /// The `__name__` label.
    pub name: String,
    /// All labels except `__name__`.
    pub labels: Attrs,
    /// `gauge`, `counter`, `histogram`, `summary` or `unknown`.
    pub kind: String,
    /// Sample times, ms since the Unix epoch.
    pub timestamps_ms: Vec<i64>,
    /// Sample values, one per timestamp.
    pub values: Vec<f64>,
    /// Native histogram points converted to classic buckets.
    pub histograms: Vec<HistogramPoint>,
    /// Exemplars attached to the series.
    pub exemplars: Vec<Exemplar>,
    /// Tenant the series belongs to.
    pub tenant: String,
}

/// A histogram observation as classic cumulative buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HistogramPoint {
    /// Observation time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Upper bounds, ascending, without `+Inf`.
    pub bounds: Vec<f64>,
    /// Cumulative counts per bound, then the `+Inf` count.
    pub counts: Vec<i64>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: i64,
}

/// An exemplar: a sample of a trace that contributed to a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Exemplar {
    /// When it was observed, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The observed value.
    pub value: f64,
    /// Exemplar labels (typically `trace_id`, `span_id`).
    pub labels: Attrs,
}

/// The parts of a [`MetricBatch`] that roll samples up, borrowed from the message bytes
/// (decode it from a slice): decoding it copies no string and skips what it leaves out.
/// Why: the rollup processor decodes every `obs.metrics` message, and a full decode was
/// ~9% of `obs`'s CPU under remote write (docs/PERFORMANCE.md, eighth round).
#[derive(Debug, PartialEq, Deserialize, Default)]
pub struct MetricBatchView<'a> {
    /// The series with their samples.
    #[serde(borrow)]
    pub series: Vec<MetricSeriesView<'a>>,
}

/// A [`MetricSeries`] without its kind, histograms and exemplars, its strings borrowed.
#[derive(Debug, PartialEq, Deserialize)]
pub struct MetricSeriesView<'a> {
    /// [`crate::fingerprint`] of tenant, name and labels.
    pub fingerprint: i64,
    /// The `__name__` label.
    pub name: &'a str,
    /// All labels except `__name__`.
    #[serde(borrow)]
    pub labels: BTreeMap<&'a str, &'a str>,
    /// Sample times, ms since the Unix epoch.
    pub timestamps_ms: Vec<i64>,
    /// Sample values, one per timestamp.
    pub values: Vec<f64>,
    /// Tenant the series belongs to.
    pub tenant: &'a str,
}

impl MetricBatch {
    /// This batch as [`MetricBatchView`] shows it (what a decode of its bytes as the view
    /// gives): for tests of code that reads views.
    pub fn view(&self) -> MetricBatchView<'_> {
        MetricBatchView {
            series: self
                .series
                .iter()
                .map(|s| MetricSeriesView {
                    fingerprint: s.fingerprint,
                    name: &s.name,
                    labels: s
                        .labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                    timestamps_ms: s.timestamps_ms.clone(),
                    values: s.values.clone(),
                    tenant: &s.tenant,
                })
                .collect(),
        }
    }
}
