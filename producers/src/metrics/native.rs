//! Exponential-bucket ("native") histograms as classic cumulative buckets, so every
//! histogram is stored and queried one way (`<name>_bucket{le=...}`, `_sum`, `_count`).
//!
//! Bucket `i` of resolution `schema` covers `(base^(i-1), base^i]` with
//! `base = 2^(2^-schema)` (mirrored for negative buckets); the zero bucket covers
//! `[-zero_threshold, zero_threshold]`. Only populated buckets become `le` bounds, which
//! `histogram_quantile` handles like any other bucket layout.

/// A native histogram in absolute (not delta-encoded) form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exponential {
    /// Resolution (OTLP calls it `scale`).
    pub schema: i32,
    /// Half-width of the zero bucket.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: f64,
    /// `(bucket index, count)` of positive buckets.
    pub positive: Vec<(i32, f64)>,
    /// `(bucket index, count)` of negative buckets.
    pub negative: Vec<(i32, f64)>,
    /// All observations.
    pub count: f64,
    /// Sum of observations.
    pub sum: f64,
}

impl Exponential {
    /// Cumulative `(upper bound, count)` pairs ascending, ending with `(+Inf, count)`.
    pub fn cumulative(&self) -> Vec<(f64, f64)> {
        let bound = |i: i64| upper_bound(i, self.schema);
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for &(i, c) in &self.negative {
            buckets.push((-bound(i64::from(i) - 1), c));
        }
        if self.zero_count > 0.0 || self.zero_threshold > 0.0 {
            buckets.push((self.zero_threshold, self.zero_count));
        }
        for &(i, c) in &self.positive {
            buckets.push((bound(i64::from(i)), c));
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out: Vec<(f64, f64)> = Vec::with_capacity(buckets.len() + 1);
        let mut total = 0.0;
        for (le, c) in buckets {
            total += c;
            match out.last_mut() {
                Some(last) if last.0 == le => last.1 = total,
                _ => out.push((le, total)),
            }
        }
        out.push((f64::INFINITY, self.count.max(total)));
        out
    }
}

/// `2^(i / 2^schema)`, exact at powers of two (as Prometheus computes the bounds). Any index
/// is accepted: powers past f64's range are 0 or +Inf (fuzzing found the shifts overflowing
/// on extreme indices and schemas).
fn upper_bound(i: i64, schema: i32) -> f64 {
    // 2^±1100 is already 0 or +Inf as an f64.
    let pow2 = |e: i64| 2f64.powi(e.clamp(-1100, 1100) as i32);
    if schema <= 0 {
        pow2(i.saturating_mul(1i64 << (-schema).min(40)))
    } else {
        let n = 1i64 << schema.min(40);
        pow2(i.div_euclid(n)) * 2f64.powf(i.rem_euclid(n) as f64 / n as f64)
    }
}

/// Expands delta-encoded spans (`(offset, length)`) and counts into `(index, count)`.
pub fn expand_spans(spans: &[(i32, u32)], counts: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(counts.len());
    let mut index = 0i32;
    let mut counts = counts.iter();
    for (n, &(offset, length)) in spans.iter().enumerate() {
        index = if n == 0 {
            offset
        } else {
            index.saturating_add(offset)
        };
        for _ in 0..length {
            let Some(&c) = counts.next() else { return out };
            out.push((index, c));
            index = index.saturating_add(1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_zero_buckets_are_powers_of_two() {
        let h = Exponential {
            schema: 0,
            zero_threshold: 0.0,
            zero_count: 1.0,
            positive: vec![(0, 2.0), (1, 3.0), (3, 1.0)],
            negative: vec![(1, 4.0)],
            count: 11.0,
            sum: 0.0,
        };
        // Negative bucket 1 covers [-2, -1): upper bound -1.
        assert_eq!(
            h.cumulative(),
            vec![
                (-1.0, 4.0),
                (0.0, 5.0),
                (1.0, 7.0),
                (2.0, 10.0),
                (8.0, 11.0),
                (f64::INFINITY, 11.0)
            ]
        );
    }

    #[test]
    fn spans_give_absolute_indexes() {
        // Two runs: indexes 2,3 then (gap of 1) 5.
        let got = expand_spans(&[(2, 2), (1, 1)], &[1.0, 2.0, 3.0]);
        assert_eq!(got, vec![(2, 1.0), (3, 2.0), (5, 3.0)]);
    }

    #[test]
    fn finer_schemas_split_powers_of_two() {
        let h = Exponential {
            schema: 1,
            positive: vec![(1, 1.0), (2, 1.0)],
            count: 2.0,
            ..Default::default()
        };
        let c = h.cumulative();
        assert!((c[0].0 - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(c[1], (2.0, 2.0));
    }
}
