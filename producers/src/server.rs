//! The collector's HTTP listeners: routes, tenant resolution and response shaping.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use obs_runtime::auth::{Access, Dialect};
use obs_runtime::config::{CollectorConfig, Config};
use obs_runtime::{kafka, ops, shutdown};
use obs_schemas::Topic;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::admission::Admission;
use crate::body::{self, Format};
use crate::error::CollectorError;
use crate::metrics::families::Families;
use crate::metrics::guard::SeriesGuard;
use crate::otlp::{self, Status};
use crate::remote_write;
use obs_runtime::publish::Publisher;

pub use obs_runtime::tenant::TENANT_HEADER;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) publisher: Publisher,
    pub(crate) cfg: Arc<CollectorConfig>,
    pub(crate) guard: Arc<SeriesGuard>,
    pub(crate) families: Arc<Families>,
    pub(crate) deltas: Arc<otlp::metrics::DeltaTotals>,
    pub(crate) admission: Admission,
}

/// The collector's routes (the same on every listener).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/logs", post(otlp_logs))
        .route("/v1/traces", post(otlp_traces))
        .route("/v1/metrics", post(otlp_metrics))
        .route("/api/v1/write", post(remote_write::push))
        .route("/api/v1/push", post(remote_write::push))
        .route("/api/v1/events", post(events))
        .route("/loki/api/v1/push", post(loki_push))
        .route("/api/v2/spans", post(zipkin_spans))
        .layer(axum::middleware::from_fn_with_state(
            state.admission.clone(),
            crate::admission::limit,
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The tenant of a request: `X-Scope-OrgID`, or the configured default.
pub(crate) fn tenant(headers: &HeaderMap, default: &str) -> Result<String, CollectorError> {
    obs_runtime::tenant::tenant(headers, default).map_err(CollectorError::BadRequest)
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, CollectorError> {
    axum::body::to_bytes(body, limit + 1)
        .await
        .map_err(|_| CollectorError::TooLarge { limit })
}

/// The answer to an OTLP export: an empty `R` in the request's format, or the error.
fn respond<R: Message + Default>(
    format: Format,
    result: Result<usize, CollectorError>,
) -> Response {
    match result {
        Ok(_) => {
            let bytes = match format {
                Format::Protobuf => R::default().encode_to_vec(),
                Format::Json => b"{}".to_vec(),
            };
            (
                StatusCode::OK,
                [(CONTENT_TYPE, format.content_type())],
                bytes,
            )
                .into_response()
        }
        Err(e) => otlp_error(format, e),
    }
}

/// One OTLP/HTTP export: content type, tenant, size limit, gzip and decoding of `Req`, then
/// `handle` (normalise and publish; returns the record count), answered with an empty
/// `Resp` or the error, in the request's format.
async fn export<Req, Resp, F, Fut>(
    state: AppState,
    headers: HeaderMap,
    body: Body,
    signal: &'static str,
    handle: F,
) -> Response
where
    Req: Message + Default + serde::de::DeserializeOwned,
    Resp: Message + Default,
    F: FnOnce(AppState, Req, String) -> Fut,
    Fut: std::future::Future<Output = Result<usize, CollectorError>>,
{
    let format = match body::format(&headers) {
        Ok(f) => f,
        Err(e) => return otlp_error(Format::Json, e),
    };
    let result = async {
        let tenant = tenant(&headers, &state.cfg.default_tenant)?;
        let raw = read_body(body, state.cfg.max_body_bytes).await?;
        let bytes = body::decode(&headers, raw, state.cfg.max_body_bytes)?;
        let req: Req = otlp::decode_request(format, &bytes, &format!("{signal} request"))?;
        handle(state.clone(), req, tenant).await
    }
    .await;
    respond::<Resp>(format, result)
}

/// `POST /v1/logs`: OTLP/HTTP logs, protobuf or JSON, optionally gzip.
async fn otlp_logs(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    export::<ExportLogsServiceRequest, ExportLogsServiceResponse, _, _>(
        state,
        headers,
        body,
        "logs",
        |state, req, tenant| async move { publish_otlp_logs(&state, req, &tenant).await },
    )
    .await
}

/// `POST /v1/traces`: OTLP/HTTP traces, protobuf or JSON, optionally gzip.
async fn otlp_traces(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    export::<ExportTraceServiceRequest, ExportTraceServiceResponse, _, _>(
        state,
        headers,
        body,
        "traces",
        |state, req, tenant| async move { publish_otlp_traces(&state, req, &tenant).await },
    )
    .await
}

/// `POST /api/v1/events`: JSON events (see [`crate::events`]); answers
/// `{"accepted": n}` or `{"error": "..."}`.
async fn events(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let tenant = tenant(&headers, &state.cfg.default_tenant)?;
        let raw = read_body(body, state.cfg.max_body_bytes).await?;
        let bytes = body::decode(&headers, raw, state.cfg.max_body_bytes)?;
        let events = crate::events::parse(&bytes, &tenant, now_ns())?;
        let n = events.len();
        if n > 0 {
            state.publisher.events(events).await?;
        }
        Ok::<usize, CollectorError>(n)
    }
    .await;
    match result {
        Ok(n) => axum::Json(serde_json::json!({ "accepted": n })).into_response(),
        Err(e) => json_error(e),
    }
}

/// What every error answer shares: the refusal is counted by reason, and "retry later"
/// comes with `Retry-After`. `body` renders the error in the protocol's shape.
fn rejected(e: CollectorError, body: impl FnOnce(&CollectorError) -> Response) -> Response {
    metrics::counter!("obs_collector_rejected_total", "reason" => e.reason()).increment(1);
    let mut resp = body(&e);
    if matches!(
        e,
        CollectorError::Unavailable(_) | CollectorError::Overloaded(_)
    ) {
        resp.headers_mut()
            .insert(RETRY_AFTER, "5".parse().expect("static header"));
    }
    resp
}

/// A plain-text error answer (as Prometheus, Loki and Zipkin give them).
pub(crate) fn text_error(e: CollectorError) -> Response {
    rejected(e, |e| (e.status(), format!("{e}\n")).into_response())
}

/// `POST /loki/api/v1/push`: Loki push, JSON (optionally gzip) or snappy protobuf; 204.
async fn loki_push(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let tenant = tenant(&headers, &state.cfg.default_tenant)?;
        let limit = state.cfg.max_body_bytes;
        let raw = read_body(body, limit).await?;
        let records = match body::format(&headers)? {
            Format::Protobuf => crate::loki::parse_protobuf(&raw, limit, &tenant, now_ns())?,
            Format::Json => {
                let bytes = body::decode(&headers, raw, limit)?;
                crate::loki::parse_json(&bytes, &tenant, now_ns())?
            }
        };
        let n = records.len();
        if n > 0 {
            state.publisher.logs(records).await?;
        }
        Ok::<usize, CollectorError>(n)
    }
    .await;
    match result {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => text_error(e),
    }
}

/// `POST /api/v2/spans`: Zipkin v2 JSON (optionally gzip); 202 as Zipkin answers.
async fn zipkin_spans(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        if body::format(&headers)? != Format::Json {
            return Err(CollectorError::UnsupportedMediaType(
                "Zipkin spans are accepted as application/json (v2 JSON)".into(),
            ));
        }
        let tenant = tenant(&headers, &state.cfg.default_tenant)?;
        let raw = read_body(body, state.cfg.max_body_bytes).await?;
        let bytes = body::decode(&headers, raw, state.cfg.max_body_bytes)?;
        let spans = crate::zipkin::parse(&bytes, &tenant)?;
        let n = spans.len();
        if n > 0 {
            state.publisher.spans(spans).await?;
        }
        Ok::<usize, CollectorError>(n)
    }
    .await;
    match result {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => text_error(e),
    }
}

