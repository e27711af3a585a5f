//! What PromQL reads from ClickHouse: the series a selector matches and their samples in a
//! time range, as the evaluator's [`SeriesSource`]. Label matching (`=`, `!=`, `=~`, `!~`
//! with bound values and regexes), the tenant, the metric name (the samples table's sort
//! key) and the time bounds are all in the SQL; samples come back ordered by series and
//! time. Windows, functions, aggregations and vector matching run in `obs_promql`.

use std::sync::{Arc, Mutex};

use clickhouse::Row;
use obs_promql::rollup::{Chunk, ChunkSeries};
use obs_promql::{ChunkFuture, EvalError, Labels, RawSeries, SelectFuture, SeriesSource, is_stale};
use promql_parser::parser::VectorSelector;
use serde::Deserialize;

use super::selector::{self, SqlFilter};

/// The metrics tables as a PromQL sample source for one query.
pub struct Storage {
    /// The pipeline's database; `None` plans without reading (explain).
    pub client: Option<clickhouse::Client>,
    /// The tenant every statement is limited to.
    pub tenant: String,
    /// Samples one query may read before it is refused.
    pub max_samples: usize,
    /// Samples read so far (a rollup window counts as one).
    pub samples_read: usize,
    /// Rollup resolutions (ms) range functions may be answered from (`max_source_resolution`).
    pub rollup_resolutions: Vec<i64>,
    /// The statements run (or, for explain, that would run), with values inlined; shared
    /// with the caller, who keeps it after the evaluator is gone.
    pub statements: Arc<Mutex<Vec<String>>>,
}

/// One statement and its bound values.
#[derive(Debug, Clone)]
pub struct Statement {
    /// SQL with `?` placeholders.
    pub sql: String,
    /// Values for the placeholders, in order.
    pub binds: Vec<String>,
}

impl Statement {
    /// The statement with its values inlined as quoted literals, for people to read.
    pub fn display(&self) -> String {
        let mut out = String::with_capacity(self.sql.len() + 64);
        let mut binds = self.binds.iter();
        for c in self.sql.chars() {
            match c {
                '?' => match binds.next() {
                    Some(b) => out.push_str(&quote(b)),
                    None => out.push('?'),
                },
                c => out.push(c),
            }
        }
        out
    }
}

