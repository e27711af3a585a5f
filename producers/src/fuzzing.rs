//! Entry points for the fuzz targets (`fuzz/`) and the test that replays their corpus: each
//! takes outside bytes as a listener has them (after content decoding) and runs the
//! collector's decode and normalise path on them, dropping the result. Hostile input must
//! end in an `Err` (a 4xx), never a panic, a hang or unbounded memory.

use bytes::Bytes;
use obs_runtime::config::CollectorConfig;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::body::Format;
use crate::metrics::families::Families;
use crate::metrics::guard::SeriesGuard;
use crate::otlp::decode_request;

/// The largest decompressed body the entry points accept (the collector's default limit).
const LIMIT: usize = 16 << 20;

/// OTLP/HTTP logs, as protobuf and as JSON.
pub fn otlp_logs(data: &[u8]) {
    for format in [Format::Protobuf, Format::Json] {
        if let Ok(req) = decode_request::<ExportLogsServiceRequest>(format, data, "logs") {
            let _ = crate::otlp::logs::normalise(req, "fuzz", 0);
        }
    }
}

/// OTLP/HTTP traces, as protobuf and as JSON.
pub fn otlp_traces(data: &[u8]) {
    for format in [Format::Protobuf, Format::Json] {
        if let Ok(req) = decode_request::<ExportTraceServiceRequest>(format, data, "traces") {
            let _ = crate::otlp::traces::normalise(req, "fuzz");
        }
    }
}

/// OTLP/HTTP metrics, as protobuf and as JSON, through the series guard.
pub fn otlp_metrics(data: &[u8]) {
    for format in [Format::Protobuf, Format::Json] {
        if let Ok(req) = decode_request::<ExportMetricsServiceRequest>(format, data, "metrics") {
            let deltas = crate::otlp::metrics::DeltaTotals::default();
            if let Ok((mut series, _)) = crate::otlp::metrics::normalise(req, "fuzz", &deltas) {
                let guard = SeriesGuard::new(&CollectorConfig::default());
                let _ = guard.admit("fuzz", &mut series);
            }
        }
    }
}

/// Prometheus remote write 1.0: snappy, protobuf, normalise, series guard.
pub fn remote_write(data: &[u8]) {
    let Ok(req) = crate::remote_write::decode(&Bytes::copy_from_slice(data), LIMIT) else {
        return;
    };
    let families = Families::default();
    if let Ok((mut series, _)) = crate::remote_write::normalise::normalise(req, "fuzz", &families) {
        let guard = SeriesGuard::new(&CollectorConfig::default());
        let _ = guard.admit("fuzz", &mut series);
    }
}

/// Loki push: snappy protobuf and JSON.
pub fn loki(data: &[u8]) {
    let _ = crate::loki::parse_protobuf(data, LIMIT, "fuzz", 0);
    let _ = crate::loki::parse_json(data, "fuzz", 0);
}

/// Zipkin v2 JSON spans.
pub fn zipkin(data: &[u8]) {
    let _ = crate::zipkin::parse(data, "fuzz");
}

/// JSON and Kubernetes events.
pub fn events(data: &[u8]) {
    let _ = crate::events::parse(data, "fuzz", 0);
}

/// The Prometheus text format and OpenMetrics, as a scrape reads them.
pub fn exposition(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::scrape::exposition::parse(text, false);
        let _ = crate::scrape::exposition::parse(text, true);
    }
}

/// JSON lines from `obs.logs.raw` (Vector, Fluent Bit and plain shapes).
pub fn json_lines(data: &[u8]) {
    let _ = obs_runtime::json_lines::parse(data, 0);
}

/// A gzip body, as the collectors decode `Content-Encoding: gzip` with their size limit.
pub fn gzip_body(data: &[u8]) {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("content-encoding", "gzip".parse().expect("header value"));
    let _ = crate::body::decode(&headers, Bytes::copy_from_slice(data), 1 << 20);
}
