//! Metric queries in Rust: log entries → samples per series (after the pipeline and
//! `unwrap`), then at each evaluation time `t` the range function over the left-open
//! window `(t - range, t]` and the vector aggregations above it, as Loki evaluates them.

use std::collections::BTreeMap;

use super::ast::{Grouping, MatchOp, Matcher, MetricExpr, RangeFn, VectorOp};
use super::pipeline::{ERROR_LABEL, Labels, Pipeline, Unwrapper};
use obs_promql::range_fns::{quantile, variance};

/// One value per series at one time.
pub type Vector = Vec<(Labels, f64)>;

/// Samples per series, in time order.
#[derive(Debug, Default)]
pub struct SeriesSet {
    series: BTreeMap<Labels, Vec<(i64, f64)>>,
}

/// Turns fetched entries into samples for the range aggregation at the bottom of a query.
pub struct Extractor {
    func: RangeFn,
    pipeline: Pipeline,
    unwrap: Option<Unwrapper>,
    grouping: Option<Grouping>,
}

impl Extractor {
    /// The extractor of a range aggregation (one of [`MetricExpr::ranges`]).
    pub fn new(range: &MetricExpr) -> Extractor {
        let MetricExpr::Range {
            func,
            log,
            unwrap,
            grouping,
            ..
        } = range
        else {
            unreachable!("ranges() gives range aggregations")
        };
        Extractor {
            func: *func,
            pipeline: Pipeline::new(&log.stages),
            unwrap: unwrap.as_ref().map(Unwrapper::new),
            grouping: grouping.clone(),
        }
    }

    /// Adds one entry's sample (if the pipeline keeps it) to `set`; `labels` are the
    /// `stream` labels and any structured metadata.
    pub fn add(
        &self,
        set: &mut SeriesSet,
        ts: i64,
        line: &str,
        stream: &Labels,
        mut labels: Labels,
    ) {
        let Some(line) = self.pipeline.run_on(line, stream, &mut labels) else {
            return;
        };
        let value = match (&self.unwrap, self.func) {
            (Some(u), _) => match u.sample(&mut labels) {
                Some(v) => v,
                None => return,
            },
            (None, RangeFn::BytesOverTime | RangeFn::BytesRate) => line.len() as f64,
            (None, _) => 1.0,
        };
        if let Some(u) = &self.unwrap {
            match &self.grouping {
                Some(Grouping {
                    without: false,
                    labels: by,
                }) => {
                    labels.retain(|k, _| by.contains(k) || k == ERROR_LABEL);
                }
                other => {
                    labels.remove(u.label());
                    if let Some(g) = other {
                        labels.retain(|k, _| !g.labels.contains(k));
                    }
                }
            }
        }
        set.series.entry(labels).or_default().push((ts, value));
    }
}

impl Extractor {
    /// Whether ClickHouse can count this aggregation's entries per series and time bucket
    /// (no stage runs in Rust, no unwrap: only entry counts or line bytes matter).
    pub fn countable(&self) -> bool {
        self.unwrap.is_none()
            && self.pipeline.is_empty()
            && matches!(
                self.func,
                RangeFn::CountOverTime
                    | RangeFn::Rate
                    | RangeFn::BytesOverTime
                    | RangeFn::BytesRate
                    | RangeFn::AbsentOverTime
            )
    }

    /// Adds a bucket counted in SQL (`entries` entries of `bytes` bytes, ending at `ts`).
    pub fn add_bucket(
        &self,
        set: &mut SeriesSet,
        ts: i64,
        labels: Labels,
        entries: u64,
        bytes: u64,
    ) {
        let value = match self.func {
            RangeFn::BytesOverTime | RangeFn::BytesRate => bytes as f64,
            _ => entries as f64,
        };
        set.series.entry(labels).or_default().push((ts, value));
    }
}

impl SeriesSet {
    /// Puts every series' samples in time order (rows may come in any order).
    pub fn sort(&mut self) {
        for s in self.series.values_mut() {
            s.sort_by_key(|(t, _)| *t);
        }
    }
}

/// A value while evaluating: a number or one sample per series.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// Samples.
    Vector(Vector),
}

/// The query's value at `t`, given the samples of each of its range aggregations (in
/// [`MetricExpr::ranges`] order); an error when a series carries `__error__` (Loki refuses
/// metric queries over entries that failed a stage unless a filter removes them), or when
/// two results have one label set.
pub fn eval(expr: &MetricExpr, sets: &[SeriesSet], t: i64) -> Result<Vector, String> {
    let mut next = 0;
    let Value::Vector(v) = node(expr, sets, &mut next, t)? else {
        return Err("a metric query must give series, not a number".into());
    };
    let mut seen: Vec<&Labels> = v.iter().map(|(l, _)| l).collect();
    seen.sort();
    if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!(
            "vector cannot contain metrics with the same labelset: {}",
            format_labels(w[0])
        ));
    }
    Ok(v)
}

