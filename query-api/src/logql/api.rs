//! The Loki HTTP API handlers (GET and form POST), scoped to the `X-Scope-OrgID` tenant
//! (else `default`). Answers are `{"status":"success","data":...}`; a bad request is HTTP
//! 400 with a plain-text message, as Loki answers.

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clickhouse::Row;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ast::{Expr, Matcher};
use super::error::QueryError;
use super::exec::{self, Scope};
use super::params;
use super::parser::parse;
use super::pipeline::Labels;
use super::sql::{self, Bind, Range, STREAM_LABELS};
use crate::prom::params::Params;
use crate::server::ApiState;

/// The Loki API routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/loki/api/v1/query", get(query).post(query))
        .route(
            "/loki/api/v1/query_range",
            get(query_range).post(query_range),
        )
        .route("/loki/api/v1/labels", get(labels).post(labels))
        .route(
            "/loki/api/v1/label/{name}/values",
            get(label_values).post(label_values),
        )
        .route("/loki/api/v1/series", get(series).post(series))
        .route("/loki/api/v1/index/volume", get(volume).post(volume))
        .route("/loki/api/v1/index/stats", get(stats).post(stats))
}

type Answer = Result<Response, QueryError>;

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        match self {
            QueryError::BadRequest(m) => (StatusCode::BAD_REQUEST, m).into_response(),
            QueryError::Storage(m) => (StatusCode::INTERNAL_SERVER_ERROR, m).into_response(),
        }
    }
}

