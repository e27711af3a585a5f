//! The results cache of PromQL range queries, as the query frontends of Thanos and Mimir
//! keep one: a dashboard asking the same query again every refresh has only its new steps
//! evaluated.
//!
//! A range query's steps are evaluated independently of one another (subquery steps are
//! aligned to the epoch, not to the query), so the answer over `[start, end]` is the answers
//! over any split of its steps put together. Per (tenant, query text, step, step phase) the
//! cache keeps one contiguous run of steps and each series' points there; a request takes the
//! steps it shares with that run and evaluates only the others, before and after it.
//!
//! What may change is never kept: steps newer than the freshness window (data may still
//! come), and queries that look at other times than their steps' (`@`, negative offsets) or
//! read rollups (whose windows are written late by design) are not cached at all. Data that
//! comes later than the window is recorded by the sinks in `obs_late_writes`
//! ([`obs_schemas::late_writes`]); a background task reads the rows written since its last
//! look every second and drops every cached step from each row's time on, so late data is
//! in cached answers at most about a second after its row. While that task cannot read the
//! table, the cache is not used.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use clickhouse::Row;
use obs_promql::value::Labels;
use obs_promql::{Grid, Value};
use obs_schemas::late_writes;
use promql_parser::parser::{AtModifier, Expr, Offset};
use serde::Deserialize;

/// A range answer: each series' `(ms, value)` points in time order, series by labels.
pub type Points = BTreeMap<Labels, Vec<(i64, f64)>>;

/// Late writes are read again this long (ms) after the newest one seen: a row's
/// `WrittenAt` is taken when its insert starts and it is visible only once the insert ends.
const LATE_WRITE_MARGIN_MS: i64 = 60_000;

/// The tables a PromQL answer is read from, whose late writes drop cached answers.
const READ_TABLES: &[&str] = &["metrics_samples", "metrics_series"];

/// How often late writes are read.
const LATE_WRITE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The cache is used only while late writes were read this recently.
const SYNCED_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How a request was answered, as the `X-Obs-Results-Cache` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step from the cache.
    Hit,
    /// Some steps from the cache, the others evaluated.
    Partial,
    /// Nothing cached for these steps: all evaluated.
    Miss,
    /// Not cacheable (or the cache is off or was asked to be skipped).
    Bypass,
}

impl Outcome {
    /// The header value.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Partial => "partial",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }
}

/// What answers are kept under: steps of one phase of one step width of one query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    tenant: String,
    query: String,
    step: i64,
    phase: i64,
}

impl Key {
    /// The key of `query` (its text as asked) over `grid` for `tenant`.
    pub fn new(tenant: &str, query: &str, grid: Grid) -> Key {
        Key {
            tenant: tenant.to_string(),
            query: query.to_string(),
            step: grid.step,
            phase: grid.start.rem_euclid(grid.step),
        }
    }
}

/// A contiguous run of cached steps `[from, to]` and the points there.
struct Entry {
    from: i64,
    to: i64,
    points: Points,
    bytes: usize,
    used: u64,
}

/// What a request takes from the cache and what it must evaluate.
pub struct Plan {
    /// The cached points of the request's steps.
    pub cached: Points,
    /// The steps to evaluate (before and after the cached run, or all).
    pub missing: Vec<Grid>,
    /// Hit, partial or miss.
    pub outcome: Outcome,
    generation: u64,
}

/// Late writes read so far.
#[derive(Default)]
struct LateSeen {
    /// The newest `WrittenAt` (ms) read.
    through_ms: i64,
    /// Rows applied within the margin: (tenant, table, from, written at).
    applied: HashSet<(String, String, i64, i64)>,
    /// When the last read succeeded.
    read_at: Option<std::time::Instant>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
    /// Bumped whenever late data drops cached steps: an answer evaluated from a plan
    /// made before is not stored.
    generation: u64,
    late: LateSeen,
}

/// Range-query answers kept in memory up to a byte budget, least recently used out first.
pub struct ResultsCache {
    max_bytes: usize,
    freshness_ms: i64,
    inner: Mutex<Inner>,
}

/// A row of `obs_late_writes` as the cache reads it.
#[derive(Debug, Row, Deserialize)]
struct LateRow {
    tenant: String,
    table: String,
    from_ms: i64,
    at_ms: i64,
}

