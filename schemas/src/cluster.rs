//! The pipeline's DDL for a ClickHouse cluster (`[clickhouse] cluster`).
//!
//! On one server every table is a plain `*MergeTree`. On a cluster each statement of the
//! migrations becomes its `ON CLUSTER` form:
//!
//! * a data table `t` becomes `t_local`, a `Replicated*MergeTree` on every node (one
//!   replication path per shard), and `t` itself becomes a `Distributed` table over the
//!   `t_local` tables, so every reader and writer keeps using the name `t`;
//! * the sharding key is deterministic (a hash of columns, never `rand()`): a batch retried
//!   through a `Distributed` table splits into the same blocks, so each shard deduplicates
//!   its block by the insert's token as one server does. For replacing tables the key is
//!   made only of sorting-key columns, so the rows that replace each other meet on one shard;
//!   metrics tables shard by series (`Tenant, Fingerprint`), traces by trace id;
//! * the bookkeeping tables (sink intents, replay log, applied migrations) are not sharded:
//!   one replicated copy on every node, read locally;
//! * materialized views run on each node from `src_local` into `dst_local`.
//!
//! The stages' client then inserts with `distributed_foreground_insert = 1` (an insert is
//! acknowledged once every shard has its block, so a read-back sees it) and reads with
//! `distributed_product_mode = 'global'` (the `IN (SELECT …)` subqueries of the query API
//! over distributed tables); see `obs_runtime::clickhouse::server_client`.

use anyhow::{Context, bail};

/// Tables kept whole on every node (one replication path for the whole cluster).
pub const UNSHARDED: &[&str] = &[
    "obs_sink_intents",
    "obs_replay_log",
    "obs_schema_migrations",
    "obs_late_writes",
];

/// The suffix of each node's own table under a distributed one.
pub const LOCAL_SUFFIX: &str = "_local";

/// Where the pipeline's tables live on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's name in the servers' `remote_servers` configuration.
    pub name: String,
    /// The pipeline's database.
    pub database: String,
}

impl Cluster {
    /// A cluster layout; both names are spliced into DDL, so only identifiers pass.
    pub fn new(name: &str, database: &str) -> anyhow::Result<Cluster> {
        crate::migrations::check_identifier(name).context("[clickhouse] cluster")?;
        crate::migrations::check_identifier(database).context("[clickhouse] database")?;
        Ok(Cluster {
            name: name.to_string(),
            database: database.to_string(),
        })
    }

    /// `CREATE DATABASE` on every node.
    pub fn create_database(&self) -> String {
        format!(
            "CREATE DATABASE IF NOT EXISTS {} ON CLUSTER {}",
            self.database, self.name
        )
    }

    /// The cluster form of one statement of a migration (one statement or more).
    pub fn rewrite(&self, stmt: &str) -> anyhow::Result<Vec<String>> {
        let s = stmt.trim();
        if let Some(rest) = strip_prefix_ci(s, "CREATE TABLE IF NOT EXISTS ") {
            return self
                .create_table(rest)
                .with_context(|| format!("statement: {s}"));
        }
        if let Some(rest) = strip_prefix_ci(s, "CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
            return self
                .create_view(rest)
                .with_context(|| format!("statement: {s}"));
        }
        if let Some(rest) = strip_prefix_ci(s, "ALTER TABLE ") {
            let (table, tail) = split_name(rest)?;
            let mut out = vec![];
            if is_sharded(&table) {
                out.push(format!(
                    "ALTER TABLE {} ON CLUSTER {} {tail}",
                    local(&table),
                    self.name
                ));
            }
            out.push(format!(
                "ALTER TABLE {table} ON CLUSTER {} {tail}",
                self.name
            ));
            return Ok(out);
        }
        if let Some(rest) = strip_prefix_ci(s, "DROP VIEW IF EXISTS ") {
            let (view, tail) = split_name(rest)?;
            if !tail.is_empty() {
                bail!("unexpected text after the view name in: {s}");
            }
            return Ok(vec![format!(
                "DROP VIEW IF EXISTS {view} ON CLUSTER {}",
                self.name
            )]);
        }
        bail!(
            "no cluster form for this statement (only CREATE TABLE/MATERIALIZED VIEW IF NOT \
             EXISTS, ALTER TABLE and DROP VIEW IF EXISTS have one): {s}"
        )
    }

