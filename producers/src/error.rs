//! Every way a collector request can fail, and the HTTP answer each one gets.

use axum::http::StatusCode;

/// A failed request. The message is sent to the client, so it names what is wrong and,
/// where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The payload cannot be decoded or is invalid (400): the client must not retry it.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than `collector.max_body_bytes` (413).
    #[error("request body is larger than the limit of {limit} bytes; send smaller batches")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The content type or encoding is not one this endpoint reads (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A limit of `[collector]` was hit (400): retrying the same request will not help.
    #[error("{message}")]
    Limit {
        /// Which limit, for the `obs_collector_rejected_total` metric.
        kind: &'static str,
        /// What was refused and what to do.
        message: String,
    },
    /// Out-of-order or conflicting samples (400, as Prometheus answers them); nothing of the
    /// request is stored.
    #[error("{0}")]
    OutOfOrder(String),
    /// The broker or registry did not acknowledge in time (503): retry later.
    #[error("the pipeline could not store the records right now ({0}); retry later")]
    Unavailable(String),
    /// The collector holds its limit of request bytes (`collector.max_inflight_bytes`) and
    /// no room freed in time (503): retry later.
    #[error("overloaded: {0}; retry later")]
    Overloaded(String),
}

impl CollectorError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            CollectorError::BadRequest(_)
            | CollectorError::Limit { .. }
            | CollectorError::OutOfOrder(_) => StatusCode::BAD_REQUEST,
            CollectorError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CollectorError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            CollectorError::Unavailable(_) | CollectorError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The gRPC status code OTLP puts in its `Status` body.
    pub fn grpc_code(&self) -> i32 {
        match self {
            CollectorError::BadRequest(_)
            | CollectorError::UnsupportedMediaType(_)
            | CollectorError::OutOfOrder(_) => 3, // INVALID_ARGUMENT
            CollectorError::TooLarge { .. } | CollectorError::Limit { .. } => 8, // RESOURCE_EXHAUSTED
            CollectorError::Unavailable(_) | CollectorError::Overloaded(_) => 14, // UNAVAILABLE
        }
    }

    /// A short label for the `obs_collector_rejected_total` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            CollectorError::BadRequest(_) => "bad_request",
            CollectorError::Limit { kind, .. } => kind,
            CollectorError::OutOfOrder(_) => "out_of_order",
            CollectorError::TooLarge { .. } => "too_large",
            CollectorError::UnsupportedMediaType(_) => "unsupported_media_type",
            CollectorError::Unavailable(_) => "unavailable",
            CollectorError::Overloaded(_) => "overloaded",
        }
    }
}

impl From<obs_runtime::publish::PublishError> for CollectorError {
    fn from(e: obs_runtime::publish::PublishError) -> Self {
        CollectorError::Unavailable(e.0)
    }
}