impl ResultsCache {
    /// A cache of at most `max_bytes` that keeps no step newer than `freshness_ms`.
    pub fn new(max_bytes: usize, freshness_ms: i64) -> ResultsCache {
        ResultsCache {
            max_bytes,
            freshness_ms,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads late writes every [`LATE_WRITE_POLL`] until the process ends.
    pub fn spawn_late_write_reader(self: std::sync::Arc<Self>, client: clickhouse::Client) {
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                match self.read_late_writes(&client).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        if failures == 3 {
                            tracing::warn!(error = %e, "cannot read obs_late_writes; range queries are evaluated without the results cache until it can");
                        }
                    }
                }
                tokio::time::sleep(LATE_WRITE_POLL).await;
            }
        });
    }

    /// Reads the late writes since the last look and drops the cached steps they change.
    async fn read_late_writes(&self, client: &clickhouse::Client) -> clickhouse::error::Result<()> {
        let since = self.lock().late.through_ms - LATE_WRITE_MARGIN_MS;
        let rows = client
            .query(&format!(
                "SELECT Tenant AS tenant, TableName AS table, FromMs AS from_ms, \
                 toUnixTimestamp64Milli(WrittenAt) AS at_ms FROM {} \
                 WHERE TableName IN ('{}') AND WrittenAt > fromUnixTimestamp64Milli(toInt64(?))",
                late_writes::TABLE,
                READ_TABLES.join("', '")
            ))
            .bind(since.max(0))
            .fetch_all::<LateRow>()
            .await?;
        let mut inner = self.lock();
        for r in rows {
            inner.apply_late(r);
        }
        inner.late.read_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Whether late writes were read recently enough for cached answers to be used.
    pub fn synced(&self) -> bool {
        self.lock()
            .late
            .read_at
            .is_some_and(|t| t.elapsed() <= SYNCED_WITHIN)
    }

    /// The cached part of `grid` for `key`, and what is left to evaluate.
    pub fn plan(&self, key: &Key, grid: Grid) -> Plan {
        let mut inner = self.lock();
        inner.clock += 1;
        let (clock, generation) = (inner.clock, inner.generation);
        let whole = Plan {
            cached: Points::new(),
            missing: vec![grid],
            outcome: Outcome::Miss,
            generation,
        };
        let Some(e) = inner.entries.get_mut(key) else {
            return whole;
        };
        e.used = clock;
        let (lo, hi) = (grid.start.max(e.from), grid.end.min(e.to));
        if lo > hi {
            return whole;
        }
        let mut missing = Vec::new();
        if grid.start < e.from {
            missing.push(Grid {
                start: grid.start,
                end: e.from - grid.step,
                step: grid.step,
            });
        }
        if grid.end >= e.to + grid.step {
            missing.push(Grid {
                start: e.to + grid.step,
                end: grid.end,
                step: grid.step,
            });
        }
        Plan {
            cached: slice(&e.points, lo, hi),
            outcome: if missing.is_empty() {
                Outcome::Hit
            } else {
                Outcome::Partial
            },
            missing,
            generation,
        }
    }

    /// Keeps the steps of `answer` (the whole answer over `grid`, made from `plan`) that
    /// are older than the freshness window at `now_ms`, joined to the run already cached
    /// when the two meet.
    pub fn store(&self, key: &Key, plan: &Plan, grid: Grid, answer: &Points, now_ms: i64) {
        if self.max_bytes == 0 || grid.is_empty() {
            return;
        }
        let cutoff = now_ms - self.freshness_ms;
        if cutoff < grid.start {
            return;
        }
        let last = grid.time(grid.len() - 1);
        let keep_to = last.min(grid.start + (cutoff - grid.start) / grid.step * grid.step);
        let mut inner = self.lock();
        if inner.generation != plan.generation {
            return;
        }
        inner.clock += 1;
        let clock = inner.clock;
        let (from, to, points) = match inner.entries.remove(key) {
            Some(e) if grid.start <= e.to + grid.step && keep_to >= e.from - grid.step => {
                inner.bytes -= e.bytes;
                let mut points = outside(e.points, grid.start, keep_to);
                merge(&mut points, slice(answer, grid.start, keep_to));
                (e.from.min(grid.start), e.to.max(keep_to), points)
            }
            Some(e) => {
                inner.bytes -= e.bytes;
                (grid.start, keep_to, slice(answer, grid.start, keep_to))
            }
            None => (grid.start, keep_to, slice(answer, grid.start, keep_to)),
        };
        let bytes = size_of_points(&points);
        // One answer may not take more than a quarter of the budget.
        if bytes > self.max_bytes / 4 {
            return;
        }
        inner.bytes += bytes;
        inner.entries.insert(
            key.clone(),
            Entry {
                from,
                to,
                points,
                bytes,
                used: clock,
            },
        );
        while inner.bytes > self.max_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
        inner.report_bytes();
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Inner {
    /// Drops the tenant's cached steps from `r.from_ms` on, once per row.
    fn apply_late(&mut self, r: LateRow) {
        let seen = &mut self.late;
        seen.through_ms = seen.through_ms.max(r.at_ms);
        let horizon = seen.through_ms - 2 * LATE_WRITE_MARGIN_MS;
        seen.applied.retain(|(_, _, _, at)| *at >= horizon);
        if !seen
            .applied
            .insert((r.tenant.clone(), r.table, r.from_ms, r.at_ms))
        {
            return;
        }
        metrics::counter!("obs_query_results_cache_late_writes_total").increment(1);
        let tenant = r.tenant.as_str();
        self.generation += 1;
        let mut freed = 0;
        self.entries.retain(|k, e| {
            if k.tenant != tenant || e.to < r.from_ms {
                return true;
            }
            freed += e.bytes;
            if r.from_ms <= e.from {
                return false;
            }
            // The last step of the entry's phase before `from_ms`.
            e.to = e.from + (r.from_ms - 1 - e.from) / k.step * k.step;
            e.points = slice(&e.points, e.from, e.to);
            e.bytes = size_of_points(&e.points);
            freed -= e.bytes;
            true
        });
        self.bytes -= freed;
        self.report_bytes();
    }

    fn report_bytes(&self) {
        metrics::gauge!("obs_query_results_cache_bytes").set(self.bytes as f64);
    }
}

/// Whether a query's answer over some steps depends on those steps alone and on raw
/// samples: no `@` modifier, no negative offset, no rollups.
pub fn cacheable(expr: &Expr, reads_rollups: bool) -> bool {
    struct LooksElsewhere(bool);
    impl promql_parser::util::ExprVisitor for LooksElsewhere {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
            let (at, offset): (&Option<AtModifier>, &Option<Offset>) = match expr {
                Expr::VectorSelector(vs) => (&vs.at, &vs.offset),
                Expr::MatrixSelector(ms) => (&ms.vs.at, &ms.vs.offset),
                Expr::Subquery(sq) => (&sq.at, &sq.offset),
                _ => return Ok(true),
            };
            if at.is_some() || matches!(offset, Some(Offset::Neg(_))) {
                self.0 = true;
            }
            Ok(!self.0)
        }
    }
    let mut v = LooksElsewhere(false);
    let _ = promql_parser::util::walk_expr(&mut v, expr);
    !reads_rollups && !v.0
}

/// A range query's value as points (`None` for values a range query cannot have).
pub fn points_of(v: Value, grid: Grid) -> Option<Points> {
    let mut out = Points::new();
    match v {
        Value::Scalar(s) => {
            let points = s
                .into_iter()
                .enumerate()
                .map(|(i, x)| (grid.time(i), x))
                .collect::<Vec<_>>();
            if !points.is_empty() {
                out.insert(Labels::new(), points);
            }
        }
        Value::Vector(series) => {
            for s in series {
                let points: Vec<(i64, f64)> = s
                    .points
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.map(|x| (grid.time(i), x)))
                    .collect();
                if !points.is_empty() {
                    merge(&mut out, Points::from([(s.labels, points)]));
                }
            }
        }
        Value::Matrix(_) | Value::String(_) => return None,
    }
    Some(out)
}

