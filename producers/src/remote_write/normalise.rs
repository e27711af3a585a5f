//! A `WriteRequest` as [`MetricSeries`] (one per label set, samples as columns) and
//! [`MetricMetadata`].

use obs_schemas::records::{Attrs, Exemplar, MetricMetadata, MetricSeries};

use super::proto::{self, Histogram};
use crate::error::CollectorError;
use crate::metrics::families::Families;
use crate::metrics::native::{Exponential, expand_spans};
use crate::metrics::{SeriesSet, classic_histogram};

/// Remote-write metadata type numbers as our kind names.
fn kind_name(t: i32) -> &'static str {
    match t {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

/// Splits `__name__` off the labels; drops empty values (an empty label is no label).
fn split_labels(labels: Vec<proto::Label>) -> Result<(String, Attrs), CollectorError> {
    let mut name = None;
    let mut attrs = Attrs::new();
    for l in labels {
        if l.name == "__name__" {
            name = Some(l.value);
        } else if l.name.is_empty() {
            return Err(CollectorError::BadRequest(
                "a label has an empty name".into(),
            ));
        } else if !l.value.is_empty() && attrs.insert(l.name.clone(), l.value).is_some() {
            return Err(CollectorError::BadRequest(format!(
                "label {:?} appears twice in one series",
                l.name
            )));
        }
    }
    match name {
        Some(n) if !n.is_empty() => Ok((n, attrs)),
        _ => Err(CollectorError::BadRequest(format!(
            "a series has no __name__ label (labels {attrs:?})"
        ))),
    }
}

/// Normalises a request of `tenant`; learns metadata into `families` first so the kinds of
/// this request's series are known.
pub fn normalise(
    req: proto::WriteRequest,
    tenant: &str,
    families: &Families,
) -> Result<(Vec<MetricSeries>, Vec<MetricMetadata>), CollectorError> {
    let metadata: Vec<MetricMetadata> = req
        .metadata
        .into_iter()
        .map(|m| {
            let kind = kind_name(m.r#type).to_string();
            families.learn(tenant, &m.metric_family_name, &kind);
            MetricMetadata {
                tenant: tenant.to_string(),
                name: m.metric_family_name,
                kind,
                help: m.help,
                unit: m.unit,
            }
        })
        .collect();
    let mut set = SeriesSet::default();
    for ts in req.timeseries {
        let (name, labels) = split_labels(ts.labels)?;
        if !ts.histograms.is_empty() {
            for h in &ts.histograms {
                add_native(&mut set, tenant, &name, &labels, h)?;
            }
        }
        if ts.samples.is_empty() && ts.exemplars.is_empty() {
            continue;
        }
        let kind = families.kind_of(tenant, &name);
        let s = set.get(tenant, name, labels, &kind);
        for sample in ts.samples {
            s.timestamps_ms.push(sample.timestamp);
            s.values.push(sample.value);
        }
        for e in ts.exemplars {
            s.exemplars.push(Exemplar {
                timestamp_ms: e.timestamp,
                value: e.value,
                labels: e.labels.into_iter().map(|l| (l.name, l.value)).collect(),
            });
        }
    }
    Ok((set.into_series(), metadata))
}

/// A native histogram sample as `_bucket{le}`, `_count` and `_sum` samples.
fn add_native(
    set: &mut SeriesSet,
    tenant: &str,
    name: &str,
    labels: &Attrs,
    h: &Histogram,
) -> Result<(), CollectorError> {
    let float = h.count_float.is_some();
    let counts = |spans: &[proto::BucketSpan], deltas: &[i64], floats: &[f64]| {
        let spans: Vec<(i32, u32)> = spans.iter().map(|s| (s.offset, s.length)).collect();
        let absolute: Vec<f64> = if float {
            floats.to_vec()
        } else {
            let mut running = 0i64;
            deltas
                .iter()
                .map(|d| {
                    running += d;
                    running as f64
                })
                .collect()
        };
        expand_spans(&spans, &absolute)
    };
    if !(-4..=8).contains(&h.schema) {
        return Err(CollectorError::BadRequest(format!(
            "native histogram of {name} has schema {}, outside -4..8",
            h.schema
        )));
    }
    let exp = Exponential {
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h
            .zero_count_float
            .or(h.zero_count_int.map(|c| c as f64))
            .unwrap_or(0.0),
        positive: counts(&h.positive_spans, &h.positive_deltas, &h.positive_counts),
        negative: counts(&h.negative_spans, &h.negative_deltas, &h.negative_counts),
        count: h
            .count_float
            .or(h.count_int.map(|c| c as f64))
            .unwrap_or(0.0),
        sum: h.sum,
    };
    for (series_name, l, v) in
        classic_histogram(name, labels, exp.cumulative(), exp.count, Some(exp.sum))
    {
        set.push(tenant, series_name, l, "histogram", (h.timestamp, v));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{BucketSpan, Label, Sample, TimeSeries, WriteRequest};

    fn label(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn series_carry_samples_and_kind_from_metadata() {
        let families = Families::default();
        let req = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![label("__name__", "up"), label("job", "p"), label("x", "")],
                    samples: vec![
                        Sample {
                            value: 1.0,
                            timestamp: 10,
                        },
                        Sample {
                            value: 0.0,
                            timestamp: 20,
                        },
                    ],
                    ..Default::default()
                },
                TimeSeries {
                    labels: vec![label("__name__", "up"), label("job", "p")],
                    samples: vec![Sample {
                        value: 1.0,
                        timestamp: 30,
                    }],
                    ..Default::default()
                },
            ],
            metadata: vec![proto::MetricMetadata {
                r#type: 2,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        };
        let (series, meta) = normalise(req, "t", &families).unwrap();
        assert_eq!(series.len(), 1, "the same label set is one series");
        let s = &series[0];
        assert_eq!(s.name, "up");
        assert_eq!(s.kind, "gauge");
        assert_eq!(s.labels, Attrs::from_iter([("job".into(), "p".into())]));
        assert_eq!(s.timestamps_ms, vec![10, 20, 30]);
        assert_eq!(s.values, vec![1.0, 0.0, 1.0]);
        assert_eq!(meta[0].kind, "gauge");
    }

    #[test]
    fn missing_name_and_duplicate_labels_are_refused() {
        let families = Families::default();
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("job", "p")],
                ..Default::default()
            }],
            metadata: vec![],
        };
        assert!(normalise(req, "t", &families).is_err());
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("__name__", "a"), label("j", "1"), label("j", "2")],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let e = normalise(req, "t", &families).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn native_histograms_become_classic_buckets() {
        let families = Families::default();
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("__name__", "lat"), label("job", "p")],
                histograms: vec![Histogram {
                    count_int: Some(6),
                    sum: 9.5,
                    schema: 0,
                    zero_count_int: Some(1),
                    zero_threshold: 0.001,
                    positive_spans: vec![BucketSpan {
                        offset: 0,
                        length: 2,
                    }],
                    positive_deltas: vec![2, 1], // counts 2, 3
                    timestamp: 100,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let (series, _) = normalise(req, "t", &families).unwrap();
        let got: Vec<(String, Option<String>, f64)> = series
            .iter()
            .map(|s| (s.name.clone(), s.labels.get("le").cloned(), s.values[0]))
            .collect();
        assert_eq!(
            got,
            vec![
                ("lat_bucket".into(), Some("0.001".into()), 1.0),
                ("lat_bucket".into(), Some("1".into()), 3.0),
                ("lat_bucket".into(), Some("2".into()), 6.0),
                ("lat_bucket".into(), Some("+Inf".into()), 6.0),
                ("lat_count".into(), None, 6.0),
                ("lat_sum".into(), None, 9.5),
            ]
        );
        assert!(series.iter().all(|s| s.kind == "histogram"));
    }
}
