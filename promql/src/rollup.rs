//! Range functions over rollups: windows of a series' samples pre-aggregated by the rollup
//! processor (count, sum, min, max, first, last, the counter increase inside the window).
//!
//! A step's window `[end - range, end]` is answered from rollups only when it is made of
//! whole rollup windows: the range and every window end are multiples of the resolution.
//! Then the samples inside the step's window are exactly the samples of the rollup windows
//! starting in `[end - range, end)` plus a sample at exactly `end` (the first of the window
//! starting there: Prometheus 2.42 includes both ends). Over those, the functions in
//! [`FUNCTIONS`] are determined by the aggregates: `rate`/`increase` add the rollups'
//! increases and the pairs between consecutive rollups (the earlier `last`, the later
//! `first`), then extrapolate from the first and last sample and the sample count as
//! Prometheus does. What differs from raw samples: the order of float additions (sums,
//! means), and samples the rollups left out (NaN, infinities, samples later than the
//! processor's allowed lateness).

use crate::range_fns;
use crate::value::Labels;

/// The functions a rollup answers exactly (up to float rounding).
pub const FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "count_over_time",
    "sum_over_time",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "last_over_time",
    "present_over_time",
];

/// One rollup window of one series, or a single raw sample (count 1) where no rollup
/// covers it yet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chunk {
    /// Samples aggregated.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Their minimum.
    pub min: f64,
    /// Their maximum.
    pub max: f64,
    /// The first sample (ms, value).
    pub first: (i64, f64),
    /// The last sample (ms, value).
    pub last: (i64, f64),
    /// Counter increase between the chunk's own consecutive samples (resets add the value
    /// after them); no extrapolation.
    pub increase: f64,
}

impl Chunk {
    /// A chunk of one raw sample.
    pub fn sample(t: i64, v: f64) -> Chunk {
        Chunk {
            count: 1,
            sum: v,
            min: v,
            max: v,
            first: (t, v),
            last: (t, v),
            increase: 0.0,
        }
    }
}

/// A series' chunks in time order (rollup windows, then raw samples after the last one).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkSeries {
    /// Its labels, `__name__` included.
    pub labels: Labels,
    /// Chunks, ascending and not overlapping.
    pub chunks: Vec<Chunk>,
}

/// The coarsest of `offered` resolutions (ms) that answers function `name` over windows
/// `bounds` (start, end; both inclusive) exactly: the range and every end a multiple of it.
/// `None`: read raw samples.
pub fn resolution_for(name: &str, offered: &[i64], bounds: &[(i64, i64)]) -> Option<i64> {
    if !FUNCTIONS.contains(&name) || bounds.is_empty() {
        return None;
    }
    offered
        .iter()
        .copied()
        .filter(|&r| r > 0)
        .filter(|&r| {
            bounds.iter().all(|&(start, end)| {
                let range = end - start;
                range >= r && range % r == 0 && end.rem_euclid(r) == 0
            })
        })
        .max()
}

/// The chunks making up window `[start, end]` of `chunks`: those inside it, and the first
/// sample of a chunk starting exactly at `end`.
fn window(chunks: &[Chunk], start: i64, end: i64) -> Vec<Chunk> {
    let from = chunks.partition_point(|c| c.first.0 < start);
    let to = chunks.partition_point(|c| c.first.0 <= end);
    chunks[from..to]
        .iter()
        .filter_map(|c| {
            if c.last.0 <= end {
                Some(*c)
            } else {
                // Aligned windows: only a chunk starting exactly at `end` reaches past it.
                (c.first.0 == end).then(|| Chunk::sample(c.first.0, c.first.1))
            }
        })
        .collect()
}

