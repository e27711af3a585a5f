//! Errors of a LogQL request, each one HTTP answer.

use std::fmt;

/// A query Loki would refuse to parse; shown as Loki shows it
/// (`parse error at line 1, col 5: ...` or `parse error : ...`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// 1-based line, 0 when the error has no position.
    pub line: usize,
    /// 1-based column (characters), 0 when the error has no position.
    pub col: usize,
    /// What is wrong.
    pub msg: String,
}

impl ParseError {
    /// An error at byte offset `at` of `q`.
    pub fn at(q: &str, at: usize, msg: impl Into<String>) -> Self {
        let before = &q[..at.min(q.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        ParseError {
            line,
            col,
            msg: msg.into(),
        }
    }

    /// An error about the query as a whole.
    pub fn whole(msg: impl Into<String>) -> Self {
        ParseError {
            line: 0,
            col: 0,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "parse error : {}", self.msg)
        } else {
            write!(
                f,
                "parse error at line {}, col {}: {}",
                self.line, self.col, self.msg
            )
        }
    }
}

impl std::error::Error for ParseError {}

/// Why a request failed.
#[derive(Debug)]
pub enum QueryError {
    /// The request is wrong (HTTP 400, plain text as Loki answers).
    BadRequest(String),
    /// ClickHouse failed (HTTP 500).
    Storage(String),
}

impl From<ParseError> for QueryError {
    fn from(e: ParseError) -> Self {
        QueryError::BadRequest(e.to_string())
    }
}

impl From<clickhouse::error::Error> for QueryError {
    fn from(e: clickhouse::error::Error) -> Self {
        QueryError::Storage(format!("storage: {e}"))
    }
}
