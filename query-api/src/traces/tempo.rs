//! Tempo's HTTP API, the part Grafana's Tempo datasource uses without TraceQL: `echo`
//! ("Save & test"), trace by id (OTLP protobuf or JSON), the tag-based search, and tag
//! names and values (v1 and the scoped v2 shapes). A TraceQL query (`q=`) is refused with
//! 400 and says so. Errors are plain text, as Tempo answers them.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::params::{self, DurationOf, Search};
use super::store::{self, TagScope};
use super::{Failure, Fetched, otlp};
use crate::server::ApiState;

impl Failure {
    /// The failure as Tempo answers errors: its status and a plain-text message.
    pub fn tempo(self) -> Response {
        (
            self.status,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response()
    }
}

fn tenant(headers: &HeaderMap) -> Result<String, Failure> {
    crate::tenant::tenant(headers).map_err(Failure::bad)
}

/// `GET /api/echo`: what Grafana's "Save & test" checks.
pub async fn echo() -> &'static str {
    "echo"
}

/// Root service of a trace whose root span is not stored, as Tempo names it.
pub const NO_ROOT: &str = "<root span not yet received>";

/// The search a Tempo `/api/search` query string asks for (times in seconds).
pub fn search(q: &HashMap<String, String>) -> Result<Search, String> {
    let get = |k: &str| {
        q.get(k)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    if get("q").is_some() {
        return Err(
            "TraceQL queries (q=) are not supported by obs; search with tags=<logfmt>, minDuration, maxDuration, start, end and limit"
                .into(),
        );
    }
    let mut tags = params::tags(get("tags").unwrap_or(""))?;
    Ok(Search {
        service: tags.remove("service.name"),
        operation: tags.remove("name"),
        tags,
        min_duration_ns: get("minDuration").map(params::duration_ns).transpose()?,
        max_duration_ns: get("maxDuration").map(params::duration_ns).transpose()?,
        duration_of: DurationOf::Trace,
        start_ns: params::time_ns("start", get("start"), 1_000_000_000)?,
        // `end` is a whole second: the spans of that second are in.
        end_ns: params::time_ns("end", get("end"), 1_000_000_000)?
            .map(|e| e.saturating_add(999_999_999)),
        limit: params::limit(get("limit"))?,
    })
}

/// `GET /api/search?tags=&minDuration=&maxDuration=&start=&end=&limit=`: matching traces
/// with their root and extent, newest first.
pub async fn find_traces(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(f) => return f.tempo(),
    };
    let search = match search(&q) {
        Ok(s) => s,
        Err(e) => return Failure::bad(e).tempo(),
    };
    let found = match super::search(&state, &tenant, &search).await {
        Ok(found) => found,
        Err(f) => return f.tempo(),
    };
    let traces: Vec<Value> = found
        .iter()
        .map(|s| {
            let or_none = |v: &str| {
                if v.is_empty() {
                    NO_ROOT.to_string()
                } else {
                    v.to_string()
                }
            };
            json!({
                "traceID": s.trace_id,
                "rootServiceName": or_none(&s.root_service),
                "rootTraceName": or_none(&s.root_name),
                "startTimeUnixNano": s.start_ns.to_string(),
                "durationMs": (s.end_ns - s.start_ns) / 1_000_000,
            })
        })
        .collect();
    let n = traces.len();
    Json(json!({"traces": traces, "metrics": {"inspectedTraces": n}})).into_response()
}

/// A time range from `start`/`end` in seconds.
fn range(q: &HashMap<String, String>) -> Result<(Option<i64>, Option<i64>), String> {
    let get = |k: &str| q.get(k).map(String::as_str);
    Ok((
        params::time_ns("start", get("start"), 1_000_000_000)?,
        params::time_ns("end", get("end"), 1_000_000_000)?.map(|e| e.saturating_add(999_999_999)),
    ))
}

/// Tag names that are span fields rather than attributes.
const INTRINSIC_V1: &[&str] = &["name", "service.name", "span.kind", "status.code"];
/// The v2 intrinsics with enumerable values.
const INTRINSIC_V2: &[&str] = &["kind", "name", "status"];

