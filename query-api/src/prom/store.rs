//! What PromQL reads from ClickHouse: the series a selector matches and their samples in a
//! time range, as the evaluator's [`SeriesSource`]. Label matching (`=`, `!=`, `=~`, `!~`
//! with bound values and regexes), the tenant, the metric name (the samples table's sort
//! key) and the time bounds are all in the SQL; samples come back as arrays per series,
//! sorted here, with the series' labels from [`SeriesLabels`]. A query's reads are planned
//! by an evaluation over no data and sent together. Windows, functions, aggregations and
//! vector matching run in `obs_promql`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};

use clickhouse::Row;
use obs_promql::rollup::{Chunk, ChunkSeries};
use obs_promql::{ChunkFuture, EvalError, Labels, RawSeries, SelectFuture, SeriesSource, is_stale};
use promql_parser::parser::VectorSelector;
use serde::Deserialize;

use super::selector::{self, SqlFilter};
use super::series_labels::SeriesLabels;

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
    /// Labels of the series read before, by fingerprint.
    pub labels: Arc<SeriesLabels>,
    /// Rollup resolutions (ms) range functions may be answered from (`max_source_resolution`).
    pub rollup_resolutions: Vec<i64>,
    /// The statements run (or, for explain, that would run), with values inlined; shared
    /// with the caller, who keeps it after the evaluator is gone.
    pub statements: Arc<Mutex<Vec<String>>>,
    /// When planning: every read the evaluator asks for, in order.
    planned: Option<Arc<Mutex<Vec<Read>>>>,
    /// Reads done before the evaluation (all of a query's at once), by what they read,
    /// with how many more times the evaluator will ask for each.
    prefetched: HashMap<ReadKey, (usize, Fetched)>,
}

/// One read the evaluator asks of the storage: a selector's raw samples, or its rollup
/// windows of a resolution, over a range.
#[derive(Clone)]
struct Read {
    vs: VectorSelector,
    resolution_ms: Option<i64>,
    from_ms: i64,
    to_ms: i64,
}

/// What identifies a [`Read`] (the selector as written, offset and `@` included).
#[derive(Clone, PartialEq, Eq, Hash)]
struct ReadKey {
    selector: String,
    resolution_ms: Option<i64>,
    from_ms: i64,
    to_ms: i64,
}

impl Read {
    fn key(&self) -> ReadKey {
        ReadKey {
            selector: self.vs.to_string(),
            resolution_ms: self.resolution_ms,
            from_ms: self.from_ms,
            to_ms: self.to_ms,
        }
    }
}

/// A read's answer and the samples it counts against the query's limit.
#[derive(Clone)]
enum Fetched {
    Samples(Vec<RawSeries>, usize),
    Rollups(Vec<ChunkSeries>, usize),
}

/// Reads of one query sent to ClickHouse at once: the chDB endpoint ran two statements
/// sent together in 22 ms against 29 one after the other.
const CONCURRENT_READS: usize = 4;

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

