//! Trace assembly in one partition: spans held per trace until the trace has been idle for
//! the decision wait (or is too old, or the partition holds too much), then handed out
//! whole, due order first; and the cache of recent decisions that spans arriving after
//! their trace was decided follow.
//!
//! Times are the partition's event time when a span arrived, not the span's own
//! timestamps: a trace is idle when its partition moved on without it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use obs_schemas::records::Span;
use serde::{Deserialize, Serialize};

/// A trace within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TraceKey {
    /// Tenant.
    pub tenant: String,
    /// Trace id, hex.
    pub trace_id: String,
}

impl TraceKey {
    /// The key of a span's trace.
    pub fn of(span: &Span) -> TraceKey {
        TraceKey {
            tenant: span.tenant.clone(),
            trace_id: span.trace_id.clone(),
        }
    }
}

/// A trace still collecting spans.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenTrace {
    /// Its spans in arrival order.
    pub spans: Vec<Span>,
    /// Offset of the input message its first span came in (a restart reads from here).
    pub first_offset: i64,
    /// Partition time when its first span arrived (ms).
    pub first_ms: i64,
    /// Partition time when its latest span arrived (ms).
    pub last_ms: i64,
    /// Approximate bytes its spans hold.
    pub bytes: usize,
}

/// Where an open trace starts, as a checkpoint keeps it (its spans are read again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRef {
    /// The trace.
    pub key: TraceKey,
    /// See [`OpenTrace::first_offset`].
    pub first_offset: i64,
    /// See [`OpenTrace::first_ms`].
    pub first_ms: i64,
    /// See [`OpenTrace::last_ms`].
    pub last_ms: i64,
}

/// Why a trace was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No span for the decision wait.
    Idle,
    /// Open for the maximum trace age.
    MaxAge,
    /// The partition held the maximum number of open traces.
    MaxTraces,
    /// The partition held the maximum bytes of open spans.
    MaxBytes,
}

impl Why {
    /// The `reason` label of `obs_traces_decided_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Idle => "idle",
            Why::MaxAge => "max_trace_age",
            Why::MaxTraces => "max_open_traces",
            Why::MaxBytes => "max_open_bytes",
        }
    }
}

/// When traces are decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Idle time before a decision (ms).
    pub decision_wait_ms: i64,
    /// Age at which a trace is decided however busy (ms).
    pub max_age_ms: i64,
    /// Open traces held at most.
    pub max_traces: usize,
    /// Bytes of open spans held at most.
    pub max_bytes: usize,
}

/// The open traces of one partition.
#[derive(Debug)]
pub struct Assembler {
    limits: Limits,
    open: HashMap<TraceKey, OpenTrace>,
    due: BTreeSet<(i64, TraceKey)>,
    /// First offsets of the open traces, counted (the smallest is where a restart reads).
    first_offsets: BTreeMap<i64, usize>,
    bytes: usize,
}

impl Assembler {
    /// No open traces.
    pub fn new(limits: Limits) -> Assembler {
        Assembler {
            limits,
            open: HashMap::new(),
            due: BTreeSet::new(),
            first_offsets: BTreeMap::new(),
            bytes: 0,
        }
    }

    fn due_of(&self, t: &OpenTrace) -> i64 {
        (t.last_ms + self.limits.decision_wait_ms).min(t.first_ms + self.limits.max_age_ms)
    }

    /// Adds a span that arrived in message `offset` at partition time `now_ms`.
    pub fn add(&mut self, span: Span, offset: i64, now_ms: i64) {
        let key = TraceKey::of(&span);
        self.add_with(key, span, offset, now_ms, now_ms);
    }

    /// Adds a span read again after a restart to the open trace `r` it belonged to.
    pub fn add_restored(&mut self, span: Span, offset: i64, r: &OpenRef) {
        self.add_with(r.key.clone(), span, offset, r.first_ms, r.last_ms);
        if let Some(t) = self.open.get_mut(&r.key)
            && t.first_offset > r.first_offset
        {
            // Spans of the trace before this message were in messages not read again.
            let old = t.first_offset;
            t.first_offset = r.first_offset;
            self.move_offset(old, r.first_offset);
        }
    }

