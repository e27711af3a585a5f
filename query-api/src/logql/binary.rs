//! Binary operators between metric queries and numbers, with Prometheus's (and Loki's)
//! rules: arithmetic on paired samples, comparisons that filter (or give 0/1 with `bool`),
//! `and`/`or`/`unless` on label sets, one-to-one pairing on all labels or on/ignoring a
//! list. Many-to-one pairing (`group_left`/`group_right`) is refused by the parser.

use std::collections::{BTreeMap, BTreeSet};

use super::ast::{BinOp, VectorMatching};
use super::eval::{Value, Vector, format_labels};
use super::pipeline::Labels;

/// `l op r`.
pub fn apply(
    op: BinOp,
    return_bool: bool,
    matching: Option<&VectorMatching>,
    l: Value,
    r: Value,
) -> Result<Value, String> {
    match (l, r) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            let (v, keep) = elem(op, a, b);
            Ok(Value::Scalar(if op.is_comparison() {
                f64::from(u8::from(keep))
            } else {
                v
            }))
        }
        (Value::Vector(v), Value::Scalar(s)) => {
            Ok(Value::Vector(with_scalar(op, return_bool, v, s, false)))
        }
        (Value::Scalar(s), Value::Vector(v)) => {
            Ok(Value::Vector(with_scalar(op, return_bool, v, s, true)))
        }
        (Value::Vector(a), Value::Vector(b)) => {
            vectors(op, return_bool, matching, a, b).map(Value::Vector)
        }
    }
}

/// The value of `l op r` and whether a comparison holds.
fn elem(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Eq => (l, l == r),
        BinOp::Ne => (l, l != r),
        BinOp::Gt => (l, l > r),
        BinOp::Ge => (l, l >= r),
        BinOp::Lt => (l, l < r),
        BinOp::Le => (l, l <= r),
        BinOp::And | BinOp::Or | BinOp::Unless => (l, true),
    }
}

fn with_scalar(op: BinOp, return_bool: bool, v: Vector, s: f64, scalar_left: bool) -> Vector {
    v.into_iter()
        .filter_map(|(labels, x)| {
            let (l, r) = if scalar_left { (s, x) } else { (x, s) };
            let (value, keep) = elem(op, l, r);
            if return_bool {
                return Some((labels, f64::from(u8::from(keep))));
            }
            // A comparison keeps the series' own value, whichever side it is on.
            let value = if op.is_comparison() { x } else { value };
            keep.then_some((labels, value))
        })
        .collect()
}

/// The labels that pair samples.
fn signature(labels: &Labels, m: Option<&VectorMatching>) -> Labels {
    match m {
        None => labels.clone(),
        Some(m) => labels
            .iter()
            .filter(|(k, _)| m.labels.contains(k) == m.on)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn vectors(
    op: BinOp,
    return_bool: bool,
    m: Option<&VectorMatching>,
    lhs: Vector,
    rhs: Vector,
) -> Result<Vector, String> {
    match op {
        BinOp::And | BinOp::Unless => {
            let right: BTreeSet<Labels> = rhs.iter().map(|(l, _)| signature(l, m)).collect();
            let want = op == BinOp::And;
            Ok(lhs
                .into_iter()
                .filter(|(l, _)| right.contains(&signature(l, m)) == want)
                .collect())
        }
        BinOp::Or => {
            let left: BTreeSet<Labels> = lhs.iter().map(|(l, _)| signature(l, m)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|(l, _)| !left.contains(&signature(l, m))),
            );
            Ok(out)
        }
        _ => {
            let mut right: BTreeMap<Labels, f64> = BTreeMap::new();
            for (l, v) in &rhs {
                let sig = signature(l, m);
                if right.insert(sig.clone(), *v).is_some() {
                    return Err(format!(
                        "found duplicate series for the match group {} on the right hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side",
                        format_labels(&sig)
                    ));
                }
            }
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for (l, v) in lhs {
                let sig = signature(&l, m);
                let Some(&r) = right.get(&sig) else { continue };
                if !seen.insert(sig.clone()) {
                    return Err(format!(
                        "multiple matches for labels {}: many-to-one matching must be explicit (group_left/group_right)",
                        format_labels(&sig)
                    ));
                }
                let (value, keep) = elem(op, v, r);
                let labels = if m.is_some() { sig } else { l };
                if return_bool {
                    out.push((labels, f64::from(u8::from(keep))));
                } else if keep {
                    out.push((labels, value));
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(p: &[(&str, &str)]) -> Labels {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn vector(p: &[(&[(&str, &str)], f64)]) -> Value {
        Value::Vector(p.iter().map(|(l, v)| (labels(l), *v)).collect())
    }

    #[test]
    fn arithmetic_comparisons_and_sets() {
        let a = vector(&[
            (&[("s", "x"), ("p", "1")], 4.0),
            (&[("s", "y"), ("p", "1")], 1.0),
        ]);
        let b = vector(&[
            (&[("s", "x"), ("p", "2")], 2.0),
            (&[("s", "z"), ("p", "2")], 5.0),
        ]);
        let on_s = VectorMatching {
            on: true,
            labels: vec!["s".into()],
        };
        assert_eq!(
            apply(BinOp::Div, false, Some(&on_s), a.clone(), b.clone()),
            Ok(vector(&[(&[("s", "x")], 2.0)]))
        );
        let ignoring_p = VectorMatching {
            on: false,
            labels: vec!["p".into()],
        };
        assert_eq!(
            apply(
                BinOp::Unless,
                false,
                Some(&ignoring_p),
                a.clone(),
                b.clone()
            ),
            Ok(vector(&[(&[("s", "y"), ("p", "1")], 1.0)]))
        );
        assert_eq!(
            apply(BinOp::Gt, false, None, a.clone(), Value::Scalar(2.0)),
            Ok(vector(&[(&[("s", "x"), ("p", "1")], 4.0)]))
        );
        assert_eq!(
            apply(BinOp::Gt, true, None, Value::Scalar(2.0), a.clone()),
            Ok(vector(&[
                (&[("s", "x"), ("p", "1")], 0.0),
                (&[("s", "y"), ("p", "1")], 1.0)
            ]))
        );
        assert_eq!(
            apply(
                BinOp::Pow,
                false,
                None,
                Value::Scalar(2.0),
                Value::Scalar(3.0)
            ),
            Ok(Value::Scalar(8.0))
        );
        assert!(apply(BinOp::Add, false, None, a.clone(), a.clone()).is_ok());
        let dup = vector(&[
            (&[("s", "x"), ("p", "1")], 1.0),
            (&[("s", "x"), ("p", "2")], 1.0),
        ]);
        assert!(
            apply(BinOp::Add, false, Some(&on_s), a, dup)
                .unwrap_err()
                .contains("many-to-many")
        );
    }
}
