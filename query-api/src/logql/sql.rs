//! What ClickHouse does for a LogQL query: tenant, time range, stream-selector matchers
//! and the line filters before the first `line_format`, as one `SELECT` over `otel_logs`.
//! Every label name, value, regex and filter string is a bound parameter (`?`); the SQL
//! text holds none of the query's strings.

use super::ast::{Grouping, LineOp, MatchOp, Matcher, Stage};
use super::parser::anchored;
use super::pipeline::pushed_down;

/// A stream's labels: the record's resource attributes with names made label-safe, as Loki
/// 3 does for OTLP (`service.name` is `service_name`); Loki push labels are unchanged.
pub const STREAM_LABELS: &str =
    "mapApply((k, v) -> (replaceRegexpAll(k, '[^a-zA-Z0-9_]', '_'), v), ResourceAttributes)";

/// A record's structured metadata: its attributes, and its trace and span ids as
/// `trace_id` and `span_id` (Loki 3's names for OTLP logs), so `{…} | trace_id="…"` finds
/// a trace's logs, as Grafana's trace-to-logs link asks. An attribute of the same name wins
/// (a Loki push's own `trace_id`); empty ids are dropped with other empty values.
pub const METADATA: &str = "mapUpdate(map('trace_id', TraceId, 'span_id', SpanId), LogAttributes)";

/// A value bound to a `?`.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

/// A `SELECT` and its bound values, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// SQL with `?` placeholders.
    pub sql: String,
    /// Bound values.
    pub binds: Vec<Bind>,
}

/// The time range of the rows read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// `[start, end)` in ns: what a log query returns.
    Log {
        /// First ns (inclusive).
        start: i64,
        /// Last ns (exclusive).
        end: i64,
    },
    /// `(start, end]` in ns: what range windows `(t - range, t]` need.
    Metric {
        /// Exclusive lower bound.
        after: i64,
        /// Inclusive upper bound.
        until: i64,
    },
}

/// Which rows, in which order, how many.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fetch {
    /// The time range.
    pub range: Range,
    /// Newest first.
    pub backward: bool,
    /// `LIMIT` (the caller asks one more than it accepts, to tell "exceeded").
    pub limit: u64,
}

/// The `WHERE` of the rows a selector and its pushed-down line filters select.
pub fn filter(tenant: &str, selector: &[Matcher], stages: &[Stage], range: Range) -> Select {
    let mut conds = vec!["Tenant = ?".to_string()];
    let mut binds = vec![Bind::Str(tenant.to_string())];
    let (lo, lo_op, hi, hi_op) = match range {
        Range::Log { start, end } => (start, ">=", end, "<"),
        Range::Metric { after, until } => (after, ">", until, "<="),
    };
    // TimestampTime is in the sort key (whole seconds), Timestamp the exact bound.
    conds.push("TimestampTime >= toDateTime(?) AND TimestampTime <= toDateTime(?)".into());
    binds.push(Bind::Int(lo.div_euclid(1_000_000_000)));
    binds.push(Bind::Int(hi.div_euclid(1_000_000_000)));
    conds.push(format!(
        "Timestamp {lo_op} fromUnixTimestamp64Nano(toInt64(?)) AND Timestamp {hi_op} fromUnixTimestamp64Nano(toInt64(?))"
    ));
    binds.push(Bind::Int(lo));
    binds.push(Bind::Int(hi));
    for m in selector {
        binds.push(Bind::Str(m.name.clone()));
        let (cond, value) = match m.op {
            MatchOp::Eq => ("{L}[?] = ?", m.value.clone()),
            MatchOp::Ne => ("{L}[?] != ?", m.value.clone()),
            MatchOp::Re => ("match({L}[?], ?)", anchored(&m.value)),
            MatchOp::NotRe => ("NOT match({L}[?], ?)", anchored(&m.value)),
        };
        conds.push(cond.replace("{L}", STREAM_LABELS));
        binds.push(Bind::Str(value));
    }
    for (stage, pushed) in stages.iter().zip(pushed_down(stages)) {
        let (true, Stage::LineFilter { op, value }) = (pushed, stage) else {
            continue;
        };
        conds.push(
            match op {
                LineOp::Contains => "position(Body, ?) > 0",
                LineOp::NotContains => "position(Body, ?) = 0",
                LineOp::Match => "match(Body, ?)",
                LineOp::NotMatch => "NOT match(Body, ?)",
            }
            .into(),
        );
        binds.push(Bind::Str(value.clone()));
    }
    Select {
        sql: conds.join(" AND "),
        binds,
    }
}

