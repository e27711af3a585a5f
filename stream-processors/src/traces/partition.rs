//! The trace processor's state machine for one `obs.spans` partition: spans in, in offset
//! order; span metrics, decided traces (summaries, service-graph edges, kept spans) and,
//! at each event-time interval, cumulative metric samples and edge windows out.
//!
//! Everything it emits is a deterministic function of the partition's input and of the
//! times it was told to move to while idle (which are checkpointed before they take
//! effect), so a restart from a checkpoint emits exactly what the run before it emitted:
//! the sinks' replacing tables and the query API's one-sample-per-timestamp make a
//! re-emission invisible, and kept spans already published are remembered and skipped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use obs_schemas::records::{MetricBatch, ServiceGraphEdge, Span, TraceSummary};

use super::assembly::{Assembler, DecisionCache, Limits, OpenRef, TraceKey};
use super::checkpoint::{Checkpoint, VERSION};
use super::registry::Registry;
use super::sampling::{self, Policies};
use super::servicegraph::{EdgeTotals, ServiceGraph};
use super::spanmetrics::SpanMetrics;
use super::summary;

/// What every partition is configured with.
pub struct Settings {
    /// When traces are decided.
    pub limits: Limits,
    /// Event-time interval of metric samples and edge windows (ms).
    pub metrics_interval_ms: i64,
    /// Series not updated for this long (event time, ms) are no longer written.
    pub stale_ms: i64,
    /// Decisions remembered.
    pub decision_cache_size: usize,
    /// Span metrics.
    pub spanmetrics: SpanMetrics,
    /// Service graph.
    pub servicegraph: ServiceGraph,
    /// Tail-sampling policies.
    pub policies: Policies,
    /// Whether kept traces' spans go to `obs.spans.sampled` (`[traces] publish_sampled`).
    pub publish_sampled: bool,
}

/// Most event-time intervals written at once when time jumps (the latest are written).
const MAX_FLUSHES: i64 = 240;

/// What handling input produced, to publish before the next checkpoint.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Span-metric and service-graph samples.
    pub metrics: Vec<MetricBatch>,
    /// Decided traces.
    pub summaries: Vec<TraceSummary>,
    /// Edge windows.
    pub edges: Vec<ServiceGraphEdge>,
    /// Spans of kept traces, by the partition they go to on `obs.spans.sampled`.
    pub sampled: HashMap<i32, Vec<Span>>,
    /// Traces decided, by whether kept and why, for the processor's counters.
    pub decided: Vec<(bool, &'static str)>,
    /// Spans that arrived after their trace was decided and followed the decision.
    pub late_spans: u64,
}

impl Outputs {
    /// Whether there is nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
            && self.summaries.is_empty()
            && self.edges.is_empty()
            && self.sampled.values().all(Vec::is_empty)
    }
}

/// Open traces being read again after a restart.
struct Replay {
    open: HashMap<TraceKey, OpenRef>,
}

/// One partition's trace state.
pub struct Partition {
    id: i32,
    s: Arc<Settings>,
    time_ms: Option<i64>,
    /// The partition's time when its last input message arrived.
    input_time_ms: Option<i64>,
    next_flush_ms: Option<i64>,
    window_start_ms: Option<i64>,
    next_offset: i64,
    assembler: Assembler,
    cache: DecisionCache,
    registry: Registry,
    edges: Vec<EdgeTotals>,
    sampling: sampling::State,
    sampled_end: i64,
    skip_sampled: HashSet<(String, String)>,
    replay: Option<Replay>,
}

impl Partition {
    /// A partition without a checkpoint, reading from `start_offset`.
    pub fn new(id: i32, s: Arc<Settings>, start_offset: i64, sampled_end: i64) -> Partition {
        Partition {
            id,
            assembler: Assembler::new(s.limits),
            cache: DecisionCache::new(s.decision_cache_size),
            s,
            time_ms: None,
            input_time_ms: None,
            next_flush_ms: None,
            window_start_ms: None,
            next_offset: start_offset,
            registry: Registry::default(),
            edges: Vec::new(),
            sampling: sampling::State::default(),
            sampled_end,
            skip_sampled: HashSet::new(),
            replay: None,
        }
    }

