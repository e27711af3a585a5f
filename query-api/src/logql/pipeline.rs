//! The pipeline stages that run in Rust on fetched rows: parsers, label filters,
//! formatters, `drop`/`keep`, line filters after a `line_format`, and `unwrap`. Errors
//! become the `__error__` label as in Loki (`JSONParserErr`, `LogfmtParserErr`,
//! `LabelFilterErr`, `SampleExtractionErr`).

use std::collections::BTreeMap;

use regex::Regex;

use super::ast::{
    CmpOp, Conversion, LabelFormatValue, LabelPred, LabelSelect, LineOp, MatchOp, Matcher, Stage,
    Unwrap,
};
use super::parser::anchored;
use super::pattern::Pattern;
use super::template::Template;

/// Labels of an entry, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// ANSI escape sequences (colours, cursor moves) that `decolorize` removes.
const ANSI: &str = r"[\x1b\x{9b}][\[\]()#;?]*(?:(?:(?:[a-zA-Z\d]*(?:;[a-zA-Z\d]*)*)?\x07)|(?:(?:\d{1,4}(?:;\d{0,4})*)?[\dA-PRZcf-ntqry=><~]))";

/// The error label.
pub const ERROR_LABEL: &str = "__error__";

/// A matcher with its regex compiled.
#[derive(Debug, Clone)]
pub struct CompiledMatcher {
    name: String,
    op: MatchOp,
    value: String,
    re: Option<Regex>,
}

impl CompiledMatcher {
    /// Compiles `m` (regexes anchored, as Loki does).
    pub fn new(m: &Matcher) -> Self {
        let re = matches!(m.op, MatchOp::Re | MatchOp::NotRe)
            .then(|| Regex::new(&anchored(&m.value)).expect("checked by the parser"));
        CompiledMatcher {
            name: m.name.clone(),
            op: m.op,
            value: m.value.clone(),
            re,
        }
    }

    /// Whether the label's value (empty when missing) matches.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

#[derive(Debug, Clone)]
enum Pred {
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Str(CompiledMatcher),
    Num {
        name: String,
        op: CmpOp,
        value: f64,
        unit: Conversion,
    },
}

impl Pred {
    fn new(p: &LabelPred) -> Pred {
        match p {
            LabelPred::And(a, b) => Pred::And(Box::new(Pred::new(a)), Box::new(Pred::new(b))),
            LabelPred::Or(a, b) => Pred::Or(Box::new(Pred::new(a)), Box::new(Pred::new(b))),
            LabelPred::Str(m) => Pred::Str(CompiledMatcher::new(m)),
            LabelPred::Num {
                name,
                op,
                value,
                unit,
            } => Pred::Num {
                unit: *unit,
                name: name.clone(),
                op: *op,
                value: *value,
            },
        }
    }

