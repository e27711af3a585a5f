//! `obs bench-logs`: records per second through log pipelines in process: the pipelines
//! file (default `config/logs/bench.pipeline.toml`, 5 stages with redaction) run on
//! records shaped like `obs bench`'s OTLP logs, one in ten carrying PII, in messages of
//! 1000 as the log processor gets them. Through the pipeline, `scripts/stack bench-logs`
//! runs `obs bench` on a stack with the same pipelines configured. No peer runs here (no
//! Logstash or Vector on this machine); the numbers stand alone.

use std::time::Instant;

use obs_schemas::records::LogRecord;
use obs_stream_processors::logs::run::{load, process};

/// What `obs bench-logs` was asked to do.
pub struct LogsBench {
    /// The pipelines file.
    pub pipelines: String,
    /// Key of the `hash` redaction.
    pub key: String,
    /// Records run through.
    pub records: usize,
}

/// Record `i`: `obs bench`'s line, every tenth with an e-mail, a card number and an IP.
fn record(i: usize) -> LogRecord {
    let mut body = format!(
        "GET /api/v1/items/{} 200 {}ms user={} cart={}",
        i * 7,
        i % 250,
        i % 1000,
        i / 100
    );
    if i.is_multiple_of(10) {
        body.push_str(&format!(
            " email=user{i}@example.com card=\"4111 1111 1111 1111\" ip=10.0.{}.{}",
            i % 256,
            (i / 256) % 256
        ));
    }
    LogRecord {
        timestamp_ns: 1_796_119_200_000_000_000 + i as i64,
        severity_text: if i.is_multiple_of(10) {
            "ERROR"
        } else {
            "INFO"
        }
        .into(),
        body,
        service: format!("svc-{}", i % 7),
        attrs: [
            ("http.method".to_string(), "GET".to_string()),
            ("http.route".into(), "/api/v1/items/{id}".into()),
            ("seq".into(), i.to_string()),
        ]
        .into_iter()
        .collect(),
        tenant: "default".into(),
        ..LogRecord::default()
    }
}

/// Runs the benchmark and prints its numbers.
pub fn run(b: &LogsBench) -> anyhow::Result<()> {
    let pipelines = load(&b.pipelines, &b.key)?;
    let stages: usize = pipelines.iter().map(|p| p.stage_count()).sum();
    eprintln!("generating {} records...", b.records);
    let messages: Vec<Vec<LogRecord>> = (0..b.records)
        .map(record)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[LogRecord]>::to_vec)
        .collect();
    let (mut kept, mut dropped, mut failed) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    for m in messages {
        let out = process(&pipelines, m);
        kept += out.kept.len();
        dropped += out.dropped;
        failed += out.failed.len();
    }
    let elapsed = started.elapsed();
    println!(
        "log pipelines, in process ({}, {} pipeline(s), {stages} stages):",
        b.pipelines,
        pipelines.len()
    );
    println!(
        "  {:.0} records/s ({} records in {:.2} s; {kept} kept, {dropped} dropped, {failed} failed)",
        b.records as f64 / elapsed.as_secs_f64(),
        b.records,
        elapsed.as_secs_f64()
    );
    Ok(())
}
