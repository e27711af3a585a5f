//! Metric queries: range aggregations over `[range] offset d`, vector aggregations with
//! `by`/`without`, binary operators with PromQL precedence, numbers and `vector(n)`.

use super::super::ast::*;
use super::super::error::ParseError;
use super::super::lexer::Tok;
use super::Parser;

const RANGE_FNS: [(&str, RangeFn); 14] = [
    ("first_over_time", RangeFn::FirstOverTime),
    ("last_over_time", RangeFn::LastOverTime),
    ("stddev_over_time", RangeFn::StddevOverTime),
    ("stdvar_over_time", RangeFn::StdvarOverTime),
    ("count_over_time", RangeFn::CountOverTime),
    ("rate", RangeFn::Rate),
    ("bytes_over_time", RangeFn::BytesOverTime),
    ("bytes_rate", RangeFn::BytesRate),
    ("sum_over_time", RangeFn::SumOverTime),
    ("avg_over_time", RangeFn::AvgOverTime),
    ("min_over_time", RangeFn::MinOverTime),
    ("max_over_time", RangeFn::MaxOverTime),
    ("quantile_over_time", RangeFn::QuantileOverTime),
    ("absent_over_time", RangeFn::AbsentOverTime),
];

const VECTOR_OPS: [(&str, VectorOp); 9] = [
    ("sum", VectorOp::Sum),
    ("avg", VectorOp::Avg),
    ("min", VectorOp::Min),
    ("max", VectorOp::Max),
    ("count", VectorOp::Count),
    ("stddev", VectorOp::Stddev),
    ("stdvar", VectorOp::Stdvar),
    ("topk", VectorOp::Topk),
    ("bottomk", VectorOp::Bottomk),
];

const UNSUPPORTED_FNS: [&str; 7] = [
    "rate_counter",
    "label_replace",
    "sort",
    "sort_desc",
    "approx_topk",
    "decolorize",
    "ip",
];

/// A range aggregation's entries, unwrap, and range and offset in ns.
type LogRange = (LogExpr, Option<Unwrap>, (i64, i64));

