//! `/api/v1/query`, `/api/v1/query_range` and `/api/v1/explain`: PromQL evaluated by
//! [`obs_promql`] over [`super::store`], answered in Prometheus's JSON shapes (`vector`, `matrix`, `scalar`,
//! `string`), errors as `bad_data` (400), `execution` (422) or `unavailable` (503).

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::api::{bad, bad_data, ok, tenant};
use super::params::Params;
use super::results_cache::{self, Key, Outcome, Points};
use super::store::{self, Limits};
use crate::server::ApiState;
use obs_promql::value::{
    Labels, format_sample_value, format_time, write_sample_value, write_time, write_value,
};
use obs_promql::{self as promql, EvalError, Grid, Value};

/// The request's limits; `max_source_resolution` (else `[query] max_source_resolution`)
/// picks the rollups range functions may read.
fn limits(state: &ApiState, p: &Params) -> Result<Limits, String> {
    let asked = p
        .get("max_source_resolution")
        .unwrap_or(&state.cfg.max_source_resolution);
    Ok(limits_with(
        state,
        source_resolutions(asked, &state.rollup_resolutions_ms)?,
    ))
}

/// The configured PromQL limits, reading rollups of `rollup_resolutions` (ms).
pub(crate) fn limits_with(state: &ApiState, rollup_resolutions: Vec<i64>) -> Limits {
    Limits {
        promql: promql::Limits {
            lookback_ms: state.cfg.promql_lookback_secs as i64 * 1000,
            max_points: state.cfg.promql_max_points,
        },
        max_samples: state.cfg.promql_max_samples,
        rollup_resolutions,
    }
}

/// The rollup resolutions `max_source_resolution` allows among those the rollup processor
/// writes: `raw` (or `0s`) none, `auto` all, a duration (`1m`, `1h`, seconds) those not
/// coarser than it (Thanos's parameter).
pub fn source_resolutions(asked: &str, written: &[i64]) -> Result<Vec<i64>, String> {
    let max_ms = match asked {
        "raw" => 0,
        "auto" => i64::MAX,
        s => match s.parse::<f64>() {
            Ok(secs) if secs >= 0.0 => (secs * 1000.0) as i64,
            _ => promql_parser::util::parse_duration(s)
                .map(|d| d.as_millis() as i64)
                .map_err(|_| {
                    format!(
                        "invalid parameter \"max_source_resolution\": {s:?}; use raw, auto or a duration such as 1m or 1h"
                    )
                })?,
        },
    };
    Ok(written.iter().copied().filter(|&r| r <= max_ms).collect())
}

