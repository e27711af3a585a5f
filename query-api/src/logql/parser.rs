//! A recursive-descent LogQL parser (the subset obs evaluates; anything else is a parse
//! error naming the construct, never a silently different query).
//!
//! ```text
//! expr      := metric | log
//! log       := selector stage*
//! selector  := "{" matcher ("," matcher)* "}"
//! stage     := lineop STRING | "|" (json | logfmt | regexp STRING | pattern STRING
//!              | line_format STRING | label_format fmt ("," fmt)* | drop sel ("," sel)*
//!              | keep sel ("," sel)* | unwrap [conv "("] NAME [")"] | labelpred)
//! labelpred := and ("or" and)*      and := primary (("and" | ",")? primary)*
//! primary   := "(" labelpred ")" | NAME strop STRING | NAME cmpop NUMBER
//! metric    := rangefn "(" [NUMBER ","] logrange ")" [grouping]
//!            | vecop [grouping] "(" [NUMBER ","] metric ")" [grouping] | "(" metric ")"
//! logrange  := log "[" DURATION "]" | selector "[" DURATION "]" stage* | "(" log ")" "[" DURATION "]"
//! ```

use super::ast::*;
use super::error::ParseError;
use super::lexer::{Spanned, Tok, lex};

/// Parses a LogQL query.
pub fn parse(q: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        q,
        toks: lex(q)?,
        pos: 0,
    };
    let e = if p.peek_op("{") {
        Expr::Log(p.log()?)
    } else {
        Expr::Metric(p.metric()?)
    };
    if p.pos < p.toks.len() {
        return Err(p.err("unexpected input after the end of the query"));
    }
    match &e {
        Expr::Log(l) => check_selector(&l.selector)?,
        Expr::Metric(m) => {
            if m.is_scalar() {
                return Err(ParseError::whole(
                    "a query must give series, not a number: use a range aggregation such as count_over_time({app=\"x\"}[5m]), or vector(n)",
                ));
            }
            for r in m.ranges() {
                if let MetricExpr::Range { log, .. } = r {
                    check_selector(&log.selector)?;
                }
            }
        }
    }
    Ok(e)
}

/// Loki refuses selectors that would match every stream.
fn check_selector(sel: &[Matcher]) -> Result<(), ParseError> {
    let selective = sel.iter().any(|m| match m.op {
        MatchOp::Eq => !m.value.is_empty(),
        MatchOp::Re => regex::Regex::new(&anchored(&m.value)).is_ok_and(|r| !r.is_match("")),
        MatchOp::Ne | MatchOp::NotRe => false,
    });
    if selective {
        Ok(())
    } else {
        Err(ParseError::whole(
            "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will",
        ))
    }
}

/// A matcher regex as Loki applies it: anchored at both ends.
pub fn anchored(re: &str) -> String {
    format!("^(?:{re})$")
}

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

/// A comparison operator's token as a [`CmpOp`] (`=` compares numbers too).
fn cmp_op(op: &str) -> CmpOp {
    match op {
        "=" | "==" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        ">" => CmpOp::Gt,
        ">=" => CmpOp::Ge,
        "<" => CmpOp::Lt,
        _ => CmpOp::Le,
    }
}

/// A range aggregation's entries, unwrap, and range and offset in ns.
type LogRange = (LogExpr, Option<Unwrap>, (i64, i64));

