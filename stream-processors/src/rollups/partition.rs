//! The rollup processor's state machine for one `obs.metrics` partition: samples in, in
//! offset order; per series and event-time window, Thanos's downsampling aggregates (count,
//! sum, min, max, first, last) and the counter increase out, at every resolution.
//!
//! * Time: the newest sample time seen in the partition. A window of the finest resolution
//!   is written once time passes its end by the allowed lateness; a sample for a window
//!   already written is late (counted, not used). A coarser window is the fold of the finest
//!   windows inside it and is written with the last of them.
//! * Increase: over each pair of consecutive samples inside a window (in time order), the
//!   difference, or the later value when it is lower (a counter reset). No extrapolation,
//!   and the pair across a window boundary is left to the reader, who has both ends (the
//!   earlier window's `last`, the later one's `first`): so a query over whole windows
//!   gets exactly the increase of the samples inside its range, as Prometheus computes
//!   it, and an hour's increase is its minutes' plus the pairs between them.
//! * Samples: stale markers, NaN and infinities are left out (a NaN would make every
//!   aggregate of its window NaN).
//! * Restarts: everything written is a deterministic function of the input and of the idle
//!   moves (checkpointed before they take effect), so a restart from a checkpoint writes
//!   the same windows again and the replacing table keeps one of each.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use obs_schemas::records::{Attrs, MetricBatchView, MetricRollup};
use serde::{Deserialize, Serialize};

/// Format version of [`Checkpoint`]; another version is not used.
pub const VERSION: u32 = 2;

/// What every partition is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Window lengths (ms), ascending; each a multiple of the first.
    pub resolutions_ms: Vec<i64>,
    /// How far a sample may be behind the partition's time and still count (ms).
    pub lateness_ms: i64,
}

impl Settings {
    /// Checks the resolutions: at least one, positive, ascending, multiples of the first.
    pub fn new(resolutions_ms: Vec<i64>, lateness_ms: i64) -> anyhow::Result<Settings> {
        let Some(&base) = resolutions_ms.first() else {
            anyhow::bail!("[rollups] resolutions_ms is empty: give at least one window length");
        };
        anyhow::ensure!(base > 0, "[rollups] resolutions_ms must be positive");
        for w in resolutions_ms.windows(2) {
            anyhow::ensure!(
                w[1] > w[0] && w[1] % base == 0,
                "[rollups] resolutions_ms must ascend and be multiples of the first ({base} ms): {} after {}",
                w[1],
                w[0]
            );
        }
        anyhow::ensure!(
            lateness_ms >= 0,
            "[rollups] allowed_lateness_ms is negative"
        );
        Ok(Settings {
            resolutions_ms,
            lateness_ms,
        })
    }

    fn base(&self) -> i64 {
        self.resolutions_ms[0]
    }
}

/// A window's aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Agg {
    start: i64,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    first: f64,
    first_ms: i64,
    last: f64,
    last_ms: i64,
    increase: f64,
}

impl Agg {
    fn fold(&mut self, o: &Agg) {
        self.increase += counter_step(self.last, o.first) + o.increase;
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.last = o.last;
        self.last_ms = o.last_ms;
    }
}

/// A counter's increase from `prev` to `next`: the difference, or `next` after a reset.
fn counter_step(prev: f64, next: f64) -> f64 {
    if next >= prev { next - prev } else { next }
}

/// One series' state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Series {
    tenant: String,
    name: String,
    labels: Attrs,
    /// The latest sample of the windows written (when it is old enough, the series is
    /// forgotten).
    prev: Option<(i64, f64)>,
    /// Samples of the finest windows not written yet, by window start, in time order.
    open: BTreeMap<i64, Vec<(i64, f64)>>,
    /// The coarser resolutions' windows being folded (index 0 is the second resolution).
    coarse: Vec<Option<Agg>>,
}

/// The state of one `obs.metrics` partition after every message below `next_offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`VERSION`].
    pub version: u32,
    /// The `obs.metrics` partition.
    pub partition: i32,
    /// Every input message below this offset is reflected.
    pub next_offset: i64,
    /// The partition's time (ms).
    pub time_ms: Option<i64>,
    /// The newest sample time seen (ms); absent in checkpoints of earlier builds, where
    /// the time stands in.
    #[serde(default)]
    pub newest_ms: Option<i64>,
    /// Finest windows ending at or before this are written (ms).
    pub written_until_ms: Option<i64>,
    /// Series by fingerprint.
    series: Vec<(i64, Series)>,
}