/// `s` as a ClickHouse string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The one statement for a selector over `[from_ms, to_ms]`: each matching series with
/// samples in the range, its labels and its samples as one time-sorted array (one round
/// trip, samples grouped per series in ClickHouse).
pub fn selector_statement(
    vs: &VectorSelector,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Statement, String> {
    samples_statement(vs, tenant, from_ms, to_ms, &[])
}

/// What a selector becomes in SQL: the filter on `metrics_series`, the metric-name
/// condition on a data table (`MetricName = ? AND ` or nothing), and their binds.
struct SelectorParts {
    filter: String,
    name: &'static str,
    name_binds: Vec<String>,
    binds: Vec<String>,
    /// Whether the data table's rows need the series' fingerprints as a filter (not when
    /// `MetricName = ?` alone selects exactly the selector's series).
    filter_data: bool,
}

fn selector_parts(vs: &VectorSelector) -> Result<SelectorParts, String> {
    let SqlFilter { sql, binds } = selector::vector_selector(vs)?;
    let (name, name_binds) = match selector::single_name(vs) {
        Some(n) => ("MetricName = ? AND ", vec![n]),
        None => ("", Vec::new()),
    };
    Ok(SelectorParts {
        filter: sql,
        name,
        name_binds,
        binds,
        filter_data: !selector::name_only(vs),
    })
}

impl SelectorParts {
    /// The condition on a data table's `Fingerprint` for the selector's series (` AND
    /// Fingerprint IN (...)`, or nothing when the metric name selects them), the join that
    /// names them, and the binds of both after the tenant and name of the data table's own.
    /// Leaving the list out saves the engine a read of `metrics_series` (~2-3 ms a statement).
    fn series_filter_and_join(&self, tenant: &str) -> (String, String, Vec<String>) {
        let sql = &self.filter;
        let join = format!(
            "INNER JOIN (SELECT Fingerprint AS fp, any(MetricName) AS name, any(Labels) AS labels \
             FROM metrics_series WHERE Tenant = ? AND {sql} GROUP BY Fingerprint) AS s ON d.fp = s.fp"
        );
        let with_tenant = || [vec![tenant.to_string()], self.binds.clone()].concat();
        if !self.filter_data {
            return (String::new(), join, with_tenant());
        }
        (
            format!(
                " AND Fingerprint IN (SELECT Fingerprint FROM metrics_series WHERE Tenant = ? AND {sql})"
            ),
            join,
            [with_tenant(), with_tenant()].concat(),
        )
    }
}

/// The statement that reads a selector's rollup windows of `res` ms starting in
/// `[from_ms, to_ms]`, per series in time order.
pub fn windows_statement(
    vs: &VectorSelector,
    tenant: &str,
    res: i64,
    from_ms: i64,
    to_ms: i64,
) -> Result<Statement, String> {
    per_series_statement(
        vs,
        tenant,
        "metrics_rollups",
        "windows",
        "WindowStartMs, Count, Sum, Min, Max, FirstTimestampMs, First, LastTimestampMs, Last, Increase",
        &format!(
            "ResolutionMs = {res} AND WindowStartMs >= {from_ms} AND WindowStartMs <= {to_ms}"
        ),
    )
}

/// The statement for the exemplars of a selector's series in `[from_ms, to_ms]`: per
/// series its name, labels and `(ms, value, exemplar labels)` in time order.
pub fn exemplars_statement(
    vs: &VectorSelector,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Statement, String> {
    per_series_statement(
        vs,
        tenant,
        "metrics_exemplars",
        "exemplars",
        "TimestampMs, Value, Labels",
        &format!("TimestampMs >= {from_ms} AND TimestampMs <= {to_ms}"),
    )
}

/// Per series a selector matches: `fp`, `name`, `labels` and, as `alias`, the tuples of
/// `columns` of its rows in `table` that meet `conditions`, ordered by the first column.
fn per_series_statement(
    vs: &VectorSelector,
    tenant: &str,
    table: &str,
    alias: &str,
    columns: &str,
    conditions: &str,
) -> Result<Statement, String> {
    let p = selector_parts(vs)?;
    let (filter, join, binds) = p.series_filter_and_join(tenant);
    let name = p.name;
    Ok(Statement {
        sql: format!(
            "SELECT d.fp AS fp, s.name AS name, s.labels AS labels, d.{alias} AS {alias} \
             FROM (SELECT Fingerprint AS fp, arraySort(r -> r.1, groupArray(({columns}))) AS {alias} \
             FROM {table} WHERE Tenant = ? AND {name}{conditions}{filter} GROUP BY Fingerprint) AS d {join}"
        ),
        binds: [vec![tenant.to_string()], p.name_binds, binds].concat(),
    })
}

/// The statement that reads a selector's raw samples in `[from_ms, to_ms]` that no rollup
/// window covers: of a series in `covered_until` (fingerprint, end of its last window) those
/// from that end on, of any other series all.
pub fn samples_statement(
    vs: &VectorSelector,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
    covered_until: &[(i64, i64)],
) -> Result<Statement, String> {
    let p = selector_parts(vs)?;
    let (filter, join, binds) = p.series_filter_and_join(tenant);
    let name = p.name;
    let after_windows = if covered_until.is_empty() {
        String::new()
    } else {
        let list = |f: fn(&(i64, i64)) -> i64| {
            covered_until
                .iter()
                .map(|c| f(c).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            " AND TimestampMs >= transform(Fingerprint, CAST([{}] AS Array(Int64)), CAST([{}] AS Array(Int64)), toInt64({from_ms}))",
            list(|c| c.0),
            list(|c| c.1)
        )
    };
    Ok(Statement {
        sql: format!(
            "SELECT d.fp AS fp, s.name AS name, s.labels AS labels, d.points AS points \
             FROM (SELECT Fingerprint AS fp, arraySort(groupArray((TimestampMs, Value))) AS points \
             FROM metrics_samples WHERE Tenant = ? AND {name}TimestampMs >= {from_ms} AND TimestampMs <= {to_ms} \
             {filter}{after_windows} GROUP BY Fingerprint) AS d {join}"
        ),
        binds: [vec![tenant.to_string()], p.name_binds, binds].concat(),
    })
}

/// Series whose last window's end a rollup read writes into its raw-samples statement.
const INLINE_WINDOW_ENDS: usize = 2_000;

/// One stored rollup window: start, count, sum, min, max, first ms, first, last ms, last,
/// increase.
type StoredWindow = (i64, i64, f64, f64, f64, i64, f64, i64, f64, f64);

#[derive(Row, Deserialize)]
struct WindowsRow {
    fp: i64,
    name: String,
    labels: Vec<(String, String)>,
    windows: Vec<StoredWindow>,
}

#[derive(Row, Deserialize)]
struct SamplesRow {
    fp: i64,
    name: String,
    labels: Vec<(String, String)>,
    points: Vec<(i64, f64)>,
}

fn bound(client: &clickhouse::Client, st: &Statement) -> clickhouse::query::Query {
    let mut q = client.query(&st.sql);
    for b in &st.binds {
        q = q.bind(b.as_str());
    }
    q
}

impl SeriesSource for Storage {
    fn select<'a>(
        &'a mut self,
        vs: &'a VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> SelectFuture<'a> {
        Box::pin(self.read(vs, from_ms, to_ms))
    }

    fn rollup_resolutions(&self) -> Vec<i64> {
        self.rollup_resolutions.clone()
    }

    fn select_rollups<'a>(
        &'a mut self,
        vs: &'a VectorSelector,
        resolution_ms: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> ChunkFuture<'a> {
        Box::pin(self.read_rollups(vs, resolution_ms, from_ms, to_ms))
    }
}

/// Labels of a stored series, `__name__` included.
fn series_labels(name: String, labels: Vec<(String, String)>) -> Labels {
    let mut out: Labels = labels.into_iter().collect();
    out.insert("__name__".into(), name);
    out
}

impl Storage {
    /// Counts `n` more samples read, refusing the query past the limit.
    fn count_read(&mut self, n: usize) -> Result<(), EvalError> {
        self.samples_read += n;
        if self.samples_read > self.max_samples {
            return Err(EvalError::Execution(format!(
                "query processing would load too many samples into memory in query execution (more than {}; [query] promql_max_samples)",
                self.max_samples
            )));
        }
        Ok(())
    }

    /// A selector's rollup windows of `res` ms starting in `[from_ms, to_ms]`, and each
    /// series' raw samples after its last window.
    async fn read_rollups(
        &mut self,
        vs: &VectorSelector,
        res: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ChunkSeries>, EvalError> {
        let windows = windows_statement(vs, &self.tenant, res, from_ms, to_ms)
            .map_err(EvalError::Execution)?;
        self.statements
            .lock()
            .expect("statements lock")
            .push(windows.display());
        let fail = |e: clickhouse::error::Error| {
            EvalError::Storage(format!("reading rollups from ClickHouse: {e}"))
        };
        let rows: Vec<WindowsRow> = match &self.client {
            Some(client) => bound(client, &windows).fetch_all().await.map_err(fail)?,
            None => Vec::new(),
        };
        let covered: Vec<(i64, i64)> = rows
            .iter()
            .filter_map(|r| Some((r.fp, r.windows.iter().map(|w| w.0).max()? + res)))
            .collect();
        // The windows' ends go into the statement for a modest number of series; for more,
        // the statement would pass ClickHouse's query size limit, so the samples are cut here.
        let inline: &[(i64, i64)] = if covered.len() <= INLINE_WINDOW_ENDS {
            &covered
        } else {
            &[]
        };
        let cutoffs: std::collections::HashMap<i64, i64> = covered.iter().copied().collect();
        let tail = samples_statement(vs, &self.tenant, from_ms, to_ms, inline)
            .map_err(EvalError::Execution)?;
        self.statements
            .lock()
            .expect("statements lock")
            .push(tail.display());
        let tails: Vec<SamplesRow> = match &self.client {
            Some(client) => bound(client, &tail).fetch_all().await.map_err(fail)?,
            None => Vec::new(),
        };
        let mut by_fp: std::collections::HashMap<i64, ChunkSeries> =
            std::collections::HashMap::with_capacity(rows.len());
        for r in rows {
            let mut chunks: Vec<Chunk> = Vec::with_capacity(r.windows.len());
            let mut last_start = None;
            for (start, count, sum, min, max, first_ms, first, last_ms, last, increase) in r.windows
            {
                // A window stored twice (the replacing table not merged yet) counts once.
                if last_start == Some(start) {
                    continue;
                }
                last_start = Some(start);
                chunks.push(Chunk {
                    count: count.max(0) as u64,
                    sum,
                    min,
                    max,
                    first: (first_ms, first),
                    last: (last_ms, last),
                    increase,
                });
            }
            self.count_read(chunks.len())?;
            by_fp.insert(
                r.fp,
                ChunkSeries {
                    labels: series_labels(r.name, r.labels),
                    chunks,
                },
            );
        }
        for r in tails {
            let labels = series_labels(r.name, r.labels);
            let s = by_fp.entry(r.fp).or_insert_with(|| ChunkSeries {
                labels,
                chunks: Vec::new(),
            });
            let before = s.chunks.len();
            let cutoff = cutoffs.get(&r.fp).copied().unwrap_or(i64::MIN);
            for (t, v) in r.points {
                if is_stale(v) || t < cutoff {
                    continue;
                }
                match s.chunks.last_mut() {
                    Some(c) if c.count == 1 && c.first.0 == t => *c = Chunk::sample(t, v),
                    _ => s.chunks.push(Chunk::sample(t, v)),
                }
            }
            let added = s.chunks.len() - before;
            self.count_read(added)?;
        }
        let mut out: Vec<ChunkSeries> = by_fp.into_values().collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Every series the selector matches that has samples in `[from_ms, to_ms]`, with
    /// those samples (one per timestamp).
    async fn read(
        &mut self,
        vs: &VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RawSeries>, EvalError> {
        let st =
            selector_statement(vs, &self.tenant, from_ms, to_ms).map_err(EvalError::Execution)?;
        self.statements
            .lock()
            .expect("statements lock")
            .push(st.display());
        let Some(client) = &self.client else {
            return Ok(Vec::new());
        };
        let rows: Vec<SamplesRow> = bound(client, &st)
            .fetch_all()
            .await
            .map_err(|e| EvalError::Storage(format!("reading samples from ClickHouse: {e}")))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut labels: Labels = r.labels.into_iter().collect();
            labels.insert("__name__".into(), r.name);
            // A sample stored twice (a replay into the live table) counts once.
            let mut samples: Vec<(i64, f64)> = Vec::with_capacity(r.points.len());
            for p in r.points {
                match samples.last_mut() {
                    Some(last) if last.0 == p.0 => *last = p,
                    _ => samples.push(p),
                }
            }
            self.count_read(samples.len())?;
            out.push(RawSeries { labels, samples });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }
}

/// Evaluates `expr` over `grid` for `tenant` against ClickHouse; with no client, only plans
/// (the statements are returned, the value is empty).
pub async fn evaluate(
    client: Option<clickhouse::Client>,
    tenant: &str,
    expr: &promql_parser::parser::Expr,
    grid: obs_promql::Grid,
    limits: &Limits,
) -> Result<(obs_promql::Value, Vec<String>), EvalError> {
    let statements = Arc::new(Mutex::new(Vec::new()));
    let source = Storage {
        client,
        tenant: tenant.to_string(),
        max_samples: limits.max_samples,
        samples_read: 0,
        rollup_resolutions: limits.rollup_resolutions.clone(),
        statements: statements.clone(),
    };
    let value = obs_promql::evaluate(Box::new(source), expr, grid, &limits.promql).await?;
    let statements = std::mem::take(&mut *statements.lock().expect("statements lock"));
    Ok((value, statements))
}

/// The query API's PromQL limits: the evaluator's, and the samples one query may read.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Lookback and resolution.
    pub promql: obs_promql::Limits,
    /// Samples one query may read.
    pub max_samples: usize,
    /// Rollup resolutions (ms) range functions may read instead of raw samples (none: raw).
    pub rollup_resolutions: Vec<i64>,
}

/// What [`explain`] shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explained {
    /// Each statement sent to ClickHouse, values inlined for reading.
    pub statements: Vec<String>,
    /// The operations evaluated in Rust over the rows read, innermost first.
    pub rust: Vec<String>,
}

/// The SQL statements `expr` runs over `grid`, and the steps evaluated in Rust.
pub async fn explain(
    tenant: &str,
    expr: &promql_parser::parser::Expr,
    grid: obs_promql::Grid,
    limits: &Limits,
) -> Result<Explained, EvalError> {
    let (_, statements) = evaluate(None, tenant, expr, grid, limits).await?;
    Ok(Explained {
        statements,
        rust: obs_promql::steps(expr),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(q: &str) -> VectorSelector {
        match obs_promql::parse(q).unwrap() {
            promql_parser::parser::Expr::VectorSelector(vs) => vs,
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn raw_samples_after_the_windows_are_cut_per_series() {
        let vs = selector(r#"up{job="a'b"}"#);
        let plain = samples_statement(&vs, "t", 0, 60_000, &[]).unwrap();
        assert!(!plain.sql.contains("transform"));
        assert_eq!(
            plain.sql,
            selector_statement(&vs, "t", 0, 60_000).unwrap().sql
        );
        let cut = samples_statement(&vs, "t", 0, 60_000, &[(7, 30_000), (-9, 60_000)]).unwrap();
        assert!(
            cut.sql.contains(
                "TimestampMs >= transform(Fingerprint, CAST([7,-9] AS Array(Int64)), CAST([30000,60000] AS Array(Int64)), toInt64(0))"
            ),
            "{}",
            cut.sql
        );
        // Label values stay bound, never spliced.
        assert!(!cut.sql.contains("a'b") && cut.binds.iter().any(|b| b == "a'b"));
        assert_eq!(cut.sql.matches('?').count(), cut.binds.len());
        let windows = windows_statement(&vs, "t", 60_000, 0, 120_000).unwrap();
        assert!(
            windows.sql.contains(
                "FROM metrics_rollups WHERE Tenant = ? AND MetricName = ? AND ResolutionMs = 60000"
            ),
            "{}",
            windows.sql
        );
        assert_eq!(windows.sql.matches('?').count(), windows.binds.len());
        let exemplars = exemplars_statement(&vs, "t", 0, 120_000).unwrap();
        assert!(
            exemplars.sql.contains(
                "FROM metrics_exemplars WHERE Tenant = ? AND MetricName = ? AND TimestampMs >= 0 AND TimestampMs <= 120000"
            ),
            "{}",
            exemplars.sql
        );
        assert!(!exemplars.sql.contains("a'b") && exemplars.binds.iter().any(|b| b == "a'b"));
        assert_eq!(exemplars.sql.matches('?').count(), exemplars.binds.len());
    }

    #[test]
    fn fingerprints_filter_the_data_only_when_labels_narrow_the_metric() {
        for q in ["up", r#"{__name__="up"}"#] {
            let st = selector_statement(&selector(q), "t", 0, 60_000).unwrap();
            assert!(!st.sql.contains("Fingerprint IN"), "{q}: {}", st.sql);
            assert_eq!(st.sql.matches('?').count(), st.binds.len(), "{q}");
            assert_eq!(st.binds, ["t", "up", "t", "up"], "{q}");
        }
        for q in [
            r#"up{job="a"}"#,
            r#"{__name__=~"up|down"}"#,
            r#"up{job="a" or job="b"}"#,
        ] {
            let st = selector_statement(&selector(q), "t", 0, 60_000).unwrap();
            assert!(
                st.sql.contains(" AND Fingerprint IN (SELECT"),
                "{q}: {}",
                st.sql
            );
            assert_eq!(st.sql.matches('?').count(), st.binds.len(), "{q}");
        }
    }
}