    /// Loki's rules: both sides of `and`/`or` are evaluated (a side may set `__error__`);
    /// a numeric filter passes entries that already have an error, drops entries without
    /// the label, and passes with `LabelFilterErr` those whose value is not a number.
    fn test(&self, labels: &mut Labels) -> bool {
        match self {
            Pred::And(a, b) => {
                let l = a.test(labels);
                let r = b.test(labels);
                l && r
            }
            Pred::Or(a, b) => {
                if a.test(labels) {
                    return true;
                }
                b.test(labels)
            }
            Pred::Str(m) => m.matches(labels),
            Pred::Num {
                name,
                op,
                value,
                unit,
            } => {
                if labels.contains_key(ERROR_LABEL) {
                    return true;
                }
                let Some(v) = labels.get(name) else {
                    return false;
                };
                let Some(v) = unit.read(v) else {
                    labels.insert(ERROR_LABEL.into(), "LabelFilterErr".into());
                    return true;
                };
                match op {
                    CmpOp::Eq => v == *value,
                    CmpOp::Ne => v != *value,
                    CmpOp::Gt => v > *value,
                    CmpOp::Ge => v >= *value,
                    CmpOp::Lt => v < *value,
                    CmpOp::Le => v <= *value,
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Line {
    Contains(String),
    NotContains(String),
    Match(Regex),
    NotMatch(Regex),
}

#[derive(Debug, Clone)]
enum Step {
    Line(Line),
    Json,
    Logfmt,
    JsonFields(Vec<String>, Vec<super::parsers::JsonPath>),
    LogfmtFields(Vec<(String, String)>),
    Regexp(Regex),
    Pattern(Pattern),
    Filter(Pred),
    LineFormat(Template),
    Decolorize(Regex),
    LabelFormat(Vec<(String, Format)>),
    Drop(Vec<Select>),
    Keep(Vec<Select>),
}

#[derive(Debug, Clone)]
enum Format {
    Rename(String),
    Template(Template),
}

#[derive(Debug, Clone)]
enum Select {
    Name(String),
    Matcher(CompiledMatcher),
}

impl Select {
    fn new(s: &LabelSelect) -> Select {
        match s {
            LabelSelect::Name(n) => Select::Name(n.clone()),
            LabelSelect::Matcher(m) => Select::Matcher(CompiledMatcher::new(m)),
        }
    }

    fn hits(&self, name: &str, labels: &Labels) -> bool {
        match self {
            Select::Name(n) => n == name,
            Select::Matcher(m) => m.name == name && m.matches(labels),
        }
    }
}

/// The stages a query runs in Rust, compiled.
#[derive(Debug, Clone)]
pub struct Pipeline {
    steps: Vec<Step>,
}

/// Which stages ClickHouse evaluates: the line filters before the first `line_format` or
/// `decolorize` (they test the original line, which is the stored `Body`).
pub fn pushed_down(stages: &[Stage]) -> Vec<bool> {
    let mut before_format = true;
    stages
        .iter()
        .map(|s| {
            if matches!(s, Stage::LineFormat(_) | Stage::Decolorize) {
                before_format = false;
            }
            before_format && matches!(s, Stage::LineFilter { .. })
        })
        .collect()
}

impl Pipeline {
    /// Compiles the stages that are not pushed down to SQL.
    pub fn new(stages: &[Stage]) -> Pipeline {
        let pushed = pushed_down(stages);
        let steps = stages
            .iter()
            .zip(pushed)
            .filter(|(_, p)| !p)
            .map(|(s, _)| match s {
                Stage::LineFilter { op, value } => Step::Line(match op {
                    LineOp::Contains => Line::Contains(value.clone()),
                    LineOp::NotContains => Line::NotContains(value.clone()),
                    LineOp::Match => Line::Match(Regex::new(value).expect("checked by the parser")),
                    LineOp::NotMatch => {
                        Line::NotMatch(Regex::new(value).expect("checked by the parser"))
                    }
                }),
                Stage::Json => Step::Json,
                Stage::Logfmt => Step::Logfmt,
                Stage::JsonFields(f) => Step::JsonFields(
                    f.iter().map(|(l, _)| l.clone()).collect(),
                    f.iter()
                        .map(|(_, p)| {
                            super::parsers::JsonPath::parse(p).expect("checked by the parser")
                        })
                        .collect(),
                ),
                Stage::LogfmtFields(f) => Step::LogfmtFields(f.clone()),
                Stage::Regexp(re) => Step::Regexp(Regex::new(re).expect("checked by the parser")),
                Stage::Pattern(p) => Step::Pattern(Pattern::new(p).expect("checked by the parser")),
                Stage::LabelFilter(p) => Step::Filter(Pred::new(p)),
                Stage::LineFormat(t) => {
                    Step::LineFormat(Template::new(t).expect("checked by the parser"))
                }
                Stage::Decolorize => Step::Decolorize(Regex::new(ANSI).expect("a valid regex")),
                Stage::LabelFormat(fs) => Step::LabelFormat(
                    fs.iter()
                        .map(|(dst, v)| {
                            let f = match v {
                                LabelFormatValue::Rename(src) => Format::Rename(src.clone()),
                                LabelFormatValue::Template(t) => Format::Template(
                                    Template::new(t).expect("checked by the parser"),
                                ),
                            };
                            (dst.clone(), f)
                        })
                        .collect(),
                ),
                Stage::Drop(s) => Step::Drop(s.iter().map(Select::new).collect()),
                Stage::Keep(s) => Step::Keep(s.iter().map(Select::new).collect()),
            })
            .collect();
        Pipeline { steps }
    }

    /// Whether nothing runs in Rust (every stage was pushed down to SQL).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether some stage here can drop an entry (so a SQL `LIMIT` would cut too early).
    pub fn filters(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Line(_) | Step::Filter(_)))
    }

    /// Runs an entry through the stages: its final line and labels, or `None` when a
    /// filter drops it. `labels` starts as the stream labels.
    pub fn run(&self, line: &str, labels: &mut Labels) -> Option<String> {
        let stream = labels.clone();
        self.run_on(line, &stream, labels)
    }

    /// [`Pipeline::run`] for an entry whose `labels` hold more than its `stream` labels
    /// (structured metadata): only stream labels make a parsed name take `_extracted`.
    pub fn run_on(&self, line: &str, stream: &Labels, labels: &mut Labels) -> Option<String> {
        let mut line = line.to_string();
        let set = |labels: &mut Labels, key: String, value: String| {
            let key = if stream.contains_key(&key) {
                format!("{key}_extracted")
            } else {
                key
            };
            if value.is_empty() {
                labels.remove(&key);
            } else {
                labels.insert(key, value);
            }
        };
        for step in &self.steps {
            match step {
                Step::Line(f) => {
                    let keep = match f {
                        Line::Contains(s) => line.contains(s.as_str()),
                        Line::NotContains(s) => !line.contains(s.as_str()),
                        Line::Match(r) => r.is_match(&line),
                        Line::NotMatch(r) => !r.is_match(&line),
                    };
                    if !keep {
                        return None;
                    }
                }
                Step::Json => match super::parsers::json(&line) {
                    Ok(pairs) => pairs.into_iter().for_each(|(k, v)| set(labels, k, v)),
                    Err(_) => {
                        labels.insert(ERROR_LABEL.into(), "JSONParserErr".into());
                    }
                },
                Step::Logfmt => {
                    let (pairs, err) = super::parsers::logfmt(&line);
                    pairs
                        .into_iter()
                        .for_each(|(k, v)| set(labels, super::parsers::sanitize(&k), v));
                    if err.is_some() {
                        labels.insert(ERROR_LABEL.into(), "LogfmtParserErr".into());
                    }
                }
                Step::JsonFields(names, paths) => match super::parsers::json_fields(&line, paths) {
                    Ok(values) => names
                        .iter()
                        .zip(values)
                        .for_each(|(k, v)| set(labels, k.clone(), v)),
                    Err(_) => {
                        labels.insert(ERROR_LABEL.into(), "JSONParserErr".into());
                    }
                },
                Step::LogfmtFields(fields) => {
                    let (pairs, err) = super::parsers::logfmt(&line);
                    for (label, key) in fields {
                        // The last pair with the key wins, as in the full parser.
                        let v = pairs
                            .iter()
                            .rev()
                            .find(|(k, _)| k == key)
                            .map(|(_, v)| v.clone());
                        set(labels, label.clone(), v.unwrap_or_default());
                    }
                    if err.is_some() {
                        labels.insert(ERROR_LABEL.into(), "LogfmtParserErr".into());
                    }
                }
                Step::Regexp(re) => {
                    if let Some(c) = re.captures(&line) {
                        for name in re.capture_names().flatten() {
                            let v = c.name(name).map_or("", |m| m.as_str()).to_string();
                            set(labels, name.to_string(), v);
                        }
                    }
                }
                Step::Pattern(p) => {
                    let caps: Vec<(String, String)> = p
                        .captures(&line)
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    caps.into_iter().for_each(|(k, v)| set(labels, k, v));
                }
                Step::Filter(p) => {
                    if !p.test(labels) {
                        return None;
                    }
                }
                Step::LineFormat(t) => line = t.render(labels, &line),
                Step::Decolorize(re) => line = re.replace_all(&line, "").into_owned(),
                Step::LabelFormat(fs) => {
                    let snapshot = labels.clone();
                    for (dst, f) in fs {
                        match f {
                            Format::Rename(src) => {
                                if let Some(v) = labels.remove(src) {
                                    labels.insert(dst.clone(), v);
                                }
                            }
                            Format::Template(t) => {
                                let v = t.render(&snapshot, &line);
                                if v.is_empty() {
                                    labels.remove(dst);
                                } else {
                                    labels.insert(dst.clone(), v);
                                }
                            }
                        }
                    }
                }
                Step::Drop(sel) => {
                    let snapshot = labels.clone();
                    labels.retain(|k, _| !sel.iter().any(|s| s.hits(k, &snapshot)));
                }
                Step::Keep(sel) => {
                    let snapshot = labels.clone();
                    labels.retain(|k, _| {
                        k == ERROR_LABEL || sel.iter().any(|s| s.hits(k, &snapshot))
                    });
                }
            }
        }
        Some(line)
    }
}

/// `unwrap` compiled: the label, its conversion and the filters after it.
#[derive(Debug, Clone)]
pub struct Unwrapper {
    label: String,
    conversion: Conversion,
    post: Vec<Pred>,
}

impl Unwrapper {
    /// Compiles `u`.
    pub fn new(u: &Unwrap) -> Self {
        Unwrapper {
            label: u.label.clone(),
            conversion: u.conversion,
            post: u.post_filters.iter().map(Pred::new).collect(),
        }
    }

    /// The label unwrapped.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The sample value of an entry (`None`: no sample, as when the label is missing or a
    /// post filter drops it); a value that does not convert gives 0 and `SampleExtractionErr`.
    pub fn sample(&self, labels: &mut Labels) -> Option<f64> {
        let text = labels
            .get(&self.label)
            .filter(|v| !v.is_empty())?
            .trim()
            .to_string();
        let v = self.conversion.read(&text);
        let v = v.unwrap_or_else(|| {
            labels.insert(ERROR_LABEL.into(), "SampleExtractionErr".into());
            0.0
        });
        for p in &self.post {
            if !p.test(labels) {
                return None;
            }
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::ast::{Expr, LogExpr};
    use crate::logql::parser::parse;

    fn log(q: &str) -> LogExpr {
        match parse(q).unwrap() {
            Expr::Log(l) => l,
            _ => panic!(),
        }
    }

    fn labels(p: &[(&str, &str)]) -> Labels {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parsers_filters_and_formatters() {
        let l = log(
            r#"{level="info"} | json | status >= 500 | line_format "{{.method}} {{.path | upper}}" |= "GET" | label_format who=user_id, lvl="{{.level_extracted}}!" | drop trace_id, user_tier | keep who, lvl, status, level"#,
        );
        assert_eq!(pushed_down(&l.stages), vec![false; 7]);
        let p = Pipeline::new(&l.stages);
        assert!(p.filters());
        let mut lb = labels(&[("level", "info")]);
        let line = r#"{"level":"error","method":"GET","path":"/a","status":500,"trace_id":"x","user":{"id":7,"tier":"pro"}}"#;
        assert_eq!(p.run(line, &mut lb).as_deref(), Some("GET /A"));
        assert_eq!(
            lb,
            labels(&[
                ("level", "info"),
                ("lvl", "error!"),
                ("status", "500"),
                ("who", "7")
            ])
        );
        let mut lb = labels(&[("level", "info")]);
        assert_eq!(p.run(&line.replace("500", "200"), &mut lb), None);
        // Not JSON: the error label, and the numeric filter lets it through.
        let p = Pipeline::new(&log(r#"{level="info"} | json | status >= 500"#).stages);
        let mut lb = labels(&[("level", "info")]);
        assert_eq!(p.run("GET plain", &mut lb).as_deref(), Some("GET plain"));
        assert_eq!(lb[ERROR_LABEL], "JSONParserErr");
    }

    #[test]
    fn filters_pushed_to_sql_are_not_run_again_and_errors_can_be_filtered() {
        let l = log(
            r#"{a="b"} |= "x" | logfmt | n > 1 or __error__ != "" | __error__ = ""  | regexp "d=(?P<d>\\d+)ms" | pattern "<_> p=<p>""#,
        );
        assert!(pushed_down(&l.stages)[0]);
        let p = Pipeline::new(&l.stages);
        let mut lb = Labels::new();
        assert_eq!(
            p.run("no x here n=2 d=15ms p=9", &mut lb).as_deref(),
            Some("no x here n=2 d=15ms p=9")
        );
        assert_eq!(lb, labels(&[("d", "15"), ("n", "2"), ("p", "9")]));
        let mut lb = Labels::new();
        assert_eq!(
            p.run("n=x", &mut lb),
            None,
            "LabelFilterErr then filtered out"
        );
        let mut lb = Labels::new();
        assert_eq!(
            p.run("a=\"open", &mut lb),
            None,
            "LogfmtParserErr then filtered out"
        );
    }

    #[test]
    fn decolorize_and_unit_filters() {
        let l =
            log(r#"{a="b"} |= "ok" | decolorize |= "red" | logfmt | took > 1.5s | size >= 2KiB"#);
        assert_eq!(
            pushed_down(&l.stages),
            vec![true, false, false, false, false, false]
        );
        let p = Pipeline::new(&l.stages);
        let mut lb = Labels::new();
        let line = "\x1b[31mred\x1b[0m ok took=2s size=3kb";
        assert_eq!(
            p.run(line, &mut lb).as_deref(),
            Some("red ok took=2s size=3kb")
        );
        let mut lb = Labels::new();
        assert_eq!(p.run("red took=1s size=3kb", &mut lb), None);
        let mut lb = Labels::new();
        assert_eq!(p.run("red took=2s size=2000", &mut lb), None, "2000 < 2048");
        let mut lb = Labels::new();
        assert!(p.run("red took=soon size=1", &mut lb).is_some());
        assert_eq!(lb[ERROR_LABEL], "LabelFilterErr");
    }

    #[test]
    fn unwrap_values_and_errors() {
        let u = Unwrapper::new(&Unwrap {
            label: "d".into(),
            conversion: Conversion::Duration,
            post_filters: vec![],
        });
        assert_eq!(u.sample(&mut labels(&[("d", "1.5s")])), Some(1.5));
        assert_eq!(u.sample(&mut labels(&[])), None);
        let mut lb = labels(&[("d", "soon")]);
        assert_eq!(u.sample(&mut lb), Some(0.0));
        assert_eq!(lb[ERROR_LABEL], "SampleExtractionErr");
        // Filters after unwrap see the unwrapped label and can drop errors.
        let crate::logql::ast::Expr::Metric(m) =
            parse(r#"max_over_time({a="b"} | unwrap n | __error__="" | n > 1 [1m])"#).unwrap()
        else {
            panic!()
        };
        let crate::logql::ast::MetricExpr::Range {
            unwrap: Some(u), ..
        } = m
        else {
            panic!()
        };
        let u = Unwrapper::new(&u);
        assert_eq!(u.sample(&mut labels(&[("n", "2")])), Some(2.0));
        assert_eq!(u.sample(&mut labels(&[("n", "1")])), None);
        assert_eq!(u.sample(&mut labels(&[("n", "x")])), None);
    }
}