/// The rows of a log or metric query: ns timestamp, line, stream labels and structured
/// metadata.
pub fn entries(tenant: &str, selector: &[Matcher], stages: &[Stage], fetch: Fetch) -> Select {
    let mut f = filter(tenant, selector, stages, fetch.range);
    let order = if fetch.backward { "DESC" } else { "ASC" };
    f.sql = format!(
        "SELECT toUnixTimestamp64Nano(Timestamp) AS ts, Body AS line, {STREAM_LABELS} AS labels, {METADATA} AS metadata FROM otel_logs WHERE {} ORDER BY Timestamp {order} LIMIT ?",
        f.sql
    );
    f.binds
        .push(Bind::Int(i64::try_from(fetch.limit).unwrap_or(i64::MAX)));
    f
}

/// Entries counted in SQL per series (stream labels and metadata) and per time bucket
/// `(after + (k - 1) * width, after + k * width]`, with their line bytes: what a range
/// aggregation without Rust stages needs when its windows are unions of buckets. With
/// `keep`, the series are counted by those labels only (`by`, or all but them: `without`),
/// for a sum around the aggregation that drops the others anyway.
pub fn buckets(
    tenant: &str,
    selector: &[Matcher],
    stages: &[Stage],
    (after, until): (i64, i64),
    width: i64,
    limit: u64,
    keep: Option<&Grouping>,
) -> Select {
    let mut f = filter(tenant, selector, stages, Range::Metric { after, until });
    let mut binds = Vec::new();
    let (labels, metadata) = match keep {
        None => (STREAM_LABELS.to_string(), METADATA.to_string()),
        Some(g) => {
            let names = vec!["?"; g.labels.len()].join(", ");
            let test = if g.without { "NOT has" } else { "has" };
            let cut = |map: &str| {
                format!("mapFilter((k, v) -> {test}(CAST([{names}] AS Array(String)), k), {map})")
            };
            for _ in 0..2 {
                binds.extend(g.labels.iter().map(|l| Bind::Str(l.clone())));
            }
            (cut(STREAM_LABELS), cut(METADATA))
        }
    };
    f.sql = format!(
        "SELECT {labels} AS labels, {metadata} AS metadata, intDiv(toUnixTimestamp64Nano(Timestamp) - toInt64(?) + toInt64(?), toInt64(?)) AS bucket, count() AS entries, sum(length(Body)) AS bytes FROM otel_logs WHERE {} GROUP BY labels, metadata, bucket LIMIT ?",
        f.sql
    );
    binds.extend([Bind::Int(after), Bind::Int(width - 1), Bind::Int(width)]);
    binds.append(&mut f.binds);
    binds.push(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    f.binds = binds;
    f
}

/// `SELECT` text with its binds written out as SQL literals after it, for reading.
pub fn render(s: &Select) -> String {
    let mut out = s.sql.clone();
    out.push_str("\n-- bound parameters, in order:");
    for (i, b) in s.binds.iter().enumerate() {
        let v = match b {
            Bind::Str(v) => format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'")),
            Bind::Int(v) => v.to_string(),
        };
        out.push_str(&format!("\n--   ?{} = {v}", i + 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::ast::Expr;
    use crate::logql::parser::parse;

    #[test]
    fn selector_and_line_filters_become_bound_conditions() {
        let Expr::Log(l) = parse(r#"{app="a'; DROP TABLE x --", env=~"p.*"} |= "x?y" != "z" | line_format "{{.app}}" |= "after""#).unwrap() else { panic!() };
        let s = entries(
            "t",
            &l.selector,
            &l.stages,
            Fetch {
                range: Range::Log {
                    start: 1_500_000_000,
                    end: 3_000_000_000,
                },
                backward: true,
                limit: 101,
            },
        );
        assert_eq!(
            s.sql,
            "SELECT toUnixTimestamp64Nano(Timestamp) AS ts, Body AS line, {L} AS labels, {M} AS metadata FROM otel_logs WHERE Tenant = ? AND TimestampTime >= toDateTime(?) AND TimestampTime <= toDateTime(?) AND Timestamp >= fromUnixTimestamp64Nano(toInt64(?)) AND Timestamp < fromUnixTimestamp64Nano(toInt64(?)) AND {L}[?] = ? AND match({L}[?], ?) AND position(Body, ?) > 0 AND position(Body, ?) = 0 ORDER BY Timestamp DESC LIMIT ?"
                .replace("{L}", STREAM_LABELS)
                .replace("{M}", METADATA)
        );
        assert_eq!(
            s.binds,
            vec![
                Bind::Str("t".into()),
                Bind::Int(1),
                Bind::Int(3),
                Bind::Int(1_500_000_000),
                Bind::Int(3_000_000_000),
                Bind::Str("app".into()),
                Bind::Str("a'; DROP TABLE x --".into()),
                Bind::Str("env".into()),
                Bind::Str("^(?:p.*)$".into()),
                Bind::Str("x?y".into()),
                Bind::Str("z".into()),
                Bind::Int(101),
            ]
        );
        assert_eq!(s.sql.matches('?').count(), s.binds.len());
    }

    #[test]
    fn a_sum_around_a_count_cuts_the_series_to_its_labels_in_sql() {
        let Expr::Metric(m) = parse(
            r#"sum by (level, service) (count_over_time({env="prod"}[5m])) / sum without (pod) (bytes_over_time({env="prod"}[1m])) + sum(rate({env="prod"}[1m])) + count_over_time({env="prod"}[1m])"#,
        )
        .unwrap_or_else(|e| panic!("{e}")) else {
            panic!()
        };
        let keep: Vec<Option<Grouping>> =
            m.ranges_with_sums().into_iter().map(|(_, k)| k).collect();
        assert_eq!(keep.len(), m.ranges().len());
        assert_eq!(
            keep,
            vec![
                Some(Grouping {
                    without: false,
                    labels: vec!["level".into(), "service".into()]
                }),
                Some(Grouping {
                    without: true,
                    labels: vec!["pod".into()]
                }),
                // rate divides per series: summed after, as Loki does.
                None,
                None,
            ]
        );
        let s = buckets("t", &[], &[], (0, 60), 60, 10, keep[0].as_ref());
        let cut = |map: &str| {
            format!("mapFilter((k, v) -> has(CAST([?, ?] AS Array(String)), k), {map})")
        };
        assert!(
            s.sql.starts_with(&format!(
                "SELECT {} AS labels, {} AS metadata, ",
                cut(STREAM_LABELS),
                cut(METADATA)
            )),
            "{}",
            s.sql
        );
        let names = [Bind::Str("level".into()), Bind::Str("service".into())];
        assert_eq!(s.binds[..4], [names.clone(), names].concat());
        assert_eq!(s.sql.matches('?').count(), s.binds.len());
        let without = buckets("t", &[], &[], (0, 60), 60, 10, keep[1].as_ref());
        assert!(
            without
                .sql
                .contains("NOT has(CAST([?] AS Array(String)), k)")
        );
        let whole = buckets("t", &[], &[], (0, 60), 60, 10, None);
        assert!(whole.sql.starts_with(&format!(
            "SELECT {STREAM_LABELS} AS labels, {METADATA} AS metadata, "
        )));
    }
}