async fn tag_names(
    state: &ApiState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<BTreeMap<String, Vec<String>>, Failure> {
    let tenant = tenant(headers)?;
    let (start, end) = range(q).map_err(Failure::bad)?;
    let rows: Vec<(String, String)> = store::tag_names_sql(&tenant, start, end)
        .query(&state.client)
        .fetch_all()
        .await
        .map_err(Failure::storage)?;
    let mut scopes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (scope, key) in rows {
        scopes.entry(scope).or_default().push(key);
    }
    Ok(scopes)
}

/// `GET /api/search/tags`: `{"tagNames": [...]}` (attribute keys and the intrinsic names
/// the search takes).
pub async fn tags_v1(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match tag_names(&state, &headers, &q).await {
        Ok(scopes) => {
            let mut names: Vec<String> = scopes.into_values().flatten().collect();
            names.extend(INTRINSIC_V1.iter().map(|s| s.to_string()));
            names.sort();
            names.dedup();
            Json(json!({"tagNames": names})).into_response()
        }
        Err(f) => f.tempo(),
    }
}

/// `GET /api/v2/search/tags`: the keys per scope (`resource`, `span`, `intrinsic`).
pub async fn tags_v2(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match tag_names(&state, &headers, &q).await {
        Ok(mut scopes) => {
            let mut list: Vec<Value> = ["resource", "span"]
                .iter()
                .map(|s| json!({"name": s, "tags": scopes.remove(*s).unwrap_or_default()}))
                .collect();
            list.push(json!({"name": "intrinsic", "tags": INTRINSIC_V2}));
            Json(json!({"scopes": list})).into_response()
        }
        Err(f) => f.tempo(),
    }
}

async fn tag_values(
    state: &ApiState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    tag: &str,
    scope: TagScope,
) -> Result<Vec<String>, Failure> {
    let tenant = tenant(headers)?;
    let (start, end) = range(q).map_err(Failure::bad)?;
    store::tag_values_sql(&tenant, tag, scope, start, end)
        .query(&state.client)
        .fetch_all()
        .await
        .map_err(Failure::storage)
}

/// `GET /api/search/tag/{tag}/values`: `{"tagValues": [...]}`.
pub async fn tag_values_v1(
    State(state): State<ApiState>,
    Path(tag): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match tag_values(&state, &headers, &q, &tag, TagScope::Any).await {
        Ok(values) => Json(json!({"tagValues": values})).into_response(),
        Err(f) => f.tempo(),
    }
}

/// `GET /api/v2/search/tag/{tag}/values` with a scoped tag (`resource.service.name`,
/// `span.http.route`, `.db.system`, or the intrinsics `name`, `status`, `kind`):
/// `{"tagValues": [{"type", "value"}]}`.
pub async fn tag_values_v2(
    State(state): State<ApiState>,
    Path(tag): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (key, scope, kind) = if let Some(k) = tag.strip_prefix("resource.") {
        (k.to_string(), TagScope::Resource, "string")
    } else if let Some(k) = tag.strip_prefix("span.") {
        (k.to_string(), TagScope::Span, "string")
    } else if let Some(k) = tag.strip_prefix('.') {
        (k.to_string(), TagScope::Any, "string")
    } else if INTRINSIC_V2.contains(&tag.as_str()) {
        let kind = if tag == "name" { "string" } else { "keyword" };
        (tag.clone(), TagScope::Any, kind)
    } else {
        return Failure::bad(format!(
            "tag {tag:?} is not supported: use resource.<key>, span.<key>, .<key> or one of {}",
            INTRINSIC_V2.join(", ")
        ))
        .tempo();
    };
    match tag_values(&state, &headers, &q, &key, scope).await {
        Ok(values) => {
            let list: Vec<Value> = values
                .into_iter()
                .map(|v| json!({"type": kind, "value": v}))
                .collect();
            Json(json!({"tagValues": list})).into_response()
        }
        Err(f) => f.tempo(),
    }
}

/// A trace by id as protobuf, what Grafana's Tempo datasource reads: Tempo's `Trace` (the
/// layout of OTLP `TracesData`: `resource_spans = 1`) from `/api/traces/{id}`, or when
/// `wrapped` Tempo 2's `TraceByIDResponse` (`trace = 1`, status complete) from
/// `/api/v2/traces/{id}`.
pub fn protobuf_answer(fetched: Fetched, wrapped: bool) -> Response {
    match fetched {
        Ok((_, spans)) if !spans.is_empty() => {
            let data = otlp::traces_data(&spans);
            let body = if wrapped {
                let mut buf = Vec::new();
                prost::encoding::message::encode(1, &data, &mut buf);
                buf
            } else {
                prost::Message::encode_to_vec(&data)
            };
            ([(CONTENT_TYPE, "application/protobuf")], body).into_response()
        }
        Ok(_) => Failure::not_found().tempo(),
        Err(f) => f.tempo(),
    }
}

/// A trace by id as OTLP/JSON: `{"resourceSpans": [...]}`, or wrapped as Tempo's v2
/// answer `{"trace": {"resourceSpans": [...]}}` when `wrapped`.
pub fn json_answer(fetched: Fetched, wrapped: bool) -> Response {
    match fetched {
        Ok((_, spans)) if !spans.is_empty() => {
            let data = otlp::to_json(&otlp::traces_data(&spans));
            Json(if wrapped {
                json!({"trace": data})
            } else {
                data
            })
            .into_response()
        }
        Ok(_) => Failure::not_found().tempo(),
        Err(f) => f.tempo(),
    }
}

/// Whether a request asks for protobuf.
pub fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/protobuf") || v.contains("application/x-protobuf"))
}