fn eval_error(e: EvalError) -> Response {
    match e {
        EvalError::Execution(m) => bad(StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
        EvalError::Storage(m) => bad(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
    }
}

/// A step: seconds (fractional allowed) or a duration such as `1m30s`.
fn step_ms(p: &Params) -> Result<i64, String> {
    let Some(s) = p.get("step") else {
        return Err("invalid parameter \"step\": missing".into());
    };
    let ms = match s.parse::<f64>() {
        Ok(secs) => (secs * 1000.0).round() as i64,
        Err(_) => promql_parser::util::parse_duration(s)
            .map(|d| d.as_millis() as i64)
            .map_err(|_| {
                format!("invalid parameter \"step\": cannot parse {s:?} to a valid duration")
            })?,
    };
    if ms <= 0 {
        return Err(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
                .into(),
        );
    }
    Ok(ms)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a request asks: the parsed query and its grid.
struct Asked {
    expr: promql_parser::parser::Expr,
    grid: Grid,
    range: bool,
}

fn asked(p: &Params, range: bool, max_points: usize) -> Result<Asked, String> {
    let Some(q) = p.get("query") else {
        return Err("invalid parameter \"query\": missing".into());
    };
    let expr = promql::parse(q)?;
    let grid = if range {
        let start = p
            .time_ms("start")?
            .ok_or("invalid parameter \"start\": missing")?;
        let end = p
            .time_ms("end")?
            .ok_or("invalid parameter \"end\": missing")?;
        if end < start {
            return Err(
                "invalid parameter \"end\": end timestamp must not be before start time".into(),
            );
        }
        let step = step_ms(p)?;
        promql::check_range_type(&expr)?;
        let grid = Grid { start, end, step };
        if grid.len() > max_points {
            return Err(format!(
                "exceeded maximum resolution of {max_points} points per timeseries. Try decreasing the query resolution (?step=XX)"
            ));
        }
        grid
    } else {
        let t = p.time_ms("time")?.unwrap_or_else(now_ms);
        Grid {
            start: t,
            end: t,
            step: 1,
        }
    };
    Ok(Asked { expr, grid, range })
}

fn labels_json(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}:{}", json!(k), json!(v));
    }
    out.push('}');
}

/// `[t,"v"]` of a vector or matrix answer.
fn point(out: &mut String, t: i64, v: f64) {
    point_written(out, t, v, write_sample_value);
}

/// `[t,"v"]` with the value written by `write`.
fn point_written(out: &mut String, t: i64, v: f64, write: fn(&mut String, f64)) {
    out.push('[');
    write_time(out, t);
    out.push_str(",\"");
    write(out, v);
    out.push_str("\"]");
}

fn success(kind: &str, body: &str) -> String {
    let mut out = String::with_capacity(64 + body.len());
    open_success(&mut out, kind);
    out.push_str(body);
    out.push_str("}}");
    out
}

/// The start of a successful answer of `kind`, up to its result (closed by `}}`).
fn open_success(out: &mut String, kind: &str) {
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":\"");
    out.push_str(kind);
    out.push_str("\",\"result\":");
}

/// An instant query's answer at `t`, written directly (large answers would be slow through
/// `serde_json::Value`).
fn instant_answer(v: &Value, t: i64) -> String {
    let (kind, body) = match v {
        Value::Scalar(s) => {
            // Prometheus writes a scalar answer without an exponent, unlike samples.
            let mut b = String::new();
            point_written(&mut b, t, s[0], write_value);
            ("scalar", b)
        }
        Value::String(s) => ("string", format!("[{},{}]", format_time(t), json!(s))),
        Value::Vector(series) => {
            let mut b = String::from("[");
            let mut first = true;
            for s in series {
                let Some(x) = s.points[0] else { continue };
                if !first {
                    b.push(',');
                }
                first = false;
                b.push_str("{\"metric\":");
                labels_json(&mut b, &s.labels);
                b.push_str(",\"value\":");
                point(&mut b, t, x);
                b.push('}');
            }
            b.push(']');
            ("vector", b)
        }
        Value::Matrix(series) => {
            let mut b = String::from("[");
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    b.push(',');
                }
                b.push_str("{\"metric\":");
                labels_json(&mut b, &s.labels);
                b.push_str(",\"values\":[");
                for (j, &(t, x)) in s.samples.iter().enumerate() {
                    if j > 0 {
                        b.push(',');
                    }
                    point(&mut b, t, x);
                }
                b.push_str("]}");
            }
            b.push(']');
            ("matrix", b)
        }
    };
    success(kind, &body)
}

/// A range query's answer: a matrix listing its series by labels (whatever order an
/// instant answer of the same expression would have: sort, topk), each with its points.
fn range_answer(points: &Points) -> String {
    // Written in place, sized for ~28 bytes a point: answers reach megabytes, and growing
    // and then copying them showed in profiles.
    let n: usize = points.values().map(Vec::len).sum();
    let mut b = String::with_capacity(64 + 28 * n + 128 * points.len());
    open_success(&mut b, "matrix");
    b.push('[');
    for (i, (labels, ps)) in points.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push_str("{\"metric\":");
        labels_json(&mut b, labels);
        b.push_str(",\"values\":[");
        for (j, &(t, x)) in ps.iter().enumerate() {
            if j > 0 {
                b.push(',');
            }
            point(&mut b, t, x);
        }
        b.push_str("]}");
    }
    b.push(']');
    b.push_str("}}");
    b
}

