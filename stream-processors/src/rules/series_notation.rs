//! The `input_series` notation of `promtool test rules` files, which `obs rules test` will
//! read: a series as `metric{label="value", …}` and its values as a space-separated list
//! with the expanding forms Prometheus documents:
//!
//! * `a+bxn`: `a`, then `n` further samples incrementing by `b` (`-2+4x3` → `-2 2 6 10`);
//! * `a-bxn`: the same, decrementing (`1-2x4` → `1 -1 -3 -5 -7`);
//! * `axn`: `a` repeated `n + 1` times (`1x4` → `1 1 1 1 1`);
//! * `_`: a missing sample; `_xn`: `n` missing samples;
//! * `stale`: a stale marker.
//!
//! Sample `i` of a series is at `i × interval` from the test's start.

use obs_promql::Labels;

/// One step of an input series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point {
    /// A sample.
    Value(f64),
    /// No sample at this step.
    Missing,
    /// A stale marker at this step.
    Stale,
}

/// Expands a values string into one point per step.
pub fn expand(values: &str) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for item in values.split_whitespace() {
        expand_item(item, &mut out).map_err(|e| format!("{e} in {values:?}"))?;
    }
    Ok(out)
}

fn expand_item(item: &str, out: &mut Vec<Point>) -> Result<(), String> {
    match item {
        "_" => {
            out.push(Point::Missing);
            return Ok(());
        }
        "stale" => {
            out.push(Point::Stale);
            return Ok(());
        }
        _ => {}
    }
    let Some((head, times)) = item.rsplit_once('x') else {
        out.push(Point::Value(number(item)?));
        return Ok(());
    };
    let n: u64 = times
        .parse()
        .map_err(|_| format!("invalid repetition count {times:?} in {item:?}"))?;
    if head == "_" {
        out.extend(std::iter::repeat_n(Point::Missing, n as usize));
        return Ok(());
    }
    // `a+b` or `a-b`: the operator is the last sign that is not at the start or after an
    // exponent's `e`.
    let bytes = head.as_bytes();
    let op = (1..bytes.len())
        .rev()
        .find(|&i| matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    let (start, step) = match op {
        Some(i) => {
            let b = number(&head[i + 1..])?;
            (number(&head[..i])?, if bytes[i] == b'-' { -b } else { b })
        }
        None => (number(head)?, 0.0),
    };
    // Prometheus adds the increment repeatedly (floating point as it does).
    let mut v = start;
    out.push(Point::Value(v));
    for _ in 0..n {
        v += step;
        out.push(Point::Value(v));
    }
    Ok(())
}

fn number(s: &str) -> Result<f64, String> {
    match s {
        "Inf" | "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("invalid value {s:?}")),
    }
}

/// The labels of a series written as `metric{label="value", …}` (or `{__name__="m", …}`).
pub fn labels(series: &str) -> Result<Labels, String> {
    let expr = obs_promql::parse(series).map_err(|e| format!("series {series:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!(
            "series {series:?} is not a metric name with labels"
        ));
    };
    let mut out = Labels::new();
    if let Some(name) = vs.name {
        out.insert("__name__".into(), name);
    }
    for m in vs.matchers.matchers {
        if m.op != promql_parser::label::MatchOp::Equal {
            return Err(format!(
                "series {series:?}: labels are set with =, not {}",
                m.op
            ));
        }
        out.insert(m.name, m.value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Point::{Missing, Stale, Value};
    use super::*;

    fn values(s: &str) -> Vec<Point> {
        expand(s).unwrap()
    }

    #[test]
    fn the_documented_examples_expand_as_promtool_expands_them() {
        let v = |xs: &[f64]| xs.iter().map(|&x| Value(x)).collect::<Vec<_>>();
        assert_eq!(values("-2+4x3"), v(&[-2.0, 2.0, 6.0, 10.0]));
        assert_eq!(values(" 1-2x4"), v(&[1.0, -1.0, -3.0, -5.0, -7.0]));
        assert_eq!(values(" 1x4"), v(&[1.0; 5]));
        assert_eq!(
            values(" 1 _x3 stale"),
            vec![Value(1.0), Missing, Missing, Missing, Stale]
        );
        assert_eq!(
            values("0+10x2 _ 100"),
            [v(&[0.0, 10.0, 20.0]), vec![Missing], v(&[100.0])].concat()
        );
        assert_eq!(values("1e3+1e-1x1"), v(&[1000.0, 1000.1]));
        assert_eq!(values("-1e-3-1x1"), v(&[-0.001, -1.001]));
        assert_eq!(values("Inf -Inf"), v(&[f64::INFINITY, f64::NEG_INFINITY]));
        assert!(matches!(values("NaN")[0], Value(x) if x.is_nan()));
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            expand("1 2 x").unwrap_err(),
            "invalid repetition count \"\" in \"x\" in \"1 2 x\""
        );
        assert!(
            expand("1+1xq")
                .unwrap_err()
                .contains("invalid repetition count \"q\"")
        );
        assert!(expand("abc").unwrap_err().contains("invalid value \"abc\""));
    }

    #[test]
    fn series_labels_come_from_the_selector_syntax() {
        let l = labels(r#"up{job="api", instance="a:9100"}"#).unwrap();
        assert_eq!(l.get("__name__").map(String::as_str), Some("up"));
        assert_eq!(l.get("instance").map(String::as_str), Some("a:9100"));
        assert!(
            labels(r#"up{job=~"a.*"}"#)
                .unwrap_err()
                .contains("labels are set with =")
        );
    }
}
