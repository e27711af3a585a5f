//! `obs.metrics` → `metrics_samples`, `metrics_series`, `metrics_metadata` and
//! `metrics_exemplars`.
//!
//! Each table has its own consumer group, so each is exactly-once on its own terms:
//! samples by deduplicated batches; series and metadata by being replacing tables, where
//! a row written twice is harmless. That is what lets the series sink skip series it wrote
//! recently (most remote-write requests carry one sample per series, and writing the label
//! set with each would double the rows stored).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use clickhouse::Row;
use obs_schemas::Topic;
use obs_schemas::records::MetricBatch;
use serde::{Deserialize, Serialize};

use crate::table::{TableSink, TimeColumn, pairs_cloned};

/// The `metrics_samples` sink.
#[derive(Default)]
pub struct MetricSamples;

/// One sample.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SampleRow {
    /// Tenant (shared by the rows of one series: no copy per sample).
    pub tenant: Arc<str>,
    /// `__name__` (shared like the tenant).
    pub metric_name: Arc<str>,
    /// Series fingerprint (joins `metrics_series`).
    pub fingerprint: i64,
    /// ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The value (stale markers kept bit for bit).
    pub value: f64,
}

impl TableSink for MetricSamples {
    type Message = MetricBatch;
    type Row = SampleRow;
    const TOPIC: Topic = Topic::Metrics;
    const TABLE: &'static str = "metrics_samples";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Millis("TimestampMs"));
    const SHARES_DECODE: bool = true;

    fn rows(&mut self, message: Cow<'_, MetricBatch>, out: &mut Vec<SampleRow>) {
        for s in &message.series {
            let (tenant, metric_name): (Arc<str>, Arc<str>) =
                (s.tenant.as_str().into(), s.name.as_str().into());
            for (&ts, &v) in s.timestamps_ms.iter().zip(&s.values) {
                out.push(SampleRow {
                    tenant: tenant.clone(),
                    metric_name: metric_name.clone(),
                    fingerprint: s.fingerprint,
                    timestamp_ms: ts,
                    value: v,
                });
            }
        }
    }

    fn row_time_ns(row: &SampleRow) -> Option<i64> {
        Some(row.timestamp_ms.saturating_mul(1_000_000))
    }

    fn late_from_ms(rows: &[SampleRow], before_ms: i64) -> BTreeMap<String, i64> {
        let mut late = BTreeMap::new();
        for r in rows.iter().filter(|r| r.timestamp_ms < before_ms) {
            match late.get_mut(&*r.tenant) {
                Some(from) => *from = r.timestamp_ms.min(*from),
                None => {
                    late.insert(r.tenant.to_string(), r.timestamp_ms);
                }
            }
        }
        late
    }
}

/// The `metrics_exemplars` sink.
#[derive(Default)]
pub struct MetricExemplars;

/// One exemplar of a series.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExemplarRow {
    /// Tenant.
    pub tenant: String,
    /// `__name__` of the series.
    pub metric_name: String,
    /// Series fingerprint (joins `metrics_series`).
    pub fingerprint: i64,
    /// ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The observed value.
    pub value: f64,
    /// The exemplar's labels.
    pub labels: Vec<(String, String)>,
    /// The trace it points to (from its labels), or empty.
    pub trace_id: String,
    /// The span it points to (from its labels), or empty.
    pub span_id: String,
}

/// Exemplar label names that carry a trace id, and span id, as instrumentations write them.
const TRACE_ID_LABELS: [&str; 4] = ["trace_id", "traceID", "trace.id", "traceId"];
const SPAN_ID_LABELS: [&str; 4] = ["span_id", "spanID", "span.id", "spanId"];

impl TableSink for MetricExemplars {
    type Message = MetricBatch;
    type Row = ExemplarRow;
    const TOPIC: Topic = Topic::Metrics;
    const TABLE: &'static str = "metrics_exemplars";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Millis("TimestampMs"));
    // `metrics_samples` sends the topic's undecodable messages to the DLQ.
    const DEAD_LETTERS_UNDECODABLE: bool = false;
    const SHARES_DECODE: bool = true;

