//! The handlers. Answers are `{"status":"success","data":...}`; errors
//! `{"status":"error","errorType":"bad_data","error":...}` with 400 (or 422/503 as
//! Prometheus uses them).

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clickhouse::Row;
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::Params;
use super::query;
use super::selector::{self, SqlFilter};
use crate::server::ApiState;

/// The Prometheus API routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/rules", get(super::rules::rules))
        .route("/api/v1/alerts", get(super::rules::alerts))
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route("/api/v1/explain", get(query::explain).post(query::explain))
        .route(
            "/api/v1/query_exemplars",
            get(query::exemplars).post(query::exemplars),
        )
}

pub(super) fn ok(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

pub(super) fn bad(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"status": "error", "errorType": kind, "error": message.into()});
    (status, axum::Json(body)).into_response()
}

pub(super) fn bad_data(message: impl Into<String>) -> Response {
    bad(StatusCode::BAD_REQUEST, "bad_data", message)
}

fn unavailable(e: clickhouse::error::Error) -> Response {
    bad(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("storage: {e}"),
    )
}

/// The request's tenant, validated as the collectors do (see [`crate::tenant`]).
pub(super) fn tenant(headers: &HeaderMap) -> Result<String, String> {
    crate::tenant::tenant(headers)
}

/// An answer that is an error (`?` in handlers returning `Result<Response, Response>`).
type Answer = Result<Response, Response>;

/// The request's parameters and its `WHERE` over `metrics_series`.
fn request_filter(
    q: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    required: bool,
) -> Result<SqlFilter, String> {
    let p = Params::read(q, headers, body);
    series_filter(&p, tenant(headers)?, required)
}

/// `WHERE` over `metrics_series` for tenant, optional selectors and time range.
fn series_filter(p: &Params, tenant: String, required: bool) -> Result<SqlFilter, String> {
    let mut f = SqlFilter {
        sql: "Tenant = ?".into(),
        binds: vec![tenant.clone()],
    };
    let matches = p.all("match[]");
    if matches.is_empty() && required {
        return Err("no match[] parameter provided".into());
    }
    if !matches.is_empty() {
        let s = selector::any_of(&matches)?;
        f.sql = format!("{} AND {}", f.sql, s.sql);
        f.binds.extend(s.binds);
    }
    let (start, end) = (p.time_ms("start")?, p.time_ms("end")?);
    if start.is_some() || end.is_some() {
        f.sql = format!(
            "{} AND Fingerprint IN (SELECT DISTINCT Fingerprint FROM metrics_samples WHERE Tenant = ? AND TimestampMs >= ? AND TimestampMs <= ?)",
            f.sql
        );
        f.binds.push(tenant);
        f.binds.push(start.unwrap_or(i64::MIN).to_string());
        f.binds.push(end.unwrap_or(i64::MAX).to_string());
    }
    Ok(f)
}

fn query(state: &ApiState, sql: &str, f: &SqlFilter) -> clickhouse::query::Query {
    let mut q = state.client.query(sql);
    for b in &f.binds {
        q = q.bind(b.as_str());
    }
    q
}

async fn labels(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let f = request_filter(q.as_deref(), &headers, &body, false).map_err(bad_data)?;
    let sql = format!(
        "SELECT DISTINCT arrayJoin(arrayConcat(['__name__'], mapKeys(Labels))) AS l FROM metrics_series WHERE {} ORDER BY l",
        f.sql
    );
    let names = query(&state, &sql, &f)
        .fetch_all::<String>()
        .await
        .map_err(unavailable)?;
    Ok(ok(json!(names)))
}

async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Answer {
    if !obs_runtime::labels::valid_label_name(&name) {
        return Err(bad_data(format!("invalid label name: {name:?}")));
    }
    let mut f = request_filter(q.as_deref(), &headers, &[], false).map_err(bad_data)?;
    let sql = if name == "__name__" {
        format!(
            "SELECT DISTINCT MetricName AS v FROM metrics_series WHERE {} ORDER BY v",
            f.sql
        )
    } else {
        f.binds.insert(0, name.clone());
        f.binds.push(name.clone());
        format!(
            "SELECT DISTINCT Labels[?] AS v FROM metrics_series WHERE {} AND mapContains(Labels, ?) ORDER BY v",
            f.sql
        )
    };
    let values = query(&state, &sql, &f)
        .fetch_all::<String>()
        .await
        .map_err(unavailable)?;
    Ok(ok(json!(values)))
}

#[derive(Row, Deserialize)]
struct SeriesRow {
    name: String,
    labels: Vec<(String, String)>,
}

async fn series(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let f = request_filter(q.as_deref(), &headers, &body, true).map_err(bad_data)?;
    let sql = format!(
        "SELECT DISTINCT MetricName AS name, Labels AS labels FROM metrics_series WHERE {} ORDER BY name",
        f.sql
    );
    let rows = query(&state, &sql, &f)
        .fetch_all::<SeriesRow>()
        .await
        .map_err(unavailable)?;
    // Label sets as a set: a series row may not be merged yet.
    let sets: std::collections::BTreeSet<BTreeMap<String, String>> = rows
        .into_iter()
        .map(|r| {
            let mut m: BTreeMap<String, String> = r.labels.into_iter().collect();
            m.insert("__name__".into(), r.name);
            m
        })
        .collect();
    Ok(ok(json!(sets)))
}

#[derive(Row, Deserialize)]
struct MetaRow {
    family: String,
    kind: String,
    help: String,
    unit: String,
}

async fn metadata(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = Params::read(q.as_deref(), &headers, &[]);
    let limit: usize = match p.get("limit").map(str::parse::<i64>) {
        None => usize::MAX,
        Some(Ok(n)) if n > 0 => n as usize,
        Some(Ok(_)) => usize::MAX,
        Some(Err(_)) => return bad_data("invalid parameter \"limit\": not an integer"),
    };
    let mut f = SqlFilter {
        sql: "Tenant = ?".into(),
        binds: vec![match tenant(&headers) {
            Ok(t) => t,
            Err(e) => return bad_data(e),
        }],
    };
    if let Some(m) = p.get("metric") {
        f.sql.push_str(" AND MetricFamily = ?");
        f.binds.push(m.to_string());
    }
    let sql = format!(
        "SELECT MetricFamily AS family, Kind AS kind, Help AS help, Unit AS unit FROM metrics_metadata FINAL WHERE {} ORDER BY family",
        f.sql
    );
    match query(&state, &sql, &f).fetch_all::<MetaRow>().await {
        Ok(rows) => {
            let mut out = serde_json::Map::new();
            for r in rows.into_iter().take(limit) {
                out.insert(
                    r.family,
                    json!([{"type": r.kind, "help": r.help, "unit": r.unit}]),
                );
            }
            ok(Value::Object(out))
        }
        Err(e) => unavailable(e),
    }
}

async fn buildinfo() -> Response {
    ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "obs",
        "buildDate": "",
        "goVersion": "",
        "application": "obs"
    }))
}
