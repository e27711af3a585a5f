//! Series selectors (`match[]`, `{job="api", path=~"/v1/.*"}`) as SQL over
//! `metrics_series`, parsed with promql-parser. Every label value and regex reaches
//! ClickHouse as a bound parameter, never spliced into the text.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector};

/// A WHERE fragment and the values bound to its `?` placeholders, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlFilter {
    /// SQL with `?` placeholders.
    pub sql: String,
    /// Bound values.
    pub binds: Vec<String>,
}

/// The column a label lives in.
fn column(name: &str) -> String {
    if name == "__name__" {
        "MetricName".into()
    } else {
        // The name is a validated label name ([a-zA-Z_][a-zA-Z0-9_]*), so quoting it as a
        // string literal is safe; it is still bound like the values.
        "Labels[?]".into()
    }
}

fn matcher(m: &Matcher, binds: &mut Vec<String>) -> String {
    let col = column(&m.name);
    let push_name = |binds: &mut Vec<String>| {
        if m.name != "__name__" {
            binds.push(m.name.clone());
        }
    };
    match &m.op {
        MatchOp::Equal => {
            push_name(binds);
            binds.push(m.value.clone());
            format!("{col} = ?")
        }
        MatchOp::NotEqual => {
            push_name(binds);
            binds.push(m.value.clone());
            format!("{col} != ?")
        }
        MatchOp::Re(_) => {
            push_name(binds);
            binds.push(format!("^(?:{})$", m.value));
            format!("match({col}, ?)")
        }
        MatchOp::NotRe(_) => {
            push_name(binds);
            binds.push(format!("^(?:{})$", m.value));
            format!("NOT match({col}, ?)")
        }
    }
}

/// Parses one selector into a filter; anything but a plain vector selector is refused.
pub fn parse(selector: &str) -> Result<SqlFilter, String> {
    let expr =
        parser::parse(selector).map_err(|e| format!("invalid selector {selector:?}: {e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("{selector:?} is not a series selector"));
    };
    vector_selector(&vs).map_err(|e| format!("{selector:?} {e}"))
}

/// The matcher groups of a selector (several with PromQL's `or` inside braces), each with
/// the metric name written before the braces added as a `__name__` matcher.
pub fn matcher_groups(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let groups: Vec<Vec<Matcher>> = if vs.matchers.or_matchers.is_empty() {
        vec![vs.matchers.matchers.clone()]
    } else {
        vs.matchers.or_matchers.clone()
    };
    groups
        .into_iter()
        .map(|mut group| {
            if let Some(name) = &vs.name
                && !group.iter().any(|m| m.name == "__name__")
            {
                group.push(Matcher::new(MatchOp::Equal, "__name__", name));
            }
            group
        })
        .collect()
}

/// A parsed selector as a filter over `metrics_series` (columns `MetricName`, `Labels`).
pub fn vector_selector(vs: &VectorSelector) -> Result<SqlFilter, String> {
    let mut binds = Vec::new();
    let mut parts = Vec::new();
    for group in matcher_groups(vs) {
        if group.iter().all(matches_empty) {
            return Err(
                "matches every series: give at least one matcher that does not match the empty string"
                    .into(),
            );
        }
        let conds: Vec<String> = group.iter().map(|m| matcher(m, &mut binds)).collect();
        parts.push(format!("({})", conds.join(" AND ")));
    }
    Ok(SqlFilter {
        sql: format!("({})", parts.join(" OR ")),
        binds,
    })
}

/// Whether a selector matches every series of one metric (`name` or `{__name__="name"}`
/// and no other matcher): a data table's `MetricName` condition then selects exactly its
/// series, and the list of their fingerprints is not needed.
pub fn name_only(vs: &VectorSelector) -> bool {
    let groups = matcher_groups(vs);
    let [group] = groups.as_slice() else {
        return false;
    };
    let mut names = group
        .iter()
        .map(|m| (m.name == "__name__" && matches!(m.op, MatchOp::Equal)).then_some(&m.value));
    match names.next() {
        Some(Some(first)) => names.all(|n| n == Some(first)),
        _ => false,
    }
}

/// The one metric name a selector is limited to, when it has one (`MetricName = ?` then
/// prunes `metrics_samples` by its sort key).
pub fn single_name(vs: &VectorSelector) -> Option<String> {
    let groups = matcher_groups(vs);
    let [group] = groups.as_slice() else {
        return None;
    };
    group
        .iter()
        .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
        .map(|m| m.value.clone())
}

fn matches_empty(m: &Matcher) -> bool {
    match &m.op {
        MatchOp::Equal => m.value.is_empty(),
        MatchOp::NotEqual => !m.value.is_empty(),
        MatchOp::Re(re) => re.is_match(""),
        MatchOp::NotRe(re) => !re.is_match(""),
    }
}

/// Several selectors: series matching any of them.
pub fn any_of(selectors: &[String]) -> Result<SqlFilter, String> {
    let mut out = SqlFilter::default();
    let mut parts = Vec::new();
    for s in selectors {
        let f = parse(s)?;
        parts.push(f.sql);
        out.binds.extend(f.binds);
    }
    out.sql = format!("({})", parts.join(" OR "));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_become_bound_conditions() {
        let f = parse(r#"http_requests_total{job="api", path=~"/v1/.*", code!="500"}"#).unwrap();
        assert_eq!(
            f.sql,
            "((Labels[?] = ? AND match(Labels[?], ?) AND Labels[?] != ? AND MetricName = ?))"
        );
        assert_eq!(
            f.binds,
            [
                "job",
                "api",
                "path",
                "^(?:/v1/.*)$",
                "code",
                "500",
                "http_requests_total"
            ]
        );
    }

    #[test]
    fn injection_stays_a_value_and_bad_selectors_are_refused() {
        let f = parse(r#"{job="x' OR 1=1 --"}"#).unwrap();
        assert_eq!(f.binds, ["job", "x' OR 1=1 --"]);
        assert!(!f.sql.contains("OR 1=1"));
        assert!(parse("rate(x[5m])").is_err());
        assert!(parse(r#"{job=~".*"}"#).is_err());
        assert!(parse("{").is_err());
    }

    #[test]
    fn a_bare_metric_name_selects_every_series_of_it() {
        let vs = |q: &str| match parser::parse(q).unwrap() {
            Expr::VectorSelector(vs) => vs,
            e => panic!("{e:?}"),
        };
        assert!(name_only(&vs("up")));
        assert!(name_only(&vs(r#"{__name__="up"}"#)));
        assert!(!name_only(&vs(r#"up{job="a"}"#)));
        assert!(!name_only(&vs(r#"{__name__=~"up"}"#)));
        assert!(!name_only(&vs(r#"{__name__="up", __name__="down"}"#)));
        assert!(!name_only(&vs(r#"{__name__="up" or __name__="down"}"#)));
    }
}
