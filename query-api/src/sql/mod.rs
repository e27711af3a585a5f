//! `GET|POST /api/v1/sql`: read-only ad-hoc SQL, bounded in rows, bytes and time.
//!
//! The statement runs with ClickHouse's `readonly=1` (no writes, no DDL, no changing
//! settings, so the limits cannot be lifted from inside the query), `max_result_rows`,
//! `max_result_bytes` and `max_execution_time` from `[query]`. Output: `format=json`
//! (ClickHouse's JSON: meta, data, rows, statistics), `csv` (with a header row) or `arrow`
//! (Arrow IPC stream).
//!
//! Every statement is scoped to the request's tenant (`X-Scope-OrgID`, else `default`):
//! see [`tenant_scope`]; [`statement`] refuses what the endpoint does not run.

pub mod statement;
pub mod tenant_scope;

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::server::ApiState;

/// Output formats: `(name in the API, ClickHouse format, content type)`.
const FORMATS: &[(&str, &str, &str)] = &[
    ("json", "JSON", "application/json"),
    ("csv", "CSVWithNames", "text/csv; charset=utf-8"),
    (
        "arrow",
        "ArrowStream",
        "application/vnd.apache.arrow.stream",
    ),
];

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        json!({"status": "error", "error": message.into()}).to_string(),
    )
        .into_response()
}

/// GET with the query string.
pub async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    run(state, &headers, params).await
}

/// POST with a form body.
pub async fn post(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(params): Form<HashMap<String, String>>,
) -> Response {
    run(state, &headers, params).await
}

fn unreachable_storage(e: clickhouse::error::Error) -> Response {
    error(
        StatusCode::BAD_GATEWAY,
        format!("ClickHouse is unreachable or failed: {e}"),
    )
}

async fn run(state: ApiState, headers: &HeaderMap, params: HashMap<String, String>) -> Response {
    let tenant = match crate::tenant::tenant(headers) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(sql) = params.get("query").map(|s| s.trim()) else {
        return error(StatusCode::BAD_REQUEST, "missing `query` parameter");
    };
    let wanted = params.get("format").map(String::as_str).unwrap_or("json");
    let Some(&(_, ch_format, content_type)) = FORMATS.iter().find(|f| f.0 == wanted) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown format {wanted:?}: use json, csv or arrow"),
        );
    };
    let table_functions = match tenant_scope::table_functions(&state.client).await {
        Ok(names) => names,
        Err(e) => return unreachable_storage(e),
    };
    if let Err(e) = statement::check(sql, table_functions) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let filters = match tenant_scope::tenant_tables(&state.client).await {
        Ok(tables) => tenant_scope::table_filters(&tables, &tenant),
        Err(e) => return unreachable_storage(e),
    };
    let limits = &state.cfg;
    // The crate takes `?` as a bind placeholder; `??` is a literal `?`.
    let query = state
        .client
        .query(&sql.trim_end().trim_end_matches(';').replace('?', "??"))
        .with_setting("max_result_rows", limits.sql_max_rows.to_string())
        .with_setting("max_result_bytes", limits.sql_max_result_bytes.to_string())
        .with_setting("result_overflow_mode", "throw")
        .with_setting("max_execution_time", limits.sql_max_seconds.to_string())
        .with_setting("additional_table_filters", filters)
        .with_setting("readonly", "1");
    // The engine stops at max_execution_time; this bounds a server that does not answer.
    let deadline = std::time::Duration::from_secs(limits.sql_max_seconds + 5);
    let fetched = tokio::time::timeout(deadline, async {
        match query.fetch_bytes(ch_format) {
            Ok(mut cursor) => cursor.collect().await,
            Err(e) => Err(e),
        }
    })
    .await;
    let Ok(bytes) = fetched else {
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("ClickHouse did not answer within {deadline:?}"),
        );
    };
    match bytes {
        Ok(b) => ([(CONTENT_TYPE, content_type)], b).into_response(),
        Err(clickhouse::error::Error::BadResponse(msg)) => error(StatusCode::BAD_REQUEST, msg),
        Err(e) => unreachable_storage(e),
    }
}