/// The request's query and grid, and its tenant.
fn asked_by(
    state: &ApiState,
    p: &Params,
    headers: &HeaderMap,
    range: bool,
) -> Result<(Asked, String, Limits), String> {
    let a = asked(p, range, state.cfg.promql_max_points)?;
    Ok((a, tenant(headers)?, limits(state, p)?))
}

async fn run(
    state: ApiState,
    q: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    range: bool,
) -> Response {
    let p = Params::read(q.as_deref(), &headers, &body);
    let (a, tenant, limits) = match asked_by(&state, &p, &headers, range) {
        Ok(x) => x,
        Err(e) => return bad_data(e),
    };
    if a.range {
        let query = p.get("query").unwrap_or_default();
        return match range_points(&state, &headers, query, &a, &tenant, &limits).await {
            Ok((points, outcome)) => {
                metrics::counter!("obs_query_results_cache_total", "outcome" => outcome.name())
                    .increment(1);
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (CACHE_HEADER, outcome.name()),
                    ],
                    range_answer(&points),
                )
                    .into_response()
            }
            Err(e) => eval_error(e),
        };
    }
    match store::evaluate(Some(state.database()), &tenant, &a.expr, a.grid, &limits).await {
        Ok((v, _)) => (
            [(header::CONTENT_TYPE, "application/json")],
            instant_answer(&v, a.grid.start),
        )
            .into_response(),
        Err(e) => eval_error(e),
    }
}

/// The response header saying how the results cache answered a range query.
const CACHE_HEADER: header::HeaderName = header::HeaderName::from_static("x-obs-results-cache");

/// Whether the request asks not to be answered from a cache (`Cache-Control: no-cache` or
/// `no-store`).
fn skips_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| matches!(d.trim(), "no-cache" | "no-store"))
}

/// A range query's points: its cached steps and the others evaluated, or all evaluated
/// when the query cannot be cached (see [`results_cache`]).
async fn range_points(
    state: &ApiState,
    headers: &HeaderMap,
    query: &str,
    a: &Asked,
    tenant: &str,
    limits: &Limits,
) -> Result<(Points, Outcome), EvalError> {
    let evaluate = |grid: Grid| async move {
        let (v, _) = store::evaluate(Some(state.database()), tenant, &a.expr, grid, limits).await?;
        results_cache::points_of(v, grid).ok_or_else(|| {
            EvalError::Execution("a range query must return a scalar or an instant vector".into())
        })
    };
    let cache = state.results_cache.as_ref().filter(|c| {
        !skips_cache(headers)
            && results_cache::cacheable(&a.expr, !limits.rollup_resolutions.is_empty())
            && c.synced()
    });
    let Some(cache) = cache else {
        return Ok((evaluate(a.grid).await?, Outcome::Bypass));
    };
    let key = Key::new(tenant, query, a.grid);
    let plan = cache.plan(&key, a.grid);
    let mut points = plan.cached.clone();
    for &grid in &plan.missing {
        results_cache::merge(&mut points, evaluate(grid).await?);
    }
    // A hit adds no step to the cached run.
    if !plan.missing.is_empty() {
        cache.store(&key, &plan, a.grid, &points, now_ms());
    }
    Ok((points, plan.outcome))
}

/// `GET|POST /api/v1/query`.
pub async fn instant(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(state, q, headers, body, false).await
}

/// `GET|POST /api/v1/query_range`.
pub async fn range(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(state, q, headers, body, true).await
}

