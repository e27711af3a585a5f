//! Confluent wire format: `0x00`, a 4-byte big-endian schema id, then the Avro datum.
//!
//! Encoding registers (or looks up) the topic's value schema under `<topic>-value` in any
//! Confluent-compatible registry, ours or Confluent's, and caches the id; decoding fetches
//! the writer's schema by the id in the message, so records written by an older schema
//! version still decode.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, get_schema_by_subject,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
    /// Registry errors: one that cannot be reached is retriable, anything else (an unknown
    /// schema id, a schema that is not Avro) is about the data.
    fn from_registry(e: SRCError) -> Self {
        if e.retriable {
            WireError::Registry(e.to_string())
        } else {
            WireError::Malformed(e.to_string())
        }
    }
}

/// Encodes and decodes topic values in Confluent's wire format.
///
/// One codec is shared by a whole stage. The registry is asked once per topic (to register
/// or look up its schema id) and once per schema id met in messages; records are then
/// serialised straight from and into their structs with the schema by `serde_avro_fast`
/// (see [`FastSchema`]); apache-avro parses and checks schemas, registers them and
/// handles the records shaped at run time (`Value`s, [`DynamicWriter`]).
pub struct Codec {
    settings: SrSettings,
    /// Each topic's registered value schema: its id and the parsed schema.
    writers: RwLock<HashMap<Topic, Arc<(u32, FastSchema)>>>,
    /// Writer schemas by id, as messages name them.
    readers: RwLock<HashMap<u32, Arc<ReaderSchema>>>,
}

/// A schema as `serde_avro_fast` walks it: the typed records' encode and decode. It writes
/// the same bytes as apache-avro's schema-aware serde (a test compares them for every
/// topic) at a fraction of the cost: apache-avro 0.22 looks every record field up by name
/// in a hash map, which was ~15% of `obs`'s CPU under OTLP logs (docs/PERFORMANCE.md,
/// seventh round, has the figures).
pub type FastSchema = serde_avro_fast::Schema;

/// A writer schema met in messages, parsed for both libraries.
struct ReaderSchema {
    /// For generic `Value`s ([`Codec::decode_value`]).
    avro: Arc<Schema>,
    /// For typed records ([`Codec::decode`]).
    fast: FastSchema,
}

/// Parses schema text for `serde_avro_fast`, naming `what` in the error.
fn fast_schema(text: &str, what: &str) -> Result<FastSchema, WireError> {
    text.parse()
        .map_err(|e| WireError::Malformed(format!("{what}: {e}")))
}

impl Codec {
    /// A codec talking to the registry at `registry_url` (e.g. `http://127.0.0.1:8081`).
    pub fn new(registry_url: &str) -> Self {
        Codec::with_token(registry_url, "")
    }

    /// A codec sending `token` as a bearer token to the registry (none when empty): for a
    /// registry that requires credentials (`[auth] client_token`).
    pub fn with_token(registry_url: &str, token: &str) -> Self {
        Codec::with_client(registry_url, token, reqwest::Client::builder())
    }

    /// Like [`Codec::with_token`], over an HTTP client made from `client` (e.g. one that
    /// trusts the deployment's CA for an `https://` registry).
    pub fn with_client(registry_url: &str, token: &str, client: reqwest::ClientBuilder) -> Self {
        let mut builder = SrSettings::new_builder(registry_url.trim_end_matches('/').to_string());
        builder.set_timeout(std::time::Duration::from_secs(5));
        if !token.is_empty() {
            builder.set_token_authorization(token);
        }
        let settings = builder
            .build_with(client)
            .expect("registry settings without proxies always build");
        Codec {
            settings,
            writers: RwLock::default(),
            readers: RwLock::default(),
        }
    }