/// A JSON error answer `{"error": "..."}` with the error's status.
pub(crate) fn json_error(e: CollectorError) -> Response {
    rejected(e, |e| {
        let body = serde_json::json!({ "error": e.to_string() });
        (e.status(), axum::Json(body)).into_response()
    })
}

/// `POST /v1/metrics`: OTLP/HTTP metrics, protobuf or JSON, optionally gzip; the same
/// limits and sample-order rules as remote write.
async fn otlp_metrics(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    export::<ExportMetricsServiceRequest, ExportMetricsServiceResponse, _, _>(
        state,
        headers,
        body,
        "metrics",
        |state, req, tenant| async move { publish_otlp_metrics(&state, req, &tenant).await },
    )
    .await
}

/// Normalises and publishes an OTLP logs request (HTTP or gRPC); the record count.
pub(crate) async fn publish_otlp_logs(
    state: &AppState,
    req: ExportLogsServiceRequest,
    tenant: &str,
) -> Result<usize, CollectorError> {
    let records = otlp::logs::normalise(req, tenant, now_ns())?;
    let n = records.len();
    if n > 0 {
        state.publisher.logs(records).await?;
    }
    Ok(n)
}

/// Normalises and publishes an OTLP traces request (HTTP or gRPC); the span count.
pub(crate) async fn publish_otlp_traces(
    state: &AppState,
    req: ExportTraceServiceRequest,
    tenant: &str,
) -> Result<usize, CollectorError> {
    let spans = otlp::traces::normalise(req, tenant)?;
    let n = spans.len();
    if n > 0 {
        state.publisher.spans(spans).await?;
    }
    Ok(n)
}