/// The statement for a selector's samples in `[from_ms, to_ms]`: per series (`fp`) the
/// times `t` and values `v` of its samples (sorted here). The series' labels come from
/// [`SeriesLabels`], else [`series_statement`].
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
    /// The series' own binds after the tenant: `Tenant = ? AND {filter}`'s.
    fn with_tenant(&self, tenant: &str) -> Vec<String> {
        [vec![tenant.to_string()], self.binds.clone()].concat()
    }

    /// The condition on a data table's `Fingerprint` for the selector's series (` AND
    /// Fingerprint IN (...)`, or nothing when the metric name selects them) and its binds.
    /// Leaving the list out saves the engine a read of `metrics_series` (~2-3 ms a statement).
    fn series_filter(&self, tenant: &str) -> (String, Vec<String>) {
        if !self.filter_data {
            return (String::new(), Vec::new());
        }
        (
            format!(
                " AND Fingerprint IN (SELECT Fingerprint FROM metrics_series WHERE Tenant = ? AND {})",
                self.filter
            ),
            self.with_tenant(tenant),
        )
    }

    /// Per series of the selector with rows in `table` that meet `conditions`: `fp` and,
    /// for each `(column, alias)` of `columns`, the column's values as an array named
    /// `alias`, the arrays in one (unspecified) row order, sorted here. On chDB one array
    /// per column costs a fraction of one array of tuples sorted in the statement (6 h of
    /// 66 series: 10.7 against 25.9 ms), and one row per series spares the client's
    /// per-row cost (a tracing span and a type check each).
    fn data_statement(
        &self,
        tenant: &str,
        table: &str,
        columns: &[(&str, &str)],
        conditions: &str,
    ) -> Statement {
        let (filter, filter_binds) = self.series_filter(tenant);
        let name = self.name;
        let arrays = columns
            .iter()
            .map(|(column, alias)| format!("groupArray({column}) AS {alias}"))
            .collect::<Vec<_>>()
            .join(", ");
        Statement {
            sql: format!(
                "SELECT Fingerprint AS fp, {arrays} FROM {table} \
                 WHERE Tenant = ? AND {name}{conditions}{filter} GROUP BY Fingerprint"
            ),
            binds: [
                vec![tenant.to_string()],
                self.name_binds.clone(),
                filter_binds,
            ]
            .concat(),
        }
    }
}

/// The statement naming the series a selector matches: `fp`, `name`, `labels` of each.
pub fn series_statement(vs: &VectorSelector, tenant: &str) -> Result<Statement, String> {
    let p = selector_parts(vs)?;
    Ok(Statement {
        sql: format!(
            "SELECT Fingerprint AS fp, any(MetricName) AS name, any(Labels) AS labels \
             FROM metrics_series WHERE Tenant = ? AND {} GROUP BY Fingerprint",
            p.filter
        ),
        binds: p.with_tenant(tenant),
    })
}

/// The statement that reads a selector's rollup windows of `res` ms starting in
/// `[from_ms, to_ms]`: per series (`fp`) an array of each of the windows' figures.
pub fn windows_statement(
    vs: &VectorSelector,
    tenant: &str,
    res: i64,
    from_ms: i64,
    to_ms: i64,
) -> Result<Statement, String> {
    Ok(selector_parts(vs)?.data_statement(
        tenant,
        "metrics_rollups",
        &[
            ("WindowStartMs", "start"),
            ("Count", "count"),
            ("Sum", "sum"),
            ("Min", "min"),
            ("Max", "max"),
            ("FirstTimestampMs", "first_ms"),
            ("First", "first"),
            ("LastTimestampMs", "last_ms"),
            ("Last", "last"),
            ("Increase", "increase"),
        ],
        &format!(
            "ResolutionMs = {res} AND WindowStartMs >= {from_ms} AND WindowStartMs <= {to_ms}"
        ),
    ))
}

