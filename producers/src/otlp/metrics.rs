//! OTLP metrics → the same [`MetricSeries`] Prometheus metrics become.
//!
//! Names and labels as Prometheus translates OTLP: invalid characters become `_`, a
//! monotonic sum gets `_total`; `service.namespace`/`service.name` become `job` and
//! `service.instance.id` becomes `instance`, and each resource is also a `target_info`
//! series (value 1) carrying all its attributes; the scope is `otel_scope_name` and
//! `otel_scope_version`. Gauges and cumulative sums are samples; delta sums and delta
//! histograms are accumulated per series (`DeltaTotals`) into cumulative ones; histograms
//! are classic buckets, exponential histograms converted to them (cumulative only: a delta
//! exponential histogram is refused with what to change); summaries are `quantile` series.
//! A point flagged "no recorded value" is a Prometheus stale marker.

use std::collections::HashMap;
use std::sync::Mutex;

use obs_schemas::records::{Attrs, Exemplar, MetricMetadata, MetricSeries};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    self as pb, AggregationTemporality, metric::Data, number_data_point,
};

use super::values::attrs;
use crate::error::CollectorError;
use crate::metrics::native::Exponential;
use crate::metrics::{STALE_NAN_BITS, SeriesSet, classic_histogram, format_float};

const NO_RECORDED_VALUE: u32 = 1;

/// Running totals of delta series, so they can be stored as cumulative ones. Per process:
/// after a restart totals start again at 0, which `rate()` reads as a counter reset.
#[derive(Default)]
pub struct DeltaTotals {
    totals: Mutex<HashMap<i64, f64>>,
}

impl DeltaTotals {
    fn add(&self, fingerprint: i64, delta: f64) -> f64 {
        let mut t = self.totals.lock().expect("delta totals lock");
        let v = t.entry(fingerprint).or_insert(0.0);
        *v += delta;
        *v
    }
}

/// A label name as Prometheus writes OTLP attribute names (`http.method` → `http_method`).
pub use obs_runtime::labels::sanitize_label_name as sanitize;

fn metric_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Attributes as labels; names that collide after sanitising are joined with `;`.
fn labels(base: &Attrs, attributes: &Attrs) -> Attrs {
    let mut out = base.clone();
    for (k, v) in attributes {
        if v.is_empty() {
            continue;
        }
        let k = sanitize(k);
        out.entry(k)
            .and_modify(|old| {
                old.push(';');
                old.push_str(v)
            })
            .or_insert_with(|| v.clone());
    }
    out
}

/// One sample to append.
#[derive(Clone, Copy)]
struct Point {
    ts_ns: u64,
    value: f64,
    /// The value is a delta to add to the series' running total.
    delta: bool,
    /// No recorded value: a stale marker.
    stale: bool,
}

/// Collects series by fingerprint for one request, turning deltas into running totals.
struct Out<'a> {
    tenant: &'a str,
    set: SeriesSet,
    deltas: &'a DeltaTotals,
}

impl Out<'_> {
    /// Appends a sample; with `delta`, the running total instead of the value.
    fn push(&mut self, name: String, labels: Attrs, kind: &str, p: Point) -> &mut MetricSeries {
        let s = self.set.get(self.tenant, name, labels, kind);
        let v = if p.stale {
            f64::from_bits(STALE_NAN_BITS)
        } else if p.delta {
            self.deltas.add(s.fingerprint, p.value)
        } else {
            p.value
        };
        s.timestamps_ms.push((p.ts_ns / 1_000_000) as i64);
        s.values.push(v);
        s
    }

    /// Appends a classic histogram sample (see [`classic_histogram`]).
    fn push_histogram(
        &mut self,
        name: &str,
        labels: &Attrs,
        cumulative: impl IntoIterator<Item = (f64, f64)>,
        (count, sum): (f64, Option<f64>),
        at: Point,
    ) {
        for (series_name, l, value) in classic_histogram(name, labels, cumulative, count, sum) {
            self.push(series_name, l, "histogram", Point { value, ..at });
        }
    }
}

fn exemplars(list: &[pb::Exemplar]) -> Vec<Exemplar> {
    list.iter()
        .map(|e| {
            let mut l = attrs(&e.filtered_attributes);
            if !e.trace_id.is_empty() {
                l.insert("trace_id".into(), hex::encode(&e.trace_id));
            }
            if !e.span_id.is_empty() {
                l.insert("span_id".into(), hex::encode(&e.span_id));
            }
            Exemplar {
                timestamp_ms: (e.time_unix_nano / 1_000_000) as i64,
                value: match e.value {
                    Some(pb::exemplar::Value::AsDouble(d)) => d,
                    Some(pb::exemplar::Value::AsInt(i)) => i as f64,
                    None => 0.0,
                },
                labels: l,
            }
        })
        .collect()
}

