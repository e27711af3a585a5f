//! A recursive-descent LogQL parser (the subset obs evaluates; anything else is a parse
//! error naming the construct, never a silently different query).
//!
//! ```text
//! expr      := metric | log
//! log       := selector stage*
//! selector  := "{" matcher ("," matcher)* "}"
//! stage     := lineop STRING | "|" (json [fields] | logfmt [fields] | regexp STRING
//!              | pattern STRING | line_format STRING | label_format fmt ("," fmt)*
//!              | drop sel ("," sel)* | keep sel ("," sel)* | decolorize | labelpred)
//! labelpred := and ("or" and)*      and := primary (("and" | ",")? primary)*
//! primary   := "(" labelpred ")" | NAME strop STRING | NAME cmpop (NUMBER | DURATION | SIZE)
//! unwrap    := "|" unwrap [conv "("] NAME [")"] ("|" labelpred)*
//! metric    := operand (binop ["bool"] [("on" | "ignoring") "(" names ")"] operand)*
//! operand   := NUMBER | "(" metric ")" | "vector" "(" NUMBER ")"
//!            | rangefn "(" [NUMBER ","] logrange ")" [grouping]
//!            | vecop [grouping] "(" [NUMBER ","] metric ")" [grouping]
//! logrange  := log [unwrap] range | selector range stage* [unwrap] | "(" log [unwrap] ")" range
//! range     := "[" DURATION "]" ["offset" DURATION]
//! ```
//!
//! `mod.rs` holds the token helpers and selectors, `pipeline` the stages, `metric` the
//! aggregations and operators.

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

/// The tokens of a query and the position reached.
struct Parser<'a> {
    q: &'a str,
    toks: Vec<Spanned>,
    pos: usize,
}

mod metric;
mod pipeline;

impl Parser<'_> {
    pub(super) fn err(&self, msg: impl Into<String>) -> ParseError {
        let at = self.toks.get(self.pos).map_or(self.q.len(), |t| t.at);
        ParseError::at(self.q, at, msg)
    }

    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    pub(super) fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|t| &t.tok)
    }

    pub(super) fn peek_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    pub(super) fn peek_ident(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == name)
    }

    pub(super) fn eat_op(&mut self, op: &str) -> bool {
        let hit = self.peek_op(op);
        if hit {
            self.pos += 1;
        }
        hit
    }

    pub(super) fn describe(&self) -> String {
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

    pub(super) fn expect_op(&mut self, op: &str) -> Result<(), ParseError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(self.err(format!(
                "syntax error: expected {op:?}, found {}",
                self.describe()
            )))
        }
    }

    pub(super) fn ident(&mut self) -> Result<String, ParseError> {
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

    pub(super) fn string(&mut self) -> Result<String, ParseError> {
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

    pub(super) fn number(&mut self) -> Result<f64, ParseError> {
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

    pub(super) fn selector(&mut self) -> Result<Vec<Matcher>, ParseError> {
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

    pub(super) fn matcher(&mut self) -> Result<Matcher, ParseError> {
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

    pub(super) fn check_regex(&self, re: &str, tok: usize) -> Result<(), ParseError> {
        regex::Regex::new(re).map(|_| ()).map_err(|e| {
            let at = self.toks.get(tok).map_or(0, |t| t.at);
            ParseError::at(self.q, at, format!("invalid regex: {e}"))
        })
    }

    pub(super) fn log(&mut self) -> Result<LogExpr, ParseError> {
        let selector = self.selector()?;
        let stages = self.stages()?;
        Ok(LogExpr { selector, stages })
    }

    /// Whether a (signed) number is ahead.
    pub(super) fn peek_signed_number(&self) -> bool {
        matches!(
            (self.peek(), self.peek_at(1)),
            (Some(Tok::Num(_)), _) | (Some(Tok::Op("-")), Some(Tok::Num(_)))
        )
    }

    /// A number, with its sign.
    pub(super) fn signed_number(&mut self) -> Option<f64> {
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
