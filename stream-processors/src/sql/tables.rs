//! A topic's records as an Arrow table: what SQL over a topic sees.
//!
//! One row per record: a log record (`obs.logs`, `obs.logs.ingest`), a span (`obs.spans`,
//! `obs.spans.sampled`), an event (`obs.events`), a metric sample (`obs.metrics`, with its
//! series' name and labels). Columns are the record's fields by their schema names
//! (`timestamp_ns`, `service`, `attrs`, ...); attribute maps are Arrow maps
//! (`attrs['http.route']`). The conversion is serde_arrow's, from the record types in
//! `obs_schemas`, so a field added there is a column here.

use anyhow::{Context, bail};
use datafusion::arrow::datatypes::FieldRef;
use datafusion::arrow::record_batch::RecordBatch;
use obs_schemas::Topic;
use obs_schemas::records::{
    Attrs, Event, EventBatch, LogBatch, LogRecord, MetricBatch, Span, SpanBatch,
};
use obs_schemas::wire::Codec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_arrow::schema::{SchemaLike, TracingOptions};

/// One metric sample with its series: the row of `obs.metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRow {
    /// Tenant of the series.
    pub tenant: String,
    /// Series fingerprint.
    pub fingerprint: i64,
    /// Metric name.
    pub name: String,
    /// Labels other than the name.
    pub labels: Attrs,
    /// Sample time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Sample value.
    pub value: f64,
}

/// The records of the topics SQL can read, in one of their row shapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    /// Log records.
    Logs(Vec<LogRecord>),
    /// Spans.
    Spans(Vec<Span>),
    /// Events.
    Events(Vec<Event>),
    /// Metric samples.
    Samples(Vec<SampleRow>),
}

