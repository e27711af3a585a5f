//! OTLP: decoding requests (protobuf or JSON) and normalising them to pipeline records.
//!
//! Attribute values become strings the way the OpenTelemetry Collector's ClickHouse
//! exporter writes them (`AsString`): strings as is, numbers and booleans in their usual
//! text, bytes as base64, arrays and maps as JSON.

pub mod logs;
mod values;

use prost::Message;
use serde::de::DeserializeOwned;

use crate::body::Format;
use crate::error::CollectorError;

/// Decodes an OTLP request message in either wire format, naming what is wrong on failure.
pub fn decode_request<T: Message + Default + DeserializeOwned>(
    format: Format,
    body: &[u8],
    what: &str,
) -> Result<T, CollectorError> {
    match format {
        Format::Protobuf => T::decode(body)
            .map_err(|e| CollectorError::BadRequest(format!("invalid OTLP protobuf {what}: {e}"))),
        Format::Json => serde_json::from_slice(body)
            .map_err(|e| CollectorError::BadRequest(format!("invalid OTLP JSON {what}: {e}"))),
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP sends with every 4xx/5xx.
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Human-readable message.
    #[prost(string, tag = "2")]
    pub message: String,
}