    /// The partition as `cp` left it; `published` are the kept spans found on
    /// `obs.spans.sampled` after the checkpoint (published before a crash, not to be
    /// published again), `sampled_end` where that topic's partition ends now.
    pub fn restore(
        cp: Checkpoint,
        s: Arc<Settings>,
        published: Vec<(String, String)>,
        sampled_end: i64,
    ) -> Partition {
        let mut cache = DecisionCache::new(s.decision_cache_size);
        for (k, kept) in cp.decisions {
            cache.insert(k, kept);
        }
        let mut skip_sampled: HashSet<(String, String)> = cp.skip_sampled.into_iter().collect();
        skip_sampled.extend(published);
        let open: HashMap<TraceKey, OpenRef> =
            cp.open.into_iter().map(|r| (r.key.clone(), r)).collect();
        Partition {
            id: cp.partition,
            assembler: Assembler::new(s.limits),
            cache,
            s,
            time_ms: cp.time_ms,
            input_time_ms: cp.input_time_ms.or(cp.time_ms),
            next_flush_ms: cp.next_flush_ms,
            window_start_ms: cp.window_start_ms,
            next_offset: cp.next_offset,
            registry: Registry::restore(cp.registry),
            edges: cp.edges,
            sampling: cp.sampling,
            sampled_end,
            skip_sampled,
            replay: (!open.is_empty()).then_some(Replay { open }),
        }
    }

    /// Whether open traces of the checkpoint are still being read again (nothing is decided
    /// meanwhile).
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// Ends the reading again once the consumer's `position` is at the checkpoint's next
    /// offset (for when the last messages before it are gone, e.g. control records).
    pub fn caught_up(&mut self, position: i64) {
        if position >= self.next_offset {
            self.replay = None;
        }
    }

    /// The partition number.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Where reading the input starts: the first message of the oldest open trace of the
    /// checkpoint, else the first message not yet handled.
    pub fn read_from(&self) -> i64 {
        self.replay
            .as_ref()
            .and_then(|r| r.open.values().map(|o| o.first_offset).min())
            .unwrap_or(self.next_offset)
            .min(self.next_offset)
    }

    /// The offset a restart would need to read from now (what the consumer group commits).
    pub fn commit_offset(&self) -> i64 {
        self.assembler
            .oldest_offset()
            .unwrap_or(self.next_offset)
            .min(self.next_offset)
    }

    /// Handles the spans of input message `offset`, in offset order.
    pub fn handle(&mut self, offset: i64, spans: Vec<Span>, out: &mut Outputs) {
        if offset < self.next_offset {
            // Read again after a restart: only the open traces' spans matter, the rest is
            // counted and decided already.
            if let Some(r) = &self.replay {
                for span in spans {
                    let key = TraceKey::of(&span);
                    if let Some(o) = r.open.get(&key)
                        && offset >= o.first_offset
                        && self.cache.get(&key).is_none()
                    {
                        let o = o.clone();
                        self.assembler.add_restored(span, offset, &o);
                    }
                }
                if offset + 1 >= self.next_offset {
                    // Every open trace is whole again: deciding may go on.
                    self.replay = None;
                }
            }
            return;
        }
        self.replay = None;
        self.next_offset = offset + 1;
        let newest_ms = spans
            .iter()
            .map(|s| s.end_ns.div_euclid(1_000_000))
            .filter(|&t| t > 0)
            .max();
        if let Some(t) = newest_ms {
            self.move_to(t);
        }
        self.input_time_ms = self.time_ms;
        let Some(now) = self.time_ms else {
            return;
        };
        for span in spans {
            self.s.spanmetrics.observe(&mut self.registry, &span, now);
            let key = TraceKey::of(&span);
            match self.cache.get(&key) {
                Some(kept) => {
                    out.late_spans += 1;
                    self.s
                        .servicegraph
                        .observe_late(&mut self.registry, &span, now);
                    if kept {
                        self.emit_sampled(span, out);
                    }
                }
                None => self.assembler.add(span, offset, now),
            }
        }
        self.decide(out);
    }

    fn move_to(&mut self, t: i64) {
        let now = self.time_ms.map_or(t, |c| c.max(t));
        self.time_ms = Some(now);
        if self.next_flush_ms.is_none() {
            let interval = self.s.metrics_interval_ms;
            let boundary = now.div_euclid(interval) * interval;
            self.next_flush_ms = Some(boundary + interval);
            self.window_start_ms = Some(boundary);
        }
    }