impl Rows {
    /// No rows yet, in `topic`'s shape; an error names the topics SQL can read.
    pub fn empty(topic: Topic) -> anyhow::Result<Rows> {
        Ok(match topic {
            Topic::Logs | Topic::LogsIngest => Rows::Logs(Vec::new()),
            Topic::Spans | Topic::SpansSampled => Rows::Spans(Vec::new()),
            Topic::Events => Rows::Events(Vec::new()),
            Topic::Metrics => Rows::Samples(Vec::new()),
            other => bail!(
                "SQL reads obs.logs, obs.logs.ingest, obs.spans, obs.spans.sampled, obs.events and obs.metrics, not {other}"
            ),
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Rows::Logs(r) => r.len(),
            Rows::Spans(r) => r.len(),
            Rows::Events(r) => r.len(),
            Rows::Samples(r) => r.len(),
        }
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes one message of the topic and keeps its records whose own time is in
    /// `[from_ns, to_ns)`; returns how many it left out.
    pub async fn add_message(
        &mut self,
        codec: &Codec,
        payload: &[u8],
        (from_ns, to_ns): (i64, i64),
    ) -> anyhow::Result<usize> {
        let inside = |t: i64| t >= from_ns && t < to_ns;
        let before = self.len();
        let mut offered = 0;
        match self {
            Rows::Logs(rows) => {
                let b: LogBatch = decode(codec, payload).await?;
                offered = b.records.len();
                rows.extend(b.records.into_iter().filter(|r| inside(r.timestamp_ns)));
            }
            Rows::Spans(rows) => {
                let b: SpanBatch = decode(codec, payload).await?;
                offered = b.spans.len();
                rows.extend(b.spans.into_iter().filter(|s| inside(s.start_ns)));
            }
            Rows::Events(rows) => {
                let b: EventBatch = decode(codec, payload).await?;
                offered = b.events.len();
                rows.extend(b.events.into_iter().filter(|e| inside(e.timestamp_ns)));
            }
            Rows::Samples(rows) => {
                let b: MetricBatch = decode(codec, payload).await?;
                for s in b.series {
                    offered += s.timestamps_ms.len();
                    for (&t, &value) in s.timestamps_ms.iter().zip(&s.values) {
                        if inside(t.saturating_mul(1_000_000)) {
                            rows.push(SampleRow {
                                tenant: s.tenant.clone(),
                                fingerprint: s.fingerprint,
                                name: s.name.clone(),
                                labels: s.labels.clone(),
                                timestamp_ms: t,
                                value,
                            });
                        }
                    }
                }
            }
        }
        Ok(offered - (self.len() - before))
    }

    /// Each record's own time, ms since the epoch (logs and events: their time; spans:
    /// their start; samples: theirs).
    pub fn times_ms(&self) -> Vec<i64> {
        match self {
            Rows::Logs(r) => r
                .iter()
                .map(|x| x.timestamp_ns.div_euclid(1_000_000))
                .collect(),
            Rows::Spans(r) => r.iter().map(|x| x.start_ns.div_euclid(1_000_000)).collect(),
            Rows::Events(r) => r
                .iter()
                .map(|x| x.timestamp_ns.div_euclid(1_000_000))
                .collect(),
            Rows::Samples(r) => r.iter().map(|x| x.timestamp_ms).collect(),
        }
    }

    /// Appends a copy of record `i` of `other`, which has the same shape.
    pub fn push_from(&mut self, other: &Rows, i: usize) {
        match (self, other) {
            (Rows::Logs(a), Rows::Logs(b)) => a.push(b[i].clone()),
            (Rows::Spans(a), Rows::Spans(b)) => a.push(b[i].clone()),
            (Rows::Events(a), Rows::Events(b)) => a.push(b[i].clone()),
            (Rows::Samples(a), Rows::Samples(b)) => a.push(b[i].clone()),
            _ => unreachable!("records of one query have one shape"),
        }
    }

    /// The rows as one Arrow record batch.
    pub fn to_batch(&self) -> anyhow::Result<RecordBatch> {
        match self {
            Rows::Logs(r) => batch(r),
            Rows::Spans(r) => batch(r),
            Rows::Events(r) => batch(r),
            Rows::Samples(r) => batch(r),
        }
    }
}

async fn decode<T: DeserializeOwned>(codec: &Codec, payload: &[u8]) -> anyhow::Result<T> {
    codec
        .decode(payload)
        .await
        .map_err(|e| anyhow::anyhow!("decoding a message: {e}"))
}

/// Rows of a serde type as a record batch, its schema traced from the type (maps as Arrow
/// maps, so attribute keys are values rather than columns; strings as `Utf8`, which SQL
/// literals are).
fn batch<T: Serialize + DeserializeOwned>(rows: &[T]) -> anyhow::Result<RecordBatch> {
    let fields: Vec<FieldRef> = Vec::<FieldRef>::from_type::<T>(
        TracingOptions::default()
            .map_as_struct(false)
            .strings_as_large_utf8(false)
            .sequence_as_large_list(false)
            .allow_null_fields(true),
    )
    .context("the Arrow schema of the records")?;
    serde_arrow::to_record_batch(&fields, &rows).context("records to Arrow")
}

/// A batch's schema, for messages and tests.
pub fn column_names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_records_are_a_table_datafusion_queries() {
        let mut attrs = Attrs::new();
        attrs.insert("http.route".into(), "/checkout".into());
        let logs: Vec<LogRecord> = (0..10)
            .map(|i| LogRecord {
                timestamp_ns: i * 1_000_000_000,
                severity_number: if i % 3 == 0 { 17 } else { 9 },
                service: format!("svc-{}", i % 2),
                attrs: attrs.clone(),
                ..Default::default()
            })
            .collect();
        let b = Rows::Logs(logs).to_batch().unwrap();
        assert_eq!(b.num_rows(), 10);
        assert!(column_names(&b).contains(&"timestamp_ns".to_string()));
        let out = crate::sql::plan(
            b,
            "SELECT service, count(*) AS n FROM records \
             WHERE severity_number >= 17 AND attrs['http.route'] = '/checkout' \
             GROUP BY service ORDER BY service",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&out)
            .unwrap()
            .to_string();
        // Errors at i = 0, 3, 6, 9: svc-0 (0, 6), svc-1 (3, 9).
        assert!(text.contains("| svc-0   | 2 |"), "{text}");
        assert!(text.contains("| svc-1   | 2 |"), "{text}");
        // Read-only: no files written, no tables made.
        let b = Rows::Logs(Vec::new()).to_batch().unwrap();
        for sql in [
            "COPY (SELECT 1) TO '/tmp/obs-sql-copy.csv'",
            "CREATE TABLE t AS SELECT 1",
            "SET datafusion.execution.batch_size = 1",
        ] {
            assert!(crate::sql::plan(b.clone(), sql).await.is_err(), "{sql}");
        }
    }
}
