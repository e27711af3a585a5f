//! Function calls: range-vector functions over each step's window (see
//! [`super::range_fns`]; from rollups when the source offers them and the windows are
//! whole rollup windows, see [`super::rollup`]), element-wise math, label rewriting, `histogram_quantile`,
//! `absent`, `timestamp`, date functions, `vector`, `scalar` and `time`.

use chrono::{DateTime, Datelike, Timelike};
use obs_runtime::labels::valid_label_name;
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr, VectorSelector};
use regex::Regex;

use super::eval::{EvalError, Evaluator, Result, exec, span, unwrap_parens};
use super::range_fns::{self, Resets, Window};
use super::rollup;
use super::value::{Grid, Labels, Series, SeriesBuilder, Value, by_value, drop_name};

/// Functions of one value that drop the metric name.
fn math(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        _ => return None,
    })
}

/// Date parts of a Unix time in seconds (UTC).
fn date_part(name: &str, secs: f64) -> Option<f64> {
    let t = DateTime::from_timestamp(secs as i64, 0)?;
    Some(match name {
        "minute" => t.minute() as f64,
        "hour" => t.hour() as f64,
        "day_of_week" => t.weekday().num_days_from_sunday() as f64,
        "day_of_month" => t.day() as f64,
        "day_of_year" => t.ordinal() as f64,
        "month" => t.month() as f64,
        "year" => t.year() as f64,
        "days_in_month" => {
            let (y, m) = (t.year(), t.month());
            let next = if m == 12 {
                chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
            } else {
                chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
            }?;
            next.pred_opt()?.day() as f64
        }
        _ => return None,
    })
}

const DATE_FUNCTIONS: &[&str] = &[
    "minute",
    "hour",
    "day_of_week",
    "day_of_month",
    "day_of_year",
    "month",
    "year",
    "days_in_month",
];

/// Maps every present point of every series, dropping the metric name.
fn map_points(series: Vec<Series>, f: impl Fn(f64) -> Option<f64>) -> Result<Value> {
    let mut b = SeriesBuilder::new(series.first().map_or(0, |s| s.points.len()));
    for s in series {
        let points = s.points.iter().map(|p| p.and_then(&f)).collect();
        b.add(Series {
            labels: drop_name(s.labels),
            points,
        })
        .map_err(EvalError::Execution)?;
    }
    Ok(Value::Vector(b.finish()))
}

/// The labels `absent` and `absent_over_time` answer with: the selector's equality
/// matchers (a label matched more than once, or not by equality, is left out).
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match unwrap_parens(arg) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let mut out = Labels::new();
    let mut empty = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == "__name__" {
            continue;
        }
        if matches!(m.op, MatchOp::Equal) && !out.contains_key(&m.name) {
            out.insert(m.name.clone(), m.value.clone());
        } else {
            empty.push(m.name.clone());
        }
    }
    for n in empty {
        out.remove(&n);
    }
    out
}

/// One bucket of a classic histogram.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    upper: f64,
    count: f64,
}

/// The φ-quantile from cumulative buckets, as Prometheus interpolates it.
fn bucket_quantile(q: f64, mut buckets: Vec<Bucket>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.upper.total_cmp(&b.upper));
    match buckets.last() {
        Some(b) if b.upper == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Buckets with one upper bound are added up.
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(b),
        }
    }
    // Counts must not fall (rates of buckets can, through float error).
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let n = merged.len() - 1;
    let b = merged[..n].partition_point(|b| b.count < rank);
    if b == n {
        return merged[n - 1].upper;
    }
    if b == 0 && merged[0].upper <= 0.0 {
        return merged[0].upper;
    }
    let (mut start, end, mut count) = (0.0, merged[b].upper, merged[b].count);
    if b > 0 {
        start = merged[b - 1].upper;
        count -= merged[b - 1].count;
        rank -= merged[b - 1].count;
    }
    start + (end - start) * (rank / count)
}