    /// For a partition without input for `quiet_ms` (wall clock): its time goes on at the
    /// wall clock's pace from its last input (not to the wall clock itself, so backfilled
    /// or delayed spans still get their decision wait), if that decides a trace or ends an
    /// interval. True when it moved; the caller then checkpoints (so a restart moves the
    /// same way) before calling [`Partition::decide`].
    pub fn idle_advance(&mut self, quiet_ms: i64) -> bool {
        if self.replay.is_some() {
            // Open traces are still being read again: deciding now would split them, and a
            // checkpoint would still list the decided ones as open.
            return false;
        }
        let (Some(now), Some(input)) = (self.time_ms, self.input_time_ms) else {
            return false;
        };
        let to = input.saturating_add(quiet_ms);
        if to <= now {
            return false;
        }
        let due = self.assembler.next_due().is_some_and(|d| d <= to)
            || self.next_flush_ms.is_some_and(|f| f <= to);
        if due {
            self.move_to(to);
        }
        due
    }

    /// Decides every trace due and writes every interval ended at the partition's time
    /// (nothing while open traces are still being read again after a restart).
    pub fn decide(&mut self, out: &mut Outputs) {
        let Some(now) = self.time_ms.filter(|_| self.replay.is_none()) else {
            return;
        };
        loop {
            let flush = self.next_flush_ms.filter(|&f| f <= now);
            let over = self.assembler.over_limits();
            let trace = self.assembler.next_due().filter(|&d| d <= now || over);
            match (trace, flush) {
                (Some(d), Some(f)) if d <= f => self.decide_one(now, out),
                (Some(_), None) => self.decide_one(now, out),
                (_, Some(f)) => self.flush(f, now, out),
                (None, None) => break,
            }
        }
    }

    fn decide_one(&mut self, now: i64, out: &mut Outputs) {
        let Some((key, trace, why)) = self.assembler.next_decided(now) else {
            return;
        };
        let kept = self
            .s
            .policies
            .decide(&mut self.sampling, &trace.spans, now);
        self.s
            .servicegraph
            .observe_trace(&mut self.registry, &mut self.edges, &trace.spans, now);
        out.summaries.push(summary::summarize(
            &key.tenant,
            &key.trace_id,
            &trace.spans,
            kept,
            now,
        ));
        out.decided.push((kept, why.as_str()));
        self.cache.insert(key, kept);
        if kept {
            for span in trace.spans {
                self.emit_sampled(span, out);
            }
        }
    }

    fn emit_sampled(&mut self, span: Span, out: &mut Outputs) {
        if !self.s.publish_sampled {
            return;
        }
        if !self.skip_sampled.is_empty()
            && self
                .skip_sampled
                .remove(&(span.trace_id.clone(), span.span_id.clone()))
        {
            return;
        }
        out.sampled.entry(self.id).or_default().push(span);
    }

    fn flush(&mut self, mut f: i64, now: i64, out: &mut Outputs) {
        let interval = self.s.metrics_interval_ms;
        let behind = (now - f) / interval;
        if behind >= MAX_FLUSHES {
            // Time jumped (a backfill, a long pause): only the latest intervals are written.
            f += (behind - MAX_FLUSHES + 1) * interval;
        }
        self.registry.drop_stale(f - self.s.stale_ms);
        let start = self
            .window_start_ms
            .unwrap_or(f - interval)
            .max(f - interval);
        let s = self.s.clone();
        let bounds = |name: &str| s.bounds_of(name);
        out.metrics
            .extend(self.registry.samples(start, f, self.id, &bounds));
        out.edges.extend(
            std::mem::take(&mut self.edges)
                .into_iter()
                .map(|e| e.record(self.id, start, f)),
        );
        self.window_start_ms = Some(f);
        self.next_flush_ms = Some(f + interval);
    }

    /// Records that kept spans of this partition were published up to `end` (exclusive) on
    /// `obs.spans.sampled`.
    pub fn published_sampled(&mut self, end: i64) {
        self.sampled_end = self.sampled_end.max(end);
    }

    /// Open traces and bytes held.
    pub fn load(&self) -> (usize, usize) {
        self.assembler.load()
    }

    /// The partition's event time (ms).
    pub fn time_ms(&self) -> Option<i64> {
        self.time_ms
    }

    /// The checkpoint of the state now (every output produced so far must be acknowledged
    /// before it is written).
    pub fn checkpoint(&self) -> Checkpoint {
        let open = match &self.replay {
            // Still reading the open traces again: the checkpoint's own list stands.
            Some(r) => {
                let mut v: Vec<OpenRef> = r.open.values().cloned().collect();
                v.sort_by(|a, b| a.key.cmp(&b.key));
                v
            }
            None => self.assembler.refs(),
        };
        let mut skip: Vec<(String, String)> = self.skip_sampled.iter().cloned().collect();
        skip.sort();
        Checkpoint {
            version: VERSION,
            partition: self.id,
            next_offset: self.next_offset,
            time_ms: self.time_ms,
            input_time_ms: self.input_time_ms,
            next_flush_ms: self.next_flush_ms,
            window_start_ms: self.window_start_ms,
            open,
            decisions: self.cache.entries(),
            registry: self.registry.snapshot(),
            edges: self.edges.clone(),
            sampling: self.sampling.clone(),
            sampled_end: self.sampled_end,
            skip_sampled: skip,
        }
    }
}