    /// The topic's schema id and schema, registering the schema on first use.
    async fn writer(&self, topic: Topic) -> Result<Arc<(u32, FastSchema)>, WireError> {
        if let Some(w) = self.writers.read().expect("not poisoned").get(&topic) {
            return Ok(w.clone());
        }
        let supplied = supplied_schema(topic).ok_or_else(|| {
            WireError::Malformed(format!("{topic} carries plain JSON lines, not Avro"))
        })?;
        let text = supplied.schema.clone();
        let (id, _) = self.register_supplied(topic.name(), supplied).await?;
        let w = Arc::new((id, fast_schema(&text, topic.name())?));
        self.writers
            .write()
            .expect("not poisoned")
            .insert(topic, w.clone());
        Ok(w)
    }

    /// Registers (or finds) `supplied` as the value schema of topic `topic`.
    async fn register_supplied(
        &self,
        topic: &str,
        supplied: SuppliedSchema,
    ) -> Result<(u32, Schema), WireError> {
        let text = supplied.schema.clone();
        let strategy =
            SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_string(), false, supplied);
        let registered = get_schema_by_subject(&self.settings, &strategy)
            .await
            .map_err(|e| {
                let text = e.to_string();
                let hint = if text.contains("409") || text.to_lowercase().contains("incompatible") {
                    format!(
                        " (the registry holds an incompatible earlier version of {topic}'s schema: \
                         on a development stack delete the subject with DELETE \
                         /subjects/{topic}-value, or start from a fresh state)"
                    )
                } else {
                    String::new()
                };
                WireError::Registry(format!("registering {topic}-value: {text}{hint}"))
            })?;
        let schema = Schema::parse_str(&text)
            .map_err(|e| WireError::Malformed(format!("{topic} value schema: {e}")))?;
        Ok((registered.id, schema))
    }

    /// Registers `schema` (Avro JSON) as the value schema of `topic`, a topic whose records
    /// are shaped at run time (a streaming SQL query's output), for [`DynamicWriter::encode`].
    pub async fn register(&self, topic: &str, schema: &str) -> Result<DynamicWriter, WireError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
        let (id, schema) = self.register_supplied(topic, supplied).await?;
        Ok(DynamicWriter { id, schema })
    }

    /// Decodes a message value (wire format) as a generic Avro value, with the writer
    /// schema it names (for topics whose records are shaped at run time).
    pub async fn decode_value(&self, bytes: &[u8]) -> Result<(Value, Arc<Schema>), WireError> {
        let Some(id) = schema_id(bytes) else {
            return Err(not_wire_format());
        };
        let schema = self.reader(id).await?.avro.clone();
        let value = GenericDatumReader::builder(&schema)
            .build()
            .and_then(|reader| reader.read_value(&mut &bytes[5..]))
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        Ok((value, schema))
    }

    /// The writer schema `id` names, fetched from the registry on first use.
    async fn reader(&self, id: u32) -> Result<Arc<ReaderSchema>, WireError> {
        if let Some(s) = self.readers.read().expect("not poisoned").get(&id) {
            return Ok(s.clone());
        }
        let registered = get_schema_by_id(id, &self.settings)
            .await
            .map_err(WireError::from_registry)?;
        if registered.schema_type != SchemaType::Avro {
            return Err(WireError::Malformed(format!(
                "schema {id} is {:?}, not Avro",
                registered.schema_type
            )));
        }
        let what = format!("schema {id}");
        let schema = Arc::new(ReaderSchema {
            avro: Arc::new(
                Schema::parse_str(&registered.schema)
                    .map_err(|e| WireError::Malformed(format!("{what}: {e}")))?,
            ),
            fast: fast_schema(&registered.schema, &what)?,
        });
        self.readers
            .write()
            .expect("not poisoned")
            .insert(id, schema.clone());
        Ok(schema)
    }

    /// Encodes `value` as a value of `topic`, registering the topic's schema if needed.
    pub async fn encode<T: Serialize>(
        &self,
        topic: Topic,
        value: &T,
    ) -> Result<Vec<u8>, WireError> {
        let w = self.writer(topic).await?;
        let mut bytes = Vec::with_capacity(256);
        bytes.push(0);
        bytes.extend_from_slice(&w.0.to_be_bytes());
        let mut config = serde_avro_fast::ser::SerializerConfig::new(&w.1);
        serde_avro_fast::to_datum(value, bytes, &mut config).map_err(|e| {
            WireError::Malformed(format!("{topic} value does not fit its schema: {e}"))
        })
    }

    /// Decodes a message value (wire format) into `T` (which may borrow from `bytes`).
    pub async fn decode<'a, T: Deserialize<'a>>(&self, bytes: &'a [u8]) -> Result<T, WireError> {
        let Some(id) = schema_id(bytes) else {
            return Err(not_wire_format());
        };
        let schema = self.reader(id).await?;
        decode_with(&schema.fast, bytes)
    }

    /// Decodes a message value into `T` once for every caller passing the same `cell`: the
    /// first decodes, the others share its value, or its malformed-record error. For a
    /// message several readers take apart without changing it (`obs.metrics`' four
    /// tables): one decode instead of four. A registry that cannot be reached is not
    /// remembered (the next call asks again); a cell holding another type than `T` is
    /// passed by and `T` decoded on its own.
    pub async fn decode_shared<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        bytes: &[u8],
        cell: &OnceLock<SharedDecode>,
    ) -> Result<Arc<T>, WireError> {
        let decoded = match cell.get() {
            Some(d) => d,
            None => {
                let Some(id) = schema_id(bytes) else {
                    return Err(not_wire_format());
                };
                let schema = self.reader(id).await?;
                cell.get_or_init(|| match decode_with::<T>(&schema.fast, bytes) {
                    Ok(value) => Ok(Arc::new(value)),
                    Err(WireError::Malformed(why) | WireError::Registry(why)) => Err(why),
                })
            }
        };
        match decoded {
            Ok(value) => match value.clone().downcast::<T>() {
                Ok(value) => Ok(value),
                Err(_) => self.decode(bytes).await.map(Arc::new),
            },
            Err(why) => Err(WireError::Malformed(why.clone())),
        }
    }
}

