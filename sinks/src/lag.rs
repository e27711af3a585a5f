//! Progress of a sink, measured beside it: consumer lag per partition
//! (`obs_sink_consumer_lag{table, topic, group, partition}`: the partition's high watermark minus
//! the group's committed offset, i.e. the messages not yet durably stored) and stalls.
//!
//! A partition with messages waiting whose committed offset has not moved for
//! `[sink] stall_after_secs` is *stalled*: the sink's `/readyz` answers 503 naming the
//! table, topic, partitions and for how long, `obs_sink_stalled_partitions{table, topic}`
//! counts them, and the log says so at WARN. Progress cannot be measured (broker
//! unreachable) for that long counts too. Measured from a separate client every few
//! seconds, so the numbers keep moving while the sink itself is blocked (a ClickHouse
//! outage, a consumer that gets no messages).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use obs_runtime::config::KafkaConfig;
use obs_runtime::ops::Readiness;
use obs_schemas::Topic;
use rdkafka::consumer::{BaseConsumer, Consumer};

const EVERY: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(5);

/// What one sink's progress monitor watches.
pub struct Watch {
    /// The sink's consumer group.
    pub group: String,
    /// The topic it reads.
    pub topic: Topic,
    /// The table it writes.
    pub table: &'static str,
    /// The partitions assigned to it.
    pub partitions: Vec<i32>,
    /// How long waiting messages may see no commit before the partition counts as stalled.
    pub stall_after: Duration,
}

/// Starts watching until the process ends; problems go to `ready`.
pub fn spawn(cfg: &KafkaConfig, watch: Watch, ready: Readiness) {
    let client: BaseConsumer = match obs_runtime::kafka::client_config(cfg)
        .set("group.id", &watch.group)
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, table = watch.table, "cannot create the lag client; no lag metrics or stall detection");
            return;
        }
    };
    std::thread::Builder::new()
        .name(format!("lag-{}", watch.table))
        .spawn(move || {
            let mut stalls = Stalls::new(watch.stall_after);
            let part = format!("sink {} <- {}", watch.table, watch.topic);
            loop {
                let now = Instant::now();
                let verdict = match measure(&client, &watch) {
                    Ok(positions) => {
                        for p in &positions {
                            metrics::gauge!(
                                "obs_sink_consumer_lag",
                                "table" => watch.table,
                                "topic" => watch.topic.name(),
                                "group" => watch.group.clone(),
                                "partition" => p.partition.to_string()
                            )
                            .set(p.lag() as f64);
                        }
                        stalls.observe(&positions, now)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, table = watch.table, "lag measurement failed");
                        stalls.unmeasured(&e.to_string(), now)
                    }
                };
                metrics::gauge!(
                    "obs_sink_stalled_partitions",
                    "table" => watch.table,
                    "topic" => watch.topic.name()
                )
                .set(verdict.stalled.len() as f64);
                let problem = verdict.describe(watch.table, watch.topic);
                if let Some(p) = &problem
                    && stalls.should_warn(now)
                {
                    tracing::warn!("{p}");
                } else if problem.is_none() && stalls.recovered() {
                    tracing::info!(table = watch.table, topic = %watch.topic, "sink is making progress again");
                }
                ready.report(&part, problem);
                std::thread::sleep(EVERY);
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::warn!(error = %e, "cannot start the lag thread"));
}

/// One partition's committed offset and high watermark.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Position {
    partition: i32,
    committed: i64,
    high: i64,
}

impl Position {
    fn lag(&self) -> i64 {
        (self.high - self.committed).max(0)
    }
}

fn measure(client: &BaseConsumer, watch: &Watch) -> anyhow::Result<Vec<Position>> {
    let topic = watch.topic.name();
    let committed = obs_runtime::kafka::committed(client, topic, &watch.partitions, TIMEOUT)?;
    let mut out = Vec::with_capacity(watch.partitions.len());
    for &p in &watch.partitions {
        let (low, high) = client.fetch_watermarks(topic, p, TIMEOUT)?;
        let committed = committed.get(&p).copied().unwrap_or(low);
        out.push(Position {
            partition: p,
            committed,
            high,
        });
    }
    Ok(out)
}

/// Stall bookkeeping: since when each partition's committed offset has stood still with
/// messages waiting.
struct Stalls {
    after: Duration,
    /// partition → (committed offset, since when it has not moved while lag > 0).
    still: HashMap<i32, (i64, Instant)>,
    /// Since when measuring has failed, and why.
    unmeasured_since: Option<Instant>,
    last_warning: Option<Instant>,
    was_stalled: bool,
}

