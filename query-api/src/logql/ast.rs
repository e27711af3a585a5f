//! The LogQL syntax tree: what a query says, before anything is planned or run.

/// A whole query: a log query (streams) or a metric query (samples).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `{selector} | pipeline`.
    Log(LogExpr),
    /// A range or vector aggregation.
    Metric(MetricExpr),
}

/// A stream selector and its pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct LogExpr {
    /// The `{...}` matchers (ANDed).
    pub selector: Vec<Matcher>,
    /// The stages after the selector, in order.
    pub stages: Vec<Stage>,
}

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (anchored regex)
    Re,
    /// `!~` (anchored regex)
    NotRe,
}

/// `name op "value"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value or regex.
    pub value: String,
}

/// A line filter's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOp {
    /// `|=` contains.
    Contains,
    /// `!=` does not contain.
    NotContains,
    /// `|~` matches the (unanchored) regex.
    Match,
    /// `!~` does not match the regex.
    NotMatch,
}

/// A numeric comparison in a label filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==` or `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// A label filter expression (`| status >= 500 and method = "GET"`).
#[derive(Debug, Clone, PartialEq)]
pub enum LabelPred {
    /// Both hold.
    And(Box<LabelPred>, Box<LabelPred>),
    /// Either holds.
    Or(Box<LabelPred>, Box<LabelPred>),
    /// A string matcher on a label.
    Str(Matcher),
    /// A numeric comparison on a label.
    Num {
        /// Label name.
        name: String,
        /// Operator.
        op: CmpOp,
        /// Right-hand side (seconds for durations, bytes for sizes).
        value: f64,
        /// How the label's text is read.
        unit: Conversion,
    },
}

/// One entry of `label_format`.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelFormatValue {
    /// `dst=src`: rename.
    Rename(String),
    /// `dst="{{template}}"`.
    Template(String),
}

/// A pipeline stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `|= "x"`, `!= "x"`, `|~ "re"`, `!~ "re"`.
    LineFilter {
        /// Operator.
        op: LineOp,
        /// Text or regex.
        value: String,
    },
    /// `| json`.
    Json,
    /// `| logfmt`.
    Logfmt,
    /// `| json label="path.to[0].field", other`: only these, by JSON path.
    JsonFields(Vec<(String, String)>),
    /// `| logfmt label="key", other`: only these keys.
    LogfmtFields(Vec<(String, String)>),
    /// `| regexp "<re with named groups>"`.
    Regexp(String),
    /// `| pattern "<p>"`.
    Pattern(String),
    /// `| <label filter>`.
    LabelFilter(LabelPred),
    /// `| line_format "<template>"`.
    LineFormat(String),
    /// `| decolorize`: ANSI colour codes removed from the line.
    Decolorize,
    /// `| label_format a=b, c="{{...}}"`.
    LabelFormat(Vec<(String, LabelFormatValue)>),
    /// `| drop a, b="v"`.
    Drop(Vec<LabelSelect>),
    /// `| keep a, b="v"`.
    Keep(Vec<LabelSelect>),
}

/// A label named by `drop`/`keep`: by name, or by name and value matcher.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSelect {
    /// Just the name.
    Name(String),
    /// Name and a matcher on its value.
    Matcher(Matcher),
}

/// How a label's text is read as a number (`unwrap`, numeric label filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// A plain float.
    Number,
    /// A Go duration (`150ms`, `1h2m`) in seconds.
    Duration,
    /// A size (`20KB`, `1.5MiB`) in bytes.
    Bytes,
}

impl Conversion {
    /// A label's text as a number of this kind.
    pub fn read(self, text: &str) -> Option<f64> {
        let text = text.trim();
        match self {
            Conversion::Number => text.parse().ok(),
            Conversion::Duration => super::lexer::parse_duration(text).map(|ns| ns as f64 / 1e9),
            Conversion::Bytes => super::lexer::parse_bytes(text),
        }
    }
}

/// `| unwrap label` (and the label filters after it).
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrap {
    /// The label whose value becomes the sample.
    pub label: String,
    /// How it is read.
    pub conversion: Conversion,
    /// Label filters after the unwrap (e.g. `| __error__=""`).
    pub post_filters: Vec<LabelPred>,
}

/// `by (...)` or `without (...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// `without` rather than `by`.
    pub without: bool,
    /// The labels named.
    pub labels: Vec<String>,
}