/// A message decoded once for all its readers ([`Codec::decode_shared`]): the value, or
/// why the bytes are not a record of their schema.
pub type SharedDecode = Result<Arc<dyn Any + Send + Sync>, String>;

/// The error of bytes without the wire format's header.
fn not_wire_format() -> WireError {
    WireError::Malformed(
        "not Confluent wire format (expected magic byte 0 and a 4-byte schema id)".into(),
    )
}

/// Decodes a wire-format message value into `T` with `schema` as the writer schema (the
/// schema id in the header is not looked up): the decode of [`Codec::decode`] once the
/// registry has answered, and what the fuzz targets run on outside bytes.
pub fn decode_with<'a, T: Deserialize<'a>>(
    schema: &FastSchema,
    bytes: &'a [u8],
) -> Result<T, WireError> {
    if schema_id(bytes).is_none() {
        return Err(not_wire_format());
    }
    serde_avro_fast::from_datum_slice(&bytes[5..], schema)
        .map_err(|e| WireError::Malformed(e.to_string()))
}

/// Encodes `value` in wire format under `topic`'s own value schema, naming `schema_id`,
/// without a registry: for tests and fuzz seeds that need a topic's bytes as the
/// collectors write them.
pub fn encode_unregistered<T: Serialize>(
    topic: Topic,
    schema_id: u32,
    value: &T,
) -> Result<Vec<u8>, WireError> {
    let text = topic
        .value_schema()
        .ok_or_else(|| WireError::Malformed(format!("{} has no Avro schema", topic.name())))?;
    let schema = Schema::parse_str(text).map_err(|e| WireError::Malformed(e.to_string()))?;
    DynamicWriter {
        id: schema_id,
        schema,
    }
    .encode_ser(value)
}