/// `GET|POST /api/v1/explain`: the SQL a PromQL query becomes (`start`, `end`, `step` as for
/// `query_range`; without them, an instant query now) and what is evaluated in Rust.
pub async fn explain(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = Params::read(q.as_deref(), &headers, &body);
    match p.get("language").unwrap_or("promql") {
        "promql" => {}
        "logql" => {
            let q = p.get("query").unwrap_or_default();
            return match crate::logql::explain(q) {
                Ok(plan) => ok(json!({"language": "logql", "query": q, "plan": plan})),
                Err(e) => bad_data(e),
            };
        }
        other => {
            return bad_data(format!(
                "invalid parameter \"language\": {other:?}; use promql or logql"
            ));
        }
    }
    let range = p.get("start").is_some() || p.get("end").is_some() || p.get("step").is_some();
    let (a, tenant, limits) = match asked_by(&state, &p, &headers, range) {
        Ok(x) => x,
        Err(e) => return bad_data(e),
    };
    match store::explain(&tenant, &a.expr, a.grid, &limits).await {
        Ok(x) => ok(
            json!({"language": "promql", "query": p.get("query"), "sql": x.statements, "rust": x.rust}),
        ),
        Err(e) => eval_error(e),
    }
}

/// `GET|POST /api/v1/query_exemplars`: as Prometheus answers it, the exemplars in
/// `[start, end]` of every series a selector of the query matches, per series, from
/// `metrics_exemplars`.
pub async fn exemplars(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = Params::read(q.as_deref(), &headers, &body);
    let expr = match p.get("query").map(promql::parse) {
        None => return bad_data("invalid parameter \"query\": missing"),
        Some(Err(e)) => return bad_data(e),
        Some(Ok(e)) => e,
    };
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(e) => return bad_data(e),
    };
    let (start, end) = match (p.time_ms("start"), p.time_ms("end")) {
        (Ok(s), Ok(e)) => (s.unwrap_or(0), e.unwrap_or(i64::MAX)),
        (Err(e), _) | (_, Err(e)) => return bad_data(e),
    };
    if end < start {
        return bad_data("end timestamp must not be before start timestamp");
    }
    let selectors = store::selectors(&expr);
    // Per series (its labels), its exemplars; a series two selectors match is listed once.
    let mut found: BTreeMap<BTreeMap<String, String>, BTreeMap<(i64, u64), serde_json::Value>> =
        BTreeMap::new();
    for vs in &selectors {
        let statement = match store::exemplars_statement(vs, &tenant, start, end) {
            Ok(s) => s,
            Err(e) => return bad_data(e),
        };
        let mut query = state.client.query(&statement.sql);
        for b in &statement.binds {
            query = query.bind(b.as_str());
        }
        let rows = match query.fetch_all::<ExemplarSeries>().await {
            Ok(rows) => rows,
            Err(e) => return eval_error(EvalError::Storage(e.to_string())),
        };
        for row in rows {
            let mut labels: BTreeMap<String, String> = row.labels.into_iter().collect();
            labels.insert("__name__".into(), row.name);
            let series = found.entry(labels).or_default();
            for (ms, value, exemplar_labels) in row.exemplars {
                let exemplar_labels: BTreeMap<String, String> =
                    exemplar_labels.into_iter().collect();
                series.insert(
                    (ms, value.to_bits()),
                    json!({
                        "labels": exemplar_labels,
                        "value": format_sample_value(value),
                        "timestamp": seconds(ms),
                    }),
                );
            }
        }
    }
    ok(serde_json::Value::Array(
        found
            .into_iter()
            .map(|(labels, exemplars)| {
                json!({"seriesLabels": labels, "exemplars": exemplars.into_values().collect::<Vec<_>>()})
            })
            .collect(),
    ))
}

/// A time in seconds as Prometheus writes it in JSON (`model.Time`): a whole number when
/// it is one, else with its milliseconds.
fn seconds(ms: i64) -> serde_json::Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// A series and its exemplars, as `exemplars_statement` reads them.
#[derive(clickhouse::Row, serde::Deserialize)]
struct ExemplarSeries {
    #[allow(dead_code)]
    fp: i64,
    name: String,
    labels: Vec<(String, String)>,
    exemplars: Vec<StoredExemplar>,
}

/// One stored exemplar: ms, value, its labels.
type StoredExemplar = (i64, f64, Vec<(String, String)>);