fn parse_le(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

impl Evaluator {
    /// Evaluates a function call.
    pub async fn call(&mut self, call: &Call, grid: Grid) -> Result<Value> {
        let name = call.func.name;
        let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
        let n = grid.len();
        if range_fns::NAMES.contains(&name) {
            return self.range_function(name, &args, grid).await;
        }
        if let Some(f) = math(name) {
            let v = self.vector_arg(args[0], grid).await?;
            return map_points(v, |x| Some(f(x)));
        }
        if DATE_FUNCTIONS.contains(&name) {
            let v = match args.first() {
                Some(a) => self.vector_arg(a, grid).await?,
                None => vec![Series {
                    labels: Labels::new(),
                    points: grid.times().map(|t| Some(t as f64 / 1000.0)).collect(),
                }],
            };
            return map_points(v, |x| date_part(name, x));
        }
        match name {
            "time" => Ok(Value::Scalar(
                grid.times().map(|t| t as f64 / 1000.0).collect(),
            )),
            "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; n])),
            "vector" => {
                let v = self.scalar_arg(args[0], grid).await?;
                Ok(Value::Vector(vec![Series {
                    labels: Labels::new(),
                    points: v.into_iter().map(Some).collect(),
                }]))
            }
            "scalar" => {
                let v = self.vector_arg(args[0], grid).await?;
                Ok(Value::Scalar(
                    (0..n)
                        .map(|i| {
                            let mut present = v.iter().filter_map(|s| s.points[i]);
                            match (present.next(), present.next()) {
                                (Some(x), None) => x,
                                _ => f64::NAN,
                            }
                        })
                        .collect(),
                ))
            }
            "round" => {
                let v = self.vector_arg(args[0], grid).await?;
                let to = match args.get(1) {
                    Some(a) => self.scalar_arg(a, grid).await?,
                    None => vec![1.0; n],
                };
                step_map(v, |i, x| {
                    let inv = 1.0 / to[i];
                    Some((x * inv + 0.5).floor() / inv)
                })
            }
            "clamp" | "clamp_min" | "clamp_max" => {
                let v = self.vector_arg(args[0], grid).await?;
                let a = self.scalar_arg(args[1], grid).await?;
                let b = match args.get(2) {
                    Some(e) => self.scalar_arg(e, grid).await?,
                    None => vec![f64::NAN; n],
                };
                step_map(v, |i, x| match name {
                    "clamp" if b[i] < a[i] => None,
                    "clamp" => Some(go_max(a[i], go_min(b[i], x))),
                    "clamp_min" => Some(go_max(a[i], x)),
                    _ => Some(go_min(a[i], x)),
                })
            }
            "timestamp" => {
                let v = match unwrap_parens(args[0]) {
                    Expr::VectorSelector(vs) => self.instant_selector(vs, grid, true).await?,
                    other => {
                        let v = self.vector_arg(other, grid).await?;
                        v.into_iter()
                            .map(|s| Series {
                                points: s
                                    .points
                                    .iter()
                                    .enumerate()
                                    .map(|(i, p)| p.map(|_| grid.time(i) as f64 / 1000.0))
                                    .collect(),
                                labels: s.labels,
                            })
                            .collect()
                    }
                };
                map_points(v, Some)
            }
            "absent" => {
                let v = self.vector_arg(args[0], grid).await?;
                let points: Vec<Option<f64>> = (0..n)
                    .map(|i| (!v.iter().any(|s| s.points[i].is_some())).then_some(1.0))
                    .collect();
                Ok(Value::Vector(absent_series(absent_labels(args[0]), points)))
            }
            "sort" | "sort_desc" => {
                let mut v = self.vector_arg(args[0], grid).await?;
                // Only an instant answer has an order (a range answer is a matrix, listed by
                // labels): by value, NaN last, as Prometheus 2.x sorts.
                if grid.len() == 1 {
                    let desc = name == "sort_desc";
                    v.sort_by(|a, b| by_value(a.points[0], b.points[0], desc));
                }
                Ok(Value::Vector(v))
            }
            "label_replace" => {
                let v = self.vector_arg(args[0], grid).await?;
                let dst = Self::string_arg(args[1])?;
                let repl = Self::string_arg(args[2])?;
                let src = Self::string_arg(args[3])?;
                let re_src = Self::string_arg(args[4])?;
                let re = Regex::new(&format!("^(?:{re_src})$")).map_err(|e| {
                    EvalError::Execution(format!(
                        "invalid regular expression in label_replace(): {re_src}: {e}"
                    ))
                })?;
                if !valid_label_name(&dst) {
                    return exec(format!(
                        "invalid destination label name in label_replace(): {dst}"
                    ));
                }
                relabel(v, |labels| {
                    let value = labels.get(&src).cloned().unwrap_or_default();
                    if let Some(caps) = re.captures(&value) {
                        let mut out = String::new();
                        caps.expand(&repl, &mut out);
                        set_label(labels, &dst, out);
                    }
                })
            }
            "label_join" => {
                let v = self.vector_arg(args[0], grid).await?;
                let dst = Self::string_arg(args[1])?;
                let sep = Self::string_arg(args[2])?;
                let srcs = args[3..]
                    .iter()
                    .map(|a| Self::string_arg(a))
                    .collect::<Result<Vec<_>>>()?;
                if !valid_label_name(&dst) {
                    return exec(format!(
                        "invalid destination label name in label_join(): {dst}"
                    ));
                }
                relabel(v, |labels| {
                    let joined = srcs
                        .iter()
                        .map(|s| labels.get(s).cloned().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(&sep);
                    set_label(labels, &dst, joined);
                })
            }
            "histogram_quantile" => {
                let q = self.scalar_arg(args[0], grid).await?;
                let v = self.vector_arg(args[1], grid).await?;
                histogram_quantile(&q, v, n)
            }
            other => exec(format!(
                "function {other}() is not supported by obs yet (native histograms and experimental functions are not)"
            )),
        }
    }

    /// `rate(x[5m])` and the other functions of a range vector.
    async fn range_function(&mut self, name: &str, args: &[&Expr], grid: Grid) -> Result<Value> {
        let n = grid.len();
        let (range_arg, scalar_args): (&Expr, Vec<&Expr>) = match name {
            "quantile_over_time" => (args[1], vec![args[0]]),
            _ => (args[0], args[1..].to_vec()),
        };
        let mut scalars = Vec::with_capacity(scalar_args.len());
        for a in scalar_args {
            scalars.push(self.scalar_arg(a, grid).await?);
        }
        if let Expr::MatrixSelector(ms) = unwrap_parens(range_arg) {
            let offered = self.storage.rollup_resolutions();
            if !offered.is_empty() {
                let bounds = self.window_bounds(&ms.vs.at, &ms.vs.offset, ms.range, grid);
                if let Some(res) = rollup::resolution_for(name, &offered, &bounds) {
                    return self
                        .range_function_over_rollups(name, &ms.vs, &bounds, res)
                        .await;
                }
            }
        }
        let w = self.windows(range_arg, grid).await?;
        if name == "absent_over_time" {
            let points = (0..n)
                .map(|i| {
                    let (lo, hi) = w.bounds[i];
                    let any = w
                        .series
                        .iter()
                        .any(|s| s.samples.iter().any(|&(t, _)| t >= lo && t <= hi));
                    (!any).then_some(1.0)
                })
                .collect();
            return Ok(Value::Vector(absent_series(
                absent_labels(range_arg),
                points,
            )));
        }
        let keep_name = name == "last_over_time";
        let mut b = SeriesBuilder::new(n);
        let mut step_args = vec![0.0; scalars.len()];
        let counter = matches!(name, "rate" | "increase");
        for s in w.series {
            let resets = if counter {
                Resets::find(&s.samples)
            } else {
                Vec::new()
            };
            let points: Vec<Option<f64>> = (0..n)
                .map(|i| {
                    let (lo, hi) = w.bounds[i];
                    let from = s.samples.partition_point(|&(t, _)| t < lo);
                    let to = s.samples.partition_point(|&(t, _)| t <= hi);
                    for (a, v) in step_args.iter_mut().zip(&scalars) {
                        *a = v[i];
                    }
                    let window = Window {
                        samples: &s.samples[from..to],
                        start: lo,
                        end: hi,
                        eval_time: grid.time(i),
                        resets: counter.then_some(Resets {
                            at: &resets,
                            first: from,
                        }),
                    };
                    range_fns::apply(name, &window, &step_args)
                })
                .collect();
            let labels = if keep_name {
                s.labels
            } else {
                drop_name(s.labels)
            };
            b.add(Series { labels, points })
                .map_err(EvalError::Execution)?;
        }
        Ok(Value::Vector(b.finish()))
    }

    /// A range function over whole rollup windows of `resolution_ms` (see [`rollup`]).
    async fn range_function_over_rollups(
        &mut self,
        name: &str,
        vs: &VectorSelector,
        bounds: &[(i64, i64)],
        resolution_ms: i64,
    ) -> Result<Value> {
        let Some((lo, hi)) = span(bounds) else {
            return Ok(Value::Vector(Vec::new()));
        };
        let series = self
            .storage
            .select_rollups(vs, resolution_ms, lo, hi)
            .await?;
        let mut b = SeriesBuilder::new(bounds.len());
        for s in series {
            let points = bounds
                .iter()
                .map(|&(start, end)| rollup::apply(name, &s.chunks, start, end))
                .collect();
            let labels = if name == "last_over_time" {
                s.labels
            } else {
                drop_name(s.labels)
            };
            b.add(Series { labels, points })
                .map_err(EvalError::Execution)?;
        }
        Ok(Value::Vector(b.finish()))
    }
}

/// Go's `math.Max`: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN wins.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn absent_series(labels: Labels, points: Vec<Option<f64>>) -> Vec<Series> {
    if points.iter().any(Option::is_some) {
        vec![Series { labels, points }]
    } else {
        Vec::new()
    }
}

/// Like [`map_points`] with the step index, for per-step scalar arguments.
fn step_map(series: Vec<Series>, f: impl Fn(usize, f64) -> Option<f64>) -> Result<Value> {
    let mut b = SeriesBuilder::new(series.first().map_or(0, |s| s.points.len()));
    for s in series {
        let points = s
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| p.and_then(|x| f(i, x)))
            .collect();
        b.add(Series {
            labels: drop_name(s.labels),
            points,
        })
        .map_err(EvalError::Execution)?;
    }
    Ok(Value::Vector(b.finish()))
}