/// One partition's rollup state.
pub struct Partition {
    id: i32,
    s: Arc<Settings>,
    time_ms: Option<i64>,
    newest_ms: Option<i64>,
    written_until_ms: Option<i64>,
    next_offset: i64,
    series: HashMap<i64, Series>,
    /// Windows not written yet by (end, resolution index): the series holding one.
    due: BTreeMap<(i64, usize), BTreeSet<i64>>,
    /// Samples too late for their window, since start.
    late: u64,
    /// Samples not finite (stale markers, NaN, infinities), since start.
    skipped: u64,
}

impl Partition {
    /// A partition without a checkpoint, reading from `start_offset`.
    pub fn new(id: i32, s: Arc<Settings>, start_offset: i64) -> Partition {
        Partition {
            id,
            s,
            time_ms: None,
            newest_ms: None,
            written_until_ms: None,
            next_offset: start_offset,
            series: HashMap::new(),
            due: BTreeMap::new(),
            late: 0,
            skipped: 0,
        }
    }

    /// The partition as `cp` left it.
    pub fn restore(cp: Checkpoint, s: Arc<Settings>) -> Partition {
        let mut p = Partition::new(cp.partition, s, cp.next_offset);
        p.time_ms = cp.time_ms;
        p.newest_ms = cp.newest_ms.or(cp.time_ms);
        p.written_until_ms = cp.written_until_ms;
        for (fp, series) in cp.series {
            p.index(fp, &series);
            p.series.insert(fp, series);
        }
        p
    }

    fn index(&mut self, fp: i64, series: &Series) {
        let base = self.s.base();
        for &start in series.open.keys() {
            self.due.entry((start + base, 0)).or_default().insert(fp);
        }
        for (i, agg) in series.coarse.iter().enumerate() {
            if let Some(a) = agg {
                let end = a.start + self.s.resolutions_ms[i + 1];
                self.due.entry((end, i + 1)).or_default().insert(fp);
            }
        }
    }

    /// The checkpoint of the state now (every output produced so far must be acknowledged
    /// before it is written).
    pub fn checkpoint(&self) -> Checkpoint {
        let mut series: Vec<(i64, Series)> =
            self.series.iter().map(|(&fp, s)| (fp, s.clone())).collect();
        series.sort_by_key(|(fp, _)| *fp);
        Checkpoint {
            version: VERSION,
            partition: self.id,
            next_offset: self.next_offset,
            time_ms: self.time_ms,
            newest_ms: self.newest_ms,
            written_until_ms: self.written_until_ms,
            series,
        }
    }

    /// The partition number.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The next input offset to read.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Series held and samples that came too late for their window, since start.
    pub fn load(&self) -> (usize, u64) {
        (self.series.len(), self.late)
    }

    /// Samples left out because they are not finite, since start.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Handles input message `offset` (in offset order), appending written windows to `out`.
    pub fn handle(
        &mut self,
        offset: i64,
        batch: &MetricBatchView<'_>,
        out: &mut Vec<MetricRollup>,
    ) {
        if offset < self.next_offset {
            return;
        }
        self.next_offset = offset + 1;
        // A move checkpointed before a crash takes effect before this input, as it did.
        self.write_due(out);
        let base = self.s.base();
        let mut newest = None;
        for m in &batch.series {
            for (&t, &v) in m.timestamps_ms.iter().zip(&m.values) {
                if !v.is_finite() {
                    // Stale markers end a series; NaN (a summary quantile without
                    // observations) and infinities are not rolled up either.
                    self.skipped += 1;
                    continue;
                }
                newest = newest.max(Some(t));
                let start = t.div_euclid(base) * base;
                if self.written_until_ms.is_some_and(|w| start + base <= w) {
                    self.late += 1;
                    continue;
                }
                let coarse = self.s.resolutions_ms.len() - 1;
                let series = self.series.entry(m.fingerprint).or_insert_with(|| Series {
                    tenant: m.tenant.to_string(),
                    name: m.name.to_string(),
                    labels: m
                        .labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    prev: None,
                    open: BTreeMap::new(),
                    coarse: vec![None; coarse],
                });
                let window = series.open.entry(start).or_insert_with(|| {
                    self.due
                        .entry((start + base, 0))
                        .or_default()
                        .insert(m.fingerprint);
                    Vec::new()
                });
                // In time order; a second sample at the same time replaces the first.
                match window.binary_search_by_key(&t, |&(ts, _)| ts) {
                    Ok(i) => window[i].1 = v,
                    Err(i) => window.insert(i, (t, v)),
                }
            }
        }
        if let Some(t) = newest {
            self.time_ms = Some(self.time_ms.map_or(t, |c| c.max(t)));
            self.newest_ms = Some(self.newest_ms.map_or(t, |c| c.max(t)));
        }
        self.write_due(out);
    }