fn ok(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

fn bad(m: String) -> QueryError {
    QueryError::BadRequest(m)
}

fn scope(state: &ApiState, headers: &HeaderMap) -> Result<Scope, QueryError> {
    let tenant = crate::tenant::tenant(headers).map_err(bad)?;
    Ok(Scope {
        tenant,
        max_rows: state.cfg.logql_max_rows,
        max_seconds: state.cfg.logql_max_seconds,
    })
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// `start`/`end` (defaults: `end` now, `start` `since` before it); end before start refused.
fn time_range(p: &Params, since_ns: i64) -> Result<(i64, i64), QueryError> {
    let end = match p.get("end") {
        Some(v) if !v.is_empty() => params::time_ns("end", v).map_err(bad)?,
        _ => now_ns(),
    };
    let start = match p.get("start") {
        Some(v) if !v.is_empty() => params::time_ns("start", v).map_err(bad)?,
        _ => end - since_ns,
    };
    if end < start {
        return Err(bad(
            "invalid time range: end timestamp must not be before start time".into(),
        ));
    }
    Ok((start, end))
}

const HOUR: i64 = 3_600_000_000_000;

fn query_text(p: &Params) -> Result<&str, QueryError> {
    p.get("query")
        .filter(|q| !q.is_empty())
        .ok_or_else(|| bad("query parameter is required: give a LogQL query".into()))
}

async fn query(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = Params::read(q.as_deref(), &headers, &body);
    let expr = parse(query_text(&p)?)?;
    let t = match p.get("time") {
        Some(v) if !v.is_empty() => params::time_ns("time", v).map_err(bad)?,
        _ => now_ns(),
    };
    let scope = scope(&state, &headers)?;
    match expr {
        Expr::Log(_) => Err(bad("log queries are not supported as an instant query type, please change your query to a range query type".into())),
        Expr::Metric(m) => Ok(ok(exec::instant(&state.client, &scope, &m, t).await?)),
    }
}

async fn query_range(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = Params::read(q.as_deref(), &headers, &body);
    let expr = parse(query_text(&p)?)?;
    let (start, end) = time_range(&p, HOUR)?;
    let limit = params::limit(p.get("limit")).map_err(bad)?;
    let backward = params::backward(p.get("direction")).map_err(bad)?;
    let scope = scope(&state, &headers)?;
    match expr {
        Expr::Log(l) => Ok(ok(exec::streams(
            &state.client,
            &scope,
            &l,
            (start, end),
            limit,
            backward,
        )
        .await?)),
        Expr::Metric(m) => {
            let step = match p.get("step") {
                Some(v) if !v.is_empty() => params::step_ns(v).map_err(bad)?,
                // Loki's default: about 250 points, at least a second.
                _ => ((end - start) / 250 / 1_000_000_000).max(1) * 1_000_000_000,
            };
            Ok(ok(exec::matrix(
                &state.client,
                &scope,
                &m,
                (start, end, step),
            )
            .await?))
        }
    }
}

/// The selector of an optional `query` parameter that must be a plain stream selector.
fn selector_param(p: &Params, key: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    p.all(key)
        .iter()
        .filter(|q| !q.is_empty())
        .map(|q| match parse(q)? {
            Expr::Log(l) if l.stages.is_empty() => Ok(l.selector),
            _ => Err(bad(format!(
                "{key} must be a stream selector such as {{app=\"api\"}}, got {q:?}"
            ))),
        })
        .collect()
}

/// `WHERE` for the streams `sel` matches with entries in `[start, end]` (ns, both
/// inclusive, as the label and index endpoints read them).
fn stream_filter(scope: &Scope, sel: &[Matcher], (start, end): (i64, i64)) -> sql::Select {
    sql::filter(
        &scope.tenant,
        sel,
        &[],
        Range::Log {
            start,
            end: end.saturating_add(1),
        },
    )
}

async fn labels(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = Params::read(q.as_deref(), &headers, &body);
    let (start, end) = time_range(&p, 6 * HOUR)?;
    let scope = scope(&state, &headers)?;
    let selectors = selector_param(&p, "query")?;
    let sel = selectors.into_iter().next().unwrap_or_default();
    let mut f = stream_filter(&scope, &sel, (start, end));
    f.sql = format!(
        "SELECT DISTINCT arrayJoin(mapKeys({STREAM_LABELS})) AS l FROM otel_logs WHERE {} ORDER BY l",
        f.sql
    );
    let names: Vec<String> = scope.query(&state.client, &f).fetch_all::<String>().await?;
    Ok(ok(json!(names)))
}

async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    if !obs_runtime::labels::valid_label_name(&name) {
        return Err(bad(format!("invalid label name: {name:?}")));
    }
    let p = Params::read(q.as_deref(), &headers, &body);
    let (start, end) = time_range(&p, 6 * HOUR)?;
    let scope = scope(&state, &headers)?;
    let sel = selector_param(&p, "query")?
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut f = stream_filter(&scope, &sel, (start, end));
    f.sql = format!(
        "SELECT DISTINCT {STREAM_LABELS}[?] AS v FROM otel_logs WHERE {} AND mapContains({STREAM_LABELS}, ?) ORDER BY v",
        f.sql
    );
    f.binds.insert(0, Bind::Str(name.clone()));
    f.binds.push(Bind::Str(name));
    let values: Vec<String> = scope.query(&state.client, &f).fetch_all::<String>().await?;
    Ok(ok(json!(values)))
}

#[derive(Row, Deserialize)]
struct LabelsRow {
    labels: Vec<(String, String)>,
}

async fn series(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = Params::read(q.as_deref(), &headers, &body);
    let (start, end) = time_range(&p, 6 * HOUR)?;
    let scope = scope(&state, &headers)?;
    let mut selectors = selector_param(&p, "match[]")?;
    selectors.extend(selector_param(&p, "match")?);
    if selectors.is_empty() {
        selectors.push(Vec::new());
    }
    let mut sets: BTreeSet<Labels> = BTreeSet::new();
    for sel in selectors {
        let mut f = stream_filter(&scope, &sel, (start, end));
        f.sql = format!(
            "SELECT DISTINCT {STREAM_LABELS} AS labels FROM otel_logs WHERE {}",
            f.sql
        );
        for r in scope
            .query(&state.client, &f)
            .fetch_all::<LabelsRow>()
            .await?
        {
            sets.insert(
                r.labels
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .collect(),
            );
        }
    }
    Ok(ok(json!(sets)))
}

#[derive(Row, Deserialize)]
struct VolumeRow {
    vals: Vec<String>,
    bytes: u64,
}

async fn volume(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = Params::read(q.as_deref(), &headers, &body);
    let (start, end) = time_range(&p, HOUR)?;
    let scope = scope(&state, &headers)?;
    let Some(sel) = selector_param(&p, "query")?.into_iter().next() else {
        return Err(bad(
            "query parameter is required: give a stream selector".into()
        ));
    };
    let limit = params::limit(p.get("limit")).map_err(bad)?;
    match p.get("aggregateBy") {
        None | Some("") | Some("series") => {}
        Some(other) => {
            return Err(bad(format!(
                "aggregateBy {other:?} is not supported: only series"
            )));
        }
    }
    // Grouped by targetLabels, else by the labels the selector names (as Loki does).
    let mut names: Vec<String> = match p.get("targetLabels").filter(|t| !t.is_empty()) {
        Some(t) => t
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => sel.iter().map(|m| m.name.clone()).collect(),
    };
    names.sort();
    names.dedup();
    let mut f = stream_filter(&scope, &sel, (start, end));
    let col = format!("{STREAM_LABELS}[?]");
    let cols = vec![col.as_str(); names.len()].join(", ");
    f.sql = format!(
        "SELECT [{cols}] AS vals, sum(length(Body)) AS bytes FROM otel_logs WHERE {} GROUP BY vals ORDER BY bytes DESC, vals LIMIT ?",
        f.sql
    );
    let mut binds: Vec<Bind> = names.iter().cloned().map(Bind::Str).collect();
    binds.append(&mut f.binds);
    binds.push(Bind::Int(limit as i64));
    f.binds = binds;
    let rows = scope
        .query(&state.client, &f)
        .fetch_all::<VolumeRow>()
        .await?;
    let result: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let metric: Labels = names
                .iter()
                .cloned()
                .zip(r.vals)
                .filter(|(_, v)| !v.is_empty())
                .collect();
            json!({"metric": metric, "value": [exec::secs(end), r.bytes.to_string()]})
        })
        .collect();
    Ok(ok(json!({"resultType": "vector", "result": result})))
}

#[derive(Row, Deserialize)]
struct StatsRow {
    streams: u64,
    entries: u64,
    bytes: u64,
}

/// `index/stats`: streams, entries and bytes a selector covers in the range (Grafana asks
/// before running a query, to show its size). There are no chunks in ClickHouse: `chunks`
/// counts streams, the closest unit a reader would fetch separately.
async fn stats(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = Params::read(q.as_deref(), &headers, &body);
    let answer = async {
        let (start, end) = time_range(&p, HOUR)?;
        let scope = scope(&state, &headers)?;
        let Some(sel) = selector_param(&p, "query")?.into_iter().next() else {
            return Err(bad(
                "query parameter is required: give a stream selector".into()
            ));
        };
        let mut f = stream_filter(&scope, &sel, (start, end));
        f.sql = format!(
            "SELECT uniqExact({STREAM_LABELS}) AS streams, count() AS entries, toUInt64(sum(length(Body))) AS bytes FROM otel_logs WHERE {}",
            f.sql
        );
        let r = scope
            .query(&state.client, &f)
            .fetch_one::<StatsRow>()
            .await?;
        Ok(axum::Json(json!({
            "streams": r.streams,
            "chunks": r.streams,
            "entries": r.entries,
            "bytes": r.bytes,
        }))
        .into_response())
    };
    match answer.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}
