//! Series held in memory as a [`SeriesSource`]: what the rule processor's windows and
//! `promtool`-style rule unit tests evaluate over, and what the evaluator's own unit tests
//! use. Label matching follows PromQL: a missing label matches as the empty string, regexes
//! are anchored (promql-parser anchors them), `or` groups of matchers select the union.

use promql_parser::parser::VectorSelector;

use crate::value::{Labels, RawSeries};
use crate::{SelectFuture, SeriesSource};

/// Whether `vs` selects a series with `labels` (`__name__` among them).
pub fn selects(vs: &VectorSelector, labels: &Labels) -> bool {
    let value = |name: &str| labels.get(name).map_or("", String::as_str);
    if let Some(name) = &vs.name
        && value("__name__") != name
    {
        return false;
    }
    let all = |ms: &[promql_parser::label::Matcher]| ms.iter().all(|m| m.is_match(value(&m.name)));
    if vs.matchers.or_matchers.is_empty() {
        all(&vs.matchers.matchers)
    } else {
        vs.matchers.or_matchers.iter().any(|group| all(group))
    }
}

/// The series `vs` selects among `series` (label set, time-sorted samples), each cut to
/// its samples in `[from_ms, to_ms]`; series without one are left out. What every
/// in-memory source answers.
pub fn select_in<'s>(
    series: impl Iterator<Item = (&'s Labels, &'s [(i64, f64)])>,
    vs: &VectorSelector,
    from_ms: i64,
    to_ms: i64,
) -> Vec<RawSeries> {
    series
        .filter(|(labels, _)| selects(vs, labels))
        .filter_map(|(labels, samples)| {
            let lo = samples.partition_point(|&(t, _)| t < from_ms);
            let hi = samples.partition_point(|&(t, _)| t <= to_ms);
            (lo < hi).then(|| RawSeries {
                labels: labels.clone(),
                samples: samples[lo..hi].to_vec(),
            })
        })
        .collect()
}

/// A fixed set of series, each with time-sorted samples.
#[derive(Debug, Default, Clone)]
pub struct MemorySource {
    series: Vec<RawSeries>,
}

impl MemorySource {
    /// A source over `series` (their samples must be sorted by time, one per timestamp).
    pub fn new(mut series: Vec<RawSeries>) -> MemorySource {
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        MemorySource { series }
    }
}

impl SeriesSource for MemorySource {
    fn select<'a>(
        &'a mut self,
        vs: &'a VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> SelectFuture<'a> {
        let series = self
            .series
            .iter()
            .map(|s| (&s.labels, s.samples.as_slice()));
        let out = select_in(series, vs, from_ms, to_ms);
        Box::pin(async move { Ok(out) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Grid, Limits, Value, evaluate, parse};

    fn series(name: &str, labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> RawSeries {
        let mut l: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert("__name__".into(), name.into());
        RawSeries { labels: l, samples }
    }

    const LIMITS: Limits = Limits {
        lookback_ms: 300_000,
        max_points: 11_000,
    };

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The memory source never awaits anything: one poll finishes the evaluation.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory source does not wait"),
        }
    }

    #[test]
    fn matchers_select_as_promql_does() {
        let parse_vs = |q: &str| match parse(q).unwrap() {
            promql_parser::parser::Expr::VectorSelector(vs) => vs,
            e => panic!("{e:?}"),
        };
        let a = series("up", &[("job", "api"), ("env", "prod")], vec![]).labels;
        assert!(selects(&parse_vs(r#"up{job=~"a.*"}"#), &a));
        assert!(
            !selects(&parse_vs(r#"up{job=~"a"}"#), &a),
            "regexes are anchored"
        );
        assert!(
            selects(&parse_vs(r#"up{team=""}"#), &a),
            "missing label is empty"
        );
        assert!(!selects(&parse_vs(r#"down"#), &a));
        assert!(selects(&parse_vs(r#"{__name__="up", env!="dev"}"#), &a));
    }

    #[test]
    fn rate_over_memory_equals_prometheus_extrapolation() {
        // A counter rising 1/s sampled every 15 s: rate over 1m is exactly 1 at any step
        // whose window is fully covered.
        let samples = (0..=20).map(|i| (i * 15_000, i as f64 * 15.0)).collect();
        let src = MemorySource::new(vec![series("c_total", &[("job", "x")], samples)]);
        let expr = parse("rate(c_total[1m])").unwrap();
        let grid = Grid {
            start: 120_000,
            end: 240_000,
            step: 60_000,
        };
        let v = block_on(evaluate(Box::new(src), &expr, grid, &LIMITS)).unwrap();
        let Value::Vector(series) = v else {
            panic!("{v:?}")
        };
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].points, vec![Some(1.0), Some(1.0), Some(1.0)]);
    }

    /// The instances of an instant answer's series, in order.
    fn instances(src: &[RawSeries], query: &str) -> Vec<String> {
        let expr = parse(query).unwrap();
        let grid = Grid {
            start: 1000,
            end: 1000,
            step: 1,
        };
        let v = block_on(evaluate(
            Box::new(MemorySource::new(src.to_vec())),
            &expr,
            grid,
            &LIMITS,
        ))
        .unwrap();
        let Value::Vector(series) = v else {
            panic!("{v:?}")
        };
        series
            .iter()
            .map(|s| s.labels["instance"].clone())
            .collect()
    }

    #[test]
    fn instant_sort_and_topk_answers_are_in_prometheus_order() {
        let one = |instance: &str, zone: &str, v: f64| {
            series(
                "load",
                &[("instance", instance), ("zone", zone)],
                vec![(1000, v)],
            )
        };
        let src = vec![
            one("a", "z2", 3.0),
            one("b", "z1", f64::NAN),
            one("c", "z2", 9.0),
            one("d", "z1", 5.0),
            one("e", "z1", 1.0),
        ];
        assert_eq!(instances(&src, "sort(load)"), ["e", "a", "d", "c", "b"]);
        assert_eq!(
            instances(&src, "sort_desc(load)"),
            ["c", "d", "a", "e", "b"]
        );
        // Groups in the order of their first series (a is z2's), then by value in each.
        assert_eq!(
            instances(&src, "topk by (zone) (2, load)"),
            ["c", "a", "d", "e"]
        );
        assert_eq!(instances(&src, "bottomk by (zone) (1, load)"), ["a", "e"]);
        assert_eq!(instances(&src, "topk(2, (load))"), ["c", "d"]);
        // Anything else stays in label order.
        assert_eq!(instances(&src, "load * 2"), ["a", "b", "c", "d", "e"]);
    }
}