struct Parser<'a> {
    q: &'a str,
    toks: Vec<Spanned>,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> ParseError {
        let at = self.toks.get(self.pos).map_or(self.q.len(), |t| t.at);
        ParseError::at(self.q, at, msg)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|t| &t.tok)
    }

    fn peek_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    fn peek_ident(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == name)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let hit = self.peek_op(op);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "end of query".into(),
            Some(Tok::Ident(i)) => format!("{i:?}"),
            Some(Tok::Str(s)) => format!("string {s:?}"),
            Some(Tok::Num(n)) => format!("number {n}"),
            Some(Tok::Duration(_)) => "duration".into(),
            Some(Tok::Bytes(_)) => "size".into(),
            Some(Tok::Op(o)) => format!("{o:?}"),
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ParseError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(self.err(format!(
                "syntax error: expected {op:?}, found {}",
                self.describe()
            )))
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Ident(i)) => {
                self.pos += 1;
                Ok(i)
            }
            _ => Err(self.err(format!(
                "syntax error: expected a label name, found {}",
                self.describe()
            ))),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.err(format!(
                "syntax error: expected a string, found {}",
                self.describe()
            ))),
        }
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(n)
            }
            _ => Err(self.err(format!(
                "syntax error: expected a number, found {}",
                self.describe()
            ))),
        }
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, ParseError> {
        self.expect_op("{")?;
        let mut out = Vec::new();
        if !self.peek_op("}") {
            loop {
                out.push(self.matcher()?);
                if !self.eat_op(",") {
                    break;
                }
            }
        }
        self.expect_op("}")?;
        if out.is_empty() {
            return Err(self.err("syntax error: a stream selector needs at least one matcher"));
        }
        Ok(out)
    }

    fn matcher(&mut self) -> Result<Matcher, ParseError> {
        let name = self.ident()?;
        let op = match self.peek() {
            Some(Tok::Op("=")) => MatchOp::Eq,
            Some(Tok::Op("!=")) => MatchOp::Ne,
            Some(Tok::Op("=~")) => MatchOp::Re,
            Some(Tok::Op("!~")) => MatchOp::NotRe,
            _ => {
                return Err(self.err(format!(
                    "syntax error: expected =, !=, =~ or !~ after {name}, found {}",
                    self.describe()
                )));
            }
        };
        self.pos += 1;
        let at = self.pos;
        let value = self.string()?;
        if matches!(op, MatchOp::Re | MatchOp::NotRe) {
            self.check_regex(&anchored(&value), at)?;
        }
        Ok(Matcher { name, op, value })
    }

    fn check_regex(&self, re: &str, tok: usize) -> Result<(), ParseError> {
        regex::Regex::new(re).map(|_| ()).map_err(|e| {
            let at = self.toks.get(tok).map_or(0, |t| t.at);
            ParseError::at(self.q, at, format!("invalid regex: {e}"))
        })
    }

    fn log(&mut self) -> Result<LogExpr, ParseError> {
        let selector = self.selector()?;
        let stages = self.stages()?;
        Ok(LogExpr { selector, stages })
    }

    /// Stages up to (not including) an `unwrap`.
    fn stages(&mut self) -> Result<Vec<Stage>, ParseError> {
        let mut stages = Vec::new();
        loop {
            let line_op = match self.peek() {
                Some(Tok::Op("|=")) => Some(LineOp::Contains),
                Some(Tok::Op("!=")) => Some(LineOp::NotContains),
                Some(Tok::Op("|~")) => Some(LineOp::Match),
                Some(Tok::Op("!~")) => Some(LineOp::NotMatch),
                _ => None,
            };
            if let Some(op) = line_op {
                self.pos += 1;
                let at = self.pos;
                if matches!(self.peek(), Some(Tok::Ident(_))) {
                    return Err(self.err("line filter functions (ip(...)) are not supported"));
                }
                let value = self.string()?;
                if matches!(op, LineOp::Match | LineOp::NotMatch) {
                    self.check_regex(&value, at)?;
                }
                if self.peek_ident("or") {
                    return Err(
                        self.err("line filters with `or` are not supported; use |~ \"a|b\"")
                    );
                }
                stages.push(Stage::LineFilter { op, value });
                continue;
            }
            if !self.peek_op("|") || self.peek_at(1) == Some(&Tok::Ident("unwrap".into())) {
                return Ok(stages);
            }
            self.pos += 1;
            stages.push(self.stage()?);
        }
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        let Some(Tok::Ident(name)) = self.peek().cloned() else {
            if self.peek_op("(") {
                return Ok(Stage::LabelFilter(self.label_pred()?));
            }
            return Err(self.err(format!(
                "syntax error: expected a pipeline stage after |, found {}",
                self.describe()
            )));
        };
        let next_is_cmp = matches!(self.peek_at(1), Some(Tok::Op(o)) if ["=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="].contains(o));
        if next_is_cmp {
            return Ok(Stage::LabelFilter(self.label_pred()?));
        }
        self.pos += 1;
        let stage = match name.as_str() {
            "json" | "logfmt" => {
                if self.peek_op("-") {
                    return Err(self.err(format!("{name} flags are not supported")));
                }
                if !matches!(self.peek(), Some(Tok::Ident(_))) {
                    return Ok(if name == "json" {
                        Stage::Json
                    } else {
                        Stage::Logfmt
                    });
                }
                let mut fields = Vec::new();
                loop {
                    let label = self.ident()?;
                    let expr = if self.eat_op("=") {
                        let at = self.pos;
                        let e = self.string()?;
                        if name == "json" {
                            super::parsers::JsonPath::parse(&e)
                                .map_err(|m| ParseError::at(self.q, self.toks[at].at, m))?;
                        }
                        e
                    } else {
                        label.clone()
                    };
                    fields.push((label, expr));
                    if !self.eat_op(",") {
                        break;
                    }
                }
                if name == "json" {
                    Stage::JsonFields(fields)
                } else {
                    Stage::LogfmtFields(fields)
                }
            }
            "regexp" => {
                let at = self.pos;
                let re = self.string()?;
                self.check_regex(&re, at)?;
                let has_names = regex::Regex::new(&re)
                    .is_ok_and(|r| r.capture_names().flatten().next().is_some());
                if !has_names {
                    return Err(ParseError::at(
                        self.q,
                        self.toks[at].at,
                        "at least one named capture must be supported",
                    ));
                }
                Stage::Regexp(re)
            }
            "pattern" => {
                let at = self.pos;
                let p = self.string()?;
                super::pattern::Pattern::new(&p)
                    .map_err(|e| ParseError::at(self.q, self.toks[at].at, e))?;
                Stage::Pattern(p)
            }
            "line_format" => {
                let at = self.pos;
                let t = self.string()?;
                super::template::Template::new(&t)
                    .map_err(|e| ParseError::at(self.q, self.toks[at].at, e))?;
                Stage::LineFormat(t)
            }
            "label_format" => {
                let mut out = Vec::new();
                loop {
                    let dst = self.ident()?;
                    self.expect_op("=")?;
                    let v = match self.peek().cloned() {
                        Some(Tok::Ident(src)) => {
                            self.pos += 1;
                            LabelFormatValue::Rename(src)
                        }
                        _ => {
                            let at = self.pos;
                            let t = self.string()?;
                            super::template::Template::new(&t)
                                .map_err(|e| ParseError::at(self.q, self.toks[at].at, e))?;
                            LabelFormatValue::Template(t)
                        }
                    };
                    out.push((dst, v));
                    if !self.eat_op(",") {
                        break;
                    }
                }
                Stage::LabelFormat(out)
            }
            "drop" | "keep" => {
                let mut out = Vec::new();
                loop {
                    let is_matcher =
                        matches!(self.peek_at(1), Some(Tok::Op("=" | "!=" | "=~" | "!~")));
                    out.push(if is_matcher {
                        LabelSelect::Matcher(self.matcher()?)
                    } else {
                        LabelSelect::Name(self.ident()?)
                    });
                    if !self.eat_op(",") {
                        break;
                    }
                }
                if name == "drop" {
                    Stage::Drop(out)
                } else {
                    Stage::Keep(out)
                }
            }
            "decolorize" => Stage::Decolorize,
            "unpack" | "distinct" => {
                self.pos -= 1;
                return Err(self.err(format!("the {name} stage is not supported")));
            }
            other => {
                self.pos -= 1;
                return Err(self.err(format!("syntax error: unexpected {other:?}: expected a parser (json, logfmt, regexp, pattern), line_format, label_format, drop, keep, unwrap or a label filter")));
            }
        };
        Ok(stage)
    }

    fn label_pred(&mut self) -> Result<LabelPred, ParseError> {
        let mut left = self.label_and()?;
        while self.peek_ident("or") {
            self.pos += 1;
            let right = self.label_and()?;
            left = LabelPred::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn label_and(&mut self) -> Result<LabelPred, ParseError> {
        let mut left = self.label_primary()?;
        loop {
            let juxtaposed = matches!(self.peek(), Some(Tok::Ident(i)) if i != "or" && i != "and")
                && matches!(self.peek_at(1), Some(Tok::Op(_)));
            if self.peek_ident("and") || self.peek_op(",") {
                self.pos += 1;
            } else if !juxtaposed && !self.peek_op("(") {
                return Ok(left);
            }
            let right = self.label_primary()?;
            left = LabelPred::And(Box::new(left), Box::new(right));
        }
    }

    fn label_primary(&mut self) -> Result<LabelPred, ParseError> {
        if self.eat_op("(") {
            let p = self.label_pred()?;
            self.expect_op(")")?;
            return Ok(p);
        }
        let name = self.ident()?;
        let op = match self.peek() {
            Some(Tok::Op(o)) => *o,
            _ => {
                return Err(self.err(format!(
                    "syntax error: expected a comparison after {name}, found {}",
                    self.describe()
                )));
            }
        };
        self.pos += 1;
        let at = self.pos;
        match (op, self.peek().cloned()) {
            ("=" | "!=" | "=~" | "!~", Some(Tok::Str(value))) => {
                self.pos += 1;
                let op = match op {
                    "=" => MatchOp::Eq,
                    "!=" => MatchOp::Ne,
                    "=~" => MatchOp::Re,
                    _ => MatchOp::NotRe,
                };
                if matches!(op, MatchOp::Re | MatchOp::NotRe) {
                    self.check_regex(&anchored(&value), at)?;
                }
                Ok(LabelPred::Str(Matcher { name, op, value }))
            }
            ("=" | "==" | "!=" | ">" | ">=" | "<" | "<=", Some(Tok::Num(_) | Tok::Op("-")))
                if self.peek_signed_number() =>
            {
                let value = self.signed_number().expect("checked");
                let op = cmp_op(op);
                Ok(LabelPred::Num {
                    name,
                    op,
                    value,
                    unit: Conversion::Number,
                })
            }
            ("=" | "==" | "!=" | ">" | ">=" | "<" | "<=", Some(Tok::Duration(ns))) => {
                self.pos += 1;
                Ok(LabelPred::Num {
                    name,
                    op: cmp_op(op),
                    value: ns as f64 / 1e9,
                    unit: Conversion::Duration,
                })
            }
            ("=" | "==" | "!=" | ">" | ">=" | "<" | "<=", Some(Tok::Bytes(b))) => {
                self.pos += 1;
                Ok(LabelPred::Num {
                    name,
                    op: cmp_op(op),
                    value: b,
                    unit: Conversion::Bytes,
                })
            }
            (_, Some(Tok::Ident(i))) if ["ip"].contains(&i.as_str()) => {
                Err(self.err("ip() label filters are not supported"))
            }
            _ => Err(self.err(format!(
                "syntax error: {op} cannot compare {name} with {}",
                self.describe()
            ))),
        }
    }

    fn unwrap(&mut self) -> Result<Option<Unwrap>, ParseError> {
        if !(self.peek_op("|") && self.peek_at(1) == Some(&Tok::Ident("unwrap".into()))) {
            return Ok(None);
        }
        self.pos += 2;
        let first = self.ident()?;
        let (label, conversion) = if self.eat_op("(") {
            let conv = match first.as_str() {
                "duration" | "duration_seconds" => Conversion::Duration,
                "bytes" => Conversion::Bytes,
                other => return Err(self.err(format!("unknown unwrap conversion {other:?}"))),
            };
            let label = self.ident()?;
            self.expect_op(")")?;
            (label, conv)
        } else {
            (first, Conversion::Number)
        };
        let mut post_filters = Vec::new();
        while self.peek_op("|") {
            self.pos += 1;
            post_filters.push(self.label_pred()?);
        }
        Ok(Some(Unwrap {
            label,
            conversion,
            post_filters,
        }))
    }

    /// `[range]` and an optional `offset d`, both in ns.
    fn range_duration(&mut self) -> Result<(i64, i64), ParseError> {
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
    fn log_range(&mut self) -> Result<LogRange, ParseError> {
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

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
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

    fn metric(&mut self) -> Result<MetricExpr, ParseError> {
        self.binary(1)
    }

    /// The binary operator ahead and its precedence (Prometheus's: `or` lowest, `^` highest).
    fn bin_op(&self) -> Option<(BinOp, u8)> {
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
    fn binary(&mut self, min: u8) -> Result<MetricExpr, ParseError> {
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
    fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
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
    fn unary(&mut self) -> Result<MetricExpr, ParseError> {
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

    /// Whether a (signed) number is ahead.
    fn peek_signed_number(&self) -> bool {
        matches!(
            (self.peek(), self.peek_at(1)),
            (Some(Tok::Num(_)), _) | (Some(Tok::Op("-")), Some(Tok::Num(_)))
        )
    }

    /// A number, with its sign.
    fn signed_number(&mut self) -> Option<f64> {
        match (self.peek(), self.peek_at(1)) {
            (Some(Tok::Num(n)), _) => {
                let n = *n;
                self.pos += 1;
                Some(n)
            }
            (Some(Tok::Op("-")), Some(Tok::Num(n))) => {
                let n = -*n;
                self.pos += 2;
                Some(n)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher {
            name: name.into(),
            op,
            value: value.into(),
        }
    }

    #[test]
    fn log_query_with_every_stage() {
        let e = parse(r#"{app="api", env!="dev"} |= "GET" != `/healthz` |~ "5\\d\\d" | json | status >= 500 and method = "GET" or (level=~"err.*", x != 2) | logfmt | regexp "(?P<ms>\\d+)ms" | pattern "<ip> - <_>" | line_format "{{.ip}}" | label_format a=b, c="{{.d}}" | drop a, b="x" | keep c"#).unwrap();
        let Expr::Log(l) = e else { panic!() };
        assert_eq!(
            l.selector,
            vec![m("app", MatchOp::Eq, "api"), m("env", MatchOp::Ne, "dev")]
        );
        assert_eq!(l.stages.len(), 12);
        assert_eq!(
            l.stages[1],
            Stage::LineFilter {
                op: LineOp::NotContains,
                value: "/healthz".into()
            }
        );
        let Stage::LabelFilter(LabelPred::Or(a, b)) = &l.stages[4] else {
            panic!("{:?}", l.stages[4])
        };
        assert!(matches!(**a, LabelPred::And(..)));
        assert!(matches!(**b, LabelPred::And(..)));
        assert_eq!(
            l.stages[10],
            Stage::Drop(vec![
                LabelSelect::Name("a".into()),
                LabelSelect::Matcher(m("b", MatchOp::Eq, "x"))
            ])
        );
    }

    #[test]
    fn metric_queries() {
        let e = parse(r#"topk(2, sum by (pod) (rate({app="a"} |= "x" [5m])))"#).unwrap();
        let Expr::Metric(MetricExpr::Vector {
            op: VectorOp::Topk,
            param: Some(k),
            inner,
            ..
        }) = e
        else {
            panic!()
        };
        assert_eq!(k, 2.0);
        let MetricExpr::Vector {
            op: VectorOp::Sum,
            grouping: Some(g),
            inner,
            ..
        } = *inner
        else {
            panic!()
        };
        assert_eq!(g.labels, ["pod"]);
        assert!(matches!(
            *inner,
            MetricExpr::Range {
                func: RangeFn::Rate,
                range_ns: 300_000_000_000,
                offset_ns: 0,
                ..
            }
        ));

        let e = parse(r#"quantile_over_time(0.99, {app="a"} | json | unwrap duration(latency) | __error__="" [1m]) by (path)"#).unwrap();
        let Expr::Metric(MetricExpr::Range {
            param,
            unwrap: Some(u),
            grouping: Some(g),
            ..
        }) = e
        else {
            panic!()
        };
        assert_eq!(param, Some(0.99));
        assert_eq!(u.label, "latency");
        assert_eq!(u.conversion, Conversion::Duration);
        assert_eq!(u.post_filters.len(), 1);
        assert_eq!(g.labels, ["path"]);

        assert!(parse(r#"sum(count_over_time({a="b"}[1m])) by (x)"#).is_ok());
        assert!(parse(r#"count_over_time({a="b"}[1m] | json)"#).is_ok());
        assert!(parse(r#"count_over_time(({a="b"} |= "x")[1m])"#).is_ok());
        let Expr::Metric(MetricExpr::Range {
            range_ns,
            offset_ns,
            ..
        }) = parse(r#"count_over_time({a="b"}[1m] offset 1h)"#).unwrap()
        else {
            panic!()
        };
        assert_eq!((range_ns, offset_ns), (60_000_000_000, 3_600_000_000_000));
    }

    #[test]
    fn binary_operators_bind_as_in_promql() {
        let Expr::Metric(m) = parse(r#"1 - sum(rate({a="b"}[1m])) / 2 ^ 3 ^ 2 > bool on (x) count_over_time({a="c"}[1m]) or -1 * rate({a="d"}[1m])"#).unwrap() else { panic!() };
        let MetricExpr::Binary {
            op: BinOp::Or,
            lhs,
            rhs,
            ..
        } = m
        else {
            panic!("{m:?}")
        };
        let MetricExpr::Binary {
            op: BinOp::Gt,
            return_bool: true,
            matching: Some(vm),
            lhs: sub,
            ..
        } = *lhs
        else {
            panic!()
        };
        assert!(vm.on && vm.labels == ["x"]);
        let MetricExpr::Binary {
            op: BinOp::Sub,
            rhs: div,
            ..
        } = *sub
        else {
            panic!()
        };
        let MetricExpr::Binary {
            op: BinOp::Div,
            rhs: pow,
            ..
        } = *div
        else {
            panic!()
        };
        // ^ is right-associative: 2 ^ (3 ^ 2).
        assert!(
            matches!(*pow, MetricExpr::Binary { op: BinOp::Pow, ref rhs, .. } if matches!(**rhs, MetricExpr::Binary { op: BinOp::Pow, .. }))
        );
        assert!(
            matches!(*rhs, MetricExpr::Binary { op: BinOp::Mul, ref lhs, .. } if **lhs == MetricExpr::Number(-1.0))
        );
        assert!(parse(r#"{a="b"} | json | x > -5"#).is_ok());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = |q: &str| parse(q).unwrap_err().to_string();
        assert_eq!(
            e(r#"{a="b""#),
            "parse error at line 1, col 7: syntax error: expected \"}\", found end of query"
        );
        assert!(e(r#"{a=~".*"}"#).starts_with("parse error : queries require at least one"));
        assert!(e(r#"{a="b"} |~ "(""#).contains("invalid regex"));
        assert!(e(r#"sum_over_time({a="b"}[1m])"#).contains("without unwrap"));
        assert!(e(r#"rate({a="b"} | unwrap x [1m])"#).contains("not supported"));
        assert!(
            e(r#"count_over_time({a="b"}[1m]) > on (a) group_left 1"#).contains("not supported")
        );
        assert!(e(r#"count_over_time({a="b"}[1m]) and 1"#).contains("both sides"));
        assert!(e("1 + 1").contains("not a number"));
        assert!(parse("vector(1) + vector(1)").is_ok());
        assert!(e("sum(1)").contains("not a number"));
        assert!(e(r#"count_over_time({a="b"}[1m]) + bool 1"#).contains("bool modifier"));
        assert!(e(r#"{a="b"} | duration =~ 10ms"#).contains("cannot compare"));
        assert!(e(r#"{a="b"} | regexp "(\\d+)""#).contains("named capture"));
        assert!(e(r#"{a="b"} | foo"#).contains("unexpected \"foo\""));
        assert!(e(r#"topk(0, count_over_time({a="b"}[1m]))"#).contains("positive integer"));
        assert!(e("{a=\"b\"}\n | json | x >").contains("line 2, col"));
    }
}
