//! LogQL behind the Loki HTTP API (`/loki/api/v1/query`, `query_range`, `labels`,
//! `label/<name>/values`, `series`, `index/volume`), over `otel_logs`.
//!
//! In: a LogQL query and its parameters. Out: Loki's JSON (`streams`, `matrix`, `vector`)
//! or a plain-text 400 naming what is wrong. The path of a query:
//!
//! * `lexer` → `parser`: text → `ast` (a recursive-descent parser; no maintained crate fits,
//!   see docs/ARCHITECTURE.md);
//! * `sql`: tenant, time range, stream selector and the line filters before the first
//!   `line_format` → one `SELECT` with every string bound as a parameter;
//! * `pipeline` (with `parsers`, `pattern`, `template`): the other stages, in Rust, per row;
//! * `eval`: range windows `(t - range, t]` at each step and vector aggregations;
//!   `binary`: operators between them;
//! * `exec`: runs the `SELECT`, streams rows through the pipeline, bounds rows read;
//! * `api`: the handlers; `params`: times, steps, limits.

mod api;
pub mod ast;
pub mod binary;
pub mod error;
pub mod eval;
mod exec;
pub mod lexer;
mod params;
pub mod parser;
pub mod parsers;
pub mod pattern;
pub mod pipeline;
pub mod sql;
pub mod template;

pub use api::routes;
pub use parser::parse;

use ast::{Expr, MetricExpr, Stage};
use sql::{Bind, Fetch, Range};

/// The SQL a LogQL query becomes (one `SELECT` per range aggregation; placeholders for
/// tenant and times), its bound values, and what runs in Rust afterwards; a parse error as
/// Loki words it.
pub fn explain(query: &str) -> Result<String, String> {
    let expr = parse(query).map_err(|e| e.to_string())?;
    let mut parts = Vec::new();
    match &expr {
        Expr::Log(l) => parts.push(explain_select(l, Read::Entries { metric: false })),
        Expr::Metric(m) => {
            for (r, keep) in m.ranges_with_sums() {
                if let MetricExpr::Range { log, .. } = r {
                    let read = if eval::Extractor::new(r).countable() {
                        Read::Buckets(keep)
                    } else {
                        Read::Entries { metric: true }
                    };
                    parts.push(explain_select(log, read));
                }
            }
            parts.push(format!(
                "-- then in Rust, per step t: {}",
                describe_metric(m)
            ));
        }
    }
    Ok(parts.join("\n"))
}

/// How a `SELECT` reads.
enum Read {
    /// Every entry (of a log query, or of a metric query with Rust stages).
    Entries {
        /// For a metric query.
        metric: bool,
    },
    /// Entries counted per series (cut down to the labels a sum keeps, if any) and time
    /// bucket.
    Buckets(Option<ast::Grouping>),
}

/// One `SELECT`, its binds and the Rust stages after it.
fn explain_select(log: &ast::LogExpr, read: Read) -> String {
    let (select, mut names) = match &read {
        Read::Entries { metric } => {
            let range = if *metric {
                Range::Metric { after: 0, until: 0 }
            } else {
                Range::Log { start: 0, end: 0 }
            };
            let fetch = Fetch {
                range,
                backward: !metric,
                limit: 0,
            };
            (
                sql::entries("", &log.selector, &log.stages, fetch),
                Vec::new(),
            )
        }
        Read::Buckets(keep) => {
            let kept = keep
                .iter()
                .flat_map(|g| g.labels.iter().map(|l| format!("{l:?}")));
            let names: Vec<String> = kept
                .clone()
                .chain(kept)
                .chain(
                    [
                        "<window start ns>",
                        "<bucket ns - 1>",
                        "<bucket ns: gcd(step, range)>",
                    ]
                    .map(String::from),
                )
                .collect();
            (
                sql::buckets("", &log.selector, &log.stages, (0, 0), 1, 0, keep.as_ref()),
                names,
            )
        }
    };
    names.extend(
        [
            "<tenant>",
            "<first second>",
            "<last second>",
            "<start ns>",
            "<end ns>",
        ]
        .map(String::from),
    );
    let mut text = select.sql.clone();
    text.push_str("\n-- bound parameters, in order:");
    let last = select.binds.len();
    for (i, b) in select.binds.into_iter().enumerate() {
        let v = match (i, b) {
            (i, _) if i < names.len() => names[i].to_string(),
            (i, _) if i + 1 == last => match read {
                Read::Entries { metric: false } => {
                    "<limit, or query.logql_max_rows + 1 when Rust filters>".into()
                }
                _ => "<query.logql_max_rows + 1>".into(),
            },
            (_, Bind::Str(s)) => format!("{s:?}"),
            (_, Bind::Int(n)) => n.to_string(),
        };
        text.push_str(&format!("\n--   ?{} = {v}", i + 1));
    }
    let pushed = pipeline::pushed_down(&log.stages);
    let rest: Vec<String> = log
        .stages
        .iter()
        .zip(pushed)
        .filter(|(_, p)| !p)
        .map(|(s, _)| describe(s))
        .collect();
    text.push_str("\n-- then in Rust, per row: ");
    text.push_str(&if rest.is_empty() {
        "nothing".to_string()
    } else {
        rest.join(" | ")
    });
    text
}

