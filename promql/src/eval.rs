//! The evaluator: walks promql-parser's syntax tree over a [`Grid`] of steps. Selectors
//! are read from a [`SeriesSource`]; per-step windows, functions, aggregations and vector
//! matching run here, over the samples read, with Prometheus 2.x semantics (5m lookback,
//! both window ends included, stale markers hide a series).

use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use super::SeriesSource;
use super::value::{Grid, Labels, RawSeries, Series, Value};

/// Why an evaluation failed, as the Prometheus API reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// The query cannot be evaluated (Prometheus's `execution`, 422).
    Execution(String),
    /// The sample source (ClickHouse) failed or could not be reached (`unavailable`, 503).
    Storage(String),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Execution(m) | EvalError::Storage(m) => f.write_str(m),
        }
    }
}

/// Shorthand for evaluation results.
pub type Result<T> = std::result::Result<T, EvalError>;

/// A boxed evaluation future (the evaluator recurses).
pub type EvalFuture<'a> = Pin<Box<dyn Future<Output = Result<Value>> + Send + 'a>>;

/// An execution error with `msg`.
pub fn exec<T>(msg: impl Into<String>) -> Result<T> {
    Err(EvalError::Execution(msg.into()))
}

/// Bit pattern of Prometheus's stale marker (a NaN that ends a series).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The stale marker as a value (what a store appends when a series ends).
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is the stale marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One query's evaluation state.
pub struct Evaluator {
    /// Where samples come from.
    pub storage: Box<dyn SeriesSource>,
    /// How far back an instant selector looks for a sample (ms).
    pub lookback: i64,
    /// Start of the query (`@ start()`), ms.
    pub query_start: i64,
    /// End of the query (`@ end()`), ms.
    pub query_end: i64,
    /// Subquery step when the query gives none (ms).
    pub default_step: i64,
}

/// An offset in ms (negative offsets look ahead).
pub fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

fn system_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The earliest start and latest end of some windows.
pub(crate) fn span(bounds: &[(i64, i64)]) -> Option<(i64, i64)> {
    Some((
        bounds.iter().map(|b| b.0).min()?,
        bounds.iter().map(|b| b.1).max()?,
    ))
}

/// Strips parentheses.
pub fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// A series' samples inside each step's window, and that window.
pub struct Windows {
    /// The series (stale markers removed).
    pub series: Vec<RawSeries>,
    /// Per step: `(start, end)` in ms, both inclusive.
    pub bounds: Vec<(i64, i64)>,
}

impl Evaluator {
    /// The reference time of step `t` for a node with `at`.
    fn at_time(&self, at: &Option<AtModifier>, t: i64) -> i64 {
        match at {
            None => t,
            Some(AtModifier::Start) => self.query_start,
            Some(AtModifier::End) => self.query_end,
            Some(AtModifier::At(st)) => system_ms(st),
        }
    }

    /// Each step's window `[end - range, end]`, `end` being the step (or `@` time) minus
    /// the offset.
    pub(crate) fn window_bounds(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        range: std::time::Duration,
        grid: Grid,
    ) -> Vec<(i64, i64)> {
        let (range, offset) = (range.as_millis() as i64, offset_ms(offset));
        grid.times()
            .map(|t| {
                let end = self.at_time(at, t) - offset;
                (end - range, end)
            })
            .collect()
    }

