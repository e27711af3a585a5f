//! Traces: the Jaeger query API and the TraceQL-free part of Tempo's API over
//! `otel_traces`, scoped to the `X-Scope-OrgID` tenant.
//!
//! * `GET /api/traces/{id}`: Jaeger JSON by default (Grafana's Jaeger datasource); OTLP
//!   protobuf `TracesData` when `Accept` names `application/protobuf` (Grafana's Tempo
//!   datasource); OTLP/JSON `{"resourceSpans": [...]}` with `?format=otlp`.
//! * `GET /api/v2/traces/{id}`: Tempo 2's `TraceByIDResponse`, protobuf when `Accept` names
//!   it (what current Grafana asks first, falling back to `/api/traces/{id}` on 404), else
//!   JSON `{"trace": {"resourceSpans": [...]}}`.
//! * Jaeger: `/api/services`, `/api/services/{service}/operations`, `/api/operations`,
//!   `/api/traces?service=...` (search), `/api/dependencies`.
//! * Tempo: `/api/echo`, `/api/search`, `/api/search/tags`, `/api/search/tag/{tag}/values`,
//!   `/api/v2/search/tags`, `/api/v2/search/tag/{tag}/values`.
//!
//! A lookup by id finds the trace's time range in `otel_traces_trace_id_ts` first, so it
//! reads only the partitions holding the trace.
//!
//! * `params`: ids, durations, tags, limits.
//! * `store`: the SQL, every value bound.
//! * `jaeger`, `tempo`, `otlp`: the answers' shapes.

pub mod jaeger;
pub mod otlp;
pub mod params;
pub mod store;
pub mod tempo;

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;

use crate::server::ApiState;
use params::Search;
use store::SpanRow;

/// Why a trace request failed: the status and the message, shaped per API.
#[derive(Debug)]
pub struct Failure {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A bad request.
    pub fn bad(message: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// No such trace (for this tenant).
    pub fn not_found() -> Self {
        Failure {
            status: StatusCode::NOT_FOUND,
            message: "trace not found".into(),
        }
    }

    /// The storage failed or is unreachable.
    pub fn storage(e: clickhouse::error::Error) -> Self {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("storage: {e}"),
        }
    }
}

/// A trace's id and spans (none when it is not stored for the tenant), or why not.
pub type Fetched = Result<(String, Vec<SpanRow>), Failure>;

/// How searches find traces, from the configuration: through the trace processor's
/// summaries when it runs, else from the spans alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchIndex {
    /// Whether the trace processor writes summaries (`[traces] enabled`).
    summaries: bool,
    /// How far back traces the processor has not decided yet are assembled from their
    /// spans: its decision wait, a quiet partition's wait, the sink's batch wait and 30 s.
    recent_ns: i64,
    /// `[sink] traces_from = "sampled"`: only kept traces have spans to show.
    kept_only: bool,
    /// The longest trace (`[traces] max_trace_age_ms`), ns.
    longest_ns: i64,
}

impl SearchIndex {
    /// The index the configured pipeline provides.
    pub fn new(cfg: &obs_runtime::config::Config) -> Self {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
        SearchIndex {
            summaries: cfg.traces.enabled,
            recent_ns: ms(cfg.traces.decision_wait_ms)
                .saturating_add(ms(cfg.traces.idle_partition_ms))
                .saturating_add(ms(cfg.sink.batch_max_wait_ms))
                .saturating_add(30_000_000_000),
            kept_only: cfg.sink.traces_from == "sampled",
            longest_ns: ms(cfg.traces.max_trace_age_ms),
        }
    }

    /// Where a search made now looks.
    fn at(&self, now_ns: i64) -> store::TraceIndex {
        if self.summaries {
            store::TraceIndex::Summaries {
                recent_ns: self.recent_ns,
                now_ns,
                kept_only: self.kept_only,
            }
        } else {
            store::TraceIndex::Spans {
                longest_ns: self.longest_ns,
            }
        }
    }
}

/// The traces matching `search`, newest first, with their root and extent.
pub async fn search(
    state: &ApiState,
    tenant: &str,
    search: &Search,
) -> Result<Vec<store::TraceSummary>, Failure> {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    store::search_sql(tenant, search, state.search_index.at(now_ns))
        .query(&state.client)
        .fetch_all()
        .await
        .map_err(Failure::storage)
}

/// Every span of the traces `ids`, by trace and start time.
pub async fn spans(
    state: &ApiState,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<SpanRow>, Failure> {
    store::spans_sql(tenant, ids)
        .query(&state.client)
        .fetch_all()
        .await
        .map_err(Failure::storage)
}

async fn fetch(state: &ApiState, headers: &HeaderMap, raw_id: &str) -> Fetched {
    let tenant = crate::tenant::tenant(headers).map_err(Failure::bad)?;
    let id = params::trace_id(raw_id).map_err(Failure::bad)?;
    let spans = spans(state, &tenant, std::slice::from_ref(&id)).await?;
    Ok((id, spans))
}

/// `GET /api/traces/{id}`: Jaeger JSON, OTLP protobuf or OTLP/JSON (see the module doc).
async fn trace_by_id(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let fetched = fetch(&state, &headers, &id).await;
    if tempo::wants_protobuf(&headers) {
        tempo::protobuf_answer(fetched, false)
    } else if q.get("format").is_some_and(|f| f == "otlp") {
        tempo::json_answer(fetched, false)
    } else {
        jaeger::trace_answer(fetched)
    }
}

/// `GET /api/v2/traces/{id}`: Tempo 2's answer, protobuf `TraceByIDResponse` (what Grafana's
/// Tempo datasource asks first) or its JSON form.
async fn trace_by_id_v2(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let fetched = fetch(&state, &headers, &id).await;
    if tempo::wants_protobuf(&headers) {
        tempo::protobuf_answer(fetched, true)
    } else {
        tempo::json_answer(fetched, true)
    }
}

/// The trace routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/traces/{id}", get(trace_by_id))
        .route("/api/v2/traces/{id}", get(trace_by_id_v2))
        .route("/api/traces", get(jaeger::find_traces))
        .route("/api/services", get(jaeger::services))
        .route(
            "/api/services/{service}/operations",
            get(jaeger::service_operations),
        )
        .route("/api/operations", get(jaeger::operations))
        .route("/api/dependencies", get(jaeger::dependencies))
        .route("/api/echo", get(tempo::echo))
        .route("/api/search", get(tempo::find_traces))
        .route("/api/search/tags", get(tempo::tags_v1))
        .route("/api/search/tag/{tag}/values", get(tempo::tag_values_v1))
        .route("/api/v2/search/tags", get(tempo::tags_v2))
        .route("/api/v2/search/tag/{tag}/values", get(tempo::tag_values_v2))
}
