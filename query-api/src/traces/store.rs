//! The trace queries over `otel_traces` and its trace-id index, every one scoped to a
//! tenant and with every value bound as a parameter (never spliced into the SQL text).

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::params::{DurationOf, Search};

/// One stored span, as the APIs shape it.
#[derive(Debug, Clone, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SpanRow {
    /// Start, ns since the epoch.
    pub timestamp: i64,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// W3C trace state.
    pub trace_state: String,
    /// Operation name.
    pub span_name: String,
    /// `Server`, `Client`, `Internal`, `Producer`, `Consumer` or `Unspecified`.
    pub span_kind: String,
    /// `service.name`.
    pub service_name: String,
    /// Resource attributes.
    pub resource_attributes: Vec<(String, String)>,
    /// Instrumentation scope name.
    pub scope_name: String,
    /// Instrumentation scope version.
    pub scope_version: String,
    /// Span attributes.
    pub span_attributes: Vec<(String, String)>,
    /// ns.
    pub duration: u64,
    /// `Unset`, `Ok` or `Error`.
    pub status_code: String,
    /// Status description.
    pub status_message: String,
    /// Event times, ns.
    #[serde(rename = "Events.Timestamp")]
    pub events_timestamp: Vec<i64>,
    /// Event names.
    #[serde(rename = "Events.Name")]
    pub events_name: Vec<String>,
    /// Event attributes.
    #[serde(rename = "Events.Attributes")]
    pub events_attributes: Vec<Vec<(String, String)>>,
    /// Linked trace ids.
    #[serde(rename = "Links.TraceId")]
    pub links_trace_id: Vec<String>,
    /// Linked span ids.
    #[serde(rename = "Links.SpanId")]
    pub links_span_id: Vec<String>,
    /// Linked trace states.
    #[serde(rename = "Links.TraceState")]
    pub links_trace_state: Vec<String>,
    /// Link attributes.
    #[serde(rename = "Links.Attributes")]
    pub links_attributes: Vec<Vec<(String, String)>>,
}

/// One trace in a search result: its root and extent.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct TraceSummary {
    /// 32 hex digits.
    pub trace_id: String,
    /// Earliest span start, ns.
    pub start_ns: i64,
    /// Latest span end, ns.
    pub end_ns: i64,
    /// The root span's service, empty when the root is not stored (yet).
    pub root_service: String,
    /// The root span's name, empty when the root is not stored (yet).
    pub root_name: String,
}

/// A value bound to a `?`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Bind {
    /// Text.
    Str(String),
    /// A non-negative integer.
    U64(u64),
    /// An integer.
    I64(i64),
    /// An array of text.
    Strs(Vec<String>),
}

/// SQL with `?` placeholders and their values, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sql {
    /// The text.
    pub text: String,
    /// The values.
    pub binds: Vec<Bind>,
}

impl Sql {
    /// Appends `text` and the values of its placeholders.
    pub fn push(&mut self, text: &str, binds: impl IntoIterator<Item = Bind>) -> &mut Self {
        self.text.push_str(text);
        self.binds.extend(binds);
        self
    }

    /// The query on `client`, values bound.
    pub fn query(&self, client: &clickhouse::Client) -> clickhouse::query::Query {
        let mut q = client.query(&self.text);
        for b in &self.binds {
            q = q.bind(b);
        }
        q
    }
}

fn s(v: &str) -> Bind {
    Bind::Str(v.to_string())
}

/// ` AND <condition on one span>` for a tag: intrinsic names first, else a span or resource
/// attribute.
fn tag_condition(sql: &mut Sql, key: &str, value: &str) {
    match key {
        "error" => {
            sql.push(
                match value {
                    "true" => " AND StatusCode = 'Error'",
                    "false" => " AND StatusCode != 'Error'",
                    _ => " AND 0",
                },
                [],
            );
        }
        "span.kind" | "kind" => {
            sql.push(" AND lower(SpanKind) = lower(?)", [s(value)]);
        }
        "otel.status_code" | "status.code" | "status" => {
            sql.push(" AND lower(StatusCode) = lower(?)", [s(value)]);
        }
        "otel.status_description" => {
            sql.push(" AND StatusMessage = ?", [s(value)]);
        }
        "service.name" => {
            sql.push(" AND ServiceName = ?", [s(value)]);
        }
        "name" => {
            sql.push(" AND SpanName = ?", [s(value)]);
        }
        _ => {
            sql.push(
                " AND ((mapContains(SpanAttributes, ?) AND SpanAttributes[?] = ?) \
                 OR (mapContains(ResourceAttributes, ?) AND ResourceAttributes[?] = ?))",
                [s(key), s(key), s(value), s(key), s(key), s(value)],
            );
        }
    }
}

