//! Jaeger's query API (the HTTP JSON one the Jaeger UI and Grafana's Jaeger datasource
//! call): services, operations, trace search, trace by id, dependencies. Answers are
//! `{"data": ..., "total", "limit": 0, "offset": 0, "errors": null}`; errors carry
//! `"errors": [{"code", "msg"}]` with the same HTTP status.
//!
//! Spans become Jaeger spans as Jaeger's own OTLP translation makes them: times and
//! durations in µs, the parent as a `CHILD_OF` reference and links as `FOLLOWS_FROM`,
//! events as logs (`event` field plus attributes), the resource as the process (its tags
//! without `service.name`), and `span.kind`, `otel.scope.*`, `otel.status_code`,
//! `otel.status_description` and `error` as tags.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clickhouse::Row;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

use super::params::{self, DurationOf, Search};
use super::store::{self, SpanRow};
use super::{Failure, Fetched};
use crate::server::ApiState;

/// A Jaeger error answer.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let body = json!({
        "data": null, "total": 0, "limit": 0, "offset": 0,
        "errors": [{"code": status.as_u16(), "msg": msg.into()}],
    });
    (status, Json(body)).into_response()
}

impl Failure {
    /// The failure as a Jaeger error answer.
    pub fn jaeger(self) -> Response {
        error(self.status, self.message)
    }
}

fn data(v: Value, total: usize) -> Response {
    Json(json!({"data": v, "total": total, "limit": 0, "offset": 0, "errors": null}))
        .into_response()
}

fn tag(key: &str, value: &str) -> Value {
    json!({"key": key, "type": "string", "value": value})
}

fn kv_tags(pairs: &[(String, String)]) -> Vec<Value> {
    pairs.iter().map(|(k, v)| tag(k, v)).collect()
}

/// A span's tags: its attributes, then what Jaeger derives from OTLP fields.
fn span_tags(r: &SpanRow) -> Vec<Value> {
    let mut tags = kv_tags(&r.span_attributes);
    if r.span_kind != "Unspecified" && !r.span_kind.is_empty() {
        tags.push(tag("span.kind", &r.span_kind.to_ascii_lowercase()));
    }
    if !r.scope_name.is_empty() {
        tags.push(tag("otel.scope.name", &r.scope_name));
    }
    if !r.scope_version.is_empty() {
        tags.push(tag("otel.scope.version", &r.scope_version));
    }
    match r.status_code.as_str() {
        "Error" => {
            tags.push(tag("otel.status_code", "ERROR"));
            tags.push(json!({"key": "error", "type": "bool", "value": true}));
        }
        "Ok" => tags.push(tag("otel.status_code", "OK")),
        _ => {}
    }
    if !r.status_message.is_empty() {
        tags.push(tag("otel.status_description", &r.status_message));
    }
    if !r.trace_state.is_empty() {
        tags.push(tag("w3c.tracestate", &r.trace_state));
    }
    tags
}

/// One trace (its spans, all of one trace id) as Jaeger JSON.
pub fn trace_json(trace_id: &str, spans: &[SpanRow]) -> Value {
    let mut processes: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut out = Vec::with_capacity(spans.len());
    for r in spans {
        let mut tags: Vec<(String, String)> = r
            .resource_attributes
            .iter()
            .filter(|(k, _)| k != "service.name")
            .cloned()
            .collect();
        tags.sort();
        let process = (r.service_name.clone(), tags);
        let n = match processes.iter().position(|p| *p == process) {
            Some(i) => i + 1,
            None => {
                processes.push(process);
                processes.len()
            }
        };
        let mut references = Vec::new();
        if !r.parent_span_id.is_empty() {
            references.push(
                json!({"refType": "CHILD_OF", "traceID": r.trace_id, "spanID": r.parent_span_id}),
            );
        }
        for (t, s) in r.links_trace_id.iter().zip(&r.links_span_id) {
            references.push(json!({"refType": "FOLLOWS_FROM", "traceID": t, "spanID": s}));
        }
        let logs: Vec<Value> = r
            .events_timestamp
            .iter()
            .zip(&r.events_name)
            .zip(&r.events_attributes)
            .map(|((t, name), attrs)| {
                let mut fields = vec![tag("event", name)];
                fields.extend(kv_tags(attrs));
                json!({"timestamp": t / 1000, "fields": fields})
            })
            .collect();
        out.push(json!({
            "traceID": r.trace_id,
            "spanID": r.span_id,
            "operationName": r.span_name,
            "references": references,
            "startTime": r.timestamp / 1000,
            "duration": r.duration / 1000,
            "tags": span_tags(r),
            "logs": logs,
            "processID": format!("p{n}"),
            "warnings": null,
        }));
    }
    let processes: serde_json::Map<String, Value> = processes
        .into_iter()
        .enumerate()
        .map(|(i, (service, tags))| {
            (
                format!("p{}", i + 1),
                json!({"serviceName": service, "tags": kv_tags(&tags)}),
            )
        })
        .collect();
    json!({"traceID": trace_id, "spans": out, "processes": processes, "warnings": null})
}

