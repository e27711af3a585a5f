//! Confluent wire format: `0x00`, a 4-byte big-endian schema id, then the Avro datum.
//!
//! Encoding registers (or looks up) the topic's value schema under `<topic>-value` in any
//! Confluent-compatible registry, ours or Confluent's, and caches the id; decoding fetches
//! the writer's schema by the id in the message, so records written by an older schema
//! version still decode.

use apache_avro::from_value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Topic;

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The registry could not be reached or refused the schema.
    #[error("schema registry: {0}")]
    Registry(String),
    /// The bytes are not a valid record of the schema their id names.
    #[error("malformed record: {0}")]
    Malformed(String),
}

impl WireError {
    /// Decoding errors: a registry that cannot be reached is retriable, anything else
    /// (unknown schema id, bytes that do not fit the schema) is about the data.
    fn from_decode(e: SRCError) -> Self {
        if e.retriable {
            WireError::Registry(e.to_string())
        } else {
            WireError::Malformed(e.to_string())
        }
    }
}

/// Encodes and decodes topic values in Confluent's wire format.
///
/// One codec is shared by a whole stage: it caches schema ids and parsed schemas.
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl Codec {
    /// A codec talking to the registry at `registry_url` (e.g. `http://127.0.0.1:8081`).
    pub fn new(registry_url: &str) -> Self {
        let settings = SrSettings::new_builder(registry_url.trim_end_matches('/').to_string())
            .set_timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("registry settings without TLS or proxies always build");
        Codec {
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings),
        }
    }

    /// Encodes `value` as a value of `topic`, registering the topic's schema if needed.
    pub async fn encode<T: Serialize>(
        &self,
        topic: Topic,
        value: &T,
    ) -> Result<Vec<u8>, WireError> {
        let schema = supplied_schema(topic).ok_or_else(|| {
            WireError::Malformed(format!("{topic} carries plain JSON lines, not Avro"))
        })?;
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
            topic.name().to_string(),
            false,
            schema,
        );
        self.encoder
            .encode_struct(value, &strategy)
            .await
            .map_err(|e| {
                // The converter caches failures; a registry that comes back must be retried.
                self.encoder.remove_errors_from_cache();
                WireError::Registry(e.to_string())
            })
    }

    /// Decodes a message value (wire format) into `T`.
    pub async fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, WireError> {
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(WireError::Malformed(
                "not Confluent wire format (expected magic byte 0 and a 4-byte schema id)".into(),
            ));
        }
        let decoded = self.decoder.decode(Some(bytes)).await.map_err(|e| {
            self.decoder.remove_errors_from_cache();
            WireError::from_decode(e)
        })?;
        from_value::<T>(&decoded.value).map_err(|e| WireError::Malformed(e.to_string()))
    }
}

/// The topic's value schema in the shape `schema_registry_converter` registers (`None`
/// for a topic that is not Avro).
pub fn supplied_schema(topic: Topic) -> Option<SuppliedSchema> {
    let schema = topic.value_schema()?;
    Some(SuppliedSchema::new(
        None,
        SchemaType::Avro,
        schema.to_string(),
    ))
}

/// The schema id a wire-format message was written with.
pub fn schema_id(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= 5 && bytes[0] == 0)
        .then(|| u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::*;
    use apache_avro::{Schema, to_value};

    fn roundtrip<T>(topic: Topic, value: T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let schema = Schema::parse_str(topic.value_schema().unwrap()).expect("schema parses");
        let avro = to_value(&value)
            .unwrap()
            .resolve(&schema)
            .expect("value fits schema");
        let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(avro)
            .unwrap();
        let back = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut &bytes[..])
            .unwrap();
        assert_eq!(from_value::<T>(&back).unwrap(), value, "{topic}");
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_record_roundtrips_through_its_schema() {
        roundtrip(
            Topic::Logs,
            LogBatch {
                records: vec![LogRecord {
                    timestamp_ns: 1_700_000_000_123_456_789,
                    body: "hello".into(),
                    service: "api".into(),
                    attrs: attrs(&[("k", "v")]),
                    tenant: "t".into(),
                    ..Default::default()
                }],
            },
        );
        roundtrip(
            Topic::Metrics,
            MetricBatch {
                series: vec![MetricSeries {
                    fingerprint: -5,
                    name: "up".into(),
                    labels: attrs(&[("job", "x")]),
                    kind: "gauge".into(),
                    timestamps_ms: vec![1, 2],
                    values: vec![1.0, 0.5],
                    histograms: vec![HistogramPoint {
                        timestamp_ms: 3,
                        bounds: vec![0.1],
                        counts: vec![1, 2],
                        sum: 0.3,
                        count: 2,
                    }],
                    exemplars: vec![Exemplar {
                        timestamp_ms: 1,
                        value: 2.0,
                        labels: attrs(&[("trace_id", "ab")]),
                    }],
                    tenant: "t".into(),
                }],
                metadata: vec![MetricMetadata {
                    tenant: "t".into(),
                    name: "up".into(),
                    kind: "gauge".into(),
                    help: "Target is up.".into(),
                    unit: String::new(),
                }],
            },
        );
        roundtrip(
            Topic::Spans,
            SpanBatch {
                spans: vec![Span {
                    trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                    span_id: "b7ad6b7169203331".into(),
                    name: "GET /".into(),
                    kind: "Server".into(),
                    status_code: "Ok".into(),
                    events: vec![SpanEvent {
                        timestamp_ns: 5,
                        name: "e".into(),
                        attrs: attrs(&[("a", "b")]),
                    }],
                    links: vec![SpanLink {
                        trace_id: "x".into(),
                        span_id: "y".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            },
        );
        roundtrip(
            Topic::Events,
            EventBatch {
                events: vec![Event {
                    id: "1".into(),
                    kind: "deploy".into(),
                    title: "v2".into(),
                    ..Default::default()
                }],
            },
        );
        roundtrip(
            Topic::MetricsRollup,
            MetricRollup {
                count: 3,
                sum: 1.5,
                ..Default::default()
            },
        );
        roundtrip(
            Topic::Traces,
            TraceSummary {
                services: vec!["a".into()],
                ..Default::default()
            },
        );
        roundtrip(
            Topic::ServiceGraph,
            ServiceGraphEdge {
                request_count: 2,
                ..Default::default()
            },
        );
        roundtrip(
            Topic::Alerts,
            Alert {
                state: "firing".into(),
                ..Default::default()
            },
        );
        roundtrip(
            Topic::Dlq,
            DeadLetter {
                key: Some(vec![1, 2]),
                value: None,
                error: "bad".into(),
                ..Default::default()
            },
        );
    }

    #[test]
    fn schema_id_reads_the_header() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9]), Some(258));
        assert_eq!(schema_id(&[1, 0, 0, 1, 2]), None);
        assert_eq!(schema_id(&[0, 0]), None);
    }
}
