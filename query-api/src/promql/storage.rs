//! What PromQL reads from ClickHouse: the series a selector matches and their samples in a
//! time range. Label matching (`=`, `!=`, `=~`, `!~` with bound values and regexes), the
//! tenant, the metric name (the samples table's sort key) and the time bounds are all in
//! the SQL; samples come back ordered by series and time.

use std::collections::HashMap;

use clickhouse::Row;
use promql_parser::parser::VectorSelector;
use serde::Deserialize;

use super::value::{Labels, RawSeries};
use crate::prom::selector::{self, SqlFilter};

/// Where and how the evaluator reads samples.
pub struct Storage {
    /// The pipeline's database; `None` plans without reading (explain).
    pub client: Option<clickhouse::Client>,
    /// The tenant every statement is limited to.
    pub tenant: String,
    /// Samples one query may read before it is refused.
    pub max_samples: usize,
    /// Samples read so far.
    pub samples_read: usize,
    /// The statements run (or, for explain, that would run), with values inlined.
    pub statements: Vec<String>,
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

/// The statements for a selector over `[from_ms, to_ms]`: its series, then its samples.
pub fn selector_statements(
    vs: &VectorSelector,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<(Statement, Statement), String> {
    let SqlFilter { sql, binds } = selector::vector_selector(vs)?;
    let mut series_binds = vec![tenant.to_string()];
    series_binds.extend(binds.iter().cloned());
    let series = Statement {
        sql: format!(
            "SELECT Fingerprint AS fp, any(MetricName) AS name, any(Labels) AS labels \
             FROM metrics_series WHERE Tenant = ? AND {sql} GROUP BY Fingerprint"
        ),
        binds: series_binds.clone(),
    };
    let mut sample_binds = vec![tenant.to_string()];
    let name = match selector::single_name(vs) {
        Some(n) => {
            sample_binds.push(n);
            "MetricName = ? AND "
        }
        None => "",
    };
    sample_binds.extend(series_binds);
    let samples = Statement {
        sql: format!(
            "SELECT Fingerprint AS fp, TimestampMs AS ts, Value AS v FROM metrics_samples \
             WHERE Tenant = ? AND {name}TimestampMs >= {from_ms} AND TimestampMs <= {to_ms} \
             AND Fingerprint IN (SELECT Fingerprint FROM metrics_series WHERE Tenant = ? AND {sql}) \
             ORDER BY Fingerprint, TimestampMs"
        ),
        binds: sample_binds,
    };
    Ok((series, samples))
}

#[derive(Row, Deserialize)]
struct SeriesRow {
    fp: i64,
    name: String,
    labels: Vec<(String, String)>,
}

#[derive(Row, Deserialize)]
struct SampleRow {
    fp: i64,
    ts: i64,
    v: f64,
}

fn bound(client: &clickhouse::Client, st: &Statement) -> clickhouse::query::Query {
    let mut q = client.query(&st.sql);
    for b in &st.binds {
        q = q.bind(b.as_str());
    }
    q
}

impl Storage {
    /// Every series the selector matches that has samples in `[from_ms, to_ms]`, with
    /// those samples (one per timestamp).
    pub async fn select(
        &mut self,
        vs: &VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RawSeries>, String> {
        let (series_st, samples_st) = selector_statements(vs, &self.tenant, from_ms, to_ms)?;
        self.statements.push(series_st.display());
        self.statements.push(samples_st.display());
        let Some(client) = &self.client else {
            return Ok(Vec::new());
        };
        let series: Vec<SeriesRow> = bound(client, &series_st)
            .fetch_all()
            .await
            .map_err(|e| format!("reading series from ClickHouse: {e}"))?;
        let mut by_fp: HashMap<i64, RawSeries> = series
            .into_iter()
            .map(|r| {
                let mut labels: Labels = r.labels.into_iter().collect();
                labels.insert("__name__".into(), r.name);
                (
                    r.fp,
                    RawSeries {
                        labels,
                        samples: Vec::new(),
                    },
                )
            })
            .collect();
        let mut cursor = bound(client, &samples_st)
            .fetch::<SampleRow>()
            .map_err(|e| format!("reading samples from ClickHouse: {e}"))?;
        while let Some(row) = cursor
            .next()
            .await
            .map_err(|e| format!("reading samples from ClickHouse: {e}"))?
        {
            let Some(s) = by_fp.get_mut(&row.fp) else {
                continue;
            };
            // A sample stored twice (a replay into the live table) counts once.
            if s.samples.last().is_some_and(|&(t, _)| t == row.ts) {
                s.samples.pop();
            } else {
                self.samples_read += 1;
                if self.samples_read > self.max_samples {
                    return Err(format!(
                        "query processing would load too many samples into memory in query execution (more than {}; [query] promql_max_samples)",
                        self.max_samples
                    ));
                }
            }
            s.samples.push((row.ts, row.v));
        }
        let mut out: Vec<RawSeries> = by_fp
            .into_values()
            .filter(|s| !s.samples.is_empty())
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }
}
