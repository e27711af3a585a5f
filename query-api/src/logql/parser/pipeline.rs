//! The pipeline after a stream selector: line filters, parsers, label filters, formatters,
//! `drop`/`keep`, and `unwrap` with the filters after it.

use super::super::ast::*;
use super::super::error::ParseError;
use super::super::lexer::Tok;
use super::super::parsers::JsonPath;
use super::super::pattern::Pattern;
use super::super::template::Template;
use super::{Parser, anchored};

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

impl Parser<'_> {
    /// Stages up to (not including) an `unwrap`.
    pub(super) fn stages(&mut self) -> Result<Vec<Stage>, ParseError> {
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

    pub(super) fn stage(&mut self) -> Result<Stage, ParseError> {
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
                            JsonPath::parse(&e)
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
                Pattern::new(&p).map_err(|e| ParseError::at(self.q, self.toks[at].at, e))?;
                Stage::Pattern(p)
            }
            "line_format" => {
                let at = self.pos;
                let t = self.string()?;
                Template::new(&t).map_err(|e| ParseError::at(self.q, self.toks[at].at, e))?;
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
                            Template::new(&t)
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

    pub(super) fn label_pred(&mut self) -> Result<LabelPred, ParseError> {
        let mut left = self.label_and()?;
        while self.peek_ident("or") {
            self.pos += 1;
            let right = self.label_and()?;
            left = LabelPred::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    pub(super) fn label_and(&mut self) -> Result<LabelPred, ParseError> {
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

    pub(super) fn label_primary(&mut self) -> Result<LabelPred, ParseError> {
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

    pub(super) fn unwrap(&mut self) -> Result<Option<Unwrap>, ParseError> {
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
}