/// Function `name` (one of [`FUNCTIONS`]) over the window `[start, end]` of a series'
/// chunks.
pub fn apply(name: &str, chunks: &[Chunk], start: i64, end: i64) -> Option<f64> {
    let w = window(chunks, start, end);
    let (first, last) = (w.first()?, w.last()?);
    let count: u64 = w.iter().map(|c| c.count).sum();
    match name {
        "rate" | "increase" => {
            let mut increase = 0.0;
            let mut prev: Option<f64> = None;
            for c in &w {
                if let Some(p) = prev {
                    increase += if c.first.1 >= p {
                        c.first.1 - p
                    } else {
                        c.first.1
                    };
                }
                increase += c.increase;
                prev = Some(c.last.1);
            }
            range_fns::extrapolate(
                increase,
                first.first,
                last.last,
                count as usize,
                (start, end),
                true,
                name == "rate",
            )
        }
        "delta" => range_fns::extrapolate(
            last.last.1 - first.first.1,
            first.first,
            last.last,
            count as usize,
            (start, end),
            false,
            false,
        ),
        "count_over_time" => Some(count as f64),
        "sum_over_time" => Some(range_fns::kahan_sum(w.iter().map(|c| c.sum))),
        "avg_over_time" => Some(range_fns::kahan_sum(w.iter().map(|c| c.sum)) / count as f64),
        "min_over_time" => Some(w.iter().map(|c| c.min).fold(f64::INFINITY, f64::min)),
        "max_over_time" => Some(w.iter().map(|c| c.max).fold(f64::NEG_INFINITY, f64::max)),
        "last_over_time" => Some(last.last.1),
        "present_over_time" => Some(1.0),
        _ => None,
    }
}

