//! Event time of a processor that reads several partitions, and the offsets it may commit.
//!
//! * A partition's watermark is the newest event time seen in it minus the allowed
//!   lateness; the processor's time is the minimum over its partitions. A partition without
//!   messages for the idle time stops holding time back (one that has said nothing since
//!   the processor started holds it until then: its input may be on the way), and when every partition is idle
//!   time follows the wall clock (so `absent()` fires when every sender has stopped).
//!   Time never goes back.
//! * Commits: the processor says from which event time on it still needs the input (its
//!   windows' start); the offset committed for a partition is that of the first message
//!   consumed with a record at or after that time, or the next offset when none is needed.
//!   A restart from the commits therefore reads again everything the windows hold.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Part {
    newest_ms: Option<i64>,
    /// The last input message, or when tracking began: a partition that has said nothing
    /// yet may have input on the way, so it holds time back until it has been quiet for the
    /// idle time.
    last_heard: Instant,
    /// `(offset, newest event time of the message)` of messages still needed, in offset order.
    consumed: VecDeque<(i64, i64)>,
    next_offset: Option<i64>,
}

impl Part {
    fn new(now: Instant) -> Part {
        Part {
            newest_ms: None,
            last_heard: now,
            consumed: VecDeque::new(),
            next_offset: None,
        }
    }
}

/// Event time over a set of partitions.
#[derive(Debug)]
pub struct Watermarks {
    parts: BTreeMap<i32, Part>,
    lateness_ms: i64,
    idle: Duration,
    current: Option<i64>,
}

impl Watermarks {
    /// Tracks `partitions` from `now` with the given allowed lateness and idle time.
    pub fn new(partitions: &[i32], lateness_ms: i64, idle: Duration, now: Instant) -> Watermarks {
        Watermarks {
            parts: partitions.iter().map(|&p| (p, Part::new(now))).collect(),
            lateness_ms,
            idle,
            current: None,
        }
    }

    /// Records a consumed message: its offset and the newest event time it carries (`None`
    /// for a message without records in time, which is never needed again).
    pub fn observe(&mut self, partition: i32, offset: i64, newest_ms: Option<i64>, now: Instant) {
        let part = self
            .parts
            .entry(partition)
            .or_insert_with(|| Part::new(now));
        part.last_heard = now;
        part.next_offset = Some(offset + 1);
        if let Some(t) = newest_ms {
            part.newest_ms = Some(part.newest_ms.map_or(t, |n| n.max(t)));
        }
        part.consumed
            .push_back((offset, newest_ms.unwrap_or(i64::MIN)));
    }

    /// Records a consumed message the processor itself wrote (an output it reads back),
    /// needed from `needed_ms` on: it neither makes its partition active nor moves its
    /// event time, which only input does.
    pub fn observe_output(&mut self, partition: i32, offset: i64, needed_ms: i64, now: Instant) {
        let part = self
            .parts
            .entry(partition)
            .or_insert_with(|| Part::new(now));
        part.next_offset = Some(offset + 1);
        part.consumed.push_back((offset, needed_ms));
    }

    /// The processor's event time: records at or before it are complete (ms).
    pub fn watermark(&mut self, now: Instant, wall_ms: i64) -> Option<i64> {
        let mut newest = Vec::new();
        for p in self.parts.values() {
            if now.duration_since(p.last_heard) >= self.idle {
                continue;
            }
            match p.newest_ms {
                Some(n) => newest.push(n),
                // Active but nothing in time yet: time waits for it.
                None => return self.current,
            }
        }
        let computed = match newest.iter().min() {
            Some(&m) => m - self.lateness_ms,
            None => wall_ms - self.lateness_ms,
        };
        let next = self.current.map_or(computed, |c| c.max(computed));
        self.current = Some(next);
        self.current
    }

    /// Per partition, the offset to commit when input from `needed_from_ms` on is still
    /// needed; partitions nothing was consumed from are left out.
    pub fn commit_offsets(&mut self, needed_from_ms: i64) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&p, part) in self.parts.iter_mut() {
            while part
                .consumed
                .front()
                .is_some_and(|&(_, t)| t < needed_from_ms)
            {
                part.consumed.pop_front();
            }
            match (part.consumed.front(), part.next_offset) {
                (Some(&(offset, _)), _) => out.push((p, offset)),
                (None, Some(next)) => out.push((p, next)),
                (None, None) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_the_slowest_active_partition_minus_lateness() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(&[0, 1], 5_000, Duration::from_secs(10), t0);
        w.observe(0, 0, Some(100_000), t0);
        // Partition 1 has said nothing yet: it may have input on the way.
        assert_eq!(w.watermark(t0, 999_000), None);
        w.observe(1, 0, Some(60_000), t0);
        assert_eq!(w.watermark(t0, 999_000), Some(55_000));
        // Partition 1 idle: it no longer holds time back.
        let later = t0 + Duration::from_secs(11);
        w.observe(0, 1, Some(120_000), later);
        assert_eq!(w.watermark(later, 999_000), Some(115_000));
        // Everything idle: the wall clock.
        let much_later = later + Duration::from_secs(11);
        assert_eq!(w.watermark(much_later, 200_000), Some(195_000));
        // Never backwards.
        w.observe(1, 1, Some(50_000), much_later);
        assert_eq!(w.watermark(much_later, 200_000), Some(195_000));
    }

    #[test]
    fn outputs_read_back_do_not_hold_time() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(&[0, 1], 0, Duration::from_secs(10), t0);
        w.observe(0, 0, Some(100_000), t0);
        w.observe_output(1, 0, 40_000, t0);
        // Partition 1 has only outputs: it holds time until it has been quiet long enough.
        assert_eq!(w.watermark(t0, 999_000), None);
        let later = t0 + Duration::from_secs(10);
        w.observe(0, 1, Some(100_000), later);
        assert_eq!(w.watermark(later, 999_000), Some(100_000));
        assert_eq!(w.commit_offsets(30_000), vec![(0, 0), (1, 0)]);
        assert_eq!(w.commit_offsets(50_000), vec![(0, 0), (1, 1)]);
    }

    #[test]
    fn commits_keep_what_the_windows_still_need() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(&[0, 1, 2], 0, Duration::from_secs(10), t0);
        for (offset, t) in [(10, 1_000), (11, 2_000), (12, 1_500), (13, 3_000)] {
            w.observe(0, offset, Some(t), t0);
        }
        w.observe(1, 7, None, t0);
        assert_eq!(w.commit_offsets(1_500), vec![(0, 11), (1, 8)]);
        // Offset 12 is older than needed but after a needed one: kept until 11 goes.
        assert_eq!(w.commit_offsets(2_500), vec![(0, 13), (1, 8)]);
        assert_eq!(w.commit_offsets(5_000), vec![(0, 14), (1, 8)]);
    }
}