    fn create_table(&self, rest: &str) -> anyhow::Result<Vec<String>> {
        let (table, tail) = split_name(rest)?;
        let engine_at = tail
            .find("ENGINE = ")
            .context("no `ENGINE = ` in CREATE TABLE")?;
        let columns = tail[..engine_at].trim_end();
        let after = &tail[engine_at + "ENGINE = ".len()..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        let engine = &after[..name_len];
        if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
            bail!("engine {engine} has no replicated form here");
        }
        let (args, clauses) = match after[name_len..].strip_prefix('(') {
            Some(inner) => {
                let close = matching_paren(inner).context("unbalanced engine arguments")?;
                (Some(&inner[..close]), &inner[close + 1..])
            }
            None => (None, &after[name_len..]),
        };
        let clauses = clauses.trim().replace(
            "non_replicated_deduplication_window",
            "replicated_deduplication_window",
        );
        let sharded = is_sharded(&table);
        let own = if sharded {
            local(&table)
        } else {
            table.clone()
        };
        let path = if sharded {
            format!("/clickhouse/tables/{{shard}}/{}/{own}", self.database)
        } else {
            format!("/clickhouse/tables/all/{}/{own}", self.database)
        };
        let mut engine_args = format!("'{path}', '{{replica}}'");
        if let Some(a) = args.filter(|a| !a.trim().is_empty()) {
            engine_args.push_str(", ");
            engine_args.push_str(a.trim());
        }
        let mut out = vec![format!(
            "CREATE TABLE IF NOT EXISTS {own} ON CLUSTER {} {columns} ENGINE = Replicated{engine}({engine_args}) {clauses}",
            self.name
        )];
        if sharded {
            let order_by = order_by(&clauses).context("no ORDER BY in CREATE TABLE")?;
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {cluster} AS {own} \
                 ENGINE = Distributed({cluster}, {db}, {own}, {key})",
                cluster = self.name,
                db = self.database,
                key = sharding_key(&table, &order_by),
            ));
        }
        Ok(out)
    }

    fn create_view(&self, rest: &str) -> anyhow::Result<Vec<String>> {
        let (view, tail) = split_name(rest)?;
        let tail = tail.trim_start();
        let to_rest = strip_prefix_ci(tail, "TO ").context("a view without TO <table>")?;
        let (target, select) = split_name(to_rest)?;
        let select = select.trim_start();
        let body = strip_prefix_ci(select, "AS ").context("a view without AS SELECT")?;
        let from_at = body.find("FROM ").context("a view without FROM")?;
        let (source, after) = split_name(&body[from_at + "FROM ".len()..])?;
        let source = if is_sharded(&source) {
            local(&source)
        } else {
            source
        };
        let target = if is_sharded(&target) {
            local(&target)
        } else {
            target
        };
        Ok(vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {view} ON CLUSTER {} TO {target} AS {}FROM {source} {after}",
            self.name,
            &body[..from_at],
        )])
    }
}

/// Whether `table` is split over shards (every data table; not the bookkeeping ones).
pub fn is_sharded(table: &str) -> bool {
    !UNSHARDED.contains(&table.trim_matches('`'))
}

/// The node-local table under distributed `table`.
pub fn local(table: &str) -> String {
    match table.strip_suffix('`') {
        Some(quoted) => format!("{quoted}{LOCAL_SUFFIX}`"),
        None => format!("{table}{LOCAL_SUFFIX}"),
    }
}