/// Sets a label; an empty value removes it, as Prometheus's label builder does.
fn set_label(labels: &mut Labels, name: &str, value: String) {
    if value.is_empty() {
        labels.remove(name);
    } else {
        labels.insert(name.to_string(), value);
    }
}

/// Rewrites every series' labels (the metric name stays), merging series that end up equal.
fn relabel(series: Vec<Series>, f: impl Fn(&mut Labels)) -> Result<Value> {
    let mut b = SeriesBuilder::new(series.first().map_or(0, |s| s.points.len()));
    for mut s in series {
        f(&mut s.labels);
        b.add(s).map_err(EvalError::Execution)?;
    }
    Ok(Value::Vector(b.finish()))
}

fn histogram_quantile(q: &[f64], v: Vec<Series>, n: usize) -> Result<Value> {
    // Series grouped by their labels without `le` (the name stays in the key, as in
    // Prometheus); the answer drops both.
    let mut groups: std::collections::BTreeMap<Labels, Vec<(f64, &Series)>> = Default::default();
    for s in &v {
        let Some(le) = s.labels.get("le").and_then(|l| parse_le(l)) else {
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        groups.entry(key).or_default().push((le, s));
    }
    let mut b = SeriesBuilder::new(n);
    for (key, buckets) in groups {
        let labels = drop_name(key);
        for (i, &phi) in q.iter().enumerate().take(n) {
            let present: Vec<Bucket> = buckets
                .iter()
                .filter_map(|(le, s)| s.points[i].map(|count| Bucket { upper: *le, count }))
                .collect();
            if present.is_empty() {
                continue;
            }
            b.set(labels.clone(), i, bucket_quantile(phi, present))
                .map_err(EvalError::Execution)?;
        }
    }
    Ok(Value::Vector(b.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(v: &[(f64, f64)]) -> Vec<Bucket> {
        v.iter()
            .map(|&(upper, count)| Bucket { upper, count })
            .collect()
    }

    #[test]
    fn bucket_quantile_interpolates_within_the_bucket() {
        let b = buckets(&[(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (f64::INFINITY, 40.0)]);
        // rank 20 lies halfway through (0.1, 0.5].
        assert!((bucket_quantile(0.5, b.clone()) - 0.3).abs() < 1e-12);
        // Above the last finite bucket: its upper bound.
        let b2 = buckets(&[(0.1, 10.0), (f64::INFINITY, 20.0)]);
        assert_eq!(bucket_quantile(0.99, b2), 0.1);
        assert!(bucket_quantile(0.5, buckets(&[(0.1, 1.0)])).is_nan());
        assert_eq!(bucket_quantile(-1.0, b), f64::NEG_INFINITY);
    }

    #[test]
    fn date_parts_are_utc() {
        // 2026-11-22T03:04:05Z is a Sunday.
        let t = 1_795_316_645.0;
        assert_eq!(date_part("hour", t), Some(3.0));
        assert_eq!(date_part("minute", t), Some(4.0));
        assert_eq!(date_part("day_of_week", t), Some(0.0));
        assert_eq!(date_part("days_in_month", t), Some(30.0));
    }
}
