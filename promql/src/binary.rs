//! Binary operators: arithmetic and comparisons between scalars and vectors, vector
//! matching (`on`/`ignoring`, `group_left`/`group_right`) and the set operators
//! `and`/`or`/`unless`, with Prometheus's result labels and errors.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{EvalError, Evaluator, Result, exec};
use super::value::{Grid, Labels, Series, SeriesBuilder, Value, drop_name};

/// The result of `l op r` and whether a comparison keeps it.
fn elem(op: &str, l: f64, r: f64) -> (f64, bool) {
    match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "^" => (l.powf(r), true),
        "%" => (l % r, true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

/// Arithmetic drops the metric name (`atan2` keeps it in Prometheus 2.x).
fn drops_name(op: &str) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "^" | "%")
}

/// The labels two series are matched on.
fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> Vec<(String, String)> {
    match matching {
        Some(LabelModifier::Include(on)) => on
            .labels
            .iter()
            .map(|n| (n.clone(), labels.get(n).cloned().unwrap_or_default()))
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        Some(LabelModifier::Exclude(ignoring)) => labels
            .iter()
            .filter(|(k, _)| *k != "__name__" && !ignoring.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn show(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// The labels of `lhs op rhs` (Prometheus's `resultMetric`).
fn result_labels(
    lhs: &Labels,
    rhs: &Labels,
    op: &str,
    matching: &Option<LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
) -> Labels {
    let mut out = lhs.clone();
    if drops_name(op) || return_bool {
        out.remove("__name__");
    }
    if matches!(card, VectorMatchCardinality::OneToOne) {
        match matching {
            Some(LabelModifier::Include(on)) => out.retain(|k, _| on.labels.contains(k)),
            Some(LabelModifier::Exclude(ign)) => out.retain(|k, _| !ign.labels.contains(k)),
            None => {}
        }
    }
    let include: &[String] = match card {
        VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => &l.labels,
        _ => &[],
    };
    for name in include {
        match rhs.get(name) {
            Some(v) if !v.is_empty() => {
                out.insert(name.clone(), v.clone());
            }
            _ => {
                out.remove(name);
            }
        }
    }
    out
}

impl Evaluator {
    /// Evaluates `lhs op rhs`.
    pub async fn binary(&mut self, b: &BinaryExpr, grid: Grid) -> Result<Value> {
        let op = b.op.to_string();
        let lhs = self.eval(&b.lhs, grid).await?;
        let rhs = self.eval(&b.rhs, grid).await?;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let n = grid.len();
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
                l.iter()
                    .zip(&r)
                    .map(|(&l, &r)| {
                        let (v, keep) = elem(&op, l, r);
                        if is_comparison(&op) {
                            if keep { 1.0 } else { 0.0 }
                        } else {
                            v
                        }
                    })
                    .collect(),
            )),
            (Value::Vector(v), Value::Scalar(s)) => vector_scalar(&op, v, &s, false, return_bool),
            (Value::Scalar(s), Value::Vector(v)) => vector_scalar(&op, v, &s, true, return_bool),
            (Value::Vector(l), Value::Vector(r)) => {
                let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
                let card = b
                    .modifier
                    .as_ref()
                    .map(|m| m.card.clone())
                    .unwrap_or(VectorMatchCardinality::OneToOne);
                match op.as_str() {
                    "and" | "or" | "unless" => set_op(&op, l, r, &matching, n),
                    _ => vector_vector(&op, l, r, &matching, &card, return_bool, n),
                }
            }
            (l, r) => exec(format!(
                "binary operator {op} between {} and {} is not allowed",
                l.type_name(),
                r.type_name()
            )),
        }
    }
}

fn vector_scalar(
    op: &str,
    series: Vec<Series>,
    scalar: &[f64],
    scalar_left: bool,
    return_bool: bool,
) -> Result<Value> {
    let mut b = SeriesBuilder::new(scalar.len());
    for s in series {
        let points = s
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let x = (*p)?;
                let (l, r) = if scalar_left {
                    (scalar[i], x)
                } else {
                    (x, scalar[i])
                };
                let (mut v, keep) = elem(op, l, r);
                // A comparison keeps the vector's value, whichever side it is on.
                if is_comparison(op) && scalar_left {
                    v = r;
                }
                if return_bool {
                    Some(if keep { 1.0 } else { 0.0 })
                } else {
                    keep.then_some(v)
                }
            })
            .collect();
        let labels = if drops_name(op) || return_bool {
            drop_name(s.labels)
        } else {
            s.labels
        };
        b.add(Series { labels, points })
            .map_err(EvalError::Execution)?;
    }
    Ok(Value::Vector(b.finish()))
}