fn node(expr: &MetricExpr, sets: &[SeriesSet], next: &mut usize, t: i64) -> Result<Value, String> {
    match expr {
        MetricExpr::Range {
            func,
            param,
            range_ns,
            offset_ns,
            log,
            ..
        } => {
            let set = sets
                .get(*next)
                .ok_or("no samples for a range aggregation")?;
            *next += 1;
            let v = range(*func, *param, *range_ns, &log.selector, set, t - offset_ns);
            if let Some((labels, _)) = v.iter().find(|(l, _)| l.contains_key(ERROR_LABEL)) {
                return Err(format!(
                    "pipeline error: '{}' for series: '{}'.\nUse a label filter to intercept this error.\n(e.g `| __error__=\"\"`)",
                    labels[ERROR_LABEL],
                    format_labels(labels)
                ));
            }
            Ok(Value::Vector(v))
        }
        MetricExpr::Vector {
            op,
            param,
            grouping,
            inner,
        } => match node(inner, sets, next, t)? {
            Value::Vector(v) => Ok(Value::Vector(aggregate(*op, *param, grouping.as_ref(), v))),
            Value::Scalar(_) => Err(format!("{op:?} needs series, not a number")),
        },
        MetricExpr::Binary {
            op,
            lhs,
            rhs,
            return_bool,
            matching,
        } => {
            let l = node(lhs, sets, next, t)?;
            let r = node(rhs, sets, next, t)?;
            super::binary::apply(*op, *return_bool, matching.as_ref(), l, r)
        }
        MetricExpr::Number(n) => Ok(Value::Scalar(*n)),
        MetricExpr::Constant(n) => Ok(Value::Vector(vec![(Labels::new(), *n)])),
    }
}

