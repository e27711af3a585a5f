//! PromQL evaluation over the metrics tables, with Prometheus 2.x semantics.
//!
//! What runs where:
//! * **ClickHouse (SQL)**: tenant, label matching (`=`, `!=`, `=~`, `!~`, bound values),
//!   metric-name pruning on the samples table's sort key, and the exact time range each
//!   selector needs (the union of its windows over all steps, lookback and offsets
//!   included) — see [`storage`].
//! * **Rust**: per-step windows, lookback and staleness, the functions, aggregations and
//!   vector matching — see [`eval`], [`functions`], [`range_fns`], [`aggregate`],
//!   [`binary`]. Their float semantics (extrapolated `rate`, Welford variance, bucket
//!   interpolation, NaN ordering) must match Prometheus bit for bit where it can, which SQL
//!   aggregate functions do not promise.
//!
//! [`explain`] plans a query without reading and returns the SQL it would run.

pub mod aggregate;
pub mod binary;
pub mod eval;
pub mod functions;
pub mod memory;
pub mod range_fns;
pub mod rollup;
pub mod value;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr};

pub use eval::{EvalError, Evaluator, is_stale, stale_nan};
pub use memory::MemorySource;
pub use value::{Grid, Labels, RawSeries, Series, Value};

use std::future::Future;
use std::pin::Pin;

use promql_parser::parser::VectorSelector;

/// A boxed future of a source's answer.
pub type SelectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<RawSeries>, EvalError>> + Send + 'a>>;

/// Where the evaluator reads samples.
pub trait SeriesSource: Send {
    /// Every series `vs`'s matchers match that has samples in `[from_ms, to_ms]`, with those
    /// samples in time order (one per timestamp; stale markers included), sorted by labels.
    /// `__name__` is among each series' labels.
    fn select<'a>(
        &'a mut self,
        vs: &'a VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> SelectFuture<'a>;

    /// Resolutions (ms) of the rollups this source may answer range functions from, as
    /// the query allows (`max_source_resolution`); none by default.
    fn rollup_resolutions(&self) -> Vec<i64> {
        Vec::new()
    }

    /// Every series `vs`'s matchers match with samples in `[from_ms, to_ms]` (both
    /// multiples of `resolution_ms`), as rollup windows of that resolution starting in the
    /// range and, after the last of a series' windows, its raw samples as single-sample
    /// chunks; sorted by labels.
    fn select_rollups<'a>(
        &'a mut self,
        vs: &'a VectorSelector,
        resolution_ms: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> ChunkFuture<'a> {
        let _ = (vs, resolution_ms, from_ms, to_ms);
        Box::pin(async { Err(EvalError::Storage("this source keeps no rollups".into())) })
    }
}

/// A boxed future of a source's rollups.
pub type ChunkFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<rollup::ChunkSeries>, EvalError>> + Send + 'a>>;

/// Limits and defaults of PromQL evaluation.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Lookback of instant selectors (ms).
    pub lookback_ms: i64,
    /// Steps a range query may have.
    pub max_points: usize,
}

/// Parses a query, with Prometheus's wording for errors.
pub fn parse(query: &str) -> Result<Expr, String> {
    static EXTRA: std::sync::Once = std::sync::Once::new();
    EXTRA.call_once(|| {
        // Prometheus 2.x's name for double_exponential_smoothing (the parser knows only
        // the 3.x name).
        let _ = parser::register_extra_functions(vec![parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
    parser::parse(query).map_err(|e| format!("invalid parameter \"query\": {e}"))
}

/// Checks that `expr` can be a range query (instant vector or scalar).
pub fn check_range_type(expr: &Expr) -> Result<(), String> {
    match expr.value_type() {
        ValueType::Vector | ValueType::Scalar => Ok(()),
        t => Err(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            match t {
                ValueType::Matrix => "range vector",
                ValueType::String => "string",
                _ => "unknown",
            }
        )),
    }
}

/// Evaluates `expr` over `grid`, reading samples from `source`.
pub async fn evaluate(
    source: Box<dyn SeriesSource>,
    expr: &Expr,
    grid: Grid,
    limits: &Limits,
) -> Result<Value, EvalError> {
    if grid.len() > limits.max_points {
        return Err(EvalError::Execution(format!(
            "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
            limits.max_points
        )));
    }
    let mut ev = Evaluator {
        storage: source,
        lookback: limits.lookback_ms,
        query_start: grid.start,
        query_end: grid.end,
        default_step: 60_000,
    };
    ev.eval(expr, grid).await
}

/// Evaluates `expr` at the single time `at_ms` over a source whose answers are always
/// ready (an in-memory one: [`MemorySource`], the rule processor's windows), without an
/// async runtime. `default_step_ms` is the step of subqueries that give none (Prometheus
/// uses the evaluation interval).
pub fn evaluate_now(
    source: Box<dyn SeriesSource>,
    expr: &Expr,
    at_ms: i64,
    lookback_ms: i64,
    default_step_ms: i64,
) -> Result<Value, EvalError> {
    let mut ev = Evaluator {
        storage: source,
        lookback: lookback_ms,
        query_start: at_ms,
        query_end: at_ms,
        default_step: default_step_ms,
    };
    let grid = Grid {
        start: at_ms,
        end: at_ms,
        step: 1,
    };
    let fut = ev.eval(expr, grid);
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => Err(EvalError::Storage(
            "the sample source waited: evaluate_now needs an in-memory source".into(),
        )),
    }
}

/// The operations the evaluator performs for `expr` over the rows it reads, innermost
/// first (what `explain` shows beside the source's statements).
pub fn steps(expr: &Expr) -> Vec<String> {
    let mut out = Vec::new();
    rust_steps(expr, &mut out);
    out
}

fn rust_steps(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Paren(p) => rust_steps(&p.expr, out),
        Expr::Unary(u) => {
            rust_steps(&u.expr, out);
            out.push("negation".into());
        }
        Expr::VectorSelector(vs) => out.push(format!(
            "{vs}: newest sample per step within the lookback, stale markers hide the series"
        )),
        Expr::MatrixSelector(ms) => out.push(format!("{ms}: samples per step window")),
        Expr::Subquery(sq) => {
            rust_steps(&sq.expr, out);
            out.push(format!(
                "subquery [{}:{}] over the inner steps",
                humantime_ms(sq.range.as_millis() as i64),
                sq.step
                    .map_or("default".into(), |s| humantime_ms(s.as_millis() as i64))
            ));
        }
        Expr::Call(c) => {
            for a in &c.args.args {
                rust_steps(a, out);
            }
            out.push(format!("{}() per step", c.func.name));
        }
        Expr::Aggregate(a) => {
            rust_steps(&a.expr, out);
            let grouping = match &a.modifier {
                Some(parser::LabelModifier::Include(l)) => format!(" by ({l})"),
                Some(parser::LabelModifier::Exclude(l)) => format!(" without ({l})"),
                None => String::new(),
            };
            out.push(format!("{}{grouping} per step", a.op));
        }
        Expr::Binary(b) => {
            rust_steps(&b.lhs, out);
            rust_steps(&b.rhs, out);
            out.push(format!("binary {} per step (vector matching)", b.op));
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn humantime_ms(ms: i64) -> String {
    if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