/// Rolls samples up into windows of `resolution_ms` as the rollup processor does (for
/// tests of the query side against raw samples).
pub fn roll_up(samples: &[(i64, f64)], resolution_ms: i64) -> Vec<Chunk> {
    let mut out: Vec<(i64, Chunk)> = Vec::new();
    for &(t, v) in samples {
        let start = t.div_euclid(resolution_ms) * resolution_ms;
        match out.last_mut() {
            Some((s, c)) if *s == start => {
                c.count += 1;
                c.sum += v;
                c.min = c.min.min(v);
                c.max = c.max.max(v);
                c.increase += if v >= c.last.1 { v - c.last.1 } else { v };
                c.last = (t, v);
            }
            _ => out.push((start, Chunk::sample(t, v))),
        }
    }
    out.into_iter().map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range_fns::{Window, apply as raw_apply};

    const MIN: i64 = 60_000;

    /// A counter with resets, a gap and samples on minute boundaries.
    fn samples() -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        let mut v = 3.0;
        for i in 0..400i64 {
            if (150..190).contains(&i) {
                continue;
            }
            v = if i % 97 == 0 { 1.0 } else { v + (i % 7) as f64 };
            out.push((10 * MIN + i * 15_000 + if i % 3 == 0 { 0 } else { 7 }, v));
        }
        out
    }

    #[test]
    fn aligned_windows_from_rollups_equal_raw_samples() {
        let raw = samples();
        for res in [MIN, 5 * MIN] {
            let chunks = roll_up(&raw, res);
            for range in [res, 2 * res, 10 * MIN, 60 * MIN] {
                if range % res != 0 {
                    continue;
                }
                for end in (10 * MIN..=115 * MIN).step_by(res as usize) {
                    let start = end - range;
                    let from = raw.partition_point(|&(t, _)| t < start);
                    let to = raw.partition_point(|&(t, _)| t <= end);
                    let w = Window {
                        samples: &raw[from..to],
                        start,
                        end,
                        eval_time: end,
                        resets: None,
                    };
                    for f in FUNCTIONS {
                        let want = raw_apply(f, &w, &[]);
                        let got = apply(f, &chunks, start, end);
                        match (want, got) {
                            (None, None) => {}
                            (Some(a), Some(b)) => assert!(
                                (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                                "{f} res {res} range {range} end {end}: raw {a}, rollups {b}"
                            ),
                            _ => panic!("{f} res {res} end {end}: raw {want:?}, rollups {got:?}"),
                        }
                    }
                }
            }
        }
    }

    /// Raw samples in memory that also offers their rollups, counting what it was asked.
    struct Rolled {
        raw: crate::MemorySource,
        resolutions: Vec<i64>,
        rollup_reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl crate::SeriesSource for Rolled {
        fn select<'a>(
            &'a mut self,
            vs: &'a promql_parser::parser::VectorSelector,
            from_ms: i64,
            to_ms: i64,
        ) -> crate::SelectFuture<'a> {
            self.raw.select(vs, from_ms, to_ms)
        }

        fn rollup_resolutions(&self) -> Vec<i64> {
            self.resolutions.clone()
        }

        fn select_rollups<'a>(
            &'a mut self,
            vs: &'a promql_parser::parser::VectorSelector,
            resolution_ms: i64,
            from_ms: i64,
            to_ms: i64,
        ) -> crate::ChunkFuture<'a> {
            self.rollup_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                // Whole windows from `from_ms`, and the window starting at `to_ms`.
                let raw = self
                    .raw
                    .select(vs, from_ms, to_ms + resolution_ms - 1)
                    .await?;
                Ok(raw
                    .into_iter()
                    .map(|s| ChunkSeries {
                        labels: s.labels,
                        chunks: roll_up(&s.samples, resolution_ms),
                    })
                    .collect())
            })
        }
    }

    #[test]
    fn the_evaluator_reads_rollups_only_for_whole_windows() {
        let mut labels = Labels::new();
        labels.insert("__name__".into(), "c_total".into());
        let raw = crate::MemorySource::new(vec![crate::RawSeries {
            labels,
            samples: samples(),
        }]);
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let eval = |q: &str, at: i64, resolutions: Vec<i64>| {
            let src = Rolled {
                raw: raw.clone(),
                resolutions,
                rollup_reads: reads.clone(),
            };
            let expr = crate::parse(q).unwrap();
            match crate::evaluate_now(Box::new(src), &expr, at, 300_000, 60_000).unwrap() {
                crate::Value::Vector(v) => v.first().and_then(|s| s.points[0]),
                v => panic!("{v:?}"),
            }
        };
        for q in [
            "sum(rate(c_total[30m]))",
            "increase(c_total[1h] offset 5m)",
            "max_over_time(c_total[10m])",
        ] {
            let before = reads.load(std::sync::atomic::Ordering::SeqCst);
            let want = eval(q, 100 * MIN, Vec::new()).unwrap();
            let got = eval(q, 100 * MIN, vec![MIN, 5 * MIN]).unwrap();
            assert!(
                (want - got).abs() < 1e-9 * want.abs(),
                "{q}: {want} vs {got}"
            );
            assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), before + 1);
        }
        // Not whole windows, or a function rollups cannot answer: raw samples.
        let before = reads.load(std::sync::atomic::Ordering::SeqCst);
        eval("rate(c_total[30m])", 100 * MIN + 1, vec![MIN]);
        eval("irate(c_total[30m])", 100 * MIN, vec![MIN]);
        eval("rate(c_total[90s])", 100 * MIN, vec![MIN]);
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), before);
    }

    #[test]
    fn a_sample_at_the_window_end_counts_as_in_prometheus() {
        let raw = [(0, 1.0), (30_000, 2.0), (MIN, 5.0), (90_000, 6.0)];
        let chunks = roll_up(&raw, MIN);
        assert_eq!(chunks.len(), 2);
        assert_eq!(apply("count_over_time", &chunks, 0, MIN), Some(3.0));
        assert_eq!(apply("max_over_time", &chunks, 0, MIN), Some(5.0));
        assert_eq!(apply("count_over_time", &chunks, MIN, 2 * MIN), Some(2.0));
    }

    #[test]
    fn only_whole_windows_use_rollups() {
        let offered = [MIN, 60 * MIN];
        let aligned = [(0, 60 * MIN), (60 * MIN, 120 * MIN)];
        assert_eq!(resolution_for("rate", &offered, &aligned), Some(60 * MIN));
        let minutes = [(MIN, 61 * MIN), (2 * MIN, 62 * MIN)];
        assert_eq!(resolution_for("rate", &offered, &minutes), Some(MIN));
        assert_eq!(resolution_for("rate", &offered, &[(0, 90_000)]), None);
        assert_eq!(resolution_for("rate", &offered, &[(1, MIN + 1)]), None);
        assert_eq!(resolution_for("irate", &offered, &aligned), None);
        assert_eq!(resolution_for("rate", &[], &aligned), None);
    }
}
