//! Prometheus remote write 1.0: snappy-compressed protobuf `WriteRequest`s in,
//! [`obs_schemas::records::MetricBatch`]es out to `obs.metrics`.
//!
//! Answers as Prometheus's own receiver does: 204 when stored, 400 (text) for a request
//! that must not be retried (bad protobuf or snappy, out-of-order samples, limits), 415 for
//! remote write 2.0 (the sender then falls back to 1.0), 503 with `Retry-After` when the
//! broker is down. Native histograms are stored as classic buckets.

pub(crate) mod normalise;
pub mod proto;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prost::Message;

use crate::error::CollectorError;
use crate::server::{AppState, read_body, tenant, text_error};

/// `POST /api/v1/write` (also `/api/v1/push`): one remote-write request.
pub async fn push(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        check_headers(&headers)?;
        let tenant = tenant(&headers, &state.cfg.default_tenant)?;
        let raw = read_body(body, state.cfg.max_body_bytes).await?;
        let req = decode(&raw, state.cfg.max_body_bytes)?;
        let (mut series, metadata) = normalise::normalise(req, &tenant, &state.families)?;
        let admission = state.guard.admit(&tenant, &mut series)?;
        if !series.is_empty() || !metadata.is_empty() {
            state.publisher.metrics(series, metadata).await?;
        }
        state.guard.commit(admission);
        Ok::<(), CollectorError>(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => text_error(e),
    }
}

/// Content type and encoding as remote write 1.0 requires them.
fn check_headers(headers: &HeaderMap) -> Result<(), CollectorError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    if media != "application/x-protobuf" {
        return Err(CollectorError::UnsupportedMediaType(format!(
            "unsupported Content-Type {media:?}: remote write sends application/x-protobuf"
        )));
    }
    for p in parts {
        if let Some(proto) = p.strip_prefix("proto=")
            && !proto.eq_ignore_ascii_case("prometheus.WriteRequest")
        {
            return Err(CollectorError::UnsupportedMediaType(format!(
                "remote write message {proto:?} is not supported: this receiver speaks remote write 1.0 (prometheus.WriteRequest)"
            )));
        }
    }
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if encoding != "snappy" {
        return Err(CollectorError::UnsupportedMediaType(format!(
            "unsupported Content-Encoding {encoding:?}: remote write bodies are snappy-compressed (block format)"
        )));
    }
    Ok(())
}

/// Snappy (block format) then protobuf, with the decompressed size bounded by `limit`.
pub fn decode(raw: &Bytes, limit: usize) -> Result<proto::WriteRequest, CollectorError> {
    let len = snap::raw::decompress_len(raw).map_err(|e| {
        CollectorError::BadRequest(format!("body is not valid snappy (block format): {e}"))
    })?;
    if len > limit {
        return Err(CollectorError::TooLarge { limit });
    }
    let bytes = snap::raw::Decoder::new().decompress_vec(raw).map_err(|e| {
        CollectorError::BadRequest(format!("body is not valid snappy (block format): {e}"))
    })?;
    proto::WriteRequest::decode(bytes.as_slice()).map_err(|e| {
        CollectorError::BadRequest(format!(
            "body is not a valid remote-write WriteRequest: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(ct: &'static str, enc: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static(enc));
        h
    }

    #[test]
    fn version_two_and_wrong_encodings_are_refused_clearly() {
        assert!(check_headers(&headers("application/x-protobuf", "snappy")).is_ok());
        assert!(
            check_headers(&headers(
                "application/x-protobuf;proto=prometheus.WriteRequest",
                "snappy"
            ))
            .is_ok()
        );
        let e = check_headers(&headers(
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            "snappy",
        ))
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(e.to_string().contains("remote write 1.0"), "{e}");
        assert!(check_headers(&headers("application/x-protobuf", "gzip")).is_err());
    }

    #[test]
    fn bad_snappy_and_truncated_protobuf_are_400() {
        let e = decode(&Bytes::from_static(b"\xff\xff\xff\xff\xff"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("snappy"), "{e}");
        let req = proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels: vec![proto::Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let bytes = req.encode_to_vec();
        let cut = snap::raw::Encoder::new()
            .compress_vec(&bytes[..bytes.len() - 3])
            .unwrap();
        let e = decode(&Bytes::from(cut), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("WriteRequest"), "{e}");
        let ok = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
        assert_eq!(decode(&Bytes::from(ok), 1 << 20).unwrap(), req);
        let big = snap::raw::Encoder::new()
            .compress_vec(&[0u8; 4096])
            .unwrap();
        assert!(matches!(
            decode(&Bytes::from(big), 1024),
            Err(CollectorError::TooLarge { .. })
        ));
    }
}
