//! A decided trace summed up for `obs.traces`: what search by service, operation and
//! duration reads instead of scanning spans.

use std::collections::{BTreeSet, HashSet};

use obs_schemas::records::{Span, TraceSummary};

/// The root of a trace: the earliest span without a parent, else the earliest span whose
/// parent is not in the trace (the root was never received), else the earliest span.
pub fn root(spans: &[Span]) -> Option<&Span> {
    let by_start = |a: &&Span, b: &&Span| (a.start_ns, &a.span_id).cmp(&(b.start_ns, &b.span_id));
    spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .min_by(by_start)
        .or_else(|| {
            // Only a trace without a parentless span needs its span ids: most have one.
            let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
            spans
                .iter()
                .filter(|s| !ids.contains(s.parent_span_id.as_str()))
                .min_by(by_start)
        })
        .or_else(|| spans.iter().min_by(by_start))
}

/// The summary of a decided trace.
pub fn summarize(
    tenant: &str,
    trace_id: &str,
    spans: &[Span],
    kept: bool,
    decided_at_ms: i64,
) -> TraceSummary {
    let root = root(spans);
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    TraceSummary {
        tenant: tenant.to_string(),
        trace_id: trace_id.to_string(),
        root_service: root.map(|r| r.service.clone()).unwrap_or_default(),
        root_name: root.map(|r| r.name.clone()).unwrap_or_default(),
        start_ns: spans.iter().map(|s| s.start_ns).min().unwrap_or(0),
        end_ns: spans.iter().map(|s| s.end_ns).max().unwrap_or(0),
        span_count: spans.len() as i32,
        error_count: spans.iter().filter(|s| s.status_code == "Error").count() as i32,
        services: services.into_iter().map(String::from).collect(),
        kept,
        decided_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: &str, service: &str, start: i64, end: i64, status: &str) -> Span {
        Span {
            span_id: id.into(),
            parent_span_id: parent.into(),
            service: service.into(),
            name: format!("op-{id}"),
            start_ns: start,
            end_ns: end,
            status_code: status.into(),
            ..Span::default()
        }
    }

    #[test]
    fn sums_up_root_extent_errors_and_services() {
        let spans = vec![
            span("2", "1", "b", 20, 40, "Error"),
            span("1", "", "a", 10, 50, "Unset"),
            span("3", "2", "c", 25, 60, "Ok"),
        ];
        let s = summarize("t", "ab", &spans, true, 99);
        assert_eq!(
            (s.root_service.as_str(), s.root_name.as_str()),
            ("a", "op-1")
        );
        assert_eq!(
            (s.start_ns, s.end_ns, s.span_count, s.error_count),
            (10, 60, 3, 1)
        );
        assert_eq!(s.services, vec!["a", "b", "c"]);
    }

    #[test]
    fn without_a_root_the_earliest_orphan_stands_in() {
        let spans = vec![
            span("3", "2", "c", 25, 60, "Ok"),
            span("2", "1", "b", 20, 40, "Ok"),
        ];
        assert_eq!(root(&spans).unwrap().span_id, "2");
    }
}
