//! The values a PromQL expression evaluates to over a range of evaluation steps.
//!
//! An instant vector evaluated at every step of a [`Grid`] is kept series-major: one
//! [`Series`] per label set with one optional value per step, which is what functions and
//! the final matrix answer both want.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

/// A label set, `__name__` included, ordered by name.
pub type Labels = BTreeMap<String, String>;

/// The evaluation steps: `start`, `start + step`, ... up to `end` (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// First step.
    pub start: i64,
    /// Last possible step (inclusive).
    pub end: i64,
    /// Distance between steps (ms, > 0).
    pub step: i64,
}

impl Grid {
    /// Number of steps.
    pub fn len(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            ((self.end - self.start) / self.step) as usize + 1
        }
    }

    /// Whether there is no step at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The time of step `i`.
    pub fn time(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// Every step's time.
    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.time(i))
    }
}

/// One series of an instant vector evaluated over a grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: Labels,
    /// One value per grid step; `None` where the series has no sample.
    pub points: Vec<Option<f64>>,
}

/// Raw samples of one stored series, in time order, for range selectors.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries {
    /// Its labels.
    pub labels: Labels,
    /// `(ms, value)` pairs, ascending, one per timestamp.
    pub samples: Vec<(i64, f64)>,
}

/// What an expression evaluates to over a grid.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One number per step.
    Scalar(Vec<f64>),
    /// An instant vector per step.
    Vector(Vec<Series>),
    /// A range vector (only as the whole of an instant query).
    Matrix(Vec<RawSeries>),
    /// A string literal.
    String(String),
}

impl Value {
    /// The name Prometheus gives this type in answers and errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
            Value::String(_) => "string",
        }
    }
}

/// Collects per-step outputs into series: outputs with the same labels become one series,
/// unless both have a value at the same step, which Prometheus refuses.
#[derive(Debug)]
pub struct SeriesBuilder {
    steps: usize,
    series: BTreeMap<Labels, Vec<Option<f64>>>,
}

/// Prometheus's error for two outputs with one label set at one step.
pub const DUPLICATE_LABELSET: &str = "vector cannot contain metrics with the same labelset";

impl SeriesBuilder {
    /// A builder for `steps` steps.
    pub fn new(steps: usize) -> Self {
        SeriesBuilder {
            steps,
            series: BTreeMap::new(),
        }
    }

    /// Sets `labels`' value at step `i`.
    pub fn set(&mut self, labels: Labels, i: usize, v: f64) -> Result<(), String> {
        let steps = self.steps;
        let points = self
            .series
            .entry(labels)
            .or_insert_with(|| vec![None; steps]);
        if points[i].is_some() {
            return Err(DUPLICATE_LABELSET.into());
        }
        points[i] = Some(v);
        Ok(())
    }

    /// Adds a whole series, merging with one of the same labels where steps do not clash.
    pub fn add(&mut self, s: Series) -> Result<(), String> {
        match self.series.entry(s.labels) {
            Entry::Vacant(e) => {
                e.insert(s.points);
            }
            Entry::Occupied(mut e) => {
                for (have, new) in e.get_mut().iter_mut().zip(s.points) {
                    if new.is_some() {
                        if have.is_some() {
                            return Err(DUPLICATE_LABELSET.into());
                        }
                        *have = new;
                    }
                }
            }
        }
        Ok(())
    }

    /// The series that have at least one value, ordered by labels.
    pub fn finish(self) -> Vec<Series> {
        self.series
            .into_iter()
            .filter(|(_, p)| p.iter().any(Option::is_some))
            .map(|(labels, points)| Series { labels, points })
            .collect()
    }
}

/// A float as Prometheus writes it in answers: shortest round-trip decimal, `NaN`, `+Inf`,
/// `-Inf`.
pub fn format_value(v: f64) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// [`format_value`] appended to `out` (an answer of many points allocates nothing per
/// point).
pub fn write_value(out: &mut String, v: f64) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A timestamp in ms as Prometheus writes it: seconds with up to three decimals.
pub fn format_time(ms: i64) -> String {
    let mut out = String::new();
    write_time(&mut out, ms);
    out
}

/// [`format_time`] appended to `out`.
pub fn write_time(out: &mut String, ms: i64) {
    use std::fmt::Write;
    let (secs, frac) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let _ = if frac == 0 {
        write!(out, "{secs}")
    } else if frac % 100 == 0 {
        write!(out, "{secs}.{}", frac / 100)
    } else if frac % 10 == 0 {
        write!(out, "{secs}.{:02}", frac / 10)
    } else {
        write!(out, "{secs}.{frac:03}")
    };
}

/// How Prometheus 2.x orders values for `sort`, `sort_desc`, `topk` and `bottomk`:
/// ascending, or descending with `desc`, NaN (and no value) last either way.
pub fn by_value(a: Option<f64>, b: Option<f64>, desc: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let (a, b) = (a.unwrap_or(f64::NAN), b.unwrap_or(f64::NAN));
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ if desc => b.partial_cmp(&a).unwrap_or(Equal),
        _ => a.partial_cmp(&b).unwrap_or(Equal),
    }
}

/// `labels` without `__name__`.
pub fn drop_name(mut labels: Labels) -> Labels {
    labels.remove("__name__");
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_steps_and_formats() {
        let g = Grid {
            start: 1000,
            end: 4500,
            step: 1000,
        };
        assert_eq!(g.times().collect::<Vec<_>>(), [1000, 2000, 3000, 4000]);
        assert_eq!(format_time(1_700_000_000_000), "1700000000");
        assert_eq!(format_time(1_700_000_000_500), "1700000000.5");
        assert_eq!(format_time(1_700_000_000_025), "1700000000.025");
        assert_eq!(format_time(1_700_000_000_050), "1700000000.05");
        assert_eq!(format_time(1_700_000_000_120), "1700000000.12");
        assert_eq!(format_time(1_700_000_000_001), "1700000000.001");
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(2.0), "2");
    }

    #[test]
    fn builder_merges_and_refuses_clashes() {
        let mut b = SeriesBuilder::new(3);
        let l: Labels = [("a".to_string(), "1".to_string())].into();
        b.set(l.clone(), 0, 1.0).unwrap();
        b.add(Series {
            labels: l.clone(),
            points: vec![None, Some(2.0), None],
        })
        .unwrap();
        assert_eq!(b.set(l.clone(), 1, 3.0).unwrap_err(), DUPLICATE_LABELSET);
        let out = b.finish();
        assert_eq!(out[0].points, [Some(1.0), Some(2.0), None]);
    }
}