fn number(p: &pb::NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

/// Normalises a request of `tenant` into series and family metadata.
pub fn normalise(
    req: ExportMetricsServiceRequest,
    tenant: &str,
    deltas: &DeltaTotals,
) -> Result<(Vec<MetricSeries>, Vec<MetricMetadata>), CollectorError> {
    let mut out = Out {
        tenant,
        set: SeriesSet::default(),
        deltas,
    };
    let mut metadata: Vec<MetricMetadata> = Vec::new();
    for rm in req.resource_metrics {
        let resource = attrs(&rm.resource.unwrap_or_default().attributes);
        let mut base = Attrs::new();
        if let Some(svc) = resource.get("service.name") {
            let job = match resource.get("service.namespace") {
                Some(ns) if !ns.is_empty() => format!("{ns}/{svc}"),
                _ => svc.clone(),
            };
            base.insert("job".into(), job);
        }
        if let Some(inst) = resource.get("service.instance.id") {
            base.insert("instance".into(), inst.clone());
        }
        let mut newest = 0u64;
        for sm in rm.scope_metrics {
            let scope = sm.scope.unwrap_or_default();
            let mut scope_base = base.clone();
            if !scope.name.is_empty() {
                scope_base.insert("otel_scope_name".into(), scope.name.clone());
            }
            if !scope.version.is_empty() {
                scope_base.insert("otel_scope_version".into(), scope.version.clone());
            }
            for m in sm.metrics {
                let name = metric_name(&m.name);
                if name.is_empty() {
                    return Err(CollectorError::BadRequest("a metric has no name".into()));
                }
                let meta = |family: &str, kind: &str| MetricMetadata {
                    tenant: tenant.to_string(),
                    name: family.to_string(),
                    kind: kind.to_string(),
                    help: m.description.clone(),
                    unit: m.unit.clone(),
                };
                match &m.data {
                    None => {}
                    Some(Data::Gauge(g)) => {
                        metadata.push(meta(&name, "gauge"));
                        for p in &g.data_points {
                            newest = newest.max(p.time_unix_nano);
                            let l = labels(&scope_base, &attrs(&p.attributes));
                            let stale = p.flags & NO_RECORDED_VALUE != 0;
                            let series = out.push(
                                name.clone(),
                                l,
                                "gauge",
                                Point {
                                    ts_ns: p.time_unix_nano,
                                    value: number(p),
                                    delta: false,
                                    stale,
                                },
                            );
                            series.exemplars.extend(exemplars(&p.exemplars));
                        }
                    }
                    Some(Data::Sum(s)) => {
                        let delta =
                            s.aggregation_temporality == AggregationTemporality::Delta as i32;
                        let (series_name, kind) = if s.is_monotonic {
                            let n = if name.ends_with("_total") {
                                name.clone()
                            } else {
                                format!("{name}_total")
                            };
                            (n, "counter")
                        } else {
                            (name.clone(), "gauge")
                        };
                        metadata.push(meta(&series_name, kind));
                        for p in &s.data_points {
                            newest = newest.max(p.time_unix_nano);
                            let l = labels(&scope_base, &attrs(&p.attributes));
                            let stale = p.flags & NO_RECORDED_VALUE != 0;
                            let series = out.push(
                                series_name.clone(),
                                l,
                                kind,
                                Point {
                                    ts_ns: p.time_unix_nano,
                                    value: number(p),
                                    delta,
                                    stale,
                                },
                            );
                            series.exemplars.extend(exemplars(&p.exemplars));
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        let delta =
                            h.aggregation_temporality == AggregationTemporality::Delta as i32;
                        metadata.push(meta(&name, "histogram"));
                        for p in &h.data_points {
                            newest = newest.max(p.time_unix_nano);
                            if p.bucket_counts.len() != p.explicit_bounds.len() + 1
                                && !p.bucket_counts.is_empty()
                            {
                                return Err(CollectorError::BadRequest(format!(
                                    "histogram {} has {} bucket counts for {} bounds; OTLP needs one more count than bounds",
                                    m.name,
                                    p.bucket_counts.len(),
                                    p.explicit_bounds.len()
                                )));
                            }
                            let l = labels(&scope_base, &attrs(&p.attributes));
                            let stale = p.flags & NO_RECORDED_VALUE != 0;
                            let mut running = 0u64;
                            let mut cumulative: Vec<(f64, f64)> = Vec::new();
                            for (le, c) in p
                                .explicit_bounds
                                .iter()
                                .copied()
                                .chain(std::iter::once(f64::INFINITY))
                                .zip(&p.bucket_counts)
                            {
                                // A sum past u64 is no count a client can have made (found
                                // by fuzzing: it wrapped around in release builds).
                                running = running.checked_add(*c).ok_or_else(|| {
                                    CollectorError::BadRequest(format!(
                                        "histogram {} has bucket counts whose sum overflows",
                                        m.name
                                    ))
                                })?;
                                cumulative.push((le, running as f64));
                            }
                            let at = Point {
                                ts_ns: p.time_unix_nano,
                                value: 0.0,
                                delta,
                                stale,
                            };
                            out.push_histogram(&name, &l, cumulative, (p.count as f64, p.sum), at);
                            if !p.exemplars.is_empty() {
                                // Kept on the `+Inf` bucket series.
                                let mut bl = l.clone();
                                bl.insert("le".into(), "+Inf".into());
                                let series =
                                    out.set
                                        .get(tenant, format!("{name}_bucket"), bl, "histogram");
                                series.exemplars.extend(exemplars(&p.exemplars));
                            }
                        }
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        if h.aggregation_temporality == AggregationTemporality::Delta as i32 {
                            return Err(CollectorError::BadRequest(format!(
                                "exponential histogram {} has delta temporality, which is not supported: export it with cumulative temporality (e.g. OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative) or as an explicit-bucket histogram",
                                m.name
                            )));
                        }
                        metadata.push(meta(&name, "histogram"));
                        for p in &h.data_points {
                            if !(-10..=20).contains(&p.scale) {
                                return Err(CollectorError::BadRequest(format!(
                                    "exponential histogram {} has scale {}, outside OTLP's -10..20",
                                    m.name, p.scale
                                )));
                            }
                            newest = newest.max(p.time_unix_nano);
                            let l = labels(&scope_base, &attrs(&p.attributes));
                            let stale = p.flags & NO_RECORDED_VALUE != 0;
                            // OTLP bucket `offset + k` covers (base^(offset+k), base^(offset+k+1)];
                            // Prometheus's index i covers (base^(i-1), base^i].
                            let buckets = |b: &Option<
                                pb::exponential_histogram_data_point::Buckets,
                            >|
                             -> Vec<(i32, f64)> {
                                b.as_ref()
                                    .map(|b| {
                                        b.bucket_counts
                                            .iter()
                                            .enumerate()
                                            .map(|(k, &c)| {
                                                let i = i64::from(b.offset) + k as i64 + 1;
                                                (
                                                    i.clamp(i32::MIN.into(), i32::MAX.into())
                                                        as i32,
                                                    c as f64,
                                                )
                                            })
                                            .collect()
                                    })
                                    .unwrap_or_default()
                            };
                            let exp = Exponential {
                                schema: p.scale,
                                zero_threshold: p.zero_threshold,
                                zero_count: p.zero_count as f64,
                                positive: buckets(&p.positive),
                                negative: buckets(&p.negative),
                                count: p.count as f64,
                                sum: p.sum.unwrap_or(0.0),
                            };
                            let at = Point {
                                ts_ns: p.time_unix_nano,
                                value: 0.0,
                                delta: false,
                                stale,
                            };
                            out.push_histogram(
                                &name,
                                &l,
                                exp.cumulative(),
                                (p.count as f64, p.sum),
                                at,
                            );
                        }
                    }
                    Some(Data::Summary(s)) => {
                        metadata.push(meta(&name, "summary"));
                        for p in &s.data_points {
                            newest = newest.max(p.time_unix_nano);
                            let l = labels(&scope_base, &attrs(&p.attributes));
                            let stale = p.flags & NO_RECORDED_VALUE != 0;
                            for q in &p.quantile_values {
                                let mut ql = l.clone();
                                ql.insert("quantile".into(), format_float(q.quantile));
                                out.push(
                                    name.clone(),
                                    ql,
                                    "summary",
                                    Point {
                                        ts_ns: p.time_unix_nano,
                                        value: q.value,
                                        delta: false,
                                        stale,
                                    },
                                );
                            }
                            out.push(
                                format!("{name}_count"),
                                l.clone(),
                                "summary",
                                Point {
                                    ts_ns: p.time_unix_nano,
                                    value: p.count as f64,
                                    delta: false,
                                    stale,
                                },
                            );
                            out.push(
                                format!("{name}_sum"),
                                l.clone(),
                                "summary",
                                Point {
                                    ts_ns: p.time_unix_nano,
                                    value: p.sum,
                                    delta: false,
                                    stale,
                                },
                            );
                        }
                    }
                }
            }
        }
        if newest > 0 && !base.is_empty() {
            let mut info = base.clone();
            for (k, v) in &resource {
                if !matches!(
                    k.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                ) {
                    info.insert(sanitize(k), v.clone());
                }
            }
            out.push(
                "target_info".into(),
                info,
                "gauge",
                Point {
                    ts_ns: newest,
                    value: 1.0,
                    delta: false,
                    stale: false,
                },
            );
        }
    }
    metadata.sort_by(|a, b| a.name.cmp(&b.name));
    metadata.dedup_by(|a, b| a.name == b.name);
    Ok((out.set.into_series(), metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "shop"),
                        kv("service.instance.id", "i-1"),
                        kv("host.name", "h"),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn point(v: i64, t: u64) -> pb::NumberDataPoint {
        pb::NumberDataPoint {
            attributes: vec![kv("http.method", "GET")],
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsInt(v)),
            ..Default::default()
        }
    }

    #[test]
    fn delta_sums_become_cumulative_counters() {
        let totals = DeltaTotals::default();
        let sum = |v, t| Metric {
            name: "http.requests".into(),
            data: Some(Data::Sum(pb::Sum {
                data_points: vec![point(v, t)],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let (a, meta) = normalise(request(vec![sum(3, 1_000_000_000)]), "t", &totals).unwrap();
        let (b, _) = normalise(request(vec![sum(4, 2_000_000_000)]), "t", &totals).unwrap();
        let s = a.iter().find(|s| s.name == "http_requests_total").unwrap();
        assert_eq!(s.labels["http_method"], "GET");
        assert_eq!(s.labels["job"], "shop");
        assert_eq!(s.labels["instance"], "i-1");
        assert_eq!((s.timestamps_ms[0], s.values[0]), (1000, 3.0));
        let s = b.iter().find(|s| s.name == "http_requests_total").unwrap();
        assert_eq!(s.values[0], 7.0);
        assert_eq!(meta[0].kind, "counter");
        let info = a.iter().find(|s| s.name == "target_info").unwrap();
        assert_eq!(info.labels["host_name"], "h");
    }

    #[test]
    fn histograms_become_cumulative_buckets() {
        let totals = DeltaTotals::default();
        let h = Metric {
            name: "latency".into(),
            data: Some(Data::Histogram(pb::Histogram {
                data_points: vec![pb::HistogramDataPoint {
                    time_unix_nano: 5_000_000,
                    count: 6,
                    sum: Some(12.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![0.5, 1.0],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        };
        let (series, _) = normalise(request(vec![h]), "t", &totals).unwrap();
        let got: Vec<(String, Option<String>, f64)> = series
            .iter()
            .filter(|s| s.name != "target_info")
            .map(|s| (s.name.clone(), s.labels.get("le").cloned(), s.values[0]))
            .collect();
        assert_eq!(
            got,
            vec![
                ("latency_bucket".into(), Some("0.5".into()), 1.0),
                ("latency_bucket".into(), Some("1".into()), 3.0),
                ("latency_bucket".into(), Some("+Inf".into()), 6.0),
                ("latency_count".into(), None, 6.0),
                ("latency_sum".into(), None, 12.5),
            ]
        );
    }

    #[test]
    fn exponential_buckets_use_prometheus_indexes_and_delta_is_refused() {
        let totals = DeltaTotals::default();
        let e = |temporality: AggregationTemporality| Metric {
            name: "size".into(),
            data: Some(Data::ExponentialHistogram(pb::ExponentialHistogram {
                data_points: vec![pb::ExponentialHistogramDataPoint {
                    time_unix_nano: 5_000_000,
                    count: 3,
                    sum: Some(5.0),
                    scale: 0,
                    // OTLP bucket 0 is (1, 2], bucket 1 is (2, 4].
                    positive: Some(pb::exponential_histogram_data_point::Buckets {
                        offset: 0,
                        bucket_counts: vec![1, 2],
                    }),
                    ..Default::default()
                }],
                aggregation_temporality: temporality as i32,
            })),
            ..Default::default()
        };
        let (series, _) = normalise(
            request(vec![e(AggregationTemporality::Cumulative)]),
            "t",
            &totals,
        )
        .unwrap();
        let buckets: Vec<(String, f64)> = series
            .iter()
            .filter(|s| s.name == "size_bucket")
            .map(|s| (s.labels["le"].clone(), s.values[0]))
            .collect();
        assert_eq!(
            buckets,
            vec![("2".into(), 1.0), ("4".into(), 3.0), ("+Inf".into(), 3.0)]
        );
        let err = normalise(
            request(vec![e(AggregationTemporality::Delta)]),
            "t",
            &totals,
        )
        .unwrap_err();
        assert!(err.to_string().contains("cumulative"), "{err}");
    }
}