/// Where a search finds each trace's extent, root and services.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraceIndex {
    /// The trace processor's summaries (`obs_trace_summaries`) for decided traces, and the
    /// spans that started in the last `recent_ns` before `now_ns` for traces it has not
    /// decided yet.
    Summaries {
        /// How far back undecided traces are assembled from their spans, ns.
        recent_ns: i64,
        /// The time of the search, ns since the epoch.
        now_ns: i64,
        /// Only the traces tail sampling kept (`otel_traces` stores no others).
        kept_only: bool,
    },
    /// No trace processor: every trace is assembled from its spans, which may start up
    /// to `longest_ns` before the searched range.
    Spans {
        /// The longest trace, ns.
        longest_ns: i64,
    },
}

/// The conditions one span of a trace must meet together, each ` AND ...` (empty: none).
/// A service alone is left to the trace's list of services.
fn span_conditions(search: &Search) -> Sql {
    let mut sql = Sql::default();
    let span_durations = search.duration_of == DurationOf::Span
        && (search.min_duration_ns.is_some() || search.max_duration_ns.is_some());
    let service_alone = search.operation.is_none() && search.tags.is_empty() && !span_durations;
    if let Some(v) = search.service.as_ref().filter(|_| !service_alone) {
        sql.push(" AND ServiceName = ?", [s(v)]);
    }
    if let Some(v) = &search.operation {
        sql.push(" AND SpanName = ?", [s(v)]);
    }
    if search.duration_of == DurationOf::Span {
        if let Some(v) = search.min_duration_ns {
            sql.push(" AND Duration >= ?", [Bind::U64(v)]);
        }
        if let Some(v) = search.max_duration_ns {
            sql.push(" AND Duration <= ?", [Bind::U64(v)]);
        }
    }
    for (k, v) in &search.tags {
        tag_condition(&mut sql, k, v);
    }
    if !sql.text.is_empty() {
        // The matching span started in the range.
        time_range(&mut sql, search.start_ns, search.end_ns);
    }
    sql
}