fn set_op(
    op: &str,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    matching: &Option<LabelModifier>,
    n: usize,
) -> Result<Value> {
    let lsig: Vec<_> = lhs.iter().map(|s| signature(&s.labels, matching)).collect();
    let rsig: Vec<_> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
    let mut out = SeriesBuilder::new(n);
    for step in 0..n {
        let present =
            |v: &[Series], sigs: &[Vec<(String, String)>]| -> HashSet<Vec<(String, String)>> {
                v.iter()
                    .zip(sigs)
                    .filter(|(s, _)| s.points[step].is_some())
                    .map(|(_, sig)| sig.clone())
                    .collect()
            };
        let (right, left) = (present(&rhs, &rsig), present(&lhs, &lsig));
        for (s, sig) in lhs.iter().zip(&lsig) {
            let Some(v) = s.points[step] else { continue };
            let keep = match op {
                "and" => right.contains(sig),
                "unless" => !right.contains(sig),
                _ => true,
            };
            if keep {
                out.set(s.labels.clone(), step, v)
                    .map_err(EvalError::Execution)?;
            }
        }
        if op == "or" {
            for (s, sig) in rhs.iter().zip(&rsig) {
                let Some(v) = s.points[step] else { continue };
                if !left.contains(sig) {
                    out.set(s.labels.clone(), step, v)
                        .map_err(EvalError::Execution)?;
                }
            }
        }
    }
    Ok(Value::Vector(out.finish()))
}

fn vector_vector(
    op: &str,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    matching: &Option<LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
    n: usize,
) -> Result<Value> {
    // One-to-many is many-to-one with the sides swapped (values swapped back below).
    let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let msig: Vec<_> = many
        .iter()
        .map(|s| signature(&s.labels, matching))
        .collect();
    let osig: Vec<_> = one.iter().map(|s| signature(&s.labels, matching)).collect();
    let on_labels = |l: &Labels| -> Labels {
        match matching {
            Some(LabelModifier::Include(on)) => l
                .iter()
                .filter(|(k, _)| on.labels.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Some(LabelModifier::Exclude(ign)) => l
                .iter()
                .filter(|(k, _)| *k != "__name__" && !ign.labels.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => drop_name(l.clone()),
        }
    };
    let mut labels_cache: HashMap<(usize, usize), Labels> = HashMap::new();
    let mut out = SeriesBuilder::new(n);
    for step in 0..n {
        let mut right: HashMap<&Vec<(String, String)>, usize> = HashMap::new();
        for (j, s) in one.iter().enumerate() {
            if s.points[step].is_none() {
                continue;
            }
            if let Some(&prev) = right.get(&osig[j]) {
                let side = if swapped { "left" } else { "right" };
                return exec(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    show(&on_labels(&s.labels)),
                    show(&s.labels),
                    show(&one[prev].labels)
                ));
            }
            right.insert(&osig[j], j);
        }
        let mut matched: HashMap<&Vec<(String, String)>, HashSet<Labels>> = HashMap::new();
        for (i, s) in many.iter().enumerate() {
            let Some(lv) = s.points[step] else { continue };
            let Some(&j) = right.get(&msig[i]) else {
                continue;
            };
            let rv = one[j].points[step].expect("present");
            let (vl, vr) = if swapped { (rv, lv) } else { (lv, rv) };
            let (mut value, keep) = elem(op, vl, vr);
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let labels = labels_cache
                .entry((i, j))
                .or_insert_with(|| {
                    result_labels(&s.labels, &one[j].labels, op, matching, card, return_bool)
                })
                .clone();
            let seen = matched.entry(&msig[i]).or_default();
            if matches!(card, VectorMatchCardinality::OneToOne) {
                if !seen.is_empty() {
                    return exec(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    );
                }
            } else if seen.contains(&labels) {
                return exec(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                );
            }
            seen.insert(labels.clone());
            out.set(labels, step, value).map_err(EvalError::Execution)?;
        }
    }
    Ok(Value::Vector(out.finish()))
}