    fn move_offset(&mut self, from: i64, to: i64) {
        self.forget_offset(from);
        *self.first_offsets.entry(to).or_default() += 1;
    }

    fn forget_offset(&mut self, offset: i64) {
        if let Some(n) = self.first_offsets.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                self.first_offsets.remove(&offset);
            }
        }
    }

    fn add_with(&mut self, key: TraceKey, span: Span, offset: i64, first_ms: i64, now_ms: i64) {
        let bytes = span_bytes(&span);
        self.bytes += bytes;
        match self.open.get_mut(&key) {
            Some(t) => {
                let old_due = (t.last_ms + self.limits.decision_wait_ms)
                    .min(t.first_ms + self.limits.max_age_ms);
                t.spans.push(span);
                t.bytes += bytes;
                t.last_ms = t.last_ms.max(now_ms);
                let new_due = (t.last_ms + self.limits.decision_wait_ms)
                    .min(t.first_ms + self.limits.max_age_ms);
                if new_due != old_due {
                    self.due.remove(&(old_due, key.clone()));
                    self.due.insert((new_due, key));
                }
            }
            None => {
                let t = OpenTrace {
                    spans: vec![span],
                    first_offset: offset,
                    first_ms,
                    last_ms: now_ms,
                    bytes,
                };
                self.due.insert((self.due_of(&t), key.clone()));
                *self.first_offsets.entry(offset).or_default() += 1;
                self.open.insert(key, t);
            }
        }
    }

    /// Removes and returns the trace due first if it is due at `now_ms` or the partition
    /// holds more than its limits allow.
    pub fn next_decided(&mut self, now_ms: i64) -> Option<(TraceKey, OpenTrace, Why)> {
        let (due, _) = self.due.first()?;
        let why = if *due <= now_ms {
            None
        } else if self.open.len() > self.limits.max_traces {
            Some(Why::MaxTraces)
        } else if self.bytes > self.limits.max_bytes {
            Some(Why::MaxBytes)
        } else {
            return None;
        };
        let (due, key) = self.due.pop_first()?;
        let t = self.open.remove(&key).expect("due traces are open");
        self.bytes -= t.bytes;
        self.forget_offset(t.first_offset);
        let why = why.unwrap_or(if due == t.last_ms + self.limits.decision_wait_ms {
            Why::Idle
        } else {
            Why::MaxAge
        });
        Some((key, t, why))
    }

    /// When the trace due first is due (ms), if any is open.
    pub fn next_due(&self) -> Option<i64> {
        self.due.first().map(|(d, _)| *d)
    }

    /// Whether the partition holds more than its limits allow.
    pub fn over_limits(&self) -> bool {
        self.open.len() > self.limits.max_traces || self.bytes > self.limits.max_bytes
    }

    /// Offset of the first message an open trace needs (where a restart reads from).
    pub fn oldest_offset(&self) -> Option<i64> {
        self.first_offsets.keys().next().copied()
    }

    /// Open traces and bytes held.
    pub fn load(&self) -> (usize, usize) {
        (self.open.len(), self.bytes)
    }

    /// The open traces as a checkpoint keeps them.
    pub fn refs(&self) -> Vec<OpenRef> {
        let mut out: Vec<OpenRef> = self
            .open
            .iter()
            .map(|(k, t)| OpenRef {
                key: k.clone(),
                first_offset: t.first_offset,
                first_ms: t.first_ms,
                last_ms: t.last_ms,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// Roughly the memory a span holds (its strings and attributes), for the bytes limit.
pub fn span_bytes(s: &Span) -> usize {
    let attrs = |a: &obs_schemas::records::Attrs| {
        a.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>()
    };
    256 + s.name.len()
        + s.service.len()
        + s.status_message.len()
        + s.trace_state.len()
        + attrs(&s.attrs)
        + attrs(&s.resource_attrs)
        + s.events
            .iter()
            .map(|e| 64 + e.name.len() + attrs(&e.attrs))
            .sum::<usize>()
        + s.links.iter().map(|l| 96 + attrs(&l.attrs)).sum::<usize>()
}

/// The recent decisions of one partition: kept or not, by trace, oldest forgotten first.
#[derive(Debug, Clone, Default)]
pub struct DecisionCache {
    order: VecDeque<TraceKey>,
    kept: HashMap<TraceKey, bool>,
    capacity: usize,
}

impl DecisionCache {
    /// Remembers at most `capacity` decisions.
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            capacity,
            ..DecisionCache::default()
        }
    }

    /// Remembers a decision.
    pub fn insert(&mut self, key: TraceKey, kept: bool) {
        if self.capacity == 0 {
            return;
        }
        if self.kept.insert(key.clone(), kept).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.kept.remove(&old);
            }
        }
    }

    /// The decision taken for a trace, if still remembered.
    pub fn get(&self, key: &TraceKey) -> Option<bool> {
        self.kept.get(key).copied()
    }

    /// The decisions, oldest first, as a checkpoint keeps them.
    pub fn entries(&self) -> Vec<(TraceKey, bool)> {
        self.order
            .iter()
            .map(|k| (k.clone(), self.kept[k]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, id: &str) -> Span {
        Span {
            trace_id: trace.into(),
            span_id: id.into(),
            tenant: "t".into(),
            ..Span::default()
        }
    }

    fn limits() -> Limits {
        Limits {
            decision_wait_ms: 10,
            max_age_ms: 100,
            max_traces: 3,
            max_bytes: usize::MAX,
        }
    }

    #[test]
    fn a_trace_is_decided_once_idle_for_the_wait() {
        let mut a = Assembler::new(limits());
        a.add(span("a", "1"), 5, 0);
        a.add(span("b", "1"), 6, 3);
        a.add(span("a", "2"), 7, 8);
        assert_eq!(a.oldest_offset(), Some(5));
        assert!(a.next_decided(12).is_none(), "a waits until 18, b until 13");
        let (k, t, why) = a.next_decided(13).unwrap();
        assert_eq!(
            (k.trace_id.as_str(), t.spans.len(), why),
            ("b", 1, Why::Idle)
        );
        assert!(a.next_decided(17).is_none());
        let (k, t, _) = a.next_decided(18).unwrap();
        assert_eq!((k.trace_id.as_str(), t.spans.len()), ("a", 2));
        assert_eq!(a.oldest_offset(), None);
        assert_eq!(a.load(), (0, 0));
    }

    #[test]
    fn busy_traces_end_at_the_maximum_age_and_limits_decide_early() {
        let mut a = Assembler::new(limits());
        for t in (0..=100).step_by(5) {
            a.add(span("busy", &t.to_string()), t, t);
        }
        let (_, t, why) = a.next_decided(100).unwrap();
        assert_eq!((t.spans.len(), why), (21, Why::MaxAge));
        for (i, id) in ["w", "x", "y", "z"].iter().enumerate() {
            a.add(span(id, "1"), 200 + i as i64, 200 + i as i64);
        }
        let (k, _, why) = a.next_decided(203).unwrap();
        assert_eq!((k.trace_id.as_str(), why), ("w", Why::MaxTraces));
        assert!(a.next_decided(203).is_none());
        assert_eq!(a.oldest_offset(), Some(201));
    }

    #[test]
    fn the_cache_forgets_the_oldest_decision() {
        let mut c = DecisionCache::new(2);
        let k = |id: &str| TraceKey {
            tenant: "t".into(),
            trace_id: id.into(),
        };
        c.insert(k("a"), true);
        c.insert(k("b"), false);
        c.insert(k("c"), true);
        assert_eq!(
            (c.get(&k("a")), c.get(&k("b")), c.get(&k("c"))),
            (None, Some(false), Some(true))
        );
        assert_eq!(c.entries().len(), 2);
    }
}
