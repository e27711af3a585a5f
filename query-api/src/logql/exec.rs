//! Runs a parsed query against ClickHouse: the `SELECT` from [`super::sql`], rows streamed
//! through the Rust pipeline, and the answer in Loki's JSON shapes. Rows read are bounded
//! by `query.logql_max_rows` (entries, or for range aggregations counted in SQL, series
//! per time bucket): past it the query fails and says so, never a cut result.

use std::collections::BTreeMap;

use clickhouse::Row;
use obs_promql::value::format_value;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ast::{LogExpr, MetricExpr};
use super::error::QueryError;
use super::eval::{self, Extractor, SeriesSet, Vector};
use super::parsers::sanitize;
use super::pipeline::{Labels, Pipeline};
use super::sql::{self, Bind, Fetch, Range, Select};

/// Loki's cap on points per series.
pub const MAX_POINTS: i64 = 11_000;

/// What a query may read.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The tenant.
    pub tenant: String,
    /// Most rows read from ClickHouse for one query.
    pub max_rows: u64,
    /// Seconds ClickHouse may spend on one `SELECT`.
    pub max_seconds: u64,
}

impl Scope {
    /// `s` with its values bound, read-only and time-limited.
    pub fn query(&self, client: &clickhouse::Client, s: &Select) -> clickhouse::query::Query {
        let mut q = client.query(&s.sql);
        for b in &s.binds {
            q = match b {
                Bind::Str(v) => q.bind(v.as_str()),
                Bind::Int(v) => q.bind(*v),
            };
        }
        q.with_setting("max_execution_time", self.max_seconds.to_string())
            .with_setting("readonly", "1")
    }
}

#[derive(Row, Deserialize)]
struct EntryRow {
    ts: i64,
    line: String,
    labels: Vec<(String, String)>,
    metadata: Vec<(String, String)>,
}

impl EntryRow {
    /// Its stream labels, and those plus its structured metadata.
    fn labels(&mut self) -> (Labels, Labels) {
        entry_labels(
            std::mem::take(&mut self.labels),
            std::mem::take(&mut self.metadata),
        )
    }
}

#[derive(Row, Deserialize)]
struct BucketRow {
    labels: Vec<(String, String)>,
    metadata: Vec<(String, String)>,
    bucket: i64,
    entries: u64,
    bytes: u64,
}

/// Stream labels, and those plus structured metadata (names sanitised, stream labels
/// winning), which Loki 3 returns and filters on as labels.
fn entry_labels(
    labels: Vec<(String, String)>,
    metadata: Vec<(String, String)>,
) -> (Labels, Labels) {
    let stream: Labels = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let mut all = stream.clone();
    for (k, v) in metadata {
        if !v.is_empty() {
            all.entry(sanitize(&k)).or_insert(v);
        }
    }
    (stream, all)
}

/// The greatest common divisor (bucket width that makes every window a union of buckets).
fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn too_many(max: u64) -> QueryError {
    QueryError::BadRequest(format!(
        "the query would read more than {max} log lines (the query.logql_max_rows limit): narrow the time range or the stream selector, or add line filters"
    ))
}

/// Seconds as Loki writes a sample time: an integer when whole, else with ms.
pub fn secs(ns: i64) -> Value {
    if ns % 1_000_000_000 == 0 {
        json!(ns / 1_000_000_000)
    } else {
        json!((ns / 1_000_000) as f64 / 1000.0)
    }
}

fn stats(lines: u64, bytes: u64, returned: usize) -> Value {
    json!({"summary": {
        "totalLinesProcessed": lines,
        "totalBytesProcessed": bytes,
        "totalEntriesReturned": returned,
    }})
}

/// A log query over `[start, end)`: at most `limit` entries, newest first when `backward`.
pub async fn streams(
    client: &clickhouse::Client,
    scope: &Scope,
    log: &LogExpr,
    (start, end): (i64, i64),
    limit: u64,
    backward: bool,
) -> Result<Value, QueryError> {
    if limit > scope.max_rows {
        return Err(QueryError::BadRequest(format!(
            "max entries limit per query exceeded, limit > max_entries_limit ({limit} > {})",
            scope.max_rows
        )));
    }
    let pipeline = Pipeline::new(&log.stages);
    // Without filters in Rust, SQL's LIMIT is the answer's limit; with them, read up to the
    // row bound and stop at `limit` kept entries.
    let fetch_limit = if pipeline.filters() {
        scope.max_rows + 1
    } else {
        limit
    };
    let select = sql::entries(
        &scope.tenant,
        &log.selector,
        &log.stages,
        Fetch {
            range: Range::Log { start, end },
            backward,
            limit: fetch_limit,
        },
    );
    let mut cursor = scope.query(client, &select).fetch::<EntryRow>()?;
    let mut out: BTreeMap<Labels, Vec<Value>> = BTreeMap::new();
    let (mut read, mut bytes, mut kept) = (0u64, 0u64, 0u64);
    while let Some(mut row) = cursor.next().await? {
        read += 1;
        if read > scope.max_rows {
            return Err(too_many(scope.max_rows));
        }
        bytes += row.line.len() as u64;
        let (stream, mut labels) = row.labels();
        let Some(line) = pipeline.run_on(&row.line, &stream, &mut labels) else {
            continue;
        };
        out.entry(labels)
            .or_default()
            .push(json!([row.ts.to_string(), line]));
        kept += 1;
        if kept == limit {
            break;
        }
    }
    let result: Vec<Value> = out
        .into_iter()
        .map(|(stream, values)| json!({"stream": stream, "values": values}))
        .collect();
    Ok(
        json!({"resultType": "streams", "result": result, "stats": stats(read, bytes, kept as usize)}),
    )
}

