//! The fuzz corpus replayed on stable: every input of `fuzz/corpus/<target>/` (real client
//! payloads and what coverage-guided runs kept) and `fuzz/regressions/<target>/` (inputs
//! that once crashed or hung a decoder) through the same entry points the libFuzzer targets
//! call (`fuzz/fuzz_targets/`). Each must return (a refusal is fine) without a panic and
//! within a second. `scripts/stack fuzz` runs the coverage-guided search itself.

use std::path::Path;
use std::time::{Duration, Instant};

use obs_e2e::repo_root;
use obs_schemas::Topic;
use obs_schemas::records::{
    Alert, Event, EventBatch, LogBatch, LogRecord, MetricBatch, MetricSeries, Span, SpanBatch,
};
use serde::Serialize;

/// A fuzz target's entry point: outside bytes in, nothing out.
type Entry = fn(&[u8]);

/// Target name → entry point, as `fuzz/fuzz_targets/<name>.rs` calls it.
const TARGETS: &[(&str, Entry)] = &[
    ("otlp_logs", obs_producers::fuzzing::otlp_logs),
    ("otlp_traces", obs_producers::fuzzing::otlp_traces),
    ("otlp_metrics", obs_producers::fuzzing::otlp_metrics),
    ("remote_write", obs_producers::fuzzing::remote_write),
    ("loki", obs_producers::fuzzing::loki),
    ("zipkin", obs_producers::fuzzing::zipkin),
    ("events", obs_producers::fuzzing::events),
    ("exposition", obs_producers::fuzzing::exposition),
    ("json_lines", obs_producers::fuzzing::json_lines),
    ("gzip_body", obs_producers::fuzzing::gzip_body),
    ("avro", obs_schemas::wire::fuzz_decode),
    ("promql", obs_query_api::fuzzing::promql),
    ("logql", obs_query_api::fuzzing::logql),
    ("sql_guard", obs_query_api::fuzzing::sql_guard),
];

/// The files of `dir` (none when it does not exist).
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn every_fuzz_target_has_a_binary_and_a_seeded_corpus() {
    let fuzz = repo_root().join("fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let source = std::fs::read_to_string(fuzz.join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|_| panic!("no fuzz_targets/{name}.rs"));
        assert!(source.contains("fuzz_target!"), "{name}");
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} not in fuzz/Cargo.toml"
        );
        assert!(
            !inputs(&fuzz.join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name} has no seeds (fuzz/seed_corpus.py)"
        );
    }
    let targets = std::fs::read_dir(fuzz.join("fuzz_targets"))
        .unwrap()
        .count();
    assert_eq!(
        targets,
        TARGETS.len(),
        "a target in fuzz/fuzz_targets is not replayed here"
    );
}

#[test]
fn the_corpus_and_the_regressions_pass_every_decoder() {
    let fuzz = repo_root().join("fuzz");
    let mut slowest = (Duration::ZERO, String::new());
    let mut total = 0;
    for (name, entry) in TARGETS {
        let mut all = inputs(&fuzz.join("corpus").join(name));
        all.extend(inputs(&fuzz.join("regressions").join(name)));
        for (path, data) in all {
            let started = Instant::now();
            // A panic fails the test, naming the input.
            let r = std::panic::catch_unwind(|| entry(&data));
            assert!(r.is_ok(), "{name} panicked on {path}");
            let took = started.elapsed();
            if took > slowest.0 {
                slowest = (took, path.clone());
            }
            total += 1;
        }
    }
    eprintln!(
        "{total} inputs through {} decoders; slowest {:?} ({})",
        TARGETS.len(),
        slowest.0,
        slowest.1
    );
    assert!(
        slowest.0 < Duration::from_secs(1),
        "{} took {:?}",
        slowest.1,
        slowest.0
    );
}

/// Avro messages of every record topic in Confluent's wire format: seeds for the `avro`
/// target (the sinks' decode of Kafka messages).
fn avro_seeds() -> Vec<(String, Vec<u8>)> {
    fn encode<T: Serialize>(topic: Topic, value: &T) -> Vec<u8> {
        obs_schemas::wire::encode_unregistered(topic, 1, value).unwrap()
    }
    let attrs = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        (
            "logs".into(),
            encode(
                Topic::Logs,
                &LogBatch {
                    records: vec![LogRecord {
                        timestamp_ns: 1,
                        body: "GET /a 200".into(),
                        service: "api".into(),
                        tenant: "acme".into(),
                        severity_text: "INFO".into(),
                        attrs: attrs(&[("path", "/a")]),
                        ..Default::default()
                    }],
                },
            ),
        ),
        (
            "spans".into(),
            encode(
                Topic::Spans,
                &SpanBatch {
                    spans: vec![Span {
                        trace_id: "5b8efff798038103d269b633813fc60c".into(),
                        span_id: "00f067aa0ba902b7".into(),
                        name: "GET /".into(),
                        service: "api".into(),
                        attrs: attrs(&[("http.route", "/")]),
                        ..Default::default()
                    }],
                },
            ),
        ),
        (
            "metrics".into(),
            encode(
                Topic::Metrics,
                &MetricBatch {
                    series: vec![MetricSeries {
                        name: "up".into(),
                        labels: attrs(&[("job", "api")]),
                        timestamps_ms: vec![1, 2],
                        values: vec![1.0, 0.0],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ),
        ),
        (
            "events".into(),
            encode(
                Topic::Events,
                &EventBatch {
                    events: vec![Event {
                        title: "deploy v1".into(),
                        ..Default::default()
                    }],
                },
            ),
        ),
        (
            "alerts".into(),
            encode(
                Topic::Alerts,
                &Alert {
                    rule: "HighErrorRate".into(),
                    labels: attrs(&[("severity", "page")]),
                    ..Default::default()
                },
            ),
        ),
    ]
}

#[test]
fn avro_seeds_decode_as_what_they_were() {
    for (name, bytes) in avro_seeds() {
        obs_schemas::wire::fuzz_decode(&bytes);
        let schema: obs_schemas::wire::FastSchema =
            Topic::Logs.value_schema().unwrap().parse().unwrap();
        if name == "logs" {
            let back: LogBatch = obs_schemas::wire::decode_with(&schema, &bytes).unwrap();
            assert_eq!(back.records[0].body, "GET /a 200");
        }
    }
}

/// Writes the Avro seeds into `fuzz/corpus/avro` (run by `fuzz/seed_corpus.py`'s caller).
#[test]
#[ignore]
fn write_avro_seeds() {
    let dir = repo_root().join("fuzz/corpus/avro");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in avro_seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}
