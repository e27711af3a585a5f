//! What PromQL reads from ClickHouse: the series a selector matches and their samples in a
//! time range, as the evaluator's [`SeriesSource`]. Label matching (`=`, `!=`, `=~`, `!~`
//! with bound values and regexes), the tenant, the metric name (the samples table's sort
//! key) and the time bounds are all in the SQL; samples come back ordered by series and
//! time. Windows, functions, aggregations and vector matching run in `obs_promql`.

use std::sync::{Arc, Mutex};

use clickhouse::Row;
use obs_promql::{EvalError, Labels, RawSeries, SelectFuture, SeriesSource};
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
    /// Samples read so far.
    pub samples_read: usize,
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
    let SqlFilter { sql, binds } = selector::vector_selector(vs)?;
    let mut all = vec![tenant.to_string()];
    let name = match selector::single_name(vs) {
        Some(n) => {
            all.push(n);
            "MetricName = ? AND "
        }
        None => "",
    };
    for _ in 0..2 {
        all.push(tenant.to_string());
        all.extend(binds.iter().cloned());
    }
    Ok(Statement {
        sql: format!(
            "SELECT s.name AS name, s.labels AS labels, d.points AS points \
             FROM (SELECT Fingerprint AS fp, arraySort(groupArray((TimestampMs, Value))) AS points \
             FROM metrics_samples WHERE Tenant = ? AND {name}TimestampMs >= {from_ms} AND TimestampMs <= {to_ms} \
             AND Fingerprint IN (SELECT Fingerprint FROM metrics_series WHERE Tenant = ? AND {sql}) \
             GROUP BY Fingerprint) AS d \
             INNER JOIN (SELECT Fingerprint AS fp, any(MetricName) AS name, any(Labels) AS labels \
             FROM metrics_series WHERE Tenant = ? AND {sql} GROUP BY Fingerprint) AS s ON d.fp = s.fp"
        ),
        binds: all,
    })
}

#[derive(Row, Deserialize)]
struct SeriesRow {
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
}

impl Storage {
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
        let rows: Vec<SeriesRow> = bound(client, &st)
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
            self.samples_read += samples.len();
            if self.samples_read > self.max_samples {
                return Err(EvalError::Execution(format!(
                    "query processing would load too many samples into memory in query execution (more than {}; [query] promql_max_samples)",
                    self.max_samples
                )));
            }
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