/// The traces matching `search`, newest first, with their root and extent
/// ([`TraceSummary`] rows). Decided traces come from the trace processor's summaries and
/// undecided ones from their recent spans, a summary winning over the spans of the same
/// trace (without the processor, every trace comes from its spans). A trace matches when it
/// overlaps the range, one of its spans meets the span conditions, it has the service
/// searched alone, and (Tempo) its duration is within the bounds.
pub fn search_sql(tenant: &str, search: &Search, index: TraceIndex) -> Sql {
    let conditions = span_conditions(search);
    let mut sql = Sql::default();
    sql.push(
        "SELECT t AS trace_id, argMax(st, src) AS start_ns, argMax(st + dur, src) AS end_ns, \
         argMax(rsvc, src) AS root_service, argMax(rname, src) AS root_name FROM (\
         SELECT TraceId AS t, toUInt8(0) AS src, toUnixTimestamp64Nano(min(Timestamp)) AS st, \
         max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) - st AS dur, \
         CAST(argMinIf(ServiceName, Timestamp, ParentSpanId = '') AS String) AS rsvc, \
         CAST(argMinIf(SpanName, Timestamp, ParentSpanId = '') AS String) AS rname, \
         CAST(groupUniqArray(ServiceName) AS Array(String)) AS svcs, toUInt64(countIf(1",
        [],
    );
    sql.push(&conditions.text, conditions.binds.clone());
    sql.push(
        ")) AS matched FROM otel_traces WHERE Tenant = ?",
        [s(tenant)],
    );
    match index {
        TraceIndex::Summaries {
            recent_ns, now_ns, ..
        } => time_range(&mut sql, Some(now_ns.saturating_sub(recent_ns)), None),
        TraceIndex::Spans { longest_ns } => time_range(
            &mut sql,
            search.start_ns.map(|v| v.saturating_sub(longest_ns)),
            search.end_ns,
        ),
    }
    sql.push(" GROUP BY TraceId", []);
    if let TraceIndex::Summaries { kept_only, .. } = index {
        sql.push(
            " UNION ALL SELECT TraceId, toUInt8(1), toUnixTimestamp64Nano(Start), DurationNs, \
             CAST(RootService AS String), CAST(RootName AS String), \
             CAST(Services AS Array(String)), toUInt64(",
            [],
        );
        if conditions.text.is_empty() {
            sql.push("1", []);
        } else {
            sql.push(
                "TraceId IN (SELECT TraceId FROM otel_traces WHERE Tenant = ?",
                [s(tenant)],
            );
            sql.push(&conditions.text, conditions.binds.clone());
            sql.push(")", []);
        }
        sql.push(") FROM obs_trace_summaries WHERE Tenant = ?", [s(tenant)]);
        if kept_only {
            sql.push(" AND Kept", []);
        }
        if let Some(v) = search.end_ns {
            sql.push(
                " AND Start <= fromUnixTimestamp64Nano(toInt64(?))",
                [Bind::I64(v)],
            );
        }
        if let Some(v) = search.start_ns {
            sql.push(
                " AND End >= fromUnixTimestamp64Nano(toInt64(?))",
                [Bind::I64(v)],
            );
        }
    }
    sql.push(") GROUP BY t HAVING max(matched) > 0", []);
    if let Some(v) = search
        .service
        .as_ref()
        .filter(|_| conditions.text.is_empty())
    {
        sql.push(" AND has(argMax(svcs, src), ?)", [s(v)]);
    }
    if search.duration_of == DurationOf::Trace {
        if let Some(v) = search.min_duration_ns {
            sql.push(" AND end_ns - start_ns >= ?", [Bind::U64(v)]);
        }
        if let Some(v) = search.max_duration_ns {
            sql.push(" AND end_ns - start_ns <= ?", [Bind::U64(v)]);
        }
    }
    if let Some(v) = search.end_ns {
        sql.push(" AND start_ns <= ?", [Bind::I64(v)]);
    }
    if let Some(v) = search.start_ns {
        sql.push(" AND end_ns >= ?", [Bind::I64(v)]);
    }
    sql.push(
        " ORDER BY start_ns DESC, trace_id LIMIT ?",
        [Bind::U64(search.limit)],
    );
    sql
}

/// ` AND` the spans of `ids` by tenant, bounded in time by the trace-id index (rows indexed
/// before the index had a tenant carry an empty one). The index's whole seconds are made
/// `DateTime64(9)` before comparing: compared as `DateTime`, the engine dropped a span that
/// starts late in the trace's last second (found by the auth test; a regression test in
/// traces_api).
fn traces_filter(sql: &mut Sql, tenant: &str, ids: &[String]) {
    let ids = Bind::Strs(ids.to_vec());
    sql.push(
        " WHERE Tenant = ? AND has(?, TraceId) \
         AND Timestamp >= toDateTime64((SELECT min(Start) FROM otel_traces_trace_id_ts WHERE Tenant IN (?, '') AND has(?, TraceId)), 9) \
         AND Timestamp < toDateTime64((SELECT max(End) FROM otel_traces_trace_id_ts WHERE Tenant IN (?, '') AND has(?, TraceId)), 9) + INTERVAL 1 SECOND",
        [
            s(tenant),
            ids.clone(),
            s(tenant),
            ids.clone(),
            s(tenant),
            ids,
        ],
    );
}

/// Every span of the traces `ids`, by trace and start.
pub fn spans_sql(tenant: &str, ids: &[String]) -> Sql {
    let mut sql = Sql::default();
    sql.push("SELECT ?fields FROM otel_traces", []);
    traces_filter(&mut sql, tenant, ids);
    sql.push(" ORDER BY TraceId, Timestamp, SpanId", []);
    sql
}

/// Root and extent of the traces `ids`.
pub fn summaries_sql(tenant: &str, ids: &[String]) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT TraceId AS trace_id, toUnixTimestamp64Nano(min(Timestamp)) AS start_ns, \
         max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) AS end_ns, \
         argMinIf(ServiceName, Timestamp, ParentSpanId = '') AS root_service, \
         argMinIf(SpanName, Timestamp, ParentSpanId = '') AS root_name FROM otel_traces",
        [],
    );
    traces_filter(&mut sql, tenant, ids);
    sql.push(" GROUP BY TraceId", []);
    sql
}

/// The tenant's services.
pub fn services_sql(tenant: &str) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT DISTINCT ServiceName FROM otel_traces WHERE Tenant = ? ORDER BY ServiceName",
        [s(tenant)],
    );
    sql
}