/// The statement for the exemplars of a selector's series in `[from_ms, to_ms]`: per
/// series its name, labels and `(ms, value, exemplar labels)` in time order.
pub fn exemplars_statement(
    vs: &VectorSelector,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Statement, String> {
    let p = selector_parts(vs)?;
    let (filter, filter_binds) = p.series_filter(tenant);
    let name = p.name;
    let series = series_statement(vs, tenant)?;
    Ok(Statement {
        sql: format!(
            "SELECT d.fp AS fp, s.name AS name, s.labels AS labels, d.exemplars AS exemplars \
             FROM (SELECT Fingerprint AS fp, arraySort(r -> r.1, groupArray((TimestampMs, Value, Labels))) AS exemplars \
             FROM metrics_exemplars WHERE Tenant = ? AND {name}TimestampMs >= {from_ms} AND TimestampMs <= {to_ms}{filter} \
             GROUP BY Fingerprint) AS d INNER JOIN ({}) AS s ON d.fp = s.fp",
            series.sql
        ),
        binds: [
            vec![tenant.to_string()],
            p.name_binds,
            filter_binds,
            series.binds,
        ]
        .concat(),
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
    Ok(selector_parts(vs)?.data_statement(
        tenant,
        "metrics_samples",
        &[("TimestampMs", "t"), ("Value", "v")],
        &format!("TimestampMs >= {from_ms} AND TimestampMs <= {to_ms}{after_windows}"),
    ))
}

/// Series whose last window's end a rollup read writes into its raw-samples statement.
const INLINE_WINDOW_ENDS: usize = 2_000;

/// A series' stored rollup windows, one figure per array, the arrays in one row order.
#[derive(Row, Deserialize)]
struct WindowsRow {
    fp: i64,
    start: Vec<i64>,
    count: Vec<i64>,
    sum: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    first_ms: Vec<i64>,
    first: Vec<f64>,
    last_ms: Vec<i64>,
    last: Vec<f64>,
    increase: Vec<f64>,
}

impl WindowsRow {
    /// Its windows by start time, a window stored twice (the replacing table not merged
    /// yet) once.
    fn windows(self) -> Vec<(i64, Chunk)> {
        let mut out: Vec<(i64, Chunk)> = (0..self.start.len())
            .map(|i| {
                let chunk = Chunk {
                    count: self.count[i].max(0) as u64,
                    sum: self.sum[i],
                    min: self.min[i],
                    max: self.max[i],
                    first: (self.first_ms[i], self.first[i]),
                    last: (self.last_ms[i], self.last[i]),
                    increase: self.increase[i],
                };
                (self.start[i], chunk)
            })
            .collect();
        out.sort_by_key(|w| w.0);
        out.dedup_by_key(|w| w.0);
        out
    }
}

/// A series' stored samples: times and values in one row order.
#[derive(Row, Deserialize)]
struct SamplesRow {
    fp: i64,
    t: Vec<i64>,
    v: Vec<f64>,
}

impl SamplesRow {
    /// Its samples in time order, one per timestamp.
    fn samples(self) -> Vec<(i64, f64)> {
        sorted_once(self.t.into_iter().zip(self.v).collect())
    }
}

/// A series' samples in time order, one per timestamp: of a sample stored twice (a replay
/// into the live table) one is kept, the greater value when they differ.
fn sorted_once(mut points: Vec<(i64, f64)>) -> Vec<(i64, f64)> {
    // Stable sort: the rows come as a few sorted runs (one per part), which it merges.
    points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(points.len());
    for p in points {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    out
}

#[derive(Row, Deserialize)]
struct SeriesRow {
    fp: i64,
    name: String,
    labels: Vec<(String, String)>,
}

/// What `explain` writes before the statement reading series' labels: it runs only when a
/// series read is not in the query API's [`SeriesLabels`].
pub const LABELS_LOOKUP_NOTE: &str =
    "/* only for series whose labels the query API has not kept */ ";

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
        Box::pin(async move {
            match self.answer(vs, None, from_ms, to_ms).await? {
                Fetched::Samples(series, _) => Ok(series),
                Fetched::Rollups(..) => unreachable!("a samples read answers with samples"),
            }
        })
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
        Box::pin(async move {
            match self.answer(vs, Some(resolution_ms), from_ms, to_ms).await? {
                Fetched::Rollups(series, _) => Ok(series),
                Fetched::Samples(..) => unreachable!("a rollups read answers with rollups"),
            }
        })
    }
}

/// Labels of a stored series, `__name__` included.
fn series_labels(name: String, labels: Vec<(String, String)>) -> Labels {
    let mut out: Labels = labels.into_iter().collect();
    out.insert("__name__".into(), name);
    out
}

impl Storage {
    /// A source for one query of `tenant` within `limits` (no client: plans only),
    /// recording its statements in `statements` and, when planning, its reads in `planned`.
    fn new(
        client: Option<clickhouse::Client>,
        labels: Arc<SeriesLabels>,
        tenant: &str,
        limits: &Limits,
        statements: Arc<Mutex<Vec<String>>>,
        planned: Option<Arc<Mutex<Vec<Read>>>>,
    ) -> Storage {
        Storage {
            client,
            labels,
            tenant: tenant.to_string(),
            max_samples: limits.max_samples,
            samples_read: 0,
            rollup_resolutions: limits.rollup_resolutions.clone(),
            statements,
            planned,
            prefetched: HashMap::new(),
        }
    }

    /// A read the evaluator asks for: prefetched, else done now; counted against the limit.
    async fn answer(
        &mut self,
        vs: &VectorSelector,
        resolution_ms: Option<i64>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Fetched, EvalError> {
        let read = Read {
            vs: vs.clone(),
            resolution_ms,
            from_ms,
            to_ms,
        };
        if let Some(planned) = &self.planned {
            planned.lock().expect("planned lock").push(read.clone());
        }
        let key = read.key();
        let fetched = match self.prefetched.remove(&key) {
            Some((0, f)) => f,
            Some((more, f)) => {
                self.prefetched.insert(key, (more - 1, f.clone()));
                f
            }
            None => self.fetch(&read).await?,
        };
        let (Fetched::Samples(_, n) | Fetched::Rollups(_, n)) = &fetched;
        self.count_read(*n)?;
        Ok(fetched)
    }

    /// Does `reads` (a query's, from a planning evaluation) a few at a time, for the
    /// evaluation to take them from.
    async fn prefetch(&mut self, reads: Vec<Read>) -> Result<(), EvalError> {
        let mut uses: HashMap<ReadKey, (usize, Read)> = HashMap::new();
        for r in reads {
            uses.entry(r.key())
                .and_modify(|(n, _)| *n += 1)
                .or_insert((0, r));
        }
        let this = &*self;
        let fetched: Vec<(ReadKey, (usize, Fetched))> =
            futures::stream::iter(uses.into_iter().map(|(key, (more, read))| async move {
                Ok::<_, EvalError>((key, (more, this.fetch(&read).await?)))
            }))
            .buffer_unordered(CONCURRENT_READS)
            .try_collect()
            .await?;
        self.prefetched.extend(fetched);
        Ok(())
    }

    /// Does one read.
    async fn fetch(&self, read: &Read) -> Result<Fetched, EvalError> {
        let Read {
            vs,
            resolution_ms,
            from_ms,
            to_ms,
        } = read;
        Ok(match resolution_ms {
            None => {
                let (series, n) = self.fetch_samples(vs, *from_ms, *to_ms).await?;
                Fetched::Samples(series, n)
            }
            Some(res) => {
                let (series, n) = self.fetch_rollups(vs, *res, *from_ms, *to_ms).await?;
                Fetched::Rollups(series, n)
            }
        })
    }

    /// Records a statement (run, or for explain planned).
    fn record(&self, sql: String) {
        self.statements.lock().expect("statements lock").push(sql);
    }

    /// The labels of the series `fps` (read by one of `vs`'s data statements): those kept
    /// from earlier queries, and for the others one read of `vs`'s series, all of which are
    /// kept. A fingerprint `metrics_series` does not name is left out, and its rows with it.
    async fn labels_of(
        &self,
        vs: &VectorSelector,
        fps: &[i64],
    ) -> Result<HashMap<i64, Arc<Labels>>, EvalError> {
        let mut out = HashMap::with_capacity(fps.len());
        let mut missing = false;
        for &fp in fps {
            match self.labels.get(&self.tenant, fp) {
                Some(l) => {
                    out.insert(fp, l);
                }
                None => missing = true,
            }
        }
        let Some(client) = &self.client else {
            let st = series_statement(vs, &self.tenant).map_err(EvalError::Execution)?;
            self.record(format!("{LABELS_LOOKUP_NOTE}{}", st.display()));
            return Ok(out);
        };
        if fps.is_empty() {
            return Ok(out);
        }
        if !missing {
            metrics::counter!("obs_query_series_lookups_total", "outcome" => "kept").increment(1);
            return Ok(out);
        }
        metrics::counter!("obs_query_series_lookups_total", "outcome" => "read").increment(1);
        let st = series_statement(vs, &self.tenant).map_err(EvalError::Execution)?;
        self.record(st.display());
        let rows: Vec<SeriesRow> = bound(client, &st)
            .fetch_all()
            .await
            .map_err(|e| EvalError::Storage(format!("reading series from ClickHouse: {e}")))?;
        let wanted: std::collections::HashSet<i64> = fps.iter().copied().collect();
        for r in rows {
            let labels = Arc::new(series_labels(r.name, r.labels));
            self.labels.put(&self.tenant, r.fp, labels.clone());
            if wanted.contains(&r.fp) {
                out.insert(r.fp, labels);
            }
        }
        Ok(out)
    }

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
    /// series' raw samples after its last window; and how many chunks that is.
    async fn fetch_rollups(
        &self,
        vs: &VectorSelector,
        res: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<ChunkSeries>, usize), EvalError> {
        let windows = windows_statement(vs, &self.tenant, res, from_ms, to_ms)
            .map_err(EvalError::Execution)?;
        self.record(windows.display());
        let fail = |e: clickhouse::error::Error| {
            EvalError::Storage(format!("reading rollups from ClickHouse: {e}"))
        };
        let rows: Vec<(i64, Vec<(i64, Chunk)>)> = match &self.client {
            Some(client) => bound(client, &windows)
                .fetch_all::<WindowsRow>()
                .await
                .map_err(fail)?
                .into_iter()
                .map(|r| (r.fp, r.windows()))
                .collect(),
            None => Vec::new(),
        };
        let covered: Vec<(i64, i64)> = rows
            .iter()
            .filter_map(|(fp, w)| Some((*fp, w.last()?.0 + res)))
            .collect();
        // The windows' ends go into the statement for a modest number of series; for more,
        // the statement would pass ClickHouse's query size limit, so the samples are cut here.
        let inline: &[(i64, i64)] = if covered.len() <= INLINE_WINDOW_ENDS {
            &covered
        } else {
            &[]
        };
        let cutoffs: HashMap<i64, i64> = covered.iter().copied().collect();
        let tail = samples_statement(vs, &self.tenant, from_ms, to_ms, inline)
            .map_err(EvalError::Execution)?;
        self.record(tail.display());
        let tails: Vec<SamplesRow> = match &self.client {
            Some(client) => bound(client, &tail).fetch_all().await.map_err(fail)?,
            None => Vec::new(),
        };
        let fps: Vec<i64> = rows
            .iter()
            .map(|r| r.0)
            .chain(tails.iter().map(|r| r.fp))
            .collect();
        let labels = self.labels_of(vs, &fps).await?;
        let mut by_fp: HashMap<i64, ChunkSeries> = HashMap::with_capacity(rows.len());
        let mut read = 0;
        for (fp, windows) in rows {
            let Some(l) = labels.get(&fp) else { continue };
            let chunks: Vec<Chunk> = windows.into_iter().map(|w| w.1).collect();
            read += chunks.len();
            by_fp.insert(
                fp,
                ChunkSeries {
                    labels: Labels::clone(l),
                    chunks,
                },
            );
        }
        for r in tails {
            let fp = r.fp;
            let Some(l) = labels.get(&fp) else { continue };
            let s = by_fp.entry(fp).or_insert_with(|| ChunkSeries {
                labels: Labels::clone(l),
                chunks: Vec::new(),
            });
            let before = s.chunks.len();
            let cutoff = cutoffs.get(&fp).copied().unwrap_or(i64::MIN);
            for (t, v) in r.samples() {
                if is_stale(v) || t < cutoff {
                    continue;
                }
                s.chunks.push(Chunk::sample(t, v));
            }
            read += s.chunks.len() - before;
        }
        let mut out: Vec<ChunkSeries> = by_fp.into_values().collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok((out, read))
    }

    /// Every series the selector matches that has samples in `[from_ms, to_ms]`, with
    /// those samples (one per timestamp); and how many samples that is.
    async fn fetch_samples(
        &self,
        vs: &VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<RawSeries>, usize), EvalError> {
        let st =
            selector_statement(vs, &self.tenant, from_ms, to_ms).map_err(EvalError::Execution)?;
        self.record(st.display());
        let rows: Vec<SamplesRow> = match &self.client {
            Some(client) => bound(client, &st)
                .fetch_all()
                .await
                .map_err(|e| EvalError::Storage(format!("reading samples from ClickHouse: {e}")))?,
            None => Vec::new(),
        };
        let fps: Vec<i64> = rows.iter().map(|r| r.fp).collect();
        let labels = self.labels_of(vs, &fps).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut read = 0;
        for r in rows {
            let Some(l) = labels.get(&r.fp) else { continue };
            let samples = r.samples();
            read += samples.len();
            out.push(RawSeries {
                labels: Labels::clone(l),
                samples,
            });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok((out, read))
    }
}

/// The pipeline's database as PromQL reads it.
#[derive(Clone)]
pub struct Database {
    /// Client for the metrics tables.
    pub client: clickhouse::Client,
    /// Labels of the series read by earlier queries (shared by all of them).
    pub labels: Arc<SeriesLabels>,
}

/// Evaluates `expr` over `grid` for `tenant` against ClickHouse; with no database, only
/// plans (the statements are returned, the value is empty).
pub async fn evaluate(
    db: Option<Database>,
    tenant: &str,
    expr: &promql_parser::parser::Expr,
    grid: obs_promql::Grid,
    limits: &Limits,
) -> Result<(obs_promql::Value, Vec<String>), EvalError> {
    let statements = Arc::new(Mutex::new(Vec::new()));
    let (client, labels) = match db {
        Some(db) => (Some(db.client), db.labels),
        None => (None, Arc::new(SeriesLabels::new(0))),
    };
    // Only a query reading several selectors has reads to send together; for the others
    // the planning evaluation would be work for nothing.
    let read_ahead = client.is_some() && selectors(expr).len() > 1;
    let mut source = Storage::new(client, labels, tenant, limits, statements.clone(), None);
    if read_ahead {
        let reads = plan(tenant, expr, grid, limits).await;
        if reads.len() > 1 {
            source.prefetch(reads).await?;
        }
    }
    let value = obs_promql::evaluate(Box::new(source), expr, grid, &limits.promql).await?;
    let statements = std::mem::take(&mut *statements.lock().expect("statements lock"));
    Ok((value, statements))
}

/// The vector selectors of a query (those of range selectors too), as Prometheus's
/// `parser.ExtractSelectors` finds them.
pub fn selectors(expr: &promql_parser::parser::Expr) -> Vec<VectorSelector> {
    let mut found = Selectors(Vec::new());
    let _ = promql_parser::util::walk_expr(&mut found, expr);
    found.0
}

struct Selectors(Vec<VectorSelector>);

impl promql_parser::util::ExprVisitor for Selectors {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, Self::Error> {
        use promql_parser::parser::Expr;
        match expr {
            Expr::VectorSelector(vs) => self.0.push(vs.clone()),
            Expr::MatrixSelector(ms) => self.0.push(ms.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// The reads evaluating `expr` over `grid` asks for, found by evaluating it over no data:
/// which selectors are read over which ranges follows from the query and its steps alone.
/// Several reads are then sent at once. None when that evaluation fails (the real one
/// reports the error).
async fn plan(
    tenant: &str,
    expr: &promql_parser::parser::Expr,
    grid: obs_promql::Grid,
    limits: &Limits,
) -> Vec<Read> {
    let planned = Arc::new(Mutex::new(Vec::new()));
    let source = Storage::new(
        None,
        Arc::new(SeriesLabels::new(0)),
        tenant,
        limits,
        Arc::new(Mutex::new(Vec::new())),
        Some(planned.clone()),
    );
    match obs_promql::evaluate(Box::new(source), expr, grid, &limits.promql).await {
        Ok(_) => std::mem::take(&mut *planned.lock().expect("planned lock")),
        Err(_) => Vec::new(),
    }
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
    fn samples_read_in_runs_come_out_in_time_order_once_per_timestamp() {
        let nan = obs_promql::stale_nan();
        // Two parts' runs of one series, a sample stored in both (a replay), and the same
        // time with two values (the greater kept, as a sort of the (time, value) pairs).
        let points = vec![
            (30, 3.0),
            (40, 4.0),
            (10, 1.0),
            (20, 2.0),
            (30, 3.0),
            (50, 1.0),
            (50, 5.0),
        ];
        assert_eq!(
            sorted_once(points),
            [(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0), (50, 5.0)]
        );
        let stale = sorted_once(vec![(20, nan), (10, 1.0)]);
        assert_eq!(stale[0], (10, 1.0));
        assert!(stale[1].0 == 20 && is_stale(stale[1].1));
        assert!(sorted_once(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn a_plan_names_each_read_of_a_query_with_its_range() {
        let limits = Limits {
            promql: obs_promql::Limits {
                lookback_ms: 300_000,
                max_points: 11_000,
            },
            max_samples: 1_000,
            rollup_resolutions: Vec::new(),
        };
        let grid = obs_promql::Grid {
            start: 3_600_000,
            end: 7_200_000,
            step: 60_000,
        };
        let expr = obs_promql::parse(r#"sum(rate(a{x="1"}[5m])) / sum(rate(b[5m] offset 1m)) + c"#)
            .unwrap();
        assert_eq!(selectors(&expr).len(), 3, "the query is read ahead");
        assert_eq!(
            selectors(&obs_promql::parse("rate(a[5m])").unwrap()).len(),
            1
        );
        let reads: Vec<(String, Option<i64>, i64, i64)> = plan("t", &expr, grid, &limits)
            .await
            .into_iter()
            .map(|r| (r.vs.to_string(), r.resolution_ms, r.from_ms, r.to_ms))
            .collect();
        assert_eq!(
            reads,
            [
                (r#"a{x="1"}"#.to_string(), None, 3_300_000, 7_200_000),
                ("b offset 1m".to_string(), None, 3_240_000, 7_140_000),
                ("c".to_string(), None, 3_300_000, 7_200_000),
            ]
        );
        // A query the evaluator refuses plans nothing (the evaluation reports the error).
        let bad = obs_promql::parse("rate(a[5m])").unwrap();
        let too_many = obs_promql::Grid { step: 1, ..grid };
        assert!(plan("t", &bad, too_many, &limits).await.is_empty());
    }

    #[test]
    fn windows_come_out_by_start_once_each() {
        let row = WindowsRow {
            fp: 1,
            start: vec![120, 0, 60, 0],
            count: vec![3, 1, 2, 1],
            sum: vec![30.0, 1.0, 20.0, 1.0],
            min: vec![1.0; 4],
            max: vec![9.0; 4],
            first_ms: vec![120, 0, 60, 0],
            first: vec![1.0; 4],
            last_ms: vec![179, 59, 119, 59],
            last: vec![2.0; 4],
            increase: vec![0.5; 4],
        };
        let w = row.windows();
        let starts: Vec<(i64, u64, f64, (i64, f64))> = w
            .iter()
            .map(|(s, c)| (*s, c.count, c.sum, c.last))
            .collect();
        assert_eq!(
            starts,
            [
                (0, 1, 1.0, (59, 2.0)),
                (60, 2, 20.0, (119, 2.0)),
                (120, 3, 30.0, (179, 2.0))
            ]
        );
    }

    #[test]
    fn fingerprints_filter_the_data_only_when_labels_narrow_the_metric() {
        for q in ["up", r#"{__name__="up"}"#] {
            let st = selector_statement(&selector(q), "t", 0, 60_000).unwrap();
            assert!(!st.sql.contains("Fingerprint IN"), "{q}: {}", st.sql);
            assert_eq!(st.sql.matches('?').count(), st.binds.len(), "{q}");
            assert_eq!(st.binds, ["t", "up"], "{q}");
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