    fn rows(&mut self, message: Cow<'_, MetricBatch>, out: &mut Vec<ExemplarRow>) {
        for s in &message.series {
            for e in &s.exemplars {
                let find = |names: &[&str]| {
                    names
                        .iter()
                        .find_map(|n| e.labels.get(*n))
                        .cloned()
                        .unwrap_or_default()
                };
                out.push(ExemplarRow {
                    tenant: s.tenant.clone(),
                    metric_name: s.name.clone(),
                    fingerprint: s.fingerprint,
                    timestamp_ms: e.timestamp_ms,
                    value: e.value,
                    trace_id: find(&TRACE_ID_LABELS),
                    span_id: find(&SPAN_ID_LABELS),
                    labels: pairs_cloned(&e.labels),
                });
            }
        }
    }

    fn row_time_ns(row: &ExemplarRow) -> Option<i64> {
        Some(row.timestamp_ms.saturating_mul(1_000_000))
    }
}

/// A series is written again once its newest sample is this much newer than the one of
/// its last written row (keeps `LastSeenMs`, and so the series TTL, fresh).
const SERIES_REFRESH_MS: i64 = 10 * 60 * 1000;
/// The kind of a series whose family's metadata its collector has not seen.
const UNKNOWN_KIND: &str = "unknown";

/// Past this many remembered series the memory is cleared (they are then written again).
const SERIES_MEMORY: usize = 2_000_000;

/// The `metrics_series` sink.
#[derive(Default)]
pub struct MetricSeriesTable {
    /// fingerprint → (LastSeenMs written, kind written).
    written: HashMap<i64, (i64, String)>,
}

/// One series: its labels, stored once.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SeriesRow {
    /// Tenant.
    pub tenant: String,
    /// `__name__`.
    pub metric_name: String,
    /// Series fingerprint.
    pub fingerprint: i64,
    /// Labels except `__name__`.
    pub labels: Vec<(String, String)>,
    /// counter, gauge, histogram, summary or unknown.
    pub kind: String,
    /// Newest sample time in the message (the replacing version).
    pub last_seen_ms: i64,
}

impl TableSink for MetricSeriesTable {
    type Message = MetricBatch;
    type Row = SeriesRow;
    const TOPIC: Topic = Topic::Metrics;
    const TABLE: &'static str = "metrics_series";
    const TIME_COLUMN: Option<TimeColumn> = None;
    // It decodes every message to write only the series it has not written lately.
    const SHARES_DECODE: bool = true;

    fn rows(&mut self, message: Cow<'_, MetricBatch>, out: &mut Vec<SeriesRow>) {
        if self.written.len() > SERIES_MEMORY {
            self.written.clear();
        }
        for s in &message.series {
            let last = s.timestamps_ms.iter().copied().max().unwrap_or(0);
            let written = self.written.get(&s.fingerprint);
            // A collector that has not seen the family's metadata says "unknown": behind a
            // load balancer only one collector gets each metadata request, so "unknown"
            // never replaces a kind another collector knew (nor counts as a change).
            let kind: &str = match written {
                Some((_, known)) if s.kind == UNKNOWN_KIND => known,
                _ => &s.kind,
            };
            if let Some((written, written_kind)) = written
                && written_kind == kind
                && last < written + SERIES_REFRESH_MS
            {
                continue;
            }
            let kind = kind.to_string();
            self.written.insert(s.fingerprint, (last, kind.clone()));
            out.push(SeriesRow {
                tenant: s.tenant.clone(),
                metric_name: s.name.clone(),
                fingerprint: s.fingerprint,
                labels: pairs_cloned(&s.labels),
                kind,
                last_seen_ms: last,
            });
        }
    }

    fn row_time_ns(_: &SeriesRow) -> Option<i64> {
        None
    }

    /// A series row written late may be a label set the samples of any earlier time need
    /// (its samples can come in other messages, earlier ones too): from any time.
    fn late_from_ms(rows: &[SeriesRow], before_ms: i64) -> BTreeMap<String, i64> {
        rows.iter()
            .filter(|r| r.last_seen_ms < before_ms)
            .map(|r| (r.tenant.clone(), i64::MIN))
            .collect()
    }
}

/// The `metrics_metadata` sink.
#[derive(Default)]
pub struct MetricMetadataTable;

