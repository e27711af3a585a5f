//! `obs bench-rollups`: samples per second through one `obs.metrics` partition's rollup
//! state machine in process (1m and 1h windows, the default lateness): `series` series
//! scraped every 15 s for `minutes`, in messages of 1000 series as a scrape's remote write
//! reaches a partition; then the size of a checkpoint of that state. Kafka decoding is not
//! in it (the trace and rule benchmarks measure that path). No peer runs here: Thanos's
//! compactor downsamples blocks after the fact, not a stream.

use std::sync::Arc;
use std::time::Instant;

use obs_schemas::records::{MetricBatch, MetricSeries};
use obs_stream_processors::rollups::partition::{Partition, Settings};

/// What `obs bench-rollups` was asked to do.
pub struct RollupsBench {
    /// Series in the partition.
    pub series: usize,
    /// Minutes of samples at 15 s.
    pub minutes: usize,
}

/// One scrape of series `from..to` at `t` (ms): counters growing by the series' number.
fn scrape(from: usize, to: usize, t: i64, round: i64) -> MetricBatch {
    MetricBatch {
        series: (from..to)
            .map(|i| MetricSeries {
                fingerprint: i as i64 * 7_919,
                name: "bench_requests_total".into(),
                labels: [("instance".to_string(), format!("host-{i}"))]
                    .into_iter()
                    .collect(),
                kind: "counter".into(),
                timestamps_ms: vec![t],
                values: vec![(round * (i as i64 % 10 + 1)) as f64],
                tenant: "default".into(),
                ..Default::default()
            })
            .collect(),
        metadata: Vec::new(),
    }
}

/// Runs the benchmark and prints its numbers.
pub fn run(b: &RollupsBench) -> anyhow::Result<()> {
    let settings = Arc::new(Settings::new(vec![60_000, 3_600_000], 60_000)?);
    let t0 = 1_796_112_000_000;
    let rounds = b.minutes as i64 * 4;
    eprintln!("generating {} samples...", b.series as i64 * rounds);
    let mut messages = Vec::new();
    for round in 0..rounds {
        for from in (0..b.series).step_by(1000) {
            let to = (from + 1000).min(b.series);
            messages.push(scrape(from, to, t0 + round * 15_000, round));
        }
    }
    // As the processor reads them (a view borrowing each message), made before timing.
    let views: Vec<_> = messages.iter().map(MetricBatch::view).collect();
    let mut p = Partition::new(0, settings, 0);
    let mut out = Vec::new();
    let started = Instant::now();
    for (offset, m) in views.iter().enumerate() {
        p.handle(offset as i64, m, &mut out);
    }
    let elapsed = started.elapsed();
    let samples = b.series as f64 * rounds as f64;
    let cp = Instant::now();
    let bytes = obs_stream_processors::state::to_bytes(&p.checkpoint()).len();
    println!(
        "rollups, in process (one partition, {} series, {} min at 15 s, 1m and 1h windows):",
        b.series, b.minutes
    );
    println!(
        "  {:.0} samples/s ({samples} samples in {:.2} s; {} windows written)",
        samples / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        out.len()
    );
    println!(
        "  checkpoint: {bytes} bytes ({:.0} per series), written in {:.0} ms",
        bytes as f64 / b.series as f64,
        cp.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