/// Spans (ordered by trace) as one Jaeger trace per id, in the order of `ids`.
pub fn traces_json(ids: &[String], spans: &[SpanRow]) -> Vec<Value> {
    ids.iter()
        .filter_map(|id| {
            let of_trace: Vec<SpanRow> = spans
                .iter()
                .filter(|s| &s.trace_id == id)
                .cloned()
                .collect();
            (!of_trace.is_empty()).then(|| trace_json(id, &of_trace))
        })
        .collect()
}

fn tenant(headers: &HeaderMap) -> Result<String, Failure> {
    crate::tenant::tenant(headers).map_err(Failure::bad)
}

/// `GET /api/services`.
pub async fn services(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(f) => return f.jaeger(),
    };
    match store::services_sql(&tenant)
        .query(&state.client)
        .fetch_all::<String>()
        .await
    {
        Ok(names) => {
            let n = names.len();
            data(json!(names), n)
        }
        Err(e) => Failure::storage(e).jaeger(),
    }
}

#[derive(Row, Deserialize)]
struct Operation {
    name: String,
    kind: String,
}

async fn operation_rows(
    state: &ApiState,
    headers: &HeaderMap,
    service: &str,
) -> Result<Vec<Operation>, Failure> {
    let tenant = tenant(headers)?;
    store::operations_sql(&tenant, service)
        .query(&state.client)
        .fetch_all::<Operation>()
        .await
        .map_err(Failure::storage)
}

/// `GET /api/services/{service}/operations`: operation names.
pub async fn service_operations(
    State(state): State<ApiState>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Response {
    match operation_rows(&state, &headers, &service).await {
        Ok(rows) => {
            let mut names: Vec<String> = rows.into_iter().map(|o| o.name).collect();
            names.dedup();
            let n = names.len();
            data(json!(names), n)
        }
        Err(f) => f.jaeger(),
    }
}

/// `GET /api/operations?service=&spanKind=`: operations with their span kinds.
pub async fn operations(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(service) = q.get("service").filter(|s| !s.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "parameter 'service' is required");
    };
    let kind = q
        .get("spanKind")
        .map(|k| k.to_ascii_lowercase())
        .filter(|k| !k.is_empty());
    match operation_rows(&state, &headers, service).await {
        Ok(rows) => {
            let list: Vec<Value> = rows
                .into_iter()
                .map(|o| (o.name, o.kind.to_ascii_lowercase()))
                .filter(|(_, k)| kind.as_ref().is_none_or(|want| want == k))
                .map(|(name, k)| json!({"name": name, "spanKind": k}))
                .collect();
            let n = list.len();
            data(json!(list), n)
        }
        Err(f) => f.jaeger(),
    }
}

/// The search a Jaeger `/api/traces` query string asks for (times in µs).
pub fn search(q: &HashMap<String, String>) -> Result<Search, String> {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(service) = get("service") else {
        return Err("parameter 'service' is required".into());
    };
    Ok(Search {
        service: Some(service.to_string()),
        operation: get("operation").map(String::from),
        tags: params::tags(get("tags").unwrap_or(""))?,
        min_duration_ns: get("minDuration").map(params::duration_ns).transpose()?,
        max_duration_ns: get("maxDuration").map(params::duration_ns).transpose()?,
        duration_of: DurationOf::Span,
        start_ns: params::time_ns("start", get("start"), 1000)?,
        end_ns: params::time_ns("end", get("end"), 1000)?,
        limit: params::limit(get("limit"))?,
    })
}

/// `GET /api/traces?service=&operation=&tags=&minDuration=&maxDuration=&start=&end=&limit=`:
/// the matching traces, whole, newest first.
pub async fn find_traces(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(f) => return f.jaeger(),
    };
    let search = match search(&q) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let ids = match super::search(&state, &tenant, &search).await {
        Ok(found) => found.into_iter().map(|t| t.trace_id).collect::<Vec<_>>(),
        Err(f) => return f.jaeger(),
    };
    if ids.is_empty() {
        return data(json!([]), 0);
    }
    match super::spans(&state, &tenant, &ids).await {
        Ok(spans) => {
            let traces = traces_json(&ids, &spans);
            let n = traces.len();
            data(Value::Array(traces), n)
        }
        Err(f) => f.jaeger(),
    }
}

/// A trace by id as Jaeger JSON (the default answer of `GET /api/traces/{id}`).
pub fn trace_answer(fetched: Fetched) -> Response {
    match fetched {
        Ok((id, spans)) if !spans.is_empty() => data(json!([trace_json(&id, &spans)]), 1),
        Ok(_) => error(StatusCode::NOT_FOUND, "trace not found"),
        Err(f) => f.jaeger(),
    }
}

#[derive(Row, Deserialize)]
struct Edge {
    parent: String,
    child: String,
    calls: u64,
}