/// The sharding key of `table`: by series for the metrics tables, by trace id for the
/// traces tables, else a hash of the whole sorting key (so replacing rows meet).
pub fn sharding_key(table: &str, order_by: &str) -> String {
    match table.trim_matches('`') {
        "metrics_series" | "metrics_samples" | "metrics_rollups" | "metrics_exemplars" => {
            "cityHash64(Tenant, Fingerprint)".to_string()
        }
        "otel_traces" | "otel_traces_trace_id_ts" | "obs_trace_summaries" => {
            "cityHash64(TraceId)".to_string()
        }
        _ => {
            let inner = order_by
                .strip_prefix('(')
                .and_then(|o| o.strip_suffix(')'))
                .unwrap_or(order_by);
            format!("cityHash64({inner})")
        }
    }
}

/// The `ORDER BY` expression of a table's clauses: a parenthesised tuple or one column.
pub fn order_by(clauses: &str) -> Option<String> {
    let at = clauses.find("ORDER BY ")? + "ORDER BY ".len();
    let rest = &clauses[at..];
    if let Some(inner) = rest.strip_prefix('(') {
        let close = matching_paren(inner)?;
        return Some(format!("({})", &inner[..close]));
    }
    Some(
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The names of the columns `expr` mentions (identifiers not followed by `(`).
pub fn columns_of(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len()
                && ((bytes[i] as char).is_ascii_alphanumeric() || bytes[i] == b'_')
            {
                i += 1;
            }
            if expr[i..].trim_start().starts_with('(') {
                continue;
            }
            out.push(expr[start..i].to_string());
        } else {
            i += 1;
        }
    }
    out
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// A leading table name (plain or backquoted) and what follows it.
fn split_name(s: &str) -> anyhow::Result<(String, &str)> {
    let s = s.trim_start();
    let end = if let Some(quoted) = s.strip_prefix('`') {
        quoted.find('`').context("unclosed backquote")? + 2
    } else {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    if end == 0 {
        bail!("expected a table name at: {s}");
    }
    Ok((s[..end].to_string(), s[end..].trim_start()))
}

/// The index of the `)` closing the `(` just before `s`.
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => return Some(i),
            ')' if !quoted => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::{MIGRATIONS, Retention};

    fn cluster() -> Cluster {
        Cluster::new("obs_cluster", "obs").unwrap()
    }

    #[test]
    fn a_data_table_becomes_replicated_local_tables_under_a_distributed_one() {
        let out = cluster()
            .rewrite(
                "CREATE TABLE IF NOT EXISTS metrics_series (Tenant String, MetricName String, \
                 Fingerprint Int64, LastSeenMs Int64) ENGINE = ReplacingMergeTree(LastSeenMs)\n\
                 ORDER BY (Tenant, MetricName, Fingerprint)\n\
                 SETTINGS non_replicated_deduplication_window = 1000",
            )
            .unwrap();
        assert_eq!(
            out,
            [
                "CREATE TABLE IF NOT EXISTS metrics_series_local ON CLUSTER obs_cluster (Tenant String, MetricName String, \
                 Fingerprint Int64, LastSeenMs Int64) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/obs/metrics_series_local', '{replica}', LastSeenMs) \
                 ORDER BY (Tenant, MetricName, Fingerprint)\nSETTINGS replicated_deduplication_window = 1000",
                "CREATE TABLE IF NOT EXISTS metrics_series ON CLUSTER obs_cluster AS metrics_series_local \
                 ENGINE = Distributed(obs_cluster, obs, metrics_series_local, cityHash64(Tenant, Fingerprint))",
            ]
        );
    }

    #[test]
    fn bookkeeping_tables_are_whole_on_every_node() {
        let out = cluster()
            .rewrite(
                "CREATE TABLE IF NOT EXISTS obs_sink_intents (ConsumerGroup String) \
                 ENGINE = ReplacingMergeTree ORDER BY ConsumerGroup",
            )
            .unwrap();
        assert_eq!(
            out,
            [
                "CREATE TABLE IF NOT EXISTS obs_sink_intents ON CLUSTER obs_cluster (ConsumerGroup String) \
              ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/obs/obs_sink_intents', '{replica}') ORDER BY ConsumerGroup"
            ]
        );
    }

    #[test]
    fn views_read_and_write_the_local_tables() {
        let out = cluster()
            .rewrite(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS v\nTO otel_traces_trace_id_ts\nAS SELECT\n  \
                 TraceId, min(Timestamp) AS Start\nFROM otel_traces\nWHERE TraceId != ''\nGROUP BY TraceId",
            )
            .unwrap();
        assert_eq!(
            out,
            [
                "CREATE MATERIALIZED VIEW IF NOT EXISTS v ON CLUSTER obs_cluster TO otel_traces_trace_id_ts_local \
              AS SELECT\n  TraceId, min(Timestamp) AS Start\nFROM otel_traces_local WHERE TraceId != ''\nGROUP BY TraceId"
            ]
        );
    }

    #[test]
    fn alters_reach_both_the_local_and_the_distributed_table() {
        let out = cluster()
            .rewrite("ALTER TABLE otel_logs ADD COLUMN IF NOT EXISTS X String")
            .unwrap();
        assert_eq!(
            out,
            [
                "ALTER TABLE otel_logs_local ON CLUSTER obs_cluster ADD COLUMN IF NOT EXISTS X String",
                "ALTER TABLE otel_logs ON CLUSTER obs_cluster ADD COLUMN IF NOT EXISTS X String",
            ]
        );
        assert_eq!(
            cluster().rewrite("DROP VIEW IF EXISTS v").unwrap(),
            ["DROP VIEW IF EXISTS v ON CLUSTER obs_cluster"]
        );
    }

    #[test]
    fn statements_without_a_cluster_form_are_refused_by_name() {
        let e = cluster()
            .rewrite("INSERT INTO t VALUES (1)")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no cluster form"), "{e}");
        let e = format!(
            "{:#}",
            cluster()
                .rewrite("CREATE TABLE IF NOT EXISTS t (a Int8) ENGINE = Memory")
                .unwrap_err()
        );
        assert!(e.contains("engine Memory has no replicated form"), "{e}");
        assert!(Cluster::new("a;DROP", "obs").is_err());
    }

    #[test]
    fn every_migration_has_a_cluster_form_with_keys_that_keep_dedup_and_replacing_exact() {
        let c = cluster();
        for m in MIGRATIONS {
            for stmt in m.statements(&Retention::default()) {
                let out = c.rewrite(&stmt).unwrap();
                for s in &out {
                    assert!(s.contains(" ON CLUSTER obs_cluster"), "{s}");
                    assert!(!s.contains("rand()"), "{s}");
                }
                // The sharding key of a replacing table uses sorting-key columns only.
                if stmt.contains("ReplacingMergeTree") && is_sharded(&table_of(&stmt)) {
                    let order = order_by(&stmt).unwrap();
                    let key = sharding_key(&table_of(&stmt), &order);
                    let sorting = columns_of(&order);
                    for col in columns_of(&key) {
                        assert!(
                            sorting.contains(&col),
                            "{}: key column {col} not in ORDER BY {order}",
                            table_of(&stmt)
                        );
                    }
                }
            }
        }
    }

    fn table_of(stmt: &str) -> String {
        let rest = stmt.strip_prefix("CREATE TABLE IF NOT EXISTS ").unwrap();
        split_name(rest).unwrap().0
    }

    #[test]
    fn columns_of_skips_functions() {
        assert_eq!(
            columns_of("(Tenant, toStartOfHour(Start), TraceId)"),
            ["Tenant", "Start", "TraceId"]
        );
    }
}