    /// For a partition without input for a while: moves its time on to `wall_ms`, but no
    /// further than its newest sample plus the lateness and one finest window (enough to
    /// write every finest window holding a sample it has), if that writes a window. True
    /// when it moved; the caller then checkpoints (so a restart moves the same way) before
    /// calling [`Partition::write_due`].
    ///
    /// Not to the wall clock itself: a backfill of old samples that pauses longer than the
    /// idle time would then find every later sample late. A coarser window still open
    /// (the current hour of a sender that stopped) stays open until samples pass it; the
    /// query API reads raw samples for it meanwhile.
    pub fn idle_advance(&mut self, wall_ms: i64) -> bool {
        let (Some(time), Some(newest)) = (self.time_ms, self.newest_ms) else {
            return false;
        };
        let target = wall_ms.min(newest + self.s.lateness_ms + self.s.base());
        if target <= time {
            return false;
        }
        let due = self
            .due
            .keys()
            .next()
            .is_some_and(|&(end, _)| end <= target - self.s.lateness_ms);
        if due {
            self.time_ms = Some(target);
        }
        due
    }

    /// Writes every window the partition's time has passed by the allowed lateness.
    pub fn write_due(&mut self, out: &mut Vec<MetricRollup>) {
        let Some(time) = self.time_ms else {
            return;
        };
        let watermark = time - self.s.lateness_ms;
        let base = self.s.base();
        let until = watermark.div_euclid(base) * base;
        self.written_until_ms = Some(self.written_until_ms.map_or(until, |w| w.max(until)));
        while let Some(entry) = self.due.first_entry() {
            let (end, res) = *entry.key();
            if end > watermark {
                break;
            }
            for fp in entry.remove() {
                if res == 0 {
                    self.write_finest(fp, end - base, out);
                } else {
                    self.write_coarse(fp, res, out);
                }
            }
        }
    }

    fn write_finest(&mut self, fp: i64, start: i64, out: &mut Vec<MetricRollup>) {
        let s = self.s.clone();
        let Some(series) = self.series.get_mut(&fp) else {
            return;
        };
        let Some(samples) = series.open.remove(&start) else {
            return;
        };
        let Some(&(first_ms, first)) = samples.first() else {
            return;
        };
        let mut agg = Agg {
            start,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first,
            first_ms,
            last: first,
            last_ms: first_ms,
            increase: 0.0,
        };
        for (i, &(t, v)) in samples.iter().enumerate() {
            agg.count += 1;
            agg.sum += v;
            agg.min = agg.min.min(v);
            agg.max = agg.max.max(v);
            if i > 0 {
                agg.increase += counter_step(agg.last, v);
            }
            series.prev = Some((t, v));
            agg.last = v;
            agg.last_ms = t;
        }
        out.push(record(fp, series, s.base(), &agg));
        for (i, slot) in series.coarse.iter_mut().enumerate() {
            let res = s.resolutions_ms[i + 1];
            let cstart = start.div_euclid(res) * res;
            match slot {
                Some(c) if c.start == cstart => c.fold(&agg),
                _ => {
                    *slot = Some(Agg {
                        start: cstart,
                        ..agg
                    });
                    self.due
                        .entry((cstart + res, i + 1))
                        .or_default()
                        .insert(fp);
                }
            }
        }
        self.forget_if_idle(fp);
    }

    fn write_coarse(&mut self, fp: i64, res: usize, out: &mut Vec<MetricRollup>) {
        let Some(series) = self.series.get_mut(&fp) else {
            return;
        };
        if let Some(agg) = series.coarse[res - 1].take() {
            out.push(record(fp, series, self.s.resolutions_ms[res], &agg));
        }
        self.forget_if_idle(fp);
    }