/// Functions over a range of log entries or unwrapped samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFn {
    /// Entries in the range.
    CountOverTime,
    /// Entries per second.
    Rate,
    /// Line bytes in the range.
    BytesOverTime,
    /// Line bytes per second.
    BytesRate,
    /// Sum of unwrapped values.
    SumOverTime,
    /// Mean of unwrapped values.
    AvgOverTime,
    /// Least unwrapped value.
    MinOverTime,
    /// Greatest unwrapped value.
    MaxOverTime,
    /// φ-quantile of unwrapped values.
    QuantileOverTime,
    /// The oldest unwrapped value.
    FirstOverTime,
    /// The newest unwrapped value.
    LastOverTime,
    /// Population standard deviation of unwrapped values.
    StddevOverTime,
    /// Population variance of unwrapped values.
    StdvarOverTime,
    /// 1 when the range has no entries at all.
    AbsentOverTime,
}

/// Aggregations across series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorOp {
    /// Sum.
    Sum,
    /// Mean.
    Avg,
    /// Least.
    Min,
    /// Greatest.
    Max,
    /// Number of series.
    Count,
    /// Population standard deviation.
    Stddev,
    /// Population variance.
    Stdvar,
    /// The k largest.
    Topk,
    /// The k smallest.
    Bottomk,
}

/// A binary operator between metric queries or numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `and`
    And,
    /// `or`
    Or,
    /// `unless`
    Unless,
}

impl BinOp {
    /// A comparison (filters, or gives 0/1 with `bool`).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le
        )
    }

    /// A set operator (`and`, `or`, `unless`).
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// `on (...)` or `ignoring (...)`: which labels pair samples of the two sides.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorMatching {
    /// `on` rather than `ignoring`.
    pub on: bool,
    /// The labels named.
    pub labels: Vec<String>,
}

/// A metric query.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricExpr {
    /// `fn(<log expr> [range])`.
    Range {
        /// The function.
        func: RangeFn,
        /// φ for quantile_over_time.
        param: Option<f64>,
        /// The entries.
        log: LogExpr,
        /// `| unwrap ...`, for the `*_over_time` functions over values.
        unwrap: Option<Unwrap>,
        /// The range in ns.
        range_ns: i64,
        /// `offset`: the window ends this many ns before the evaluation time.
        offset_ns: i64,
        /// `by`/`without` after the call.
        grouping: Option<Grouping>,
    },
    /// `op by (...) (inner)`.
    Vector {
        /// The aggregation.
        op: VectorOp,
        /// k for topk/bottomk.
        param: Option<f64>,
        /// Grouping.
        grouping: Option<Grouping>,
        /// The aggregated expression.
        inner: Box<MetricExpr>,
    },
    /// `lhs op [bool] [on|ignoring (...)] rhs`.
    Binary {
        /// The operator.
        op: BinOp,
        /// Left side.
        lhs: Box<MetricExpr>,
        /// Right side.
        rhs: Box<MetricExpr>,
        /// `bool`: comparisons give 0/1 instead of filtering.
        return_bool: bool,
        /// `on`/`ignoring`.
        matching: Option<VectorMatching>,
    },
    /// A number.
    Number(f64),
    /// `vector(n)`: one series without labels, valued `n` at every time.
    Constant(f64),
}

impl MetricExpr {
    /// The range aggregations of the expression, left to right (each one `SELECT`).
    pub fn ranges(&self) -> Vec<&MetricExpr> {
        self.ranges_with_sums()
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    /// The range aggregations (as [`MetricExpr::ranges`]), each with the labels its series
    /// may be cut down to before they are counted: those a `sum` directly around a
    /// `count_over_time` or `bytes_over_time` keeps. Summing whole numbers is exact, so
    /// series that differ only in labels the sum drops can be added up in SQL first.
    pub fn ranges_with_sums(&self) -> Vec<(&MetricExpr, Option<Grouping>)> {
        match self {
            MetricExpr::Range { .. } => vec![(self, None)],
            MetricExpr::Vector {
                op: VectorOp::Sum,
                grouping,
                inner,
                ..
            } if matches!(
                **inner,
                MetricExpr::Range {
                    func: RangeFn::CountOverTime | RangeFn::BytesOverTime,
                    grouping: None,
                    ..
                }
            ) =>
            {
                let kept = grouping.clone().unwrap_or(Grouping {
                    without: false,
                    labels: Vec::new(),
                });
                vec![(&**inner, Some(kept))]
            }
            MetricExpr::Vector { inner, .. } => inner.ranges_with_sums(),
            MetricExpr::Binary { lhs, rhs, .. } => {
                let mut out = lhs.ranges_with_sums();
                out.extend(rhs.ranges_with_sums());
                out
            }
            MetricExpr::Number(_) | MetricExpr::Constant(_) => Vec::new(),
        }
    }

    /// Whether the expression is a plain number (no series in it).
    pub fn is_scalar(&self) -> bool {
        match self {
            MetricExpr::Number(_) => true,
            MetricExpr::Binary { lhs, rhs, .. } => lhs.is_scalar() && rhs.is_scalar(),
            _ => false,
        }
    }
}
