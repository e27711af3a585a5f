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
    formatted(v, write_value)
}

/// [`format_value`] appended to `out` (an answer of many points allocates nothing per
/// point): Go's `FormatFloat(v, 'f', -1, 64)`, as Prometheus writes scalars and
/// `count_values` labels, and Loki its samples.
pub fn write_value(out: &mut String, v: f64) {
    write_float(out, v, false);
}

/// [`write_sample_value`] as a string (exemplar values are written so too).
pub fn format_sample_value(v: f64) -> String {
    formatted(v, write_sample_value)
}

/// A value of a vector or matrix answer as Prometheus 2.42's API writes it (its jsoniter
/// `marshalValue`): as [`write_value`], but with an exponent (`1e+21`, `-1.5e-07`) when the
/// magnitude is under 1e-6 or at least 1e21.
pub fn write_sample_value(out: &mut String, v: f64) {
    write_float(out, v, true);
}

fn formatted(v: f64, write: fn(&mut String, f64)) -> String {
    let mut out = String::new();
    write(&mut out, v);
    out
}

/// [`write_value`], or with `sample` [`write_sample_value`].
fn write_float(out: &mut String, v: f64, sample: bool) {
    if written_plainly(out, v) {
        return;
    }
    let Some(d) = Decimal::of(out, v) else {
        return;
    };
    let abs = v.abs();
    if sample && abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        d.exponential(out, 'e');
    } else {
        d.positional(out);
    }
}

