//! Loki push (`POST /loki/api/v1/push`) → `obs.logs`.
//!
//! Two encodings, as Loki takes them: `application/json`
//! (`{"streams": [{"stream": {labels}, "values": [["<ns>", "<line>", {metadata}?]]}]}`,
//! optionally gzip) and `application/x-protobuf` (a snappy-compressed `logproto.PushRequest`,
//! labels as `{a="b", ...}` text). Stream labels become the record's resource attributes
//! (so one Loki stream is one stream here), structured metadata its attributes; the
//! service is the `service_name`, `service` or `job` label, and the severity the `level`
//! label when there is one. Loki answers 204 on success.

use obs_schemas::records::{Attrs, LogRecord};
use prost::Message;
use serde_json::Value;

use crate::error::CollectorError;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// Streams.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// Labels as `{a="b", ...}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// Entries.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Label hash (unused).
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    /// When.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Structured metadata.
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPair>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

fn record(
    labels: &Attrs,
    ts_ns: i64,
    line: String,
    metadata: Attrs,
    tenant: &str,
    now_ns: i64,
) -> LogRecord {
    let service = ["service_name", "service", "job"]
        .iter()
        .find_map(|k| labels.get(*k))
        .cloned()
        .unwrap_or_else(|| "unknown_service".into());
    LogRecord {
        timestamp_ns: ts_ns,
        observed_timestamp_ns: now_ns,
        severity_text: labels.get("level").cloned().unwrap_or_default(),
        body: line,
        service,
        resource_attrs: labels.clone(),
        attrs: metadata,
        tenant: tenant.to_string(),
        ..Default::default()
    }
}

/// A snappy-compressed protobuf push body.
pub fn parse_protobuf(
    body: &[u8],
    limit: usize,
    tenant: &str,
    now_ns: i64,
) -> Result<Vec<LogRecord>, CollectorError> {
    let len = snap::raw::decompress_len(body).map_err(|e| {
        CollectorError::BadRequest(format!("body is not valid snappy (block format): {e}"))
    })?;
    if len > limit {
        return Err(CollectorError::TooLarge { limit });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| {
            CollectorError::BadRequest(format!("body is not valid snappy (block format): {e}"))
        })?;
    let req = PushRequest::decode(raw.as_slice()).map_err(|e| {
        CollectorError::BadRequest(format!("body is not a valid Loki PushRequest: {e}"))
    })?;
    let mut out = Vec::new();
    for (i, s) in req.streams.into_iter().enumerate() {
        let labels = crate::labels::parse_label_set(&s.labels)
            .map_err(|e| CollectorError::BadRequest(format!("stream #{i}: {e}")))?;
        for e in s.entries {
            let ts = e
                .timestamp
                .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                .unwrap_or(now_ns);
            let md = e
                .structured_metadata
                .into_iter()
                .map(|p| (p.name, p.value))
                .collect();
            out.push(record(&labels, ts, e.line, md, tenant, now_ns));
        }
    }
    Ok(out)
}

/// A JSON push body.
pub fn parse_json(
    body: &[u8],
    tenant: &str,
    now_ns: i64,
) -> Result<Vec<LogRecord>, CollectorError> {
    let bad = |m: String| CollectorError::BadRequest(m);
    let text =
        std::str::from_utf8(body).map_err(|e| bad(format!("body is not valid UTF-8: {e}")))?;
    let v: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("body is not valid JSON: {e}")))?;
    let streams = v
        .get("streams")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("body has no \"streams\" array".into()))?;
    let mut out = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let labels: Attrs = match s.get("stream") {
            Some(Value::Object(o)) => o
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(bad(format!("stream #{i}: label {k} is not a string"))),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad(format!("stream #{i} has no \"stream\" label object"))),
        };
        let values = s
            .get("values")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("stream #{i} has no \"values\" array")))?;
        for (j, entry) in values.iter().enumerate() {
            let at = |what: &str| bad(format!("stream #{i} value #{j}: {what}"));
            let e = entry.as_array().ok_or_else(|| at("is not an array"))?;
            let ts: i64 = e
                .first()
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| at("timestamp is not a string of ns since the epoch"))?;
            let line = e
                .get(1)
                .and_then(Value::as_str)
                .ok_or_else(|| at("line is not a string"))?
                .to_string();
            let md: Attrs = match e.get(2) {
                None | Some(Value::Null) => Attrs::new(),
                Some(Value::Object(o)) => o
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect(),
                Some(_) => return Err(at("structured metadata is not an object")),
            };
            out.push(record(&labels, ts, line, md, tenant, now_ns));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_protobuf_give_the_same_records() {
        let json = br#"{"streams":[{"stream":{"job":"api","level":"warn"},"values":[["1700000000000000001","slow",{"trace_id":"ab"}]]}]}"#;
        let a = parse_json(json, "t", 5).unwrap();
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{job="api", level="warn"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 1,
                    }),
                    line: "slow".into(),
                    structured_metadata: vec![LabelPair {
                        name: "trace_id".into(),
                        value: "ab".into(),
                    }],
                }],
                hash: 0,
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        let b = parse_protobuf(&body, 1 << 20, "t", 5).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].service, "api");
        assert_eq!(a[0].severity_text, "warn");
        assert_eq!(a[0].timestamp_ns, 1_700_000_000_000_000_001);
        assert_eq!(a[0].attrs["trace_id"], "ab");
    }

    #[test]
    fn bad_bodies_are_named() {
        assert!(
            parse_protobuf(b"\xff\xff\xff\xff\xff", 1 << 20, "t", 0)
                .unwrap_err()
                .to_string()
                .contains("snappy")
        );
        let e = parse_json(
            br#"{"streams":[{"stream":{"a":"b"},"values":[["x","l"]]}]}"#,
            "t",
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("timestamp"), "{e}");
    }
}
