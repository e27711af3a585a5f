//! Request bodies: size limit before and after decompression, `Content-Encoding: gzip`,
//! and which wire format the content type asks for.

use std::io::Read;

use axum::http::HeaderMap;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use bytes::Bytes;
use flate2::read::GzDecoder;

use crate::error::CollectorError;

/// The two encodings OTLP/HTTP defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Format {
    /// The content type of responses in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// Reads the format from `Content-Type` (OTLP/HTTP's two), or says what is accepted.
pub fn format(headers: &HeaderMap) -> Result<Format, CollectorError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        other => Err(CollectorError::UnsupportedMediaType(format!(
            "unsupported Content-Type {:?}: send application/x-protobuf or application/json",
            other
        ))),
    }
}

/// The body, gunzipped if `Content-Encoding: gzip`, never larger than `limit` bytes.
pub fn decode(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, CollectorError> {
    if body.len() > limit {
        return Err(CollectorError::TooLarge { limit });
    }
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(body.len() * 4);
            // Read one byte past the limit to tell "exactly at" from "over".
            GzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| CollectorError::BadRequest(format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(CollectorError::TooLarge { limit });
            }
            Ok(out.into())
        }
        other => Err(CollectorError::UnsupportedMediaType(format!(
            "unsupported Content-Encoding {other:?}: send gzip or no encoding"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gz(data: &[u8]) -> Bytes {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap().into()
    }

    #[test]
    fn gzip_is_decoded_and_limited_after_decompression() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            decode(&h, gz(b"hello"), 100).unwrap(),
            Bytes::from_static(b"hello")
        );
        // 1000 zeros compress to far less than the limit but expand past it.
        let bomb = gz(&[0u8; 1000]);
        assert!(bomb.len() < 100);
        assert!(matches!(
            decode(&h, bomb, 100),
            Err(CollectorError::TooLarge { limit: 100 })
        ));
        assert!(matches!(
            decode(&h, Bytes::from_static(b"not gzip"), 50),
            Err(CollectorError::BadRequest(_))
        ));
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(format(&h).unwrap(), Format::Json);
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            format(&h),
            Err(CollectorError::UnsupportedMediaType(_))
        ));
    }
}