/// `GET /api/dependencies?endTs=<ms>&lookback=<ms>`: calls between services (a span of
/// one service whose parent is a span of another) in the window.
pub async fn dependencies(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(f) => return f.jaeger(),
    };
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let now_ms = chrono::Utc::now().timestamp_millis();
    let end = match params::time_ns("endTs", get("endTs"), 1_000_000) {
        Ok(v) => v.unwrap_or(now_ms * 1_000_000),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let lookback = match params::time_ns("lookback", get("lookback"), 1_000_000) {
        Ok(v) => v.unwrap_or(86_400_000_000_000),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match store::dependencies_sql(&tenant, end - lookback, end)
        .query(&state.client)
        .fetch_all::<Edge>()
        .await
    {
        Ok(edges) => {
            let list: Vec<Value> = edges
                .into_iter()
                .map(|e| json!({"parent": e.parent, "child": e.child, "callCount": e.calls}))
                .collect();
            let n = list.len();
            data(json!(list), n)
        }
        Err(e) => Failure::storage(e).jaeger(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A root span and an erroring child with an event and a link.
    pub(crate) fn sample() -> Vec<SpanRow> {
        let root = SpanRow {
            timestamp: 1_700_000_000_123_456_789,
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: String::new(),
            trace_state: String::new(),
            span_name: "GET /orders".into(),
            span_kind: "Server".into(),
            service_name: "api".into(),
            resource_attributes: vec![
                ("host.name".into(), "h1".into()),
                ("service.name".into(), "api".into()),
            ],
            scope_name: "lib".into(),
            scope_version: "1.0".into(),
            span_attributes: vec![("http.status_code".into(), "200".into())],
            duration: 10_000_999,
            status_code: "Unset".into(),
            status_message: String::new(),
            events_timestamp: vec![],
            events_name: vec![],
            events_attributes: vec![],
            links_trace_id: vec![],
            links_span_id: vec![],
            links_trace_state: vec![],
            links_attributes: vec![],
        };
        let child = SpanRow {
            timestamp: root.timestamp + 1_000_000,
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: root.span_id.clone(),
            span_name: "SELECT".into(),
            span_kind: "Client".into(),
            service_name: "db".into(),
            resource_attributes: vec![("service.name".into(), "db".into())],
            span_attributes: vec![],
            duration: 2_000_000,
            status_code: "Error".into(),
            status_message: "deadlock".into(),
            events_timestamp: vec![root.timestamp + 1_500_000],
            events_name: vec!["retry".into()],
            events_attributes: vec![vec![("attempt".into(), "2".into())]],
            links_trace_id: vec!["11111111111111111111111111111111".into()],
            links_span_id: vec!["2222222222222222".into()],
            links_trace_state: vec![String::new()],
            links_attributes: vec![vec![]],
            ..root.clone()
        };
        vec![root, child]
    }

    #[test]
    fn spans_become_jaeger_spans() {
        let spans = sample();
        let v = trace_json(&spans[0].trace_id, &spans);
        assert_eq!(
            v,
            json!({
                "traceID": "0af7651916cd43dd8448eb211c80319c",
                "spans": [{
                    "traceID": "0af7651916cd43dd8448eb211c80319c",
                    "spanID": "b7ad6b7169203331",
                    "operationName": "GET /orders",
                    "references": [],
                    "startTime": 1_700_000_000_123_456u64,
                    "duration": 10_000,
                    "tags": [
                        {"key": "http.status_code", "type": "string", "value": "200"},
                        {"key": "span.kind", "type": "string", "value": "server"},
                        {"key": "otel.scope.name", "type": "string", "value": "lib"},
                        {"key": "otel.scope.version", "type": "string", "value": "1.0"},
                    ],
                    "logs": [],
                    "processID": "p1",
                    "warnings": null,
                }, {
                    "traceID": "0af7651916cd43dd8448eb211c80319c",
                    "spanID": "00f067aa0ba902b7",
                    "operationName": "SELECT",
                    "references": [
                        {"refType": "CHILD_OF", "traceID": "0af7651916cd43dd8448eb211c80319c", "spanID": "b7ad6b7169203331"},
                        {"refType": "FOLLOWS_FROM", "traceID": "11111111111111111111111111111111", "spanID": "2222222222222222"},
                    ],
                    "startTime": 1_700_000_000_124_456u64,
                    "duration": 2000,
                    "tags": [
                        {"key": "span.kind", "type": "string", "value": "client"},
                        {"key": "otel.scope.name", "type": "string", "value": "lib"},
                        {"key": "otel.scope.version", "type": "string", "value": "1.0"},
                        {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                        {"key": "error", "type": "bool", "value": true},
                        {"key": "otel.status_description", "type": "string", "value": "deadlock"},
                    ],
                    "logs": [{"timestamp": 1_700_000_000_124_956u64, "fields": [
                        {"key": "event", "type": "string", "value": "retry"},
                        {"key": "attempt", "type": "string", "value": "2"},
                    ]}],
                    "processID": "p2",
                    "warnings": null,
                }],
                "processes": {
                    "p1": {"serviceName": "api", "tags": [{"key": "host.name", "type": "string", "value": "h1"}]},
                    "p2": {"serviceName": "db", "tags": []},
                },
                "warnings": null,
            })
        );
    }
}
