//! Collectors: where the outside world's telemetry enters the pipeline.
//!
//! In: HTTP requests in the protocols clients already speak (OTLP/HTTP logs and traces, protobuf or JSON,
//! optionally gzip; Prometheus remote write). Out: normalised [`obs_schemas::records`] published to the raw
//! Kafka topics in Confluent's wire format. A request is answered 2xx only after the broker
//! acknowledged every record in it; a broker that is down or slow gets the client a 503
//! with `Retry-After`, never a silent drop.
//!
//! * [`server`]: the listeners, routes and shared state.
//! * `admission`: the bound on request bytes held at once (503 with `Retry-After` past it).
//! * `body`: reading, size-limiting and decompressing request bodies.
//! * `otlp`: decoding and normalising OTLP (logs, traces, metrics).
//! * `otlp_grpc`: the OTLP/gRPC services (port 4317).
//! * `remote_write`: Prometheus remote write 1.0.
//! * `events`: JSON events (ours and Kubernetes `Event` objects).
//! * `loki`: Loki push (JSON and snappy protobuf).
//! * `zipkin`: Zipkin v2 JSON spans.
//! * `scrape`: Prometheus-style scraping (static and file SD, relabelling, staleness) and
//!   blackbox probes.
//! * `labels`: Prometheus label-set text.
//! * `metrics`: what every metrics protocol shares (series shape, limits, histograms).
//! * publishing: `obs_runtime::publish` (batching per Kafka key, encoding, awaiting
//!   acknowledgements), shared with the stream processors.
//! * `error`: how each failure is answered.

mod admission;
mod body;
mod error;
mod events;
pub mod fuzzing;
mod labels;
pub mod loki;
mod metrics;
mod otlp;
mod otlp_grpc;
pub mod remote_write;
mod scrape;
pub mod server;
mod zipkin;

pub use server::run;
