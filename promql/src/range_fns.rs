//! Functions of a range vector (`rate(x[5m])`, `avg_over_time(x[10m])`, ...): each takes
//! the samples of one series inside one window and gives at most one value, exactly as
//! Prometheus 2.42 computes it (extrapolation, counter resets, compensated sums in the
//! `_over_time` functions).

/// One window of one series.
pub struct Window<'a> {
    /// Its samples, ascending by time, without stale markers.
    pub samples: &'a [(i64, f64)],
    /// The window's start (ms, inclusive).
    pub start: i64,
    /// The window's end (ms, inclusive): the evaluation time minus any offset.
    pub end: i64,
    /// The evaluation time itself (`predict_linear` predicts from it).
    pub eval_time: i64,
    /// The series' counter resets, when the caller found them once for all its windows
    /// (`None`: `rate` and `increase` look for them in the window).
    pub resets: Option<Resets<'a>>,
}

/// Where a series' counter resets are. `rate` and `increase` add the value before each
/// reset; over a range of many steps, each window scanning its samples for resets cost
/// more than the rest of the function (a chain of dependent additions), so the resets are
/// found once per series and each window adds only its own, in the same order.
#[derive(Clone, Copy)]
pub struct Resets<'a> {
    /// Indices into the series of the samples lower than the one before, ascending.
    pub at: &'a [usize],
    /// The index into the series of the window's first sample.
    pub first: usize,
}

impl Resets<'_> {
    /// The indices of the samples of `samples` lower than the one before.
    pub fn find(samples: &[(i64, f64)]) -> Vec<usize> {
        (1..samples.len())
            .filter(|&k| samples[k].1 < samples[k - 1].1)
            .collect()
    }
}

/// The range-vector functions this engine evaluates, by PromQL name.
pub const NAMES: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
    "resets",
    "changes",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "present_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "absent_over_time",
    "holt_winters",
    "double_exponential_smoothing",
];

/// Applies function `name` to one window; `args` are the scalar arguments at this step
/// (`quantile_over_time`'s φ, `predict_linear`'s seconds, `holt_winters`' factors).
pub fn apply(name: &str, w: &Window<'_>, args: &[f64]) -> Option<f64> {
    let s = w.samples;
    if s.is_empty() {
        return None;
    }
    let values = || s.iter().map(|&(_, v)| v);
    match name {
        "rate" => extrapolated(w, true, true),
        "increase" => extrapolated(w, true, false),
        "delta" => extrapolated(w, false, false),
        "irate" => instant(s, true),
        "idelta" => instant(s, false),
        "deriv" => (s.len() >= 2).then(|| linear_regression(s, s[0].0).0),
        "predict_linear" => (s.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(s, w.eval_time);
            slope * args[0] + intercept
        }),
        "resets" => Some(s.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64),
        "changes" => Some(
            s.windows(2)
                .filter(|p| p[1].1 != p[0].1 && !(p[1].1.is_nan() && p[0].1.is_nan()))
                .count() as f64,
        ),
        "avg_over_time" => Some(avg_over_time(values())),
        "min_over_time" => {
            Some(values().fold(f64::NAN, |m, v| if v < m || m.is_nan() { v } else { m }))
        }
        "max_over_time" => {
            Some(values().fold(f64::NAN, |m, v| if v > m || m.is_nan() { v } else { m }))
        }
        "sum_over_time" => Some(kahan_sum(values())),
        "count_over_time" => Some(s.len() as f64),
        "last_over_time" => Some(s[s.len() - 1].1),
        "present_over_time" => Some(1.0),
        "quantile_over_time" => Some(quantile(args[0], values().collect())),
        "stddev_over_time" => Some(variance_over_time(values()).sqrt()),
        "stdvar_over_time" => Some(variance_over_time(values())),
        "holt_winters" | "double_exponential_smoothing" => holt_winters(s, args[0], args[1]),
        _ => None,
    }
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated to its edges
/// (but not past where a counter would have been zero), per second for `rate`.
fn extrapolated(w: &Window<'_>, is_counter: bool, is_rate: bool) -> Option<f64> {
    let s = w.samples;
    let (first, last) = (*s.first()?, *s.last()?);
    let mut result = last.1 - first.1;
    if is_counter {
        match w.resets {
            Some(r) => {
                let end = r.first + s.len();
                let from = r.at.partition_point(|&k| k <= r.first);
                for &k in r.at[from..].iter().take_while(|&&k| k < end) {
                    result += s[k - r.first - 1].1;
                }
            }
            None => {
                for p in s.windows(2) {
                    if p[1].1 < p[0].1 {
                        result += p[0].1;
                    }
                }
            }
        }
    }
    extrapolate(
        result,
        first,
        last,
        s.len(),
        (w.start, w.end),
        is_counter,
        is_rate,
    )
}