/// One metric family's description.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetadataRow {
    /// Tenant.
    pub tenant: String,
    /// Family name.
    pub metric_family: String,
    /// Type.
    pub kind: String,
    /// Help text.
    pub help: String,
    /// Unit.
    pub unit: String,
}

impl TableSink for MetricMetadataTable {
    type Message = MetricBatch;
    type Row = MetadataRow;
    const TOPIC: Topic = Topic::Metrics;
    const TABLE: &'static str = "metrics_metadata";
    const TIME_COLUMN: Option<TimeColumn> = None;
    const SHARES_DECODE: bool = true;

    fn rows(&mut self, message: Cow<'_, MetricBatch>, out: &mut Vec<MetadataRow>) {
        out.extend(message.metadata.iter().map(|m| MetadataRow {
            tenant: m.tenant.clone(),
            metric_family: m.name.clone(),
            kind: m.kind.clone(),
            help: m.help.clone(),
            unit: m.unit.clone(),
        }));
    }

    fn row_time_ns(_: &MetadataRow) -> Option<i64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use obs_schemas::records::MetricSeries;

    #[test]
    fn late_samples_are_recorded_per_tenant_from_their_earliest_time() {
        let row = |tenant: &str, timestamp_ms| SampleRow {
            tenant: tenant.into(),
            metric_name: "up".into(),
            fingerprint: 1,
            timestamp_ms,
            value: 1.0,
        };
        let rows = [row("a", 500), row("b", 900), row("a", 300), row("a", 1_000)];
        let late = MetricSamples::late_from_ms(&rows, 1_000);
        assert_eq!(late, BTreeMap::from([("a".into(), 300), ("b".into(), 900)]));
    }

    fn batch(fp: i64, ts: &[i64]) -> MetricBatch {
        MetricBatch {
            series: vec![MetricSeries {
                fingerprint: fp,
                name: "up".into(),
                kind: "gauge".into(),
                timestamps_ms: ts.to_vec(),
                values: ts.iter().map(|_| 1.0).collect(),
                tenant: "t".into(),
                ..Default::default()
            }],
            metadata: vec![],
        }
    }

    #[test]
    fn every_sample_is_a_row() {
        let mut out = vec![];
        MetricSamples.rows(Cow::Owned(batch(7, &[1, 2, 3])), &mut out);
        let got: Vec<(i64, i64)> = out
            .iter()
            .map(|r| (r.fingerprint, r.timestamp_ms))
            .collect();
        assert_eq!(got, vec![(7, 1), (7, 2), (7, 3)]);
    }

    #[test]
    fn series_are_written_again_only_when_stale_or_changed() {
        let mut t = MetricSeriesTable::default();
        let mut out = vec![];
        t.rows(Cow::Owned(batch(7, &[1_000])), &mut out);
        t.rows(Cow::Owned(batch(7, &[2_000])), &mut out);
        assert_eq!(out.len(), 1);
        t.rows(Cow::Owned(batch(7, &[1_000 + SERIES_REFRESH_MS])), &mut out);
        assert_eq!(out.len(), 2);
        let mut b = batch(7, &[1_000 + SERIES_REFRESH_MS + 1]);
        b.series[0].kind = "counter".into();
        t.rows(Cow::Owned(b), &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn a_collector_without_the_metadata_does_not_unset_a_known_kind() {
        let mut t = MetricSeriesTable::default();
        let mut out = vec![];
        let with = |kind: &str, ts: i64| {
            let mut b = batch(7, &[ts]);
            b.series[0].kind = kind.into();
            b
        };
        t.rows(Cow::Owned(with("counter", 1_000)), &mut out);
        // Another collector, which got no metadata request, says "unknown".
        t.rows(Cow::Owned(with(UNKNOWN_KIND, 2_000)), &mut out);
        assert_eq!(out.len(), 1, "not a change");
        t.rows(
            Cow::Owned(with(UNKNOWN_KIND, 2_000 + SERIES_REFRESH_MS)),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].kind, "counter", "the refresh keeps the known kind");
        t.rows(
            Cow::Owned(with("gauge", 3_000 + SERIES_REFRESH_MS)),
            &mut out,
        );
        assert_eq!(out[2].kind, "gauge", "a real change is written");
    }
}