impl Parser<'_> {
    /// `[range]` and an optional `offset d`, both in ns.
    pub(super) fn range_duration(&mut self) -> Result<(i64, i64), ParseError> {
        self.expect_op("[")?;
        let d = match self.peek().cloned() {
            Some(Tok::Duration(d)) if d > 0 => d,
            _ => {
                return Err(self.err(format!(
                    "syntax error: expected a range such as 5m, found {}",
                    self.describe()
                )));
            }
        };
        self.pos += 1;
        self.expect_op("]")?;
        if !self.peek_ident("offset") {
            return Ok((d, 0));
        }
        self.pos += 1;
        match self.peek().cloned() {
            Some(Tok::Duration(o)) => {
                self.pos += 1;
                Ok((d, o))
            }
            _ => Err(self.err(format!(
                "syntax error: expected a duration after offset, found {}",
                self.describe()
            ))),
        }
    }

    /// `log [range]`, `selector [range] stages`, or `(log) [range]`, with an optional
    /// unwrap: the entries, the unwrap, the range and the offset.
    pub(super) fn log_range(&mut self) -> Result<LogRange, ParseError> {
        if self.eat_op("(") {
            let selector = self.selector()?;
            let stages = self.stages()?;
            let unwrap = self.unwrap()?;
            self.expect_op(")")?;
            let range = self.range_duration()?;
            return Ok((LogExpr { selector, stages }, unwrap, range));
        }
        let selector = self.selector()?;
        if self.peek_op("[") {
            let range = self.range_duration()?;
            let stages = self.stages()?;
            let unwrap = self.unwrap()?;
            return Ok((LogExpr { selector, stages }, unwrap, range));
        }
        let stages = self.stages()?;
        let unwrap = self.unwrap()?;
        let range = self.range_duration()?;
        Ok((LogExpr { selector, stages }, unwrap, range))
    }

    pub(super) fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let without = if self.peek_ident("by") {
            false
        } else if self.peek_ident("without") {
            true
        } else {
            return Ok(None);
        };
        self.pos += 1;
        Ok(Some(Grouping {
            without,
            labels: self.label_list()?,
        }))
    }

    pub(super) fn metric(&mut self) -> Result<MetricExpr, ParseError> {
        self.binary(1)
    }

    /// The binary operator ahead and its precedence (Prometheus's: `or` lowest, `^` highest).
    pub(super) fn bin_op(&self) -> Option<(BinOp, u8)> {
        Some(match self.peek()? {
            Tok::Ident(i) => match i.as_str() {
                "or" => (BinOp::Or, 1),
                "and" => (BinOp::And, 2),
                "unless" => (BinOp::Unless, 2),
                _ => return None,
            },
            Tok::Op(o) => match *o {
                "==" => (BinOp::Eq, 3),
                "!=" => (BinOp::Ne, 3),
                ">" => (BinOp::Gt, 3),
                ">=" => (BinOp::Ge, 3),
                "<" => (BinOp::Lt, 3),
                "<=" => (BinOp::Le, 3),
                "+" => (BinOp::Add, 4),
                "-" => (BinOp::Sub, 4),
                "*" => (BinOp::Mul, 5),
                "/" => (BinOp::Div, 5),
                "%" => (BinOp::Mod, 5),
                "^" => (BinOp::Pow, 6),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Operands joined by operators binding at least as tightly as `min`.
    pub(super) fn binary(&mut self, min: u8) -> Result<MetricExpr, ParseError> {
        let mut lhs = self.unary()?;
        while let Some((op, prec)) = self.bin_op() {
            if prec < min {
                break;
            }
            let at = self.pos;
            self.pos += 1;
            let return_bool = self.peek_ident("bool");
            if return_bool {
                if !op.is_comparison() {
                    return Err(self.err("bool modifier can only be used on comparison operators"));
                }
                self.pos += 1;
            }
            let matching = if self.peek_ident("on") || self.peek_ident("ignoring") {
                let on = self.peek_ident("on");
                self.pos += 1;
                Some(VectorMatching {
                    on,
                    labels: self.label_list()?,
                })
            } else {
                None
            };
            if self.peek_ident("group_left") || self.peek_ident("group_right") {
                return Err(self.err("group_left and group_right are not supported"));
            }
            // `^` is right-associative, the others left.
            let rhs = self.binary(if op == BinOp::Pow { prec } else { prec + 1 })?;
            let scalars = (lhs.is_scalar(), rhs.is_scalar());
            if op.is_set() && (scalars.0 || scalars.1) {
                return Err(ParseError::at(
                    self.q,
                    self.toks[at].at,
                    "set operators (and, or, unless) need a metric query on both sides",
                ));
            }
            if op.is_comparison() && !return_bool && scalars == (true, true) {
                return Err(ParseError::at(
                    self.q,
                    self.toks[at].at,
                    "comparisons between scalars must use BOOL modifier",
                ));
            }
            if matching.is_some() && (scalars.0 || scalars.1) {
                return Err(ParseError::at(
                    self.q,
                    self.toks[at].at,
                    "vector matching only allowed between vectors",
                ));
            }
            lhs = MetricExpr::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                return_bool,
                matching,
            };
        }
        Ok(lhs)
    }

    /// `(a, b, ...)`.
    pub(super) fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect_op("(")?;
        let mut labels = Vec::new();
        if !self.peek_op(")") {
            loop {
                labels.push(self.ident()?);
                if !self.eat_op(",") {
                    break;
                }
            }
        }
        self.expect_op(")")?;
        Ok(labels)
    }

    /// A number, `(expr)`, a range aggregation or a vector aggregation.
    pub(super) fn unary(&mut self) -> Result<MetricExpr, ParseError> {
        if let Some(n) = self.signed_number() {
            return Ok(MetricExpr::Number(n));
        }
        if self.eat_op("(") {
            let m = self.metric()?;
            self.expect_op(")")?;
            return Ok(m);
        }
        let name = match self.peek().cloned() {
            Some(Tok::Ident(n)) => n,
            _ => {
                return Err(self.err(format!(
                    "syntax error: expected a stream selector or a metric function, found {}",
                    self.describe()
                )));
            }
        };
        if let Some((_, func)) = RANGE_FNS.iter().find(|(n, _)| *n == name) {
            self.pos += 1;
            self.expect_op("(")?;
            let param = if *func == RangeFn::QuantileOverTime {
                let p = self.number()?;
                self.expect_op(",")?;
                Some(p)
            } else {
                None
            };
            let (log, unwrap, (range_ns, offset_ns)) = self.log_range()?;
            self.expect_op(")")?;
            let grouping = self.grouping()?;
            let needs_unwrap = !matches!(
                func,
                RangeFn::CountOverTime
                    | RangeFn::Rate
                    | RangeFn::BytesOverTime
                    | RangeFn::BytesRate
                    | RangeFn::AbsentOverTime
            );
            if needs_unwrap && unwrap.is_none() {
                return Err(ParseError::whole(format!(
                    "invalid aggregation {name} without unwrap"
                )));
            }
            if !needs_unwrap && unwrap.is_some() {
                return Err(ParseError::whole(format!(
                    "{name} over unwrapped values is not supported (use sum_over_time, avg_over_time, min_over_time, max_over_time, first_over_time, last_over_time, stddev_over_time, stdvar_over_time or quantile_over_time)"
                )));
            }
            let groupable = needs_unwrap && *func != RangeFn::SumOverTime;
            if grouping.is_some() && !groupable {
                return Err(ParseError::whole(format!(
                    "grouping not allowed for {name} aggregation"
                )));
            }
            return Ok(MetricExpr::Range {
                func: *func,
                param,
                log,
                unwrap,
                range_ns,
                offset_ns,
                grouping,
            });
        }
        if let Some((_, op)) = VECTOR_OPS.iter().find(|(n, _)| *n == name) {
            self.pos += 1;
            let mut grouping = self.grouping()?;
            self.expect_op("(")?;
            let param = if matches!(op, VectorOp::Topk | VectorOp::Bottomk) {
                let k = self.number()?;
                if k < 1.0 || k.fract() != 0.0 {
                    return Err(self.err(format!(
                        "invalid parameter for {name}: k must be a positive integer, got {k}"
                    )));
                }
                self.expect_op(",")?;
                Some(k)
            } else {
                None
            };
            let at = self.pos;
            let inner = self.metric()?;
            if inner.is_scalar() {
                return Err(ParseError::at(
                    self.q,
                    self.toks[at].at,
                    format!("{name} needs a metric query, not a number"),
                ));
            }
            self.expect_op(")")?;
            if grouping.is_none() {
                grouping = self.grouping()?;
            }
            return Ok(MetricExpr::Vector {
                op: *op,
                param,
                grouping,
                inner: Box::new(inner),
            });
        }
        if name == "vector" {
            self.pos += 1;
            self.expect_op("(")?;
            let n = self.signed_number().ok_or_else(|| {
                self.err(format!(
                    "syntax error: vector() takes a number, found {}",
                    self.describe()
                ))
            })?;
            self.expect_op(")")?;
            return Ok(MetricExpr::Constant(n));
        }
        if UNSUPPORTED_FNS.contains(&name.as_str()) {
            return Err(self.err(format!("{name} is not supported")));
        }
        Err(self.err(format!(
            "syntax error: unexpected {name:?}: expected a stream selector or a metric function"
        )))
    }
}
