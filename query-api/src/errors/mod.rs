//! `GET /api/v1/errors`: error groups (what Sentry calls issues) of the `X-Scope-OrgID`
//! tenant, from `obs_error_events`: per fingerprint, the exception type, a sample message,
//! the normalised message and innermost frames, first and last seen, how many times,
//! which services and releases, and a few trace ids to open.
//!
//! Parameters (all optional): `service`, `fingerprint`, `start` and `end` (Unix seconds),
//! `limit` (groups, newest last-seen first; default 100, at most 1000).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::server::ApiState;

/// Groups answered when no `limit` is given.
const DEFAULT_LIMIT: u64 = 100;
/// Most groups one request may ask for.
const MAX_LIMIT: u64 = 1000;
/// Trace ids shown per group.
const SAMPLE_TRACES: u32 = 5;

/// One error group as the API answers it.
#[derive(Debug, Row, Deserialize, Serialize)]
pub struct ErrorGroup {
    /// Group key.
    pub fingerprint: String,
    /// Exception type.
    pub exception_type: String,
    /// The message of the group's first occurrence.
    pub message: String,
    /// The message with variable parts replaced.
    pub normalized_message: String,
    /// Innermost frames, `file:function`.
    pub top_frames: Vec<String>,
    /// First occurrence, ns since the epoch.
    pub first_seen_ns: i64,
    /// Last occurrence, ns since the epoch.
    pub last_seen_ns: i64,
    /// Occurrences.
    pub count: u64,
    /// Services it happened in.
    pub services: Vec<String>,
    /// Releases (`service.version`) it happened in.
    pub releases: Vec<String>,
    /// Some traces it happened in.
    pub sample_trace_ids: Vec<String>,
}

/// The routes of this module.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/errors", get(list))
}

fn answer(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "errorType": kind, "error": message})),
    )
        .into_response()
}

fn seconds(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, String> {
    match params.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<f64>()
            .map(|v| Some((v * 1e9) as i64))
            .map_err(|_| format!("invalid {name} {s:?}: expected Unix seconds")),
    }
}

/// The statement and its bound values for the request's filters.
pub fn groups_sql(
    tenant: &str,
    params: &HashMap<String, String>,
) -> Result<(String, Vec<String>, u64), String> {
    let mut sql = String::from(
        "SELECT Fingerprint AS fingerprint, any(ExceptionType) AS exception_type, \
         argMin(ExceptionMessage, Timestamp) AS message, any(NormalizedMessage) AS normalized_message, \
         any(TopFrames) AS top_frames, toInt64(toUnixTimestamp64Nano(min(Timestamp))) AS first_seen_ns, \
         toInt64(toUnixTimestamp64Nano(max(Timestamp))) AS last_seen_ns, count() AS count, \
         arraySort(groupUniqArray(ServiceName)) AS services, \
         arraySort(groupUniqArrayIf(Release, Release != '')) AS releases, ",
    );
    sql.push_str(&format!(
        "arraySort(groupUniqArrayIf({SAMPLE_TRACES})(TraceId, TraceId != '')) AS sample_trace_ids \
         FROM obs_error_events FINAL WHERE Tenant = ?"
    ));
    let mut binds = vec![tenant.to_string()];
    for (param, column) in [("service", "ServiceName"), ("fingerprint", "Fingerprint")] {
        if let Some(v) = params.get(param).filter(|v| !v.is_empty()) {
            sql.push_str(&format!(" AND {column} = ?"));
            binds.push(v.clone());
        }
    }
    if let Some(ns) = seconds(params, "start")? {
        sql.push_str(&format!(
            " AND Timestamp >= fromUnixTimestamp64Nano(toInt64({ns}))"
        ));
    }
    if let Some(ns) = seconds(params, "end")? {
        sql.push_str(&format!(
            " AND Timestamp <= fromUnixTimestamp64Nano(toInt64({ns}))"
        ));
    }
    let limit = match params
        .get("limit")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| format!("invalid limit {s:?}: expected a whole number"))?
            .clamp(1, MAX_LIMIT),
    };
    sql.push_str(&format!(
        " GROUP BY Fingerprint ORDER BY last_seen_ns DESC, fingerprint LIMIT {limit}"
    ));
    Ok((sql, binds, limit))
}

async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let tenant = match crate::tenant::tenant(&headers) {
        Ok(t) => t,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    let (sql, binds, _) = match groups_sql(&tenant, &params) {
        Ok(s) => s,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    let mut q = state.client.query(&sql);
    for b in &binds {
        q = q.bind(b.as_str());
    }
    match q.fetch_all::<ErrorGroup>().await {
        Ok(groups) => axum::Json(json!({"status": "success", "data": groups})).into_response(),
        Err(e) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("storage: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_bound_and_limits_checked() {
        let p: HashMap<String, String> = [
            ("service".to_string(), "a' OR 1=1 --".to_string()),
            ("start".to_string(), "1700000000".to_string()),
        ]
        .into();
        let (sql, binds, limit) = groups_sql("t", &p).unwrap();
        assert!(sql.contains("ServiceName = ?") && !sql.contains("OR 1=1"));
        assert_eq!(binds, vec!["t".to_string(), "a' OR 1=1 --".to_string()]);
        assert!(sql.contains("toInt64(1700000000000000000)"));
        assert_eq!(limit, 100);
        let bad: HashMap<String, String> = [("limit".to_string(), "x".to_string())].into();
        assert!(groups_sql("t", &bad).unwrap_err().contains("invalid limit"));
    }
}