/// Writes `v` when its magnitude is in `[1e-5, 1e16)`, where ryu writes it positionally
/// (`12.5`, `0.00012`, `3.0`) and both forms above are that without a trailing `.0`: most
/// values, without taking the digits apart. `false` (nothing written) for the others.
fn written_plainly(out: &mut String, v: f64) -> bool {
    if !(1e-5..1e16).contains(&v.abs()) {
        return false;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    out.push_str(text.strip_suffix(".0").unwrap_or(text));
    true
}

/// A finite float's shortest digits that read back as it (ryu's; of two as near, the even
/// one, as Go's `strconv` chooses where Rust's `{}` takes the higher): `0.digits × 10^point`.
/// ryu is used over `fmt` for speed too: `fmt` took a quarter of `obs`'s CPU answering
/// range queries of many points.
pub struct Decimal {
    /// Whether the value is negative (`-0.0` too).
    pub negative: bool,
    digits: [u8; 17],
    len: usize,
    point: i32,
}

impl Decimal {
    /// The digits of `v`; `None` after writing `NaN`, `+Inf` or `-Inf` to `out`.
    fn of(out: &mut String, v: f64) -> Option<Decimal> {
        if v.is_nan() {
            out.push_str("NaN");
            return None;
        }
        if v.is_infinite() {
            out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
            return None;
        }
        Decimal::new(v)
    }

    /// The digits of `v`, `None` for NaN and the infinities.
    pub fn new(v: f64) -> Option<Decimal> {
        if !v.is_finite() {
            return None;
        }
        let mut buf = ryu::Buffer::new();
        // `[-]int[.frac][e[-]exp]`.
        let text = buf.format_finite(v);
        let (negative, text) = match text.strip_prefix('-') {
            Some(t) => (true, t),
            None => (false, text),
        };
        let (mantissa, exp) = match text.split_once('e') {
            Some((m, e)) => (m, e.parse::<i32>().expect("ryu writes a decimal exponent")),
            None => (text, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut d = Decimal {
            negative,
            digits: [0; 17],
            len: 0,
            point: int.len() as i32 + exp,
        };
        for b in int.bytes().chain(frac.bytes()) {
            if d.len == 0 && b == b'0' {
                // A leading zero moves the point instead.
                d.point -= 1;
                continue;
            }
            d.digits[d.len] = b;
            d.len += 1;
        }
        while d.len > 0 && d.digits[d.len - 1] == b'0' {
            d.len -= 1;
        }
        if d.len == 0 {
            d.digits[0] = b'0';
            d.len = 1;
            d.point = 1;
        }
        Some(d)
    }

    /// The significant digits, no leading or trailing zero (`0` for zero).
    pub fn digits(&self) -> &str {
        std::str::from_utf8(&self.digits[..self.len]).expect("ASCII digits")
    }

    /// The exponent of the value in scientific notation (`d.ddd × 10^exponent`).
    pub fn exponent(&self) -> i32 {
        self.point - 1
    }

    /// `123.45`, `0.00012`, `12000`: Go's `'f'` format.
    pub fn positional(&self, out: &mut String) {
        if self.negative {
            out.push('-');
        }
        let (digits, len) = (self.digits(), self.len as i32);
        if self.point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-self.point) as usize));
            out.push_str(digits);
        } else if self.point >= len {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', (self.point - len) as usize));
        } else {
            out.push_str(&digits[..self.point as usize]);
            out.push('.');
            out.push_str(&digits[self.point as usize..]);
        }
    }

    /// `1.2345e+02`, `1.2e-04`, `5e-324`: Go's `'e'` format (`letter` `E` for `'E'`; an
    /// exponent of two digits at least).
    pub fn exponential(&self, out: &mut String, letter: char) {
        if self.negative {
            out.push('-');
        }
        let digits = self.digits();
        out.push_str(&digits[..1]);
        if self.len > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let exp = self.exponent();
        out.push(letter);
        out.push(if exp < 0 { '-' } else { '+' });
        if exp.abs() < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(exp.abs()));
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
    let (secs, frac) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    out.push_str(itoa::Buffer::new().format(secs));
    if frac == 0 {
        return;
    }
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let kept = if frac % 100 == 0 {
        1
    } else if frac % 10 == 0 {
        2
    } else {
        3
    };
    out.push('.');
    out.push_str(std::str::from_utf8(&digits[..kept]).expect("ASCII digits"));
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
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(1.5e-7), "0.00000015");
        assert_eq!(format_value(-1.25e17), "-125000000000000000");
        assert_eq!(format_time(-500), "-1.5");
    }

    /// Every finite float is written with the shortest digits that read back as it, with no
    /// exponent, as Rust's `{}` writes it; where two last digits are as near (the value is
    /// exactly half-way), the even one, as Go's `FormatFloat(v, 'f', -1, 64)` in
    /// Prometheus's answers does (Rust's `{}` takes the higher one). Over random bit
    /// patterns, decimals as metrics carry them, the powers of ten around every exponent
    /// form, and the extremes.
    #[test]
    // The ties are written out exactly: their last digits are the point.
    #[allow(clippy::excessive_precision)]
    fn values_are_written_as_go_writes_them() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut values = vec![
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            5e-324,
            1.0 / 3.0,
        ];
        for e in -330..=310 {
            values.push(10f64.powi(e));
            values.push(-1.234_567_89 * 10f64.powi(e));
        }
        for _ in 0..200_000 {
            let bits = next();
            values.push(f64::from_bits(bits));
            values.push((bits % 1_000_000_000) as f64 / 1000.0);
            values.push((bits % 100_000) as f64 * 0.1);
        }
        // Both sides of where ryu and the answers change form.
        for edge in [1e-6f64, 1e-5, 1e16, 1e21] {
            for v in [edge, -edge] {
                let (mut down, mut up) = (v, v);
                for _ in 0..3 {
                    down = down.next_down();
                    up = up.next_up();
                    values.extend([down, up]);
                }
            }
        }
        let mut ties = 0;
        for v in values.into_iter().filter(|v| v.is_finite()) {
            let mut out = String::new();
            write_value(&mut out, v);
            // The digits taken apart give the same text (the shortcut skips them).
            let mut apart = String::new();
            Decimal::new(v).expect("finite").positional(&mut apart);
            assert_eq!(apart, out, "{v:e}");
            let fmt = format!("{v}");
            if out == fmt {
                continue;
            }
            // A tie: as short as `{}`'s, as near to v, and even where `{}`'s is odd.
            assert_eq!(out.parse::<f64>(), Ok(v), "{v:e}: {out}");
            assert_eq!(out.len(), fmt.len(), "{v:e}: {out} against {fmt}");
            let (ours, theirs) = (out.as_bytes(), fmt.as_bytes());
            let last = ours.len() - 1;
            assert_eq!(ours[..last], theirs[..last], "{v:e}: {out} against {fmt}");
            assert_eq!((ours[last] - b'0') % 2, 0, "{v:e}: {out}");
            assert_eq!(theirs[last], ours[last] + 1, "{v:e}: {out} against {fmt}");
            ties += 1;
        }
        assert!(ties > 0, "the values include ties");
        assert_eq!(format_value(2115347345748811.25), "2115347345748811.2");
        assert_eq!(format_value(233115890514796.125), "233115890514796.12");
    }

    /// Vector and matrix values as Prometheus 2.42 writes them: with an exponent under 1e-6
    /// and from 1e21 on, the same digits either way.
    #[test]
    // The ties are written out exactly: their last digits are the point.
    #[allow(clippy::excessive_precision)]
    fn sample_values_take_an_exponent_at_the_extremes() {
        let sample = |v: f64| {
            let mut out = String::new();
            write_sample_value(&mut out, v);
            out
        };
        for (v, want) in [
            (1e21, "1e+21"),
            (-1.5e-7, "-1.5e-07"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (9.99e-7, "9.99e-07"),
            (1.234_567e100, "1.234567e+100"),
            (1e-6, "0.000001"),
            (1e20, "100000000000000000000"),
            (0.0, "0"),
            (-0.0, "-0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (2115347345748811.25, "2115347345748811.2"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(sample(v), want, "{v:e}");
        }
        // Either form reads back as the value, with the same digits.
        for e in -330..=310 {
            let v = std::f64::consts::PI * 10f64.powi(e);
            if v.is_finite() && v != 0.0 {
                assert_eq!(sample(v).parse::<f64>(), Ok(v), "{v:e}");
            }
        }
    }

    #[test]
    fn times_are_written_with_up_to_three_decimals() {
        for ms in [
            0i64, 1, 10, 100, 999, 1000, 1001, 1010, 1100, -1, -999, -1000, -1001,
        ] {
            let (secs, frac) = (ms.div_euclid(1000), ms.rem_euclid(1000));
            let decimals = format!("{:03}", frac);
            let decimals = decimals.trim_end_matches('0');
            let want = if decimals.is_empty() {
                secs.to_string()
            } else {
                format!("{secs}.{decimals}")
            };
            assert_eq!(format_time(ms), want, "{ms}");
        }
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