/// Decodes `bytes` as a value of every topic's record schema (the sinks' decode of Kafka
/// messages), dropping the results: the Avro fuzz target's entry point.
pub fn fuzz_decode(bytes: &[u8]) {
    use crate::records::*;
    use std::sync::OnceLock;
    static SCHEMAS: OnceLock<Vec<(Topic, Schema, FastSchema)>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        Topic::ALL
            .iter()
            .filter_map(|&t| {
                let text = t.value_schema()?;
                Some((t, Schema::parse_str(text).ok()?, text.parse().ok()?))
            })
            .collect()
    });
    for (topic, schema, fast) in schemas {
        match topic {
            Topic::Logs | Topic::LogsIngest => drop(decode_with::<LogBatch>(fast, bytes)),
            Topic::Spans | Topic::SpansSampled => drop(decode_with::<SpanBatch>(fast, bytes)),
            Topic::Metrics => drop(decode_with::<MetricBatch>(fast, bytes)),
            Topic::Events => drop(decode_with::<EventBatch>(fast, bytes)),
            Topic::MetricsRollup => drop(decode_with::<MetricRollupBatch>(fast, bytes)),
            Topic::Traces => drop(decode_with::<TraceSummaryBatch>(fast, bytes)),
            Topic::Alerts => drop(decode_with::<Alert>(fast, bytes)),
            _ => drop(
                GenericDatumReader::builder(schema)
                    .build()
                    .and_then(|reader| reader.read_value(&mut bytes.get(5..).unwrap_or_default())),
            ),
        }
    }
}

/// A value schema registered at run time, from [`Codec::register`].
pub struct DynamicWriter {
    /// The registry's id of the schema.
    pub id: u32,
    schema: Schema,
}

impl DynamicWriter {
    /// Encodes a record (its serde shape must fit the schema) in wire format.
    pub fn encode_ser<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, WireError> {
        self.framed(|writer, bytes| writer.write_ser(bytes, value))
    }