    /// Evaluates `expr` at every step of `grid`.
    pub fn eval<'a>(&'a mut self, expr: &'a Expr, grid: Grid) -> EvalFuture<'a> {
        Box::pin(async move {
            match expr {
                Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; grid.len()])),
                Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
                Expr::Paren(p) => self.eval(&p.expr, grid).await,
                Expr::Unary(u) => match self.eval(&u.expr, grid).await? {
                    Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                    Value::Vector(series) => Ok(Value::Vector(
                        series
                            .into_iter()
                            .map(|s| Series {
                                labels: super::value::drop_name(s.labels),
                                points: s.points.into_iter().map(|p| p.map(|x| -x)).collect(),
                            })
                            .collect(),
                    )),
                    other => exec(format!("unary minus of a {}", other.type_name())),
                },
                Expr::VectorSelector(vs) => {
                    Ok(Value::Vector(self.instant_selector(vs, grid, false).await?))
                }
                Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                    if grid.len() != 1 {
                        return exec(
                            "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector",
                        );
                    }
                    let w = self.windows(expr, grid).await?;
                    let (lo, hi) = w.bounds[0];
                    Ok(Value::Matrix(
                        w.series
                            .into_iter()
                            .map(|s| RawSeries {
                                labels: s.labels,
                                samples: s
                                    .samples
                                    .into_iter()
                                    .filter(|&(t, _)| t >= lo && t <= hi)
                                    .collect(),
                            })
                            .filter(|s| !s.samples.is_empty())
                            .collect(),
                    ))
                }
                Expr::Call(call) => self.call(call, grid).await,
                Expr::Aggregate(agg) => self.aggregate(agg, grid).await,
                Expr::Binary(b) => self.binary(b, grid).await,
                Expr::Extension(_) => exec("extension expressions are not supported"),
            }
        })
    }

    /// An instant selector: per step, the newest sample no older than the lookback (its
    /// timestamp in seconds instead of its value when `stamps`).
    pub async fn instant_selector(
        &mut self,
        vs: &VectorSelector,
        grid: Grid,
        stamps: bool,
    ) -> Result<Vec<Series>> {
        let offset = offset_ms(&vs.offset);
        let refs: Vec<i64> = grid
            .times()
            .map(|t| self.at_time(&vs.at, t) - offset)
            .collect();
        let (Some(&lo), Some(&hi)) = (refs.iter().min(), refs.iter().max()) else {
            return Ok(Vec::new());
        };
        let raw = self.storage.select(vs, lo - self.lookback, hi).await?;
        let mut out = Vec::with_capacity(raw.len());
        for s in raw {
            let points: Vec<Option<f64>> = refs
                .iter()
                .map(|&r| {
                    let idx = s.samples.partition_point(|&(t, _)| t <= r);
                    let (t, v) = *s.samples.get(idx.checked_sub(1)?)?;
                    if t < r - self.lookback || is_stale(v) {
                        return None;
                    }
                    Some(if stamps { t as f64 / 1000.0 } else { v })
                })
                .collect();
            if points.iter().any(Option::is_some) {
                out.push(Series {
                    labels: s.labels,
                    points,
                });
            }
        }
        Ok(out)
    }

    /// The windows a range argument (`x[5m]` or a subquery `expr[10m:1m]`) gives each step.
    pub async fn windows(&mut self, arg: &Expr, grid: Grid) -> Result<Windows> {
        match unwrap_parens(arg) {
            Expr::MatrixSelector(ms) => {
                let bounds = self.window_bounds(&ms.vs.at, &ms.vs.offset, ms.range, grid);
                let Some((lo, hi)) = span(&bounds) else {
                    return Ok(Windows {
                        series: Vec::new(),
                        bounds,
                    });
                };
                let mut series = self.storage.select(&ms.vs, lo, hi).await?;
                for s in &mut series {
                    s.samples.retain(|&(_, v)| !is_stale(v));
                }
                Ok(Windows { series, bounds })
            }
            Expr::Subquery(sq) => {
                let step = sq
                    .step
                    .map(|d| d.as_millis() as i64)
                    .filter(|&s| s > 0)
                    .unwrap_or(self.default_step);
                let bounds = self.window_bounds(&sq.at, &sq.offset, sq.range, grid);
                let Some((lo, hi)) = span(&bounds) else {
                    return Ok(Windows {
                        series: Vec::new(),
                        bounds,
                    });
                };
                // The first step after the earliest window start that is a multiple of the
                // subquery step (Prometheus aligns subquery steps to the epoch).
                let mut start = step * lo.div_euclid(step);
                if start < lo {
                    start += step;
                }
                let inner_grid = Grid {
                    start,
                    end: hi,
                    step,
                };
                let series = match self.eval(&sq.expr, inner_grid).await? {
                    Value::Vector(v) => v,
                    Value::Scalar(v) => vec![Series {
                        labels: Labels::new(),
                        points: v.into_iter().map(Some).collect(),
                    }],
                    other => {
                        return exec(format!(
                            "subquery is only allowed on instant vector, got {} in {arg}",
                            other.type_name()
                        ));
                    }
                };
                let series = series
                    .into_iter()
                    .map(|s| RawSeries {
                        labels: s.labels,
                        samples: s
                            .points
                            .iter()
                            .enumerate()
                            .filter_map(|(i, p)| p.map(|v| (inner_grid.time(i), v)))
                            .collect(),
                    })
                    .collect();
                Ok(Windows { series, bounds })
            }
            other => exec(format!("expected a range vector, got {other}")),
        }
    }

    /// Evaluates an argument that must be a scalar: one value per step.
    pub async fn scalar_arg(&mut self, e: &Expr, grid: Grid) -> Result<Vec<f64>> {
        match self.eval(e, grid).await? {
            Value::Scalar(v) => Ok(v),
            other => exec(format!(
                "expected type scalar in {e}, got {}",
                other.type_name()
            )),
        }
    }

    /// Evaluates an argument that must be an instant vector.
    pub async fn vector_arg(&mut self, e: &Expr, grid: Grid) -> Result<Vec<Series>> {
        match self.eval(e, grid).await? {
            Value::Vector(v) => Ok(v),
            other => exec(format!(
                "expected type instant vector in {e}, got {}",
                other.type_name()
            )),
        }
    }

    /// Evaluates an argument that must be a string literal.
    pub fn string_arg(e: &Expr) -> Result<String> {
        match unwrap_parens(e) {
            Expr::StringLiteral(s) => Ok(s.val.clone()),
            other => exec(format!("expected a string, got {other}")),
        }
    }
}
