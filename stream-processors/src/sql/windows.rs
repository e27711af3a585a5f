//! Event-time windows of a streaming SQL query: which windows a record belongs to
//! (tumbling, or hopping when the hop is shorter than the window), the records each open
//! window holds, and which windows are due once event time (the watermark: the newest time
//! minus the allowed lateness, see [`crate::window`]) has passed their end. A record whose
//! every window was already evaluated is late: counted, not used.
//!
//! The query's SQL is then run over each due window's records ([`evaluate`]), with the
//! window's bounds as columns and the rows in a fixed order, so evaluating the same records
//! again gives the same rows (what makes a restart harmless for a replacing table).

use std::collections::BTreeMap;

use anyhow::bail;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::col;

use super::tables::Rows;

/// Window length and hop of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Window length, ms.
    pub size_ms: i64,
    /// Distance between window starts, ms (the length for tumbling windows).
    pub hop_ms: i64,
}

impl WindowSpec {
    /// Checks that both are positive and the length a multiple of the hop.
    pub fn new(size_ms: i64, hop_ms: i64) -> anyhow::Result<WindowSpec> {
        if size_ms <= 0 || hop_ms <= 0 {
            bail!("window and hop must be positive (got {size_ms} ms and {hop_ms} ms)");
        }
        if size_ms % hop_ms != 0 {
            bail!("the window ({size_ms} ms) must be a multiple of the hop ({hop_ms} ms)");
        }
        Ok(WindowSpec { size_ms, hop_ms })
    }

    /// Starts of the windows holding time `t_ms`, earliest first (epoch-aligned).
    pub fn starts(&self, t_ms: i64) -> impl Iterator<Item = i64> + '_ {
        let last = t_ms.div_euclid(self.hop_ms) * self.hop_ms;
        let n = self.size_ms / self.hop_ms;
        (0..n).rev().map(move |k| last - k * self.hop_ms)
    }
}

/// The open windows of one query.
#[derive(Debug)]
pub struct Windows {
    spec: WindowSpec,
    /// Records per window start.
    open: BTreeMap<i64, Rows>,
    /// The latest window end evaluated: windows ending at or before it are done.
    done_until_ms: i64,
    late: u64,
    empty: Rows,
}

impl Windows {
    /// No window open; windows ending at or before `done_until_ms` count as evaluated (a
    /// restart's checkpoint; `i64::MIN` for none), `empty` the records' shape.
    pub fn new(spec: WindowSpec, empty: Rows, done_until_ms: i64) -> Windows {
        Windows {
            spec,
            open: BTreeMap::new(),
            done_until_ms,
            late: 0,
            empty,
        }
    }

    /// Adds records to their windows; returns how many were late (in no open window).
    pub fn add(&mut self, records: &Rows) -> u64 {
        let mut late = 0;
        for (i, t) in records.times_ms().into_iter().enumerate() {
            let mut used = false;
            for start in self.spec.starts(t) {
                if start + self.spec.size_ms <= self.done_until_ms {
                    continue;
                }
                used = true;
                self.open
                    .entry(start)
                    .or_insert_with(|| self.empty.clone())
                    .push_from(records, i);
            }
            if !used {
                late += 1;
            }
        }
        self.late += late;
        late
    }

    /// The windows whose end is at or before `watermark_ms`, earliest first, with their
    /// records; they count as evaluated from now on.
    pub fn take_due(&mut self, watermark_ms: i64) -> Vec<(i64, i64, Rows)> {
        let mut out = Vec::new();
        while let Some((&start, _)) = self.open.first_key_value() {
            let end = start + self.spec.size_ms;
            if end > watermark_ms {
                break;
            }
            let rows = self.open.remove(&start).expect("the first window");
            self.done_until_ms = self.done_until_ms.max(end);
            out.push((start, end, rows));
        }
        out
    }

    /// Records that came after their windows were evaluated.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The latest window end evaluated (for checkpoints).
    pub fn done_until_ms(&self) -> i64 {
        self.done_until_ms
    }

    /// The earliest start of an open window: the input from that time on is still needed.
    pub fn needed_from_ms(&self) -> Option<i64> {
        self.open.keys().next().copied()
    }
}

/// Runs `sql` over one window's records (the table `records`) and returns its rows with
/// `window_start_ms` and `window_end_ms` first, sorted by every column so that the same
/// records always give the same rows in the same order.
pub async fn evaluate(
    sql: &str,
    (start_ms, end_ms): (i64, i64),
    rows: &Rows,
) -> anyhow::Result<Vec<RecordBatch>> {
    let df = super::plan(rows.to_batch()?, sql).await?;
    let order: Vec<_> = df
        .schema()
        .fields()
        .iter()
        .map(|f| col(format!("\"{}\"", f.name())).sort(true, true))
        .collect();
    let batches = df.sort(order)?.collect().await?;
    batches
        .into_iter()
        .map(|b| with_window(b, start_ms, end_ms))
        .collect()
}