/// Normalises, admits and publishes an OTLP metrics request; the sample count.
pub(crate) async fn publish_otlp_metrics(
    state: &AppState,
    req: ExportMetricsServiceRequest,
    tenant: &str,
) -> Result<usize, CollectorError> {
    let (mut series, metadata) = otlp::metrics::normalise(req, tenant, &state.deltas)?;
    for m in &metadata {
        state.families.learn(tenant, &m.name, &m.kind);
    }
    let admission = state.guard.admit(tenant, &mut series)?;
    let samples = series.iter().map(|s| s.timestamps_ms.len()).sum();
    if !series.is_empty() || !metadata.is_empty() {
        state.publisher.metrics(series, metadata).await?;
    }
    state.guard.commit(admission);
    Ok(samples)
}

/// An OTLP error answer: the status code, and a `google.rpc.Status` body in the request's
/// format carrying the message.
fn otlp_error(format: Format, e: CollectorError) -> Response {
    rejected(e, |e| {
        let status = Status {
            code: e.grpc_code(),
            message: e.to_string(),
        };
        let body = match format {
            Format::Protobuf => status.encode_to_vec(),
            Format::Json => serde_json::json!({"code": status.code, "message": status.message})
                .to_string()
                .into_bytes(),
        };
        (e.status(), [(CONTENT_TYPE, format.content_type())], body).into_response()
    })
}

/// Runs the collector until a shutdown is asked for: creates the topics, then serves the
/// main and OTLP/HTTP listeners (requests in flight finish before it returns).
pub async fn run(cfg: Config, ready: ops::Readiness) -> anyhow::Result<()> {
    kafka::ensure_topics(&cfg.kafka).await?;
    let producer = kafka::SharedProducer::for_process(&cfg.kafka)?;
    let partitions = kafka::partition_counts(&cfg.kafka).await?;
    let codec = Arc::new(obs_runtime::registry::codec(&cfg));
    let state = AppState {
        publisher: Publisher::new(producer, codec, partitions).with_logs_topic(
            // Configured log pipelines run before storage: the log processor reads these.
            if cfg.logs.pipelines_file.is_empty() {
                Topic::Logs
            } else {
                Topic::LogsIngest
            },
        ),
        cfg: Arc::new(cfg.collector.clone()),
        guard: Arc::new(SeriesGuard::new(&cfg.collector)),
        families: Arc::new(Families::default()),
        deltas: Arc::new(otlp::metrics::DeltaTotals::default()),
        admission: Admission::new(
            cfg.collector.max_inflight_bytes,
            cfg.collector.max_body_bytes,
        ),
    };
    let grpc_state = state.clone();
    let app = router(state).merge(ops::router(ready.clone()));
    ready.set(true);
    // The same routes on every listener; the extra ones are the protocols' standard ports.
    let mut listeners = vec![(cfg.collector.listen.clone(), "collector")];
    for (addr, name) in [
        (&cfg.collector.otlp_http_listen, "collector OTLP/HTTP"),
        (&cfg.collector.zipkin_listen, "collector Zipkin"),
    ] {
        if !addr.is_empty() && !listeners.iter().any(|(a, _)| a == addr) {
            listeners.push((addr.clone(), name));
        }
    }
    let guard = ops::guard(&cfg, Dialect::Collector, Some(Access::Write))?;
    let servers = listeners.into_iter().map(|(addr, name)| {
        let (app, guard) = (app.clone(), guard.clone());
        async move { ops::serve(&addr, app, name, &guard).await }
    });
    let http = futures::future::try_join_all(servers);
    let grpc = async {
        if cfg.collector.otlp_grpc_listen.is_empty() {
            shutdown::wait().await;
            return Ok(());
        }
        crate::otlp_grpc::serve(
            &cfg.collector.otlp_grpc_listen,
            grpc_state.clone(),
            guard.auth.clone(),
            guard.tls.clone(),
        )
        .await
    };
    let scrape = async {
        if cfg.collector.scrape_config.is_empty() {
            shutdown::wait().await;
            return Ok(());
        }
        tokio::select! {
            r = crate::scrape::run(Path::new(&cfg.collector.scrape_config), grpc_state.clone()) => r,
            _ = shutdown::wait() => Ok(()),
        }
    };
    tokio::try_join!(http, grpc, scrape).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tenant_header_is_validated() {
        let mut h = HeaderMap::new();
        assert_eq!(tenant(&h, "default").unwrap(), "default");
        h.insert(TENANT_HEADER, HeaderValue::from_static("team-a.prod"));
        assert_eq!(tenant(&h, "default").unwrap(), "team-a.prod");
        h.insert(TENANT_HEADER, HeaderValue::from_static("a b"));
        assert!(tenant(&h, "default").is_err());
    }
}