/// Prometheus's extrapolation of a window's change `result` (resets already added for a
/// counter), from its first and last samples and their count, to the window `(start, end)`;
/// per second for a rate. `None` under two samples.
pub fn extrapolate(
    result: f64,
    first: (i64, f64),
    last: (i64, f64),
    samples: usize,
    (start, end): (i64, i64),
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if samples < 2 {
        return None;
    }
    let mut to_start = (first.0 - start) as f64 / 1000.0;
    let to_end = (end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let average_gap = sampled / (samples - 1) as f64;
    if is_counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_gap * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average_gap / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average_gap / 2.0
    };
    // One factor, as Prometheus computes it: the float result is then bit-equal.
    let mut factor = interval / sampled;
    if is_rate {
        factor /= (end - start) as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples.
fn instant(s: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (prev, last) = (s[s.len() - 2], s[s.len() - 1]);
    let mut result = if is_rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let gap = last.0 - prev.0;
    if gap == 0 {
        return None;
    }
    if is_rate {
        result /= gap as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares slope and intercept at `intercept_ms`, with x in seconds.
pub fn linear_regression(s: &[(i64, f64)], intercept_ms: i64) -> (f64, f64) {
    let first = s[0].1;
    if s.iter().all(|&(_, v)| v == first) {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    let (mut n, mut sx, mut sy, mut sxy, mut sx2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(t, v) in s {
        let x = (t - intercept_ms) as f64 / 1000.0;
        n += 1.0;
        sx += x;
        sy += v;
        sxy += x * v;
        sx2 += x * x;
    }
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// The mean, computed incrementally as Prometheus does (no overflow on large values): the
/// `avg` aggregation.
pub fn avg(values: impl Iterator<Item = f64>) -> f64 {
    incremental_mean(values, false)
}

/// The incremental mean, its increments summed plainly (the `avg` aggregation) or
/// compensated (`avg_over_time` in Prometheus 2.42); an infinite mean stays as it is.
fn incremental_mean(values: impl Iterator<Item = f64>, compensated: bool) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64);
    for v in values {
        count += 1.0;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        let inc = v / count - mean / count;
        if compensated {
            (mean, c) = kahan_inc(inc, mean, c);
        } else {
            mean += inc;
        }
    }
    if compensated && !mean.is_infinite() {
        mean + c
    } else {
        mean
    }
}

/// Adds `inc` to a Kahan-Babuska-Neumaier sum `(sum, c)`.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// `sum_over_time`: a compensated sum, as Prometheus 2.42 computes it.
pub fn kahan_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for v in values {
        (sum, c) = kahan_inc(v, sum, c);
    }
    if sum.is_infinite() { sum } else { sum + c }
}

/// `avg_over_time`: the incremental mean with a compensated sum (Prometheus 2.42; the
/// `avg` aggregation uses the plain incremental mean, [`avg`]).
fn avg_over_time(values: impl Iterator<Item = f64>) -> f64 {
    incremental_mean(values, true)
}

/// `stdvar_over_time`: Welford with compensated sums (Prometheus 2.42; the `stdvar`
/// aggregation uses plain Welford, [`variance`]).
fn variance_over_time(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Population variance (Welford).
pub fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut aux) = (0.0f64, 0.0f64, 0.0f64);
    for v in values {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        aux += delta * (v - mean);
    }
    aux / count
}

/// The φ-quantile by linear interpolation between closest ranks.
pub fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    // Go's sort puts NaN first (NaN < x is false both ways, it compares as less).
    let nans: Vec<f64> = values.iter().copied().filter(|v| v.is_nan()).collect();
    values.retain(|v| !v.is_nan());
    let mut sorted = nans;
    sorted.extend(values);
    let n = sorted.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    sorted[lower as usize] * (1.0 - weight) + sorted[upper as usize] * weight
}

/// Double exponential smoothing with smoothing factor `sf` and trend factor `tf`.
fn holt_winters(s: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    let in_unit = |f: f64| f > 0.0 && f < 1.0;
    if !in_unit(sf) || !in_unit(tf) || s.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, s[0].1);
    let mut b = s[1].1 - s[0].1;
    for (i, &(_, v)) in s.iter().enumerate().skip(1) {
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        (s0, s1) = (s1, sf * v + (1.0 - sf) * (s1 + b));
    }
    Some(s1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(samples: &[(i64, f64)], start: i64, end: i64) -> Window<'_> {
        Window {
            samples,
            start,
            end,
            eval_time: end,
            resets: None,
        }
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // 15 s apart, 0..=4 increments of 15: exactly 1/s, window 60 s, samples at 0..60.
        let s: Vec<(i64, f64)> = (0..5).map(|i| (i * 15_000, i as f64 * 15.0)).collect();
        assert_eq!(apply("rate", &w(&s, 0, 60_000), &[]), Some(1.0));
        assert_eq!(apply("increase", &w(&s, 0, 60_000), &[]), Some(60.0));
        // A reset adds the value before it.
        let r = [(0, 10.0), (15_000, 20.0), (30_000, 5.0)];
        // Raw increase 10 + (5 + 20 - 20) = 15 over 30 s, extrapolated to 30 s: no change.
        assert_eq!(apply("increase", &w(&r, 0, 30_000), &[]), Some(15.0));
        assert_eq!(apply("resets", &w(&r, 0, 30_000), &[]), Some(1.0));
        // Counter starting near zero: the start is not extrapolated below zero.
        let z = [(30_000, 1.0), (45_000, 16.0), (60_000, 31.0)];
        let inc = apply("increase", &w(&z, 0, 60_000), &[]).unwrap();
        assert!((inc - 31.0).abs() < 1e-9, "{inc}");
        assert_eq!(apply("rate", &w(&z[..1], 0, 60_000), &[]), None);
    }

    /// With the resets found once per series, `rate` and `increase` give the very bits
    /// they give scanning each window: the same values added in the same order, for every
    /// window of a counter that resets often (including at a window's first sample).
    #[test]
    fn resets_found_once_give_the_same_bits_as_a_scan_of_each_window() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut value = 0.0;
        let samples: Vec<(i64, f64)> = (0..500)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                value = if x.is_multiple_of(7) {
                    (x % 1000) as f64 / 7.0
                } else {
                    value + (x % 10_000) as f64 / 3.0
                };
                (i * 15_000, value)
            })
            .collect();
        let at = Resets::find(&samples);
        assert!(at.len() > 50, "the series resets often: {}", at.len());
        for first in 0..samples.len() {
            for len in [1, 2, 3, 7, 20, 41] {
                let window = &samples[first..(first + len).min(samples.len())];
                let (start, end) = (window[0].0 - 7_000, window[window.len() - 1].0 + 3_000);
                let mut found = w(window, start, end);
                found.resets = Some(Resets { at: &at, first });
                for f in ["rate", "increase"] {
                    let scanned = apply(f, &w(window, start, end), &[]).map(f64::to_bits);
                    assert_eq!(
                        apply(f, &found, &[]).map(f64::to_bits),
                        scanned,
                        "{f} {first}+{len}"
                    );
                }
            }
        }
    }

    #[test]
    fn over_time_functions() {
        let s = [(0, 1.0), (1000, 3.0), (2000, 2.0), (3000, 4.0)];
        let win = w(&s, 0, 3000);
        assert_eq!(apply("avg_over_time", &win, &[]), Some(2.5));
        assert_eq!(apply("max_over_time", &win, &[]), Some(4.0));
        assert_eq!(apply("count_over_time", &win, &[]), Some(4.0));
        assert_eq!(apply("quantile_over_time", &win, &[0.5]), Some(2.5));
        assert_eq!(apply("stdvar_over_time", &win, &[]), Some(1.25));
        assert_eq!(apply("changes", &win, &[]), Some(3.0));
        assert_eq!(apply("irate", &win, &[]), Some(2.0));
        assert_eq!(apply("idelta", &win, &[]), Some(2.0));
        let line = [(0, 1.0), (1000, 2.0), (2000, 3.0)];
        assert_eq!(apply("deriv", &w(&line, 0, 2000), &[]), Some(1.0));
        assert_eq!(
            apply("predict_linear", &w(&line, 0, 2000), &[10.0]),
            Some(13.0)
        );
    }
}
