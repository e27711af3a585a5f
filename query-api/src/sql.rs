//! `GET|POST /api/v1/sql`: read-only ad-hoc SQL, bounded in rows, bytes and time.
//!
//! The statement runs with ClickHouse's `readonly=1` (no writes, no DDL, no changing
//! settings, so the limits cannot be lifted from inside the query), `max_result_rows`,
//! `max_result_bytes` and `max_execution_time` from `[query]`. Output: `format=json`
//! (ClickHouse's JSON: meta, data, rows, statistics), `csv` (with a header row) or `arrow`
//! (Arrow IPC stream).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
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

/// The statement with comments and quoted text blanked out, for keyword checks only.
fn code_only(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(' ');
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Rejects what the endpoint cannot run as asked, with what to do instead.
pub fn check_statement(sql: &str) -> Result<(), String> {
    let code = code_only(sql);
    let words: Vec<String> = code
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let Some(first) = words.first() else {
        return Err("empty query: pass the statement as `query`".into());
    };
    const READS: &[&str] = &[
        "SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS",
    ];
    if !READS.contains(&first.as_str()) {
        return Err(format!(
            "only read-only statements are allowed here (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS), not {first}"
        ));
    }
    if code.trim_end().trim_end_matches(';').contains(';') {
        return Err("one statement per request".into());
    }
    if words.iter().any(|w| w == "FORMAT") {
        return Err(
            "remove the FORMAT clause; choose the output with format=json|csv|arrow".into(),
        );
    }
    Ok(())
}

/// GET with the query string.
pub async fn get(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    run(state, params).await
}

/// POST with a form body.
pub async fn post(
    State(state): State<ApiState>,
    Form(params): Form<HashMap<String, String>>,
) -> Response {
    run(state, params).await
}

async fn run(state: ApiState, params: HashMap<String, String>) -> Response {
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
    if let Err(e) = check_statement(sql) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let limits = &state.cfg;
    // The crate takes `?` as a bind placeholder; `??` is a literal `?`.
    let query = state
        .client
        .query(&sql.trim_end().trim_end_matches(';').replace('?', "??"))
        .with_setting("max_result_rows", limits.sql_max_rows.to_string())
        .with_setting("max_result_bytes", limits.sql_max_result_bytes.to_string())
        .with_setting("result_overflow_mode", "throw")
        .with_setting("max_execution_time", limits.sql_max_seconds.to_string())
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
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("ClickHouse is unreachable or failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_and_writes_do_not() {
        assert!(check_statement("SELECT 1").is_ok());
        assert!(check_statement("  with x as (select 1) select * from x;").is_ok());
        assert!(check_statement("SELECT 'a;b' -- ; comment").is_ok());
        assert!(check_statement("SELECT 'FORMAT CSV'").is_ok());
        assert!(
            check_statement("INSERT INTO t VALUES (1)")
                .unwrap_err()
                .contains("INSERT")
        );
        assert!(check_statement("DROP TABLE t").is_err());
        assert!(
            check_statement("SELECT 1; DROP TABLE t")
                .unwrap_err()
                .contains("one statement")
        );
        assert!(
            check_statement("SELECT 1 FORMAT CSV")
                .unwrap_err()
                .contains("format=")
        );
        assert!(check_statement("/* only */ -- comments").is_err());
    }
}