    /// Encodes `value` (which must fit the schema) in wire format.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, WireError> {
        self.framed(|writer, bytes| writer.write_value_ref(bytes, value))
    }

    /// The magic byte and schema id, then what `write` writes with the schema's writer.
    fn framed(
        &self,
        write: impl FnOnce(&GenericDatumWriter<'_>, &mut Vec<u8>) -> apache_avro::AvroResult<usize>,
    ) -> Result<Vec<u8>, WireError> {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(0);
        bytes.extend_from_slice(&self.id.to_be_bytes());
        GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|writer| write(&writer, &mut bytes))
            .map_err(|e| WireError::Malformed(format!("the value does not fit its schema: {e}")))?;
        Ok(bytes)
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
    use apache_avro::{from_value, to_value};

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
        // The codec's direct paths write the same bytes and read the same value.
        let direct = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_ser_to_vec(&value)
            .unwrap();
        assert_eq!(
            direct, bytes,
            "{topic}: serialised straight from the struct"
        );
        let read: T = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_deser(&mut &bytes[..])
            .unwrap();
        assert_eq!(
            read, value,
            "{topic}: deserialised straight into the struct"
        );
        // The codec's typed paths (serde_avro_fast) write the same bytes and read them back.
        let fast: FastSchema = topic.value_schema().unwrap().parse().expect("parses");
        let config = &mut serde_avro_fast::ser::SerializerConfig::new(&fast);
        let fast_bytes = serde_avro_fast::to_datum_vec(&value, config).unwrap();
        assert_eq!(fast_bytes, bytes, "{topic}: serde_avro_fast's bytes");
        let framed = [&[0, 0, 0, 0, 7][..], &bytes].concat();
        assert_eq!(decode_with::<T>(&fast, &framed).unwrap(), value, "{topic}");
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        Attrs::from_pairs(pairs)
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
            MetricRollupBatch {
                rollups: vec![MetricRollup {
                    count: 3,
                    sum: 1.5,
                    increase: 2.0,
                    ..Default::default()
                }],
            },
        );
        roundtrip(
            Topic::Traces,
            TraceSummaryBatch {
                summaries: vec![
                    TraceSummary {
                        services: vec!["a".into()],
                        ..Default::default()
                    },
                    TraceSummary {
                        trace_id: "b".into(),
                        kept: true,
                        ..Default::default()
                    },
                ],
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
    fn the_typed_decode_names_what_is_wrong() {
        let fast: FastSchema = Topic::Logs.value_schema().unwrap().parse().unwrap();
        let e = decode_with::<LogBatch>(&fast, &[1, 0, 0, 0, 7, 2]).unwrap_err();
        assert!(e.to_string().contains("not Confluent wire format"), "{e}");
        // One record whose timestamp varint never ends: cut short, not a value.
        let e = decode_with::<LogBatch>(&fast, &[0, 0, 0, 0, 7, 2, 0xff]).unwrap_err();
        assert!(
            e.to_string().starts_with("malformed record:") && e.to_string().contains("EOF"),
            "{e}"
        );
    }

    /// A realistic batch (100 records with attributes) encodes to the same bytes with both
    /// libraries and decodes back with the typed path.
    #[test]
    fn both_libraries_agree_on_a_log_batch() {
        let batch = LogBatch {
            records: (0..100)
                .map(|i| LogRecord {
                    timestamp_ns: 1_700_000_000_000_000_000 + i,
                    body: format!("GET /api/orders/{i} 200 in 12ms"),
                    service: "checkout".into(),
                    severity_text: "INFO".into(),
                    severity_number: 9,
                    attrs: attrs(&[("http.method", "GET"), ("http.status_code", "200")]),
                    resource_attrs: attrs(&[("host.name", "node-1"), ("k8s.pod", "p-1")]),
                    tenant: "t".into(),
                    ..Default::default()
                })
                .collect(),
        };
        let text = Topic::Logs.value_schema().unwrap();
        let (avro, fast) = (Schema::parse_str(text).unwrap(), text.parse().unwrap());
        let apache_bytes = GenericDatumWriter::builder(&avro)
            .build()
            .unwrap()
            .write_ser_to_vec(&batch)
            .unwrap();
        let config = &mut serde_avro_fast::ser::SerializerConfig::new(&fast);
        let fast_bytes = serde_avro_fast::to_datum_vec(&batch, config).unwrap();
        assert_eq!(fast_bytes, apache_bytes);
        let framed = [&[0, 0, 0, 0, 7][..], &fast_bytes].concat();
        assert_eq!(decode_with::<LogBatch>(&fast, &framed).unwrap(), batch);
    }

    /// A codec that knows schema 1 as `topic`'s value schema and has no registry to ask.
    fn codec_knowing(topic: Topic) -> Codec {
        let codec = Codec::new("http://127.0.0.1:9");
        let text = topic.value_schema().unwrap();
        let schema = ReaderSchema {
            avro: Arc::new(Schema::parse_str(text).unwrap()),
            fast: fast_schema(text, "test").unwrap(),
        };
        codec.readers.write().unwrap().insert(1, Arc::new(schema));
        codec
    }

    #[tokio::test]
    async fn a_shared_decode_is_decoded_once_and_read_by_every_caller() {
        let codec = codec_knowing(Topic::Metrics);
        let batch = MetricBatch {
            series: vec![MetricSeries {
                fingerprint: 7,
                name: "up".into(),
                timestamps_ms: vec![1, 2],
                values: vec![1.0, 0.0],
                tenant: "t".into(),
                ..Default::default()
            }],
            metadata: vec![],
        };
        let bytes = encode_unregistered(Topic::Metrics, 1, &batch).unwrap();
        let cell = OnceLock::new();
        let first = codec.decode_shared::<MetricBatch>(&bytes, &cell).await;
        let second = codec.decode_shared::<MetricBatch>(&bytes, &cell).await;
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(*first, batch);
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second caller reads the first's value"
        );
        // A caller wanting another type decodes on its own (here: not a log batch), and
        // leaves the shared value as it was.
        let other = codec.decode_shared::<LogBatch>(&bytes, &cell).await;
        assert!(matches!(other, Err(WireError::Malformed(_))), "{other:?}");
        let third = codec
            .decode_shared::<MetricBatch>(&bytes, &cell)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &third));
    }

    #[tokio::test]
    async fn a_shared_decode_shares_what_is_wrong_with_the_bytes() {
        let codec = codec_knowing(Topic::Metrics);
        // One series whose fingerprint varint never ends.
        let cut = [0, 0, 0, 0, 1, 2, 0xff];
        let cell = OnceLock::new();
        let first = codec
            .decode_shared::<MetricBatch>(&cut, &cell)
            .await
            .unwrap_err();
        assert!(first.to_string().contains("EOF"), "{first}");
        assert!(matches!(cell.get(), Some(Err(_))), "the error is kept");
        let second = codec
            .decode_shared::<MetricBatch>(&cut, &cell)
            .await
            .unwrap_err();
        assert_eq!(second.to_string(), first.to_string());
        // No wire-format header: named, and nothing kept.
        let cell = OnceLock::new();
        let e = codec
            .decode_shared::<MetricBatch>(&[1, 0, 0, 0, 1, 0], &cell)
            .await;
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("not Confluent wire format")
        );
        assert!(cell.get().is_none());
        // An unknown schema id with the registry unreachable: retriable, nothing kept.
        let e = codec
            .decode_shared::<MetricBatch>(&[0, 0, 0, 0, 2, 0], &cell)
            .await;
        assert!(matches!(e, Err(WireError::Registry(_))), "{e:?}");
        assert!(cell.get().is_none());
    }

    /// The borrowed view decodes from a full batch's bytes (kind, histograms, exemplars and
    /// metadata skipped) to the batch's own view.
    #[test]
    fn a_metric_batch_view_reads_the_batch_it_was_written_as() {
        let series = |fp: i64, name: &str| MetricSeries {
            fingerprint: fp,
            name: name.into(),
            labels: attrs(&[("job", "api"), ("pfad", "/über/∂"), ("", "")]),
            kind: "histogram".into(),
            timestamps_ms: vec![-5, 0, 1_700_000_000_000],
            values: vec![f64::NAN, -0.0, 2.5],
            histograms: vec![HistogramPoint {
                timestamp_ms: 9,
                bounds: vec![0.1, 1.0],
                counts: vec![1, 2, 3],
                sum: 4.5,
                count: 3,
            }],
            exemplars: vec![Exemplar {
                timestamp_ms: 3,
                value: 1.5,
                labels: attrs(&[("trace_id", "abc")]),
            }],
            tenant: "tenant-ä".into(),
        };
        let batch = MetricBatch {
            series: vec![series(1, "a"), series(-2, ""), MetricSeries::default()],
            metadata: vec![MetricMetadata {
                name: "a".into(),
                help: "help".into(),
                ..Default::default()
            }],
        };
        let fast: FastSchema = Topic::Metrics.value_schema().unwrap().parse().unwrap();
        let bytes = encode_unregistered(Topic::Metrics, 1, &batch).unwrap();
        let view: MetricBatchView = decode_with(&fast, &bytes).unwrap();
        // NaN is not equal to itself: compare its bits, then the rest with NaN taken out.
        assert!(view.series[0].values[0].is_nan() && view.series[1].values[0].is_nan());
        let mut want = batch.view();
        let mut got = view;
        for s in want.series.iter_mut().chain(got.series.iter_mut()) {
            if let Some(v) = s.values.first_mut() {
                *v = 0.0;
            }
        }
        assert_eq!(got, want);
        assert_eq!(got.series[0].labels.get("pfad"), Some(&"/über/∂"));
    }

    #[test]
    fn schema_id_reads_the_header() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9]), Some(258));
        assert_eq!(schema_id(&[1, 0, 0, 1, 2]), None);
        assert_eq!(schema_id(&[0, 0]), None);
    }
}