/// A service's operations with their span kinds.
pub fn operations_sql(tenant: &str, service: &str) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT DISTINCT SpanName AS name, SpanKind AS kind FROM otel_traces WHERE Tenant = ? AND ServiceName = ? \
         ORDER BY SpanName, SpanKind",
        [s(tenant), s(service)],
    );
    sql
}

/// ` AND` a span start range, when given.
fn time_range(sql: &mut Sql, start_ns: Option<i64>, end_ns: Option<i64>) {
    if let Some(v) = start_ns {
        sql.push(
            " AND Timestamp >= fromUnixTimestamp64Nano(toInt64(?))",
            [Bind::I64(v)],
        );
    }
    if let Some(v) = end_ns {
        sql.push(
            " AND Timestamp <= fromUnixTimestamp64Nano(toInt64(?))",
            [Bind::I64(v)],
        );
    }
}

/// The attribute keys in use, as `(scope, key)` with scope `span` or `resource`.
pub fn tag_names_sql(tenant: &str, start_ns: Option<i64>, end_ns: Option<i64>) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT DISTINCT scope, key FROM (SELECT arrayConcat(\
         arrayMap(k -> ('span', k), mapKeys(SpanAttributes)), \
         arrayMap(k -> ('resource', k), mapKeys(ResourceAttributes))) AS pairs \
         FROM otel_traces WHERE Tenant = ?",
        [s(tenant)],
    );
    time_range(&mut sql, start_ns, end_ns);
    sql.push(
        ") ARRAY JOIN pairs.1 AS scope, pairs.2 AS key ORDER BY scope, key",
        [],
    );
    sql
}

/// Which attributes a tag's values come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TagScope {
    /// Span or resource attributes (and the intrinsic names).
    Any,
    /// Span attributes only.
    Span,
    /// Resource attributes only (and `service.name`).
    Resource,
}

/// The values a tag takes.
pub fn tag_values_sql(
    tenant: &str,
    tag: &str,
    scope: TagScope,
    start_ns: Option<i64>,
    end_ns: Option<i64>,
) -> Sql {
    let mut sql = Sql::default();
    let expr = match (tag, scope) {
        ("service.name", TagScope::Any | TagScope::Resource) => "ServiceName".to_string(),
        ("name", TagScope::Any) => "SpanName".into(),
        ("status.code" | "status", TagScope::Any) => "lower(StatusCode)".into(),
        ("span.kind" | "kind", TagScope::Any) => "lower(SpanKind)".into(),
        (_, TagScope::Span) => {
            "arrayJoin(if(mapContains(SpanAttributes, ?), [SpanAttributes[?]], []))".into()
        }
        (_, TagScope::Resource) => {
            "arrayJoin(if(mapContains(ResourceAttributes, ?), [ResourceAttributes[?]], []))".into()
        }
        (_, TagScope::Any) => "arrayJoin(arrayConcat(\
             if(mapContains(SpanAttributes, ?), [SpanAttributes[?]], []), \
             if(mapContains(ResourceAttributes, ?), [ResourceAttributes[?]], [])))"
            .into(),
    };
    let placeholders = expr.matches('?').count();
    sql.push(
        &format!("SELECT DISTINCT {expr} AS v FROM otel_traces WHERE Tenant = ?"),
        std::iter::repeat_n(s(tag), placeholders).chain([s(tenant)]),
    );
    time_range(&mut sql, start_ns, end_ns);
    sql.push(" ORDER BY v LIMIT 1000", []);
    sql
}