/// What one observation concluded.
#[derive(Debug, Default, PartialEq)]
struct Verdict {
    /// `(partition, lag, stalled for)` of each stalled partition.
    stalled: Vec<(i32, i64, Duration)>,
    /// Progress could not be measured for this long, with the error.
    unmeasured: Option<(Duration, String)>,
}

impl Verdict {
    fn describe(&self, table: &str, topic: Topic) -> Option<String> {
        if let Some((for_, error)) = &self.unmeasured {
            return Some(format!(
                "sink {table} <- {topic}: progress could not be measured for {}s ({error}); is the broker reachable?",
                for_.as_secs()
            ));
        }
        if self.stalled.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .stalled
            .iter()
            .map(|(p, lag, d)| format!("{p} ({lag} messages waiting, stuck {}s)", d.as_secs()))
            .collect();
        Some(format!(
            "sink {table} <- {topic} is stalled: partitions {} have messages waiting and no offset committed; see the sink's log",
            parts.join(", ")
        ))
    }
}

impl Stalls {
    fn new(after: Duration) -> Stalls {
        Stalls {
            after,
            still: HashMap::new(),
            unmeasured_since: None,
            last_warning: None,
            was_stalled: false,
        }
    }

    fn observe(&mut self, positions: &[Position], now: Instant) -> Verdict {
        self.unmeasured_since = None;
        let mut verdict = Verdict::default();
        for pos in positions {
            let entry = self
                .still
                .entry(pos.partition)
                .or_insert((pos.committed, now));
            if pos.lag() == 0 || entry.0 != pos.committed {
                *entry = (pos.committed, now);
                continue;
            }
            let still_for = now.duration_since(entry.1);
            if still_for >= self.after {
                verdict.stalled.push((pos.partition, pos.lag(), still_for));
            }
        }
        verdict
    }

    fn unmeasured(&mut self, error: &str, now: Instant) -> Verdict {
        let since = *self.unmeasured_since.get_or_insert(now);
        let for_ = now.duration_since(since);
        Verdict {
            stalled: Vec::new(),
            unmeasured: (for_ >= self.after).then(|| (for_, error.to_string())),
        }
    }

    /// Whether to log the current stall now (at onset, then once a minute).
    fn should_warn(&mut self, now: Instant) -> bool {
        self.was_stalled = true;
        let due = self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if due {
            self.last_warning = Some(now);
        }
        due
    }

    /// Whether a stall has just ended.
    fn recovered(&mut self) -> bool {
        let was = self.was_stalled;
        self.was_stalled = false;
        self.last_warning = None;
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(partition: i32, committed: i64, high: i64) -> Position {
        Position {
            partition,
            committed,
            high,
        }
    }

    #[test]
    fn waiting_messages_without_commits_become_a_stall() {
        let t0 = Instant::now();
        let mut s = Stalls::new(Duration::from_secs(10));
        assert_eq!(
            s.observe(&[pos(0, 5, 9), pos(1, 3, 3)], t0),
            Verdict::default()
        );
        // 9 s later: not yet.
        let v = s.observe(&[pos(0, 5, 9), pos(1, 3, 3)], t0 + Duration::from_secs(9));
        assert!(v.stalled.is_empty());
        // 12 s: partition 0 is stalled; partition 1 has nothing waiting.
        let v = s.observe(&[pos(0, 5, 12), pos(1, 3, 3)], t0 + Duration::from_secs(12));
        assert_eq!(v.stalled, vec![(0, 7, Duration::from_secs(12))]);
        let text = v.describe("otel_logs", Topic::Logs).unwrap();
        assert!(
            text.contains("sink otel_logs <- obs.logs is stalled: partitions 0 (7 messages waiting, stuck 12s)"),
            "{text}"
        );
        // A commit moves it: no stall, and the clock starts again.
        let v = s.observe(&[pos(0, 6, 12)], t0 + Duration::from_secs(13));
        assert!(v.stalled.is_empty());
        let v = s.observe(&[pos(0, 6, 12)], t0 + Duration::from_secs(22));
        assert!(v.stalled.is_empty());
        let v = s.observe(&[pos(0, 6, 12)], t0 + Duration::from_secs(23));
        assert_eq!(v.stalled.len(), 1);
    }

    #[test]
    fn a_long_measurement_failure_is_reported() {
        let t0 = Instant::now();
        let mut s = Stalls::new(Duration::from_secs(10));
        assert!(s.unmeasured("down", t0).unmeasured.is_none());
        let v = s.unmeasured("down", t0 + Duration::from_secs(11));
        let text = v.describe("otel_traces", Topic::Spans).unwrap();
        assert!(
            text.contains("could not be measured for 11s (down)"),
            "{text}"
        );
        // A successful measurement clears it.
        assert_eq!(
            s.observe(&[], t0 + Duration::from_secs(12)),
            Verdict::default()
        );
    }
}