/// `{a="1", b="2"}` as Prometheus prints a label set.
pub fn format_labels(l: &Labels) -> String {
    let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn range(
    func: RangeFn,
    param: Option<f64>,
    range_ns: i64,
    selector: &[Matcher],
    set: &SeriesSet,
    t: i64,
) -> Vector {
    let secs = range_ns as f64 / 1e9;
    let mut out = Vec::new();
    for (labels, samples) in &set.series {
        let lo = samples.partition_point(|(ts, _)| *ts <= t - range_ns);
        let hi = samples.partition_point(|(ts, _)| *ts <= t);
        let w: Vec<f64> = samples[lo..hi].iter().map(|(_, v)| *v).collect();
        if w.is_empty() {
            continue;
        }
        let sum = || w.iter().sum::<f64>();
        let v = match func {
            // Each entry is a sample of 1, or a bucket of entries counted in SQL.
            RangeFn::CountOverTime => sum(),
            RangeFn::Rate => sum() / secs,
            RangeFn::BytesOverTime | RangeFn::SumOverTime => sum(),
            RangeFn::BytesRate => sum() / secs,
            RangeFn::AvgOverTime => {
                let mut mean = 0.0;
                for (i, x) in w.iter().enumerate() {
                    mean += (x - mean) / (i + 1) as f64;
                }
                mean
            }
            RangeFn::MinOverTime => w.iter().copied().fold(f64::INFINITY, f64::min),
            RangeFn::MaxOverTime => w.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            RangeFn::QuantileOverTime => quantile(param.unwrap_or(0.5), w),
            RangeFn::FirstOverTime => w[0],
            RangeFn::LastOverTime => w[w.len() - 1],
            RangeFn::StddevOverTime => variance(w.iter().copied()).sqrt(),
            RangeFn::StdvarOverTime => variance(w.iter().copied()),
            RangeFn::AbsentOverTime => return Vec::new(),
        };
        out.push((labels.clone(), v));
    }
    if func == RangeFn::AbsentOverTime {
        let labels = selector
            .iter()
            .filter(|m| m.op == MatchOp::Eq)
            .map(|m| (m.name.clone(), m.value.clone()))
            .collect();
        return vec![(labels, 1.0)];
    }
    out
}

fn group_key(labels: &Labels, g: Option<&Grouping>) -> Labels {
    match g {
        None => Labels::new(),
        Some(Grouping {
            without: false,
            labels: by,
        }) => labels
            .iter()
            .filter(|(k, _)| by.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(Grouping {
            without: true,
            labels: without,
        }) => labels
            .iter()
            .filter(|(k, _)| !without.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn aggregate(op: VectorOp, param: Option<f64>, g: Option<&Grouping>, input: Vector) -> Vector {
    let mut groups: BTreeMap<Labels, Vec<(Labels, f64)>> = BTreeMap::new();
    for (labels, v) in input {
        groups
            .entry(group_key(&labels, g))
            .or_default()
            .push((labels, v));
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        match op {
            VectorOp::Topk | VectorOp::Bottomk => {
                let k = param.unwrap_or(1.0) as usize;
                let mut m = members;
                m.sort_by(|a, b| {
                    let by_value = if op == VectorOp::Topk {
                        b.1.total_cmp(&a.1)
                    } else {
                        a.1.total_cmp(&b.1)
                    };
                    by_value.then_with(|| a.0.cmp(&b.0))
                });
                m.truncate(k);
                out.extend(m);
                continue;
            }
            _ => {}
        }
        let vals: Vec<f64> = members.iter().map(|(_, v)| *v).collect();
        let n = vals.len() as f64;
        let v = match op {
            VectorOp::Sum => vals.iter().sum(),
            VectorOp::Avg => {
                let mut mean = 0.0;
                for (i, x) in vals.iter().enumerate() {
                    mean += (x - mean) / (i + 1) as f64;
                }
                mean
            }
            VectorOp::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
            VectorOp::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            VectorOp::Count => n,
            VectorOp::Stddev => variance(vals.iter().copied()).sqrt(),
            VectorOp::Stdvar => variance(vals.iter().copied()),
            VectorOp::Topk | VectorOp::Bottomk => unreachable!("handled above"),
        };
        out.push((key, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::ast::Expr;
    use crate::logql::parser::parse;

    fn metric(q: &str) -> MetricExpr {
        match parse(q).unwrap() {
            Expr::Metric(m) => m,
            _ => panic!(),
        }
    }

    fn labels(p: &[(&str, &str)]) -> Labels {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn windows_are_left_open_and_aggregations_group() {
        let e = metric(r#"sum by (app) (count_over_time({app=~"a|b"}[10s]))"#);
        let x = Extractor::new(e.ranges()[0]);
        let mut set = SeriesSet::default();
        for (ts, app, pod) in [
            (10, "a", "1"),
            (15, "a", "2"),
            (20, "a", "1"),
            (20, "b", "1"),
            (21, "b", "1"),
        ] {
            x.add(
                &mut set,
                ts * S,
                "line",
                &labels(&[("app", app), ("pod", pod)]),
                labels(&[("app", app), ("pod", pod)]),
            );
        }
        set.sort();
        // (10s, 20s]: 15, 20 of a; 20 of b.
        assert_eq!(
            eval(&e, std::slice::from_ref(&set), 20 * S).unwrap(),
            vec![
                (labels(&[("app", "a")]), 2.0),
                (labels(&[("app", "b")]), 1.0)
            ]
        );
        let rate = metric(r#"rate({app="a"}[10s])"#);
        assert_eq!(
            eval(&rate, std::slice::from_ref(&set), 20 * S).unwrap(),
            vec![
                (labels(&[("app", "a"), ("pod", "1")]), 0.1),
                (labels(&[("app", "a"), ("pod", "2")]), 0.1),
                (labels(&[("app", "b"), ("pod", "1")]), 0.1)
            ],
            "the selector is SQL's job"
        );
        let top = metric(r#"topk(1, count_over_time({app="a"}[30s]))"#);
        assert_eq!(
            eval(&top, std::slice::from_ref(&set), 30 * S).unwrap(),
            vec![(labels(&[("app", "a"), ("pod", "1")]), 2.0)],
            "ties go to the smaller label set"
        );
        assert_eq!(
            eval(
                &metric(r#"absent_over_time({app="c"}[5s])"#),
                std::slice::from_ref(&set),
                40 * S
            )
            .unwrap(),
            vec![(labels(&[("app", "c")]), 1.0)]
        );
        assert!(
            eval(
                &metric(r#"absent_over_time({app="c"}[5s])"#),
                std::slice::from_ref(&set),
                20 * S
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn unwrapped_values_and_errors() {
        let e = metric(r#"quantile_over_time(0.5, {app="a"} | logfmt | unwrap ms [1m]) by (app)"#);
        let x = Extractor::new(e.ranges()[0]);
        let mut set = SeriesSet::default();
        for (i, ms) in ["10", "40", "20", "30"].iter().enumerate() {
            x.add(
                &mut set,
                (i as i64 + 1) * S,
                &format!("ms={ms}"),
                &labels(&[("app", "a"), ("pod", "p")]),
                labels(&[("app", "a"), ("pod", "p")]),
            );
        }
        set.sort();
        assert_eq!(
            eval(&e, std::slice::from_ref(&set), 10 * S).unwrap(),
            vec![(labels(&[("app", "a")]), 25.0)]
        );
        let avg = metric(r#"avg_over_time({app="a"} | logfmt | unwrap ms [1m])"#);
        let mut set = SeriesSet::default();
        Extractor::new(avg.ranges()[0]).add(
            &mut set,
            S,
            "ms=3",
            &labels(&[("app", "a")]),
            labels(&[("app", "a")]),
        );
        Extractor::new(avg.ranges()[0]).add(
            &mut set,
            2 * S,
            "ms=4",
            &labels(&[("app", "a")]),
            labels(&[("app", "a")]),
        );
        assert_eq!(
            eval(&avg, std::slice::from_ref(&set), 10 * S).unwrap(),
            vec![(labels(&[("app", "a")]), 3.5)]
        );
        Extractor::new(avg.ranges()[0]).add(
            &mut set,
            3 * S,
            "ms=x",
            &labels(&[("app", "a")]),
            labels(&[("app", "a")]),
        );
        assert!(
            eval(&avg, std::slice::from_ref(&set), 10 * S)
                .unwrap_err()
                .starts_with("pipeline error: 'SampleExtractionErr'")
        );
    }
}
