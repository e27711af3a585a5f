//! `/api/v1/rules` and `/api/v1/alerts`: answered by the rule processor, which holds the
//! rules' live state; forwarded there (`[query] rules_url`) with the query string and the
//! tenant header, so Grafana's alert list and rule views work against the query API.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use obs_runtime::tenant::TENANT_HEADER;

use super::api::bad;
use crate::server::ApiState;

async fn forward(
    state: &ApiState,
    path: &str,
    query: Option<String>,
    headers: &HeaderMap,
) -> Response {
    let base = state.cfg.rules_url.trim_end_matches('/');
    let url = match query {
        Some(q) if !q.is_empty() => format!("{base}{path}?{q}"),
        _ => format!("{base}{path}"),
    };
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let mut req = CLIENT
        .get_or_init(|| {
            obs_runtime::tls::http_client()
                .build()
                .expect("an HTTP client with the CA roots trust() validated")
        })
        .get(&url)
        .timeout(std::time::Duration::from_secs(10));
    // The caller's tenant and credential go along: the processor's listener checks them too.
    for name in [TENANT_HEADER, "authorization"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v.as_bytes());
        }
    }
    match req.send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(body) => (
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response(),
                Err(e) => unavailable(base, e),
            }
        }
        Err(e) => unavailable(base, e),
    }
}

fn unavailable(base: &str, e: reqwest::Error) -> Response {
    bad(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!(
            "the rule processor at {base} did not answer ({e}); start `obs processor` or set [query] rules_url"
        ),
    )
}

/// `GET /api/v1/rules`.
pub async fn rules(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    forward(&state, "/api/v1/rules", q, &headers).await
}

/// `GET /api/v1/alerts`.
pub async fn alerts(
    State(state): State<ApiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    forward(&state, "/api/v1/alerts", q, &headers).await
}