fn describe(s: &Stage) -> String {
    match s {
        Stage::LineFilter { .. } => "line filter (after line_format)".into(),
        Stage::Json => "json".into(),
        Stage::Logfmt => "logfmt".into(),
        Stage::JsonFields(_) => "json (fields)".into(),
        Stage::LogfmtFields(_) => "logfmt (fields)".into(),
        Stage::Regexp(_) => "regexp".into(),
        Stage::Pattern(_) => "pattern".into(),
        Stage::LabelFilter(_) => "label filter".into(),
        Stage::LineFormat(_) => "line_format".into(),
        Stage::Decolorize => "decolorize".into(),
        Stage::LabelFormat(_) => "label_format".into(),
        Stage::Drop(_) => "drop".into(),
        Stage::Keep(_) => "keep".into(),
    }
}

fn describe_metric(m: &MetricExpr) -> String {
    match m {
        MetricExpr::Range {
            func,
            range_ns,
            offset_ns,
            unwrap,
            ..
        } => {
            let u = unwrap
                .as_ref()
                .map(|u| format!(" of unwrap {}", u.label))
                .unwrap_or_default();
            let o = match *offset_ns {
                0 => String::new(),
                ns => format!(" - {}s", ns as f64 / 1e9),
            };
            format!(
                "{func:?}{u} over (t{o} - {}s, t{o}]",
                *range_ns as f64 / 1e9
            )
        }
        MetricExpr::Vector {
            op,
            inner,
            grouping,
            ..
        } => {
            let g = grouping
                .as_ref()
                .map(|g| {
                    format!(
                        " {} ({})",
                        if g.without { "without" } else { "by" },
                        g.labels.join(", ")
                    )
                })
                .unwrap_or_default();
            format!("{}, then {op:?}{g}", describe_metric(inner))
        }
        MetricExpr::Binary { op, lhs, rhs, .. } => {
            format!(
                "({}) {op:?} ({})",
                describe_metric(lhs),
                describe_metric(rhs)
            )
        }
        MetricExpr::Number(n) => format!("{n}"),
        MetricExpr::Constant(n) => format!("vector({n})"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn explain_shows_sql_binds_and_rust_stages() {
        let e = super::explain(r#"sum by (job) (count_over_time({service="worker"} |= "job" | logfmt | attempt > 1 [5m]))"#).unwrap();
        assert!(
            e.starts_with("SELECT toUnixTimestamp64Nano(Timestamp) AS ts"),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "{}[?] = ? AND position(Body, ?) > 0 ORDER BY Timestamp ASC LIMIT ?",
                super::sql::STREAM_LABELS
            )),
            "{e}"
        );
        assert!(
            e.contains("?6 = \"service\"\n--   ?7 = \"worker\"\n--   ?8 = \"job\""),
            "{e}"
        );
        assert!(e.contains("per row: logfmt | label filter"), "{e}");
        assert!(
            e.contains("CountOverTime over (t - 300s, t], then Sum by (job)"),
            "{e}"
        );
        assert!(super::explain("{").unwrap_err().starts_with("parse error"));
        let counted = super::explain(r#"rate({a="x"} |= "error" [1m])"#).unwrap();
        assert!(counted.contains("count() AS entries"), "{counted}");
        assert!(counted.contains("?1 = <window start ns>"), "{counted}");
        assert!(counted.contains("?9 = \"a\"\n--   ?10 = \"x\"\n--   ?11 = \"error\"\n--   ?12 = <query.logql_max_rows + 1>"), "{counted}");
        let two = super::explain(r#"sum(rate({a="x"} |= "error" [1m])) / sum(rate({a="x"}[1m]))"#)
            .unwrap();
        assert_eq!(two.matches("SELECT").count(), 2, "{two}");
        assert!(two.ends_with("per step t: (Rate over (t - 60s, t], then Sum) Div (Rate over (t - 60s, t], then Sum)"), "{two}");
    }
}