/// Adds `more` to `into`; a series in both gets the points of both in time order.
pub fn merge(into: &mut Points, more: Points) {
    for (labels, points) in more {
        match into.get_mut(&labels) {
            Some(have) => {
                have.extend(points);
                have.sort_by_key(|p| p.0);
            }
            None => {
                into.insert(labels, points);
            }
        }
    }
}

/// The points in `[lo, hi]`, series without any left out.
fn slice(points: &Points, lo: i64, hi: i64) -> Points {
    points
        .iter()
        .filter_map(|(labels, ps)| {
            let kept: Vec<(i64, f64)> = ps
                .iter()
                .copied()
                .filter(|(t, _)| (lo..=hi).contains(t))
                .collect();
            (!kept.is_empty()).then(|| (labels.clone(), kept))
        })
        .collect()
}

/// The points outside `[lo, hi]`, series without any left out.
fn outside(points: Points, lo: i64, hi: i64) -> Points {
    points
        .into_iter()
        .filter_map(|(labels, mut ps)| {
            ps.retain(|(t, _)| !(lo..=hi).contains(t));
            (!ps.is_empty()).then_some((labels, ps))
        })
        .collect()
}

/// About what the points take in memory.
fn size_of_points(points: &Points) -> usize {
    points
        .iter()
        .map(|(labels, ps)| {
            96 + labels
                .iter()
                .map(|(k, v)| 64 + k.len() + v.len())
                .sum::<usize>()
                + ps.len() * 16
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn labels(job: &str) -> Labels {
        Labels::from([("job".to_string(), job.to_string())])
    }

    /// The answer of a query whose value at step `t` is `t / 1000` for job `a` and, from
    /// minute 5 on, `-t / 1000` for job `b`.
    fn answer(grid: Grid) -> Points {
        let mut out = Points::new();
        for t in grid.times() {
            out.entry(labels("a"))
                .or_default()
                .push((t, (t / 1000) as f64));
            if t >= 5 * MIN {
                out.entry(labels("b"))
                    .or_default()
                    .push((t, -(t / 1000) as f64));
            }
        }
        out
    }

    /// What a request answers through the cache: the cached steps and the missing ones
    /// evaluated by `answer`, then stored.
    fn ask(cache: &ResultsCache, key: &Key, grid: Grid, now: i64) -> (Points, Plan) {
        let plan = cache.plan(key, grid);
        let mut got = plan.cached.clone();
        for g in &plan.missing {
            merge(&mut got, answer(*g));
        }
        cache.store(key, &plan, grid, &got, now);
        (got, plan)
    }

    fn grid(from_min: i64, to_min: i64) -> Grid {
        Grid {
            start: from_min * MIN,
            end: to_min * MIN,
            step: MIN,
        }
    }

    #[test]
    fn a_repeated_and_a_moved_range_take_the_cached_steps_and_equal_a_whole_evaluation() {
        let cache = ResultsCache::new(1 << 20, 10 * MIN);
        let key = Key::new("t", "q", grid(0, 30));
        let now = 60 * MIN;
        let (got, plan) = ask(&cache, &key, grid(0, 30), now);
        assert_eq!(plan.outcome, Outcome::Miss);
        assert_eq!(got, answer(grid(0, 30)));
        let (got, plan) = ask(&cache, &key, grid(0, 30), now);
        assert_eq!(plan.outcome, Outcome::Hit);
        assert!(plan.missing.is_empty());
        assert_eq!(got, answer(grid(0, 30)));
        // Moved by ten minutes each way: the steps before and after are evaluated.
        let (got, plan) = ask(&cache, &key, grid(-10, 40), now);
        assert_eq!(plan.outcome, Outcome::Partial);
        assert_eq!(plan.missing, vec![grid(-10, -1), grid(31, 40)]);
        assert_eq!(got, answer(grid(-10, 40)));
        // The run now covers minutes -10 to 40.
        let (_, plan) = ask(&cache, &key, grid(-10, 40), now);
        assert_eq!(plan.outcome, Outcome::Hit);
    }

    #[test]
    fn steps_within_the_freshness_window_are_evaluated_every_time() {
        let cache = ResultsCache::new(1 << 20, 10 * MIN);
        let key = Key::new("t", "q", grid(0, 30));
        // At minute 35 only steps up to minute 25 are old enough to keep.
        ask(&cache, &key, grid(0, 30), 35 * MIN);
        let (got, plan) = ask(&cache, &key, grid(0, 30), 35 * MIN);
        assert_eq!(plan.outcome, Outcome::Partial);
        assert_eq!(plan.missing, vec![grid(26, 30)]);
        assert_eq!(got, answer(grid(0, 30)));
        // Nothing old enough: nothing kept.
        let fresh = Key::new("t", "fresh", grid(0, 30));
        ask(&cache, &fresh, grid(0, 30), 5 * MIN);
        assert_eq!(cache.plan(&fresh, grid(0, 30)).outcome, Outcome::Miss);
    }

    #[test]
    fn a_late_write_drops_the_cached_steps_from_its_time_on_once() {
        let cache = ResultsCache::new(1 << 20, 10 * MIN);
        let key = Key::new("t", "q", grid(0, 30));
        let other_tenant = Key::new("u", "q", grid(0, 30));
        ask(&cache, &key, grid(0, 30), 60 * MIN);
        ask(&cache, &other_tenant, grid(0, 30), 60 * MIN);
        let late = |tenant: &str, from_ms, at_ms| LateRow {
            tenant: tenant.into(),
            table: "metrics_samples".into(),
            from_ms,
            at_ms,
        };
        cache.lock().apply_late(late("t", 12 * MIN + 500, 61 * MIN));
        let plan = cache.plan(&key, grid(0, 30));
        assert_eq!(plan.missing, vec![grid(13, 30)]);
        assert_eq!(plan.cached, answer(grid(0, 12)));
        // A plan made before the late write does not store its answer.
        let stale = cache.plan(&key, grid(0, 30));
        cache.lock().apply_late(late("t", 20 * MIN, 62 * MIN));
        cache.store(&key, &stale, grid(0, 30), &answer(grid(0, 30)), 60 * MIN);
        assert_eq!(cache.plan(&key, grid(0, 30)).missing, vec![grid(13, 30)]);
        // Read again within the margin, the same row changes nothing.
        ask(&cache, &key, grid(0, 30), 60 * MIN);
        cache.lock().apply_late(late("t", 12 * MIN + 500, 61 * MIN));
        assert_eq!(cache.plan(&key, grid(0, 30)).outcome, Outcome::Hit);
        // Another tenant's answers stay; a row from before the run drops all of it.
        assert_eq!(cache.plan(&other_tenant, grid(0, 30)).outcome, Outcome::Hit);
        cache.lock().apply_late(late("u", i64::MIN, 63 * MIN));
        assert_eq!(
            cache.plan(&other_tenant, grid(0, 30)).outcome,
            Outcome::Miss
        );
        let held = cache.bytes();
        assert_eq!(held, size_of_points(&answer(grid(0, 30))));
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_answer() {
        let one = size_of_points(&answer(grid(0, 30)));
        let cache = ResultsCache::new(one * 4 + one / 2, 10 * MIN);
        let keys: Vec<Key> = (0..5)
            .map(|i| Key::new("t", &format!("q{i}"), grid(0, 30)))
            .collect();
        for k in &keys[..4] {
            ask(&cache, k, grid(0, 30), 60 * MIN);
        }
        // q0 used again: q1 is now the least recently used.
        ask(&cache, &keys[0], grid(0, 30), 60 * MIN);
        ask(&cache, &keys[4], grid(0, 30), 60 * MIN);
        assert!(cache.bytes() <= one * 4 + one / 2);
        assert_eq!(cache.plan(&keys[1], grid(0, 30)).outcome, Outcome::Miss);
        for k in [&keys[0], &keys[2], &keys[3], &keys[4]] {
            assert_eq!(cache.plan(k, grid(0, 30)).outcome, Outcome::Hit, "{k:?}");
        }
    }

    #[test]
    fn queries_looking_at_other_times_or_at_rollups_are_not_cached() {
        let parse = |q| promql_parser::parser::parse(q).unwrap();
        assert!(cacheable(&parse("rate(x[5m] offset 1h)"), false));
        assert!(cacheable(
            &parse("max_over_time(rate(x[1m])[10m:1m])"),
            false
        ));
        assert!(!cacheable(&parse("rate(x[5m])"), true));
        for q in [
            "x @ 1700000000",
            "rate(x[5m] @ end())",
            "x offset -5m",
            "sum_over_time(rate(x[1m])[10m:1m] @ start())",
            "max_over_time(x[10m:1m] offset -1m)",
        ] {
            assert!(!cacheable(&parse(q), false), "{q}");
        }
    }

    #[test]
    fn a_scalar_answer_is_one_series_without_labels_and_empty_series_are_left_out() {
        let g = grid(0, 2);
        let s = points_of(Value::Scalar(vec![1.0, 2.0, 3.0]), g).unwrap();
        assert_eq!(
            s,
            Points::from([(Labels::new(), vec![(0, 1.0), (MIN, 2.0), (2 * MIN, 3.0)])])
        );
        let v = points_of(
            Value::Vector(vec![
                obs_promql::value::Series {
                    labels: labels("a"),
                    points: vec![None, Some(4.0), None],
                },
                obs_promql::value::Series {
                    labels: labels("b"),
                    points: vec![None, None, None],
                },
            ]),
            g,
        )
        .unwrap();
        assert_eq!(v, Points::from([(labels("a"), vec![(MIN, 4.0)])]));
    }
}
