//! Aggregation operators (`sum by (...)`, `topk`, `quantile`, `count_values`, ...), per step
//! over the series of each group, as Prometheus 2.x computes them.

use std::collections::BTreeMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::{EvalError, Evaluator, Result, exec};
use super::range_fns::{avg, quantile, variance};
use super::value::{Grid, Labels, Series, SeriesBuilder, Value, by_value, format_value};

/// The group a series falls in.
fn group_key(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::new(),
        Some(LabelModifier::Include(keep)) => labels
            .iter()
            .filter(|(k, _)| keep.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(drop)) => labels
            .iter()
            .filter(|(k, _)| *k != "__name__" && !drop.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

impl Evaluator {
    /// Evaluates an aggregation.
    pub async fn aggregate(&mut self, agg: &AggregateExpr, grid: Grid) -> Result<Value> {
        let op = agg.op.to_string();
        let n = grid.len();
        let mut param_scalar = Vec::new();
        let mut param_string = String::new();
        match op.as_str() {
            "topk" | "bottomk" | "quantile" => {
                let Some(p) = &agg.param else {
                    return exec(format!("{op} needs a parameter"));
                };
                param_scalar = self.scalar_arg(p, grid).await?;
            }
            "count_values" => {
                let Some(p) = &agg.param else {
                    return exec("count_values needs a label name");
                };
                param_string = Self::string_arg(p)?;
                if !obs_runtime::labels::valid_label_name(&param_string) {
                    return exec(format!("invalid label name {param_string:?}"));
                }
            }
            "sum" | "avg" | "min" | "max" | "count" | "group" | "stddev" | "stdvar" => {}
            other => {
                return exec(format!("aggregation {other} is not supported by obs yet"));
            }
        }
        let input = self.vector_arg(&agg.expr, grid).await?;
        let keys: Vec<Labels> = input
            .iter()
            .map(|s| group_key(&s.labels, &agg.modifier))
            .collect();
        // Groups in a stable order, each with the input series it holds.
        let mut groups: BTreeMap<&Labels, Vec<usize>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            groups.entry(k).or_default().push(i);
        }
        if n == 1 && (op == "topk" || op == "bottomk") {
            return Ok(Value::Vector(ranked_instant(
                &input,
                &keys,
                param_scalar[0],
                op == "topk",
            )));
        }
        let mut out = SeriesBuilder::new(n);
        for (key, members) in &groups {
            #[allow(clippy::needless_range_loop)] // steps index several per-step arrays
            for step in 0..n {
                let present: Vec<(usize, f64)> = members
                    .iter()
                    .filter_map(|&m| input[m].points[step].map(|v| (m, v)))
                    .collect();
                if present.is_empty() {
                    continue;
                }
                let values = || present.iter().map(|&(_, v)| v);
                let value = match op.as_str() {
                    "sum" => values().sum(),
                    "avg" => avg(values()),
                    "count" => present.len() as f64,
                    "group" => 1.0,
                    "min" => {
                        values().fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m })
                    }
                    "max" => {
                        values().fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m })
                    }
                    "stddev" => variance(values()).sqrt(),
                    "stdvar" => variance(values()),
                    "quantile" => quantile(param_scalar[step], values().collect()),
                    "topk" | "bottomk" => {
                        let k = param_scalar[step];
                        if k.is_nan() || k < 1.0 {
                            continue;
                        }
                        let mut ranked = present.clone();
                        ranked.sort_by(|a, b| by_value(Some(a.1), Some(b.1), op == "topk"));
                        for &(m, v) in ranked.iter().take(k.min(1e9) as usize) {
                            out.set(input[m].labels.clone(), step, v)
                                .map_err(EvalError::Execution)?;
                        }
                        continue;
                    }
                    "count_values" => {
                        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                        for v in values() {
                            *counts.entry(format_value(v)).or_default() += 1;
                        }
                        for (value, count) in counts {
                            let mut labels = (*key).clone();
                            labels.insert(param_string.clone(), value);
                            out.set(labels, step, count as f64)
                                .map_err(EvalError::Execution)?;
                        }
                        continue;
                    }
                    _ => unreachable!("checked above"),
                };
                out.set((*key).clone(), step, value)
                    .map_err(EvalError::Execution)?;
            }
        }
        Ok(Value::Vector(out.finish()))
    }
}

/// An instant `topk`/`bottomk` answer in the order Prometheus 2.x lists it: groups in the
/// order their first series comes in the input, and in each group its `k` series by value
/// (largest first for topk, smallest first for bottomk, NaN last).
fn ranked_instant(input: &[Series], keys: &[Labels], k: f64, top: bool) -> Vec<Series> {
    if k.is_nan() || k < 1.0 {
        return Vec::new();
    }
    let mut position: BTreeMap<&Labels, usize> = BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if input[i].points[0].is_none() {
            continue;
        }
        let g = *position.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    let mut out = Vec::new();
    for mut members in groups {
        members.sort_by(|&a, &b| by_value(input[a].points[0], input[b].points[0], top));
        out.extend(
            members
                .into_iter()
                .take(k.min(1e9) as usize)
                .map(|m| input[m].clone()),
        );
    }
    out
}