/// The samples of each of a metric query's range aggregations (in [`MetricExpr::ranges`]
/// order) for evaluations at `first, first + step, ... <= last`, with the lines and bytes
/// read; the row bound holds for all of them together. An aggregation without Rust stages
/// is counted in SQL per series and time bucket; the others read every entry.
async fn samples(
    client: &clickhouse::Client,
    scope: &Scope,
    expr: &MetricExpr,
    (first, last, step): (i64, i64, i64),
) -> Result<(Vec<SeriesSet>, u64, u64), QueryError> {
    let (mut read, mut lines, mut bytes) = (0u64, 0u64, 0u64);
    let mut sets = Vec::new();
    for (range, keep) in expr.ranges_with_sums() {
        let MetricExpr::Range {
            log,
            range_ns,
            offset_ns,
            ..
        } = range
        else {
            unreachable!("ranges() gives range aggregations")
        };
        let (after, until) = (first - offset_ns - range_ns, last - offset_ns);
        let extractor = Extractor::new(range);
        let mut set = SeriesSet::default();
        let limit = scope.max_rows - read + 1;
        if extractor.countable() {
            // Windows (t - range, t] for t = first + k * step are unions of these buckets.
            let width = gcd(step, *range_ns);
            let select = sql::buckets(
                &scope.tenant,
                &log.selector,
                &log.stages,
                (after, until),
                width,
                limit,
                keep.as_ref(),
            );
            let mut cursor = scope.query(client, &select).fetch::<BucketRow>()?;
            while let Some(row) = cursor.next().await? {
                read += 1;
                if read > scope.max_rows {
                    return Err(too_many(scope.max_rows));
                }
                lines += row.entries;
                bytes += row.bytes;
                let (_, labels) = entry_labels(row.labels, row.metadata);
                extractor.add_bucket(
                    &mut set,
                    after + row.bucket * width,
                    labels,
                    row.entries,
                    row.bytes,
                );
            }
        } else {
            let fetch = Fetch {
                range: Range::Metric { after, until },
                backward: false,
                limit,
            };
            let select = sql::entries(&scope.tenant, &log.selector, &log.stages, fetch);
            let mut cursor = scope.query(client, &select).fetch::<EntryRow>()?;
            while let Some(mut row) = cursor.next().await? {
                read += 1;
                if read > scope.max_rows {
                    return Err(too_many(scope.max_rows));
                }
                lines += 1;
                bytes += row.line.len() as u64;
                let (stream, labels) = row.labels();
                extractor.add(&mut set, row.ts, &row.line, &stream, labels);
            }
        }
        set.sort();
        sets.push(set);
    }
    Ok((sets, lines, bytes))
}

fn sample_json(labels: &Labels, t: i64, v: f64) -> Value {
    json!({"metric": labels, "value": [secs(t), format_value(v)]})
}

/// A metric query at one time: Loki's `vector` result.
pub async fn instant(
    client: &clickhouse::Client,
    scope: &Scope,
    expr: &MetricExpr,
    t: i64,
) -> Result<Value, QueryError> {
    let (sets, read, bytes) = samples(client, scope, expr, (t, t, 0)).await?;
    let v: Vector = eval::eval(expr, &sets, t).map_err(QueryError::BadRequest)?;
    let result: Vec<Value> = v.iter().map(|(l, x)| sample_json(l, t, *x)).collect();
    Ok(json!({"resultType": "vector", "result": result, "stats": stats(read, bytes, v.len())}))
}

/// A metric query at `start, start + step, ... <= end`: Loki's `matrix` result.
pub async fn matrix(
    client: &clickhouse::Client,
    scope: &Scope,
    expr: &MetricExpr,
    (start, end, step): (i64, i64, i64),
) -> Result<Value, QueryError> {
    if (end - start) / step + 1 > MAX_POINTS {
        return Err(QueryError::BadRequest(format!(
            "exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try increasing the value of the step parameter"
        )));
    }
    let (sets, read, bytes) = samples(client, scope, expr, (start, end, step)).await?;
    let mut series: BTreeMap<Labels, Vec<Value>> = BTreeMap::new();
    let mut t = start;
    while t <= end {
        for (labels, v) in eval::eval(expr, &sets, t).map_err(QueryError::BadRequest)? {
            series
                .entry(labels)
                .or_default()
                .push(json!([secs(t), format_value(v)]));
        }
        t += step;
    }
    let n = series.len();
    let result: Vec<Value> = series
        .into_iter()
        .map(|(metric, values)| json!({"metric": metric, "values": values}))
        .collect();
    Ok(json!({"resultType": "matrix", "result": result, "stats": stats(read, bytes, n)}))
}