/// Calls between services in `[start_ns, end_ns]`: a span of `child` whose parent span is of
/// `parent` (the parent may have started up to an hour earlier).
pub fn dependencies_sql(tenant: &str, start_ns: i64, end_ns: i64) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT p.ServiceName AS parent, c.ServiceName AS child, count() AS calls FROM \
         (SELECT TraceId, ParentSpanId, ServiceName FROM otel_traces WHERE Tenant = ? AND ParentSpanId != '' \
          AND Timestamp >= fromUnixTimestamp64Nano(toInt64(?)) AND Timestamp <= fromUnixTimestamp64Nano(toInt64(?))) AS c \
         INNER JOIN \
         (SELECT TraceId, SpanId, ServiceName FROM otel_traces WHERE Tenant = ? \
          AND Timestamp >= fromUnixTimestamp64Nano(toInt64(?)) AND Timestamp <= fromUnixTimestamp64Nano(toInt64(?))) AS p \
         ON c.TraceId = p.TraceId AND c.ParentSpanId = p.SpanId \
         WHERE p.ServiceName != c.ServiceName GROUP BY parent, child ORDER BY parent, child",
        [
            s(tenant),
            Bind::I64(start_ns),
            Bind::I64(end_ns),
            s(tenant),
            Bind::I64(start_ns.saturating_sub(3_600_000_000_000)),
            Bind::I64(end_ns),
        ],
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(duration_of: DurationOf) -> Search {
        Search {
            service: Some("checkout' OR 1=1 --".into()),
            operation: Some("GET /".into()),
            tags: [
                ("http.status_code".to_string(), "200".to_string()),
                ("error".into(), "true".into()),
            ]
            .into(),
            min_duration_ns: Some(1000),
            max_duration_ns: None,
            duration_of,
            start_ns: Some(5),
            end_ns: None,
            limit: 20,
        }
    }

    const SUMMARIES: TraceIndex = TraceIndex::Summaries {
        recent_ns: 60,
        now_ns: 100,
        kept_only: true,
    };

    #[test]
    fn search_binds_every_value() {
        for index in [SUMMARIES, TraceIndex::Spans { longest_ns: 7 }] {
            for of in [DurationOf::Span, DurationOf::Trace] {
                let sql = search_sql("a", &search(of), index);
                assert_eq!(
                    sql.text.matches('?').count(),
                    sql.binds.len(),
                    "{}",
                    sql.text
                );
                assert!(sql.binds.contains(&s("checkout' OR 1=1 --")));
                assert!(!sql.text.contains("OR 1=1"));
                assert!(sql.text.contains("ServiceName = ? AND SpanName = ?"));
                assert_eq!(
                    sql.text
                        .contains("obs_trace_summaries WHERE Tenant = ? AND Kept"),
                    index == SUMMARIES
                );
                // Jaeger bounds one span's duration, Tempo the trace's.
                assert_eq!(
                    sql.text.contains("AND Duration >= ?"),
                    of == DurationOf::Span
                );
                assert_eq!(
                    sql.text.contains("end_ns - start_ns >= ?"),
                    of == DurationOf::Trace
                );
            }
        }
    }

    #[test]
    fn a_service_alone_is_one_of_the_traces_services() {
        let alone = Search {
            service: Some("checkout".into()),
            limit: 20,
            ..Search::default()
        };
        let sql = search_sql("a", &alone, SUMMARIES);
        assert!(!sql.text.contains("ServiceName = ?"), "{}", sql.text);
        assert!(sql.text.contains("has(argMax(svcs, src), ?)"));
        // Summaries are read whole; recent spans only from now - recent_ns.
        assert!(sql.text.contains("toUInt64(1) FROM obs_trace_summaries"));
        assert_eq!(sql.binds[1], Bind::I64(40));
        assert_eq!(sql.text.matches('?').count(), sql.binds.len());
        // A span duration makes the service a span condition again (Jaeger).
        let with_duration = Search {
            min_duration_ns: Some(1),
            ..alone.clone()
        };
        let sql = search_sql("a", &with_duration, SUMMARIES);
        assert!(sql.text.contains("ServiceName = ? AND Duration >= ?"));
        assert!(!sql.text.contains("has(argMax"));
        // A trace duration does not (Tempo).
        let trace_duration = Search {
            duration_of: DurationOf::Trace,
            ..with_duration
        };
        let sql = search_sql("a", &trace_duration, SUMMARIES);
        assert!(sql.text.contains("has(argMax(svcs, src), ?)"));
        assert!(sql.text.contains("end_ns - start_ns >= ?"));
    }

    #[test]
    fn placeholders_match_binds() {
        let ids = vec!["a".to_string()];
        for sql in [
            spans_sql("t", &ids),
            summaries_sql("t", &ids),
            services_sql("t"),
            operations_sql("t", "s"),
            tag_names_sql("t", Some(1), Some(2)),
            tag_values_sql("t", "k", TagScope::Any, None, Some(3)),
            tag_values_sql("t", "k", TagScope::Span, None, None),
            tag_values_sql("t", "service.name", TagScope::Resource, None, None),
            dependencies_sql("t", 1, 2),
        ] {
            let text = sql.text.replace("?fields", "");
            assert_eq!(text.matches('?').count(), sql.binds.len(), "{}", sql.text);
        }
    }
}
