//! `obs.metrics.rollup` → `metrics_rollups`: the rollup processor's windows, one row per
//! series, resolution and window (a window written again after a restart replaces itself).

use std::borrow::Cow;

use clickhouse::Row;
use obs_schemas::Topic;
use obs_schemas::records::MetricRollupBatch;
use serde::{Deserialize, Serialize};

use crate::table::{TableSink, TimeColumn};

/// The `metrics_rollups` sink.
#[derive(Default)]
pub struct MetricRollups;

/// One series over one window.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricRollupRow {
    /// Tenant.
    pub tenant: String,
    /// Metric name.
    pub metric_name: String,
    /// Series fingerprint (labels in `metrics_series`).
    pub fingerprint: i64,
    /// Window length, ms.
    pub resolution_ms: i64,
    /// Window start, ms.
    pub window_start_ms: i64,
    /// Samples.
    pub count: i64,
    /// Their sum.
    pub sum: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Earliest.
    pub first: f64,
    /// Its time, ms.
    pub first_timestamp_ms: i64,
    /// Latest.
    pub last: f64,
    /// Its time, ms.
    pub last_timestamp_ms: i64,
    /// Counter increase.
    pub increase: f64,
}

impl TableSink for MetricRollups {
    type Message = MetricRollupBatch;
    type Row = MetricRollupRow;
    const TOPIC: Topic = Topic::MetricsRollup;
    const TABLE: &'static str = "metrics_rollups";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Millis("WindowStartMs"));

    fn rows(&mut self, batch: Cow<'_, MetricRollupBatch>, out: &mut Vec<MetricRollupRow>) {
        let batch = batch.into_owned();
        out.extend(batch.rollups.into_iter().map(|r| MetricRollupRow {
            tenant: r.tenant,
            metric_name: r.name,
            fingerprint: r.fingerprint,
            resolution_ms: r.resolution_ms,
            window_start_ms: r.window_start_ms,
            count: r.count,
            sum: r.sum,
            min: r.min,
            max: r.max,
            first: r.first,
            first_timestamp_ms: r.first_timestamp_ms,
            last: r.last,
            last_timestamp_ms: r.last_timestamp_ms,
            increase: r.increase,
        }));
    }

    fn row_time_ns(row: &MetricRollupRow) -> Option<i64> {
        Some(row.window_start_ms.saturating_mul(1_000_000))
    }
}