    /// A series with nothing open is forgotten once its last sample is older than the
    /// coarsest window: its next sample starts a new increase.
    fn forget_if_idle(&mut self, fp: i64) {
        let coarsest = *self
            .s
            .resolutions_ms
            .last()
            .expect("one resolution at least");
        let written = self.written_until_ms.unwrap_or(i64::MIN);
        if self.series.get(&fp).is_some_and(|s| {
            s.open.is_empty()
                && s.coarse.iter().all(Option::is_none)
                && s.prev
                    .is_none_or(|(t, _)| t < written.saturating_sub(coarsest))
        }) {
            self.series.remove(&fp);
        }
    }
}

fn record(fp: i64, s: &Series, resolution_ms: i64, a: &Agg) -> MetricRollup {
    MetricRollup {
        tenant: s.tenant.clone(),
        fingerprint: fp,
        name: s.name.clone(),
        labels: s.labels.clone(),
        resolution_ms,
        window_start_ms: a.start,
        count: a.count,
        sum: a.sum,
        min: a.min,
        max: a.max,
        first: a.first,
        first_timestamp_ms: a.first_ms,
        last: a.last,
        last_timestamp_ms: a.last_ms,
        increase: a.increase,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use obs_schemas::records::MetricBatch;
    use obs_schemas::records::MetricSeries;

    const MIN: i64 = 60_000;

    fn settings() -> Arc<Settings> {
        Arc::new(Settings::new(vec![MIN, 10 * MIN], 30_000).unwrap())
    }

    fn batch(fp: i64, samples: &[(i64, f64)]) -> MetricBatch {
        MetricBatch {
            series: vec![MetricSeries {
                fingerprint: fp,
                name: "c_total".into(),
                tenant: "t".into(),
                timestamps_ms: samples.iter().map(|s| s.0).collect(),
                values: samples.iter().map(|s| s.1).collect(),
                ..Default::default()
            }],
            metadata: Vec::new(),
        }
    }

    /// A counter every 15 s for 25 minutes from t0, reset to 0 at minute 7.
    fn counter(t0: i64) -> Vec<(i64, f64)> {
        (0..100)
            .map(|i| {
                let v = if i < 28 {
                    i as f64 * 2.0
                } else {
                    (i - 28) as f64
                };
                (t0 + i * 15_000, v)
            })
            .collect()
    }

    #[test]
    fn windows_hold_thanos_aggregates_and_the_counter_increase() {
        let t0 = 1_000 * MIN;
        let samples = counter(t0);
        let mut p = Partition::new(0, settings(), 0);
        let mut out = Vec::new();
        for (o, chunk) in samples.chunks(3).enumerate() {
            p.handle(o as i64, &batch(7, chunk).view(), &mut out);
        }
        // Time is the last sample (t0 + 24m45s); minute windows ending 30 s before are written.
        let minutes: Vec<&MetricRollup> = out.iter().filter(|r| r.resolution_ms == MIN).collect();
        assert_eq!(minutes.len(), 24);
        let m0 = minutes[0];
        assert_eq!(
            (m0.window_start_ms, m0.count, m0.sum, m0.min, m0.max),
            (t0, 4, 12.0, 0.0, 6.0)
        );
        assert_eq!((m0.first, m0.last, m0.increase), (0.0, 6.0, 6.0));
        // Minute 7 holds the reset: 54 → 0 → 1 → 2 → 3, after 52 → 54 in minute 6.
        let m7 = minutes[7];
        assert_eq!((m7.first, m7.last, m7.min, m7.max), (0.0, 3.0, 0.0, 3.0));
        assert_eq!(m7.increase, 3.0);
        assert_eq!(
            minutes[1].increase, 6.0,
            "the pair across minutes is in neither"
        );
        let tens: Vec<&MetricRollup> = out.iter().filter(|r| r.resolution_ms == 10 * MIN).collect();
        assert_eq!(tens.len(), 2);
        // 0 → 54 in steps of 2, a reset, 0 → 11: the minutes' increases and the pairs
        // between them.
        assert_eq!(tens[0].increase, 65.0);
        let sum: f64 = minutes[..10].iter().map(|m| m.increase).sum();
        assert_eq!(sum, 65.0 - 6.0 * 2.0 - 2.0);
        assert_eq!(
            (tens[0].count, tens[0].first, tens[0].last_timestamp_ms),
            (40, 0.0, t0 + 39 * 15_000)
        );
        assert_eq!(tens[1].count, 40);
        assert_eq!(p.load().1, 0);
        // Not finite: left out, and the state still checkpoints (JSON has no NaN).
        p.handle(
            99,
            &batch(7, &[(t0 + 24 * MIN + 50_000, f64::NAN)]).view(),
            &mut out,
        );
        assert_eq!(p.skipped(), 1);
        let cp: Checkpoint =
            crate::state::from_bytes(&crate::state::to_bytes(&p.checkpoint())).unwrap();
        assert_eq!(cp.series.len(), 1);
        // A sample for a written minute is late; one for the open minute still counts.
        p.handle(100, &batch(7, &[(t0 + 5 * MIN, 1.0)]).view(), &mut out);
        assert_eq!(p.load().1, 1);
        p.handle(
            101,
            &batch(7, &[(t0 + 24 * MIN + 20_000, 71.5)]).view(),
            &mut out,
        );
        assert_eq!(p.load().1, 1);
    }

    #[test]
    fn an_idle_move_writes_the_last_windows_and_a_restart_writes_the_same() {
        let t0 = 1_000 * MIN;
        let samples = counter(t0);
        let mut whole = Partition::new(0, settings(), 0);
        let mut want = Vec::new();
        for (o, chunk) in samples.chunks(7).enumerate() {
            whole.handle(o as i64, &batch(7, chunk).view(), &mut want);
        }
        assert!(whole.idle_advance(t0 + 40 * MIN));
        whole.write_due(&mut want);
        // Every minute with samples; the ten minutes from 20 stay open (they end after the
        // newest sample plus the lateness and a minute), as do they for a stopped sender.
        assert_eq!(want.iter().filter(|r| r.resolution_ms == MIN).count(), 25);
        assert_eq!(
            want.iter().filter(|r| r.resolution_ms == 10 * MIN).count(),
            2
        );
        assert!(!whole.idle_advance(t0 + 60 * MIN), "nothing more to write");
        let minutes: f64 = want
            .iter()
            .filter(|r| r.resolution_ms == MIN)
            .map(|r| r.increase)
            .sum();
        // Every pair but the 24 across minutes (six of 2, the reset, seventeen of 1).
        assert_eq!(minutes, 54.0 + 71.0 - 29.0);
        for crash_at in [1usize, 5, 9] {
            let mut first = Partition::new(0, settings(), 0);
            let mut got = Vec::new();
            for (o, chunk) in samples.chunks(7).enumerate().take(crash_at) {
                first.handle(o as i64, &batch(7, chunk).view(), &mut got);
            }
            let bytes = crate::state::to_bytes(&first.checkpoint());
            let mut second =
                Partition::restore(crate::state::from_bytes(&bytes).unwrap(), settings());
            for (o, chunk) in samples.chunks(7).enumerate().skip(crash_at) {
                second.handle(o as i64, &batch(7, chunk).view(), &mut got);
            }
            assert!(second.idle_advance(t0 + 40 * MIN));
            // The move checkpointed, then a crash: the restart writes what the move writes.
            let cp = second.checkpoint();
            let mut third = Partition::restore(cp, settings());
            third.write_due(&mut got);
            assert_eq!(got, want, "crash after message {crash_at}");
        }
    }

    #[test]
    fn a_backfill_paused_longer_than_the_idle_time_loses_no_sample() {
        let t0 = 1_000 * MIN;
        let samples = counter(t0);
        let sorted = |mut v: Vec<MetricRollup>| {
            v.sort_by_key(|r| (r.resolution_ms, r.window_start_ms));
            v
        };
        let mut whole = Partition::new(0, settings(), 0);
        let mut want = Vec::new();
        for (o, minute) in samples.chunks(4).enumerate() {
            whole.handle(o as i64, &batch(7, minute).view(), &mut want);
        }
        // The same minutes, with a pause after minute 10 while the wall clock is a day on.
        let mut paused = Partition::new(0, settings(), 0);
        let mut got = Vec::new();
        for (o, minute) in samples.chunks(4).enumerate() {
            paused.handle(o as i64, &batch(7, minute).view(), &mut got);
            if o == 10 {
                assert!(paused.idle_advance(t0 + 24 * 60 * MIN));
                paused.write_due(&mut got);
            }
        }
        assert_eq!(paused.load().1, 0, "no sample is late");
        assert_eq!(sorted(got), sorted(want));
    }

    #[test]
    fn resolutions_must_be_multiples_of_the_first() {
        assert!(Settings::new(vec![], 0).is_err());
        let e = Settings::new(vec![60_000, 90_000], 0).unwrap_err();
        assert!(e.to_string().contains("multiples of the first"), "{e}");
    }
}
