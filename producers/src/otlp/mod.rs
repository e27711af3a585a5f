//! OTLP: decoding requests (protobuf or JSON) and normalising them to pipeline records.
//!
//! Attribute values become strings the way the OpenTelemetry Collector's ClickHouse
//! exporter writes them (`AsString`): strings as is, numbers and booleans in their usual
//! text, bytes as base64, arrays and maps as JSON.

pub mod logs;
pub mod metrics;
pub mod traces;
mod values;

use obs_schemas::records::Attrs;
use prost::Message;
use serde::de::DeserializeOwned;

use crate::body::Format;
use crate::error::CollectorError;

/// Service name when the resource has no `service.name` (the OTel SDK default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The resource's `service.name`, or [`UNKNOWN_SERVICE`].
pub fn service_name(resource_attrs: &Attrs) -> String {
    resource_attrs
        .get("service.name")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_string())
}

/// Lower-case hex of an id; empty when absent or all zero (OTLP's "no id").
pub fn id_hex(bytes: &[u8], len: usize, what: &str) -> Result<String, CollectorError> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0) {
        return Ok(String::new());
    }
    if bytes.len() != len {
        return Err(CollectorError::BadRequest(format!(
            "invalid {what}: {} bytes, expected {len}",
            bytes.len()
        )));
    }
    // Through a byte buffer: `hex::encode` collects chars one by one, which showed up at
    // ~1.5% of the collector's CPU under spans (three ids per span).
    let mut out = vec![0; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice the input's length");
    Ok(String::from_utf8(out).expect("hex digits are ASCII"))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lower_case_hex_and_all_zero_is_no_id() {
        let id = [0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd];
        assert_eq!(id_hex(&id, 8, "span_id").unwrap(), "0af7651916cd43dd");
        assert_eq!(id_hex(&[0; 8], 8, "span_id").unwrap(), "");
        assert_eq!(id_hex(&[], 8, "span_id").unwrap(), "");
        let err = id_hex(&id[..3], 8, "span_id").unwrap_err().to_string();
        assert!(
            err.contains("invalid span_id: 3 bytes, expected 8"),
            "{err}"
        );
    }
}