impl Settings {
    /// Upper bounds of a histogram family this processor writes.
    pub fn bounds_of(&self, family: &str) -> Vec<f64> {
        if family.starts_with("traces_spanmetrics") {
            self.spanmetrics.buckets.clone()
        } else {
            self.servicegraph.buckets.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::assembly::Limits;

    fn settings() -> Arc<Settings> {
        Arc::new(Settings {
            limits: Limits {
                decision_wait_ms: 2_000,
                max_age_ms: 30_000,
                max_traces: 50,
                max_bytes: usize::MAX,
            },
            metrics_interval_ms: 5_000,
            stale_ms: 60_000,
            decision_cache_size: 100,
            spanmetrics: SpanMetrics::new(&[], vec![0.01, 0.1, 1.0]),
            servicegraph: ServiceGraph {
                buckets: vec![0.1, 1.0],
                peer_attributes: vec!["peer.service".into()],
            },
            publish_sampled: true,
            policies: Policies::parse(
                "policies: [{name: e, type: status_code, status_code: {status_codes: [ERROR]}}]",
            )
            .unwrap(),
        })
    }

    /// Message `i` carries spans of traces `i` and `i - 3` (so traces span messages), a
    /// late span now and then, times 500 ms apart.
    fn messages(n: usize) -> Vec<Vec<Span>> {
        (0..n)
            .map(|i| {
                let t = 1_000_000 + i as i64 * 500;
                let mut spans = Vec::new();
                for (trace, id, kind, parent) in [
                    (i, "a", "Server", ""),
                    (i.wrapping_sub(3), "b", "Client", "a"),
                ] {
                    if trace > n {
                        continue;
                    }
                    spans.push(Span {
                        trace_id: format!("{trace:032x}"),
                        span_id: format!("{trace}{id}"),
                        parent_span_id: if parent.is_empty() {
                            String::new()
                        } else {
                            format!("{trace}{parent}")
                        },
                        service: format!("svc{}", trace % 3),
                        name: "op".into(),
                        kind: kind.into(),
                        start_ns: (t - 40) * 1_000_000,
                        end_ns: t * 1_000_000,
                        status_code: if trace % 4 == 0 {
                            "Error".into()
                        } else {
                            "Unset".into()
                        },
                        tenant: "t".into(),
                        ..Span::default()
                    });
                }
                spans
            })
            .collect()
    }

    fn sampled_ids(out: &Outputs) -> Vec<String> {
        out.sampled
            .values()
            .flatten()
            .map(|s| s.span_id.clone())
            .collect()
    }

    #[test]
    fn a_restart_from_any_checkpoint_emits_exactly_what_an_uninterrupted_run_does() {
        let input = messages(60);
        let mut whole = Partition::new(0, settings(), 0, 0);
        let mut expected = Outputs::default();
        for (o, spans) in input.iter().enumerate() {
            whole.handle(o as i64, spans.clone(), &mut expected);
        }
        let expected_sampled = sampled_ids(&expected);
        assert!(!expected_sampled.is_empty() && !expected.metrics.is_empty());
        for checkpoint_at in [5usize, 17, 30] {
            for crash_at in [checkpoint_at, checkpoint_at + 4, checkpoint_at + 11] {
                let mut first = Partition::new(0, settings(), 0, 0);
                let mut before = Outputs::default();
                let mut cp = None;
                let mut after_cp = Outputs::default();
                for (o, spans) in input.iter().enumerate().take(crash_at) {
                    let out = if o < checkpoint_at {
                        &mut before
                    } else {
                        &mut after_cp
                    };
                    first.handle(o as i64, spans.clone(), out);
                    if o + 1 == checkpoint_at {
                        // Through the stored form, compressed and plain (as older
                        // versions wrote it).
                        let c = first.checkpoint();
                        let bytes = c.to_bytes();
                        let plain = serde_json::to_vec(&c).unwrap();
                        assert!(bytes.len() < plain.len(), "compressed");
                        let back = Checkpoint::from_bytes(&bytes).unwrap();
                        assert!(
                            serde_json::to_vec(&back).unwrap() == plain,
                            "the stored checkpoint reads back the same"
                        );
                        cp = Some(Checkpoint::from_bytes(&plain).unwrap());
                    }
                }
                // Published after the checkpoint, before the crash:
                let published: Vec<(String, String)> = after_cp
                    .sampled
                    .values()
                    .flatten()
                    .map(|s| (s.trace_id.clone(), s.span_id.clone()))
                    .collect();
                let mut second = Partition::restore(cp.unwrap(), settings(), published, 0);
                let mut rest = Outputs::default();
                second.decide(&mut rest);
                let from = second.read_from() as usize;
                for (o, spans) in input.iter().enumerate().skip(from) {
                    second.handle(o as i64, spans.clone(), &mut rest);
                }
                let mut got = sampled_ids(&before);
                got.extend(sampled_ids(&after_cp));
                got.extend(sampled_ids(&rest));
                got.sort();
                let mut want = expected_sampled.clone();
                want.sort();
                assert_eq!(
                    got, want,
                    "kept spans, checkpoint {checkpoint_at}, crash {crash_at}"
                );
                // Every summary and sample of the restarted run is one the whole run wrote.
                for s in &rest.summaries {
                    assert!(expected.summaries.contains(s), "summary {s:?}");
                }
                let all: Vec<_> = expected.metrics.iter().flat_map(|b| &b.series).collect();
                for s in rest.metrics.iter().flat_map(|b| &b.series) {
                    assert!(
                        all.contains(&s),
                        "sample {} {:?} {:?}",
                        s.name,
                        s.labels,
                        s.values
                    );
                }
                assert_eq!(
                    second.checkpoint().registry_json(),
                    whole.checkpoint().registry_json()
                );
            }
        }
    }

    /// Requests as the replacing edge table keeps them: the last emission of a window wins.
    fn stored_requests(runs: &[&Outputs]) -> i64 {
        let mut table = std::collections::BTreeMap::new();
        for out in runs {
            for e in &out.edges {
                let key = (
                    e.partition,
                    e.window_start_ms,
                    e.client.clone(),
                    e.server.clone(),
                );
                table.insert(key, e.request_count);
            }
        }
        table.values().sum()
    }

    #[test]
    fn time_moving_while_a_restart_reads_input_again_decides_no_trace_twice() {
        let input = messages(40);
        let mut whole = Partition::new(0, settings(), 0, 0);
        let mut expected = Outputs::default();
        for (o, spans) in input.iter().enumerate() {
            whole.handle(o as i64, spans.clone(), &mut expected);
        }
        assert!(whole.idle_advance(60_000));
        whole.decide(&mut expected);
        let want = stored_requests(&[&expected]);
        assert!(want > 30, "every trace makes a request from `user`: {want}");

        let mut first = Partition::new(0, settings(), 0, 0);
        let mut before = Outputs::default();
        for (o, spans) in input.iter().enumerate().take(20) {
            first.handle(o as i64, spans.clone(), &mut before);
        }
        let cp = first.checkpoint();
        assert!(!cp.open.is_empty());
        let mut second = Partition::restore(cp, settings(), Vec::new(), 0);
        let mut during = Outputs::default();
        let from = second.read_from() as usize;
        assert!(from < 19);
        second.handle(from as i64, input[from].clone(), &mut during);
        assert!(
            !second.idle_advance(60_000),
            "no move while open traces are only partly read again"
        );
        for (o, spans) in input.iter().enumerate().take(20).skip(from + 1) {
            second.handle(o as i64, spans.clone(), &mut during);
        }
        assert!(during.is_empty() && !second.replaying());
        // Read again whole: a pause decides them, and a checkpoint no longer lists them.
        assert!(second.idle_advance(2_500));
        second.decide(&mut during);
        assert!(!during.summaries.is_empty());
        let mut third = Partition::restore(second.checkpoint(), settings(), Vec::new(), 0);
        let mut rest = Outputs::default();
        for (o, spans) in input.iter().enumerate().skip(third.read_from() as usize) {
            third.handle(o as i64, spans.clone(), &mut rest);
        }
        assert!(third.idle_advance(60_000));
        third.decide(&mut rest);
        assert_eq!(
            stored_requests(&[&before, &during, &rest]),
            want,
            "each trace's request stored once"
        );
        let mut ids: Vec<&String> = [&before, &during, &rest]
            .iter()
            .flat_map(|o| o.summaries.iter().map(|s| &s.trace_id))
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "each trace decided once");
    }
}