/// `b` with the window's bounds as its first two columns.
fn with_window(b: RecordBatch, start_ms: i64, end_ms: i64) -> anyhow::Result<RecordBatch> {
    let n = b.num_rows();
    let mut fields = vec![
        Field::new("window_start_ms", DataType::Int64, false),
        Field::new("window_end_ms", DataType::Int64, false),
    ];
    fields.extend(b.schema().fields().iter().map(|f| f.as_ref().clone()));
    let mut columns: Vec<std::sync::Arc<dyn datafusion::arrow::array::Array>> = vec![
        std::sync::Arc::new(Int64Array::from(vec![start_ms; n])),
        std::sync::Arc::new(Int64Array::from(vec![end_ms; n])),
    ];
    columns.extend(b.columns().iter().cloned());
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use obs_schemas::records::LogRecord;

    const MIN: i64 = 60_000;

    fn logs(times_ms: &[i64]) -> Rows {
        Rows::Logs(
            times_ms
                .iter()
                .enumerate()
                .map(|(i, &t)| LogRecord {
                    timestamp_ns: t * 1_000_000,
                    service: format!("svc-{}", i % 2),
                    severity_number: if i % 3 == 0 { 17 } else { 9 },
                    ..Default::default()
                })
                .collect(),
        )
    }

    #[test]
    fn hopping_windows_hold_a_record_in_each_window_around_it() {
        let spec = WindowSpec::new(5 * MIN, MIN).unwrap();
        let starts: Vec<i64> = spec.starts(7 * MIN + 1).collect();
        assert_eq!(starts, vec![3 * MIN, 4 * MIN, 5 * MIN, 6 * MIN, 7 * MIN]);
        let tumbling = WindowSpec::new(MIN, MIN).unwrap();
        assert_eq!(tumbling.starts(MIN - 1).collect::<Vec<_>>(), vec![0]);
        assert_eq!(tumbling.starts(-1).collect::<Vec<_>>(), vec![-MIN]);
        assert!(WindowSpec::new(5 * MIN, 2 * MIN).is_err());
        assert!(WindowSpec::new(0, MIN).is_err());
    }

    #[test]
    fn windows_are_due_at_the_watermark_and_later_records_are_late() {
        let spec = WindowSpec::new(MIN, MIN).unwrap();
        let mut w = Windows::new(spec, Rows::Logs(Vec::new()), i64::MIN);
        let times = [1_000, 30_000, MIN + 5, 2 * MIN + 7];
        assert_eq!(w.add(&logs(&times)), 0);
        assert!(w.take_due(MIN - 1).is_empty());
        let due = w.take_due(MIN + 10);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0, due[0].1, due[0].2.len()), (0, MIN, 2));
        assert_eq!(w.needed_from_ms(), Some(MIN));
        // A record for the evaluated minute is late; one for an open minute is not.
        let more = [59_000, MIN + 9];
        assert_eq!(w.add(&logs(&more)), 1);
        assert_eq!(w.late(), 1);
        let due = w.take_due(3 * MIN);
        assert_eq!(
            due.iter().map(|d| (d.0, d.2.len())).collect::<Vec<_>>(),
            vec![(MIN, 2), (2 * MIN, 1)]
        );
        assert_eq!(w.done_until_ms(), 3 * MIN);
        // After a restart from that frontier, records of done windows are late.
        let mut again = Windows::new(spec, Rows::Logs(Vec::new()), w.done_until_ms());
        assert_eq!(again.add(&logs(&times)), 4);
    }

    #[tokio::test]
    async fn a_window_evaluates_to_the_same_sorted_rows_with_its_bounds() {
        let times: Vec<i64> = (0..12).map(|i| i * 1_000).collect();
        let rows = logs(&times);
        let sql = "SELECT service, count(*) AS errors FROM records \
                   WHERE severity_number >= 17 GROUP BY service";
        let out = evaluate(sql, (0, MIN), &rows).await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&out)
            .unwrap()
            .to_string();
        // Errors at i = 0, 3, 6, 9: svc-0 (0, 6), svc-1 (3, 9), sorted by service.
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("svc-")).collect();
        assert_eq!(
            lines,
            vec![
                "| 0               | 60000         | svc-0   | 2      |",
                "| 0               | 60000         | svc-1   | 2      |"
            ],
            "{text}"
        );
        let err = evaluate("SELECT nope FROM records", (0, MIN), &rows)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
