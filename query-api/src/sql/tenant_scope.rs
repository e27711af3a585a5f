//! Tenant scoping of ad-hoc SQL: the statement runs with ClickHouse's
//! `additional_table_filters` set to `Tenant = '<tenant>'` for every table that has a
//! `Tenant` column, in every database. The engine applies the filter wherever such a table
//! is read — joins, subqueries, `IN`, `view()`, CTEs — and `readonly=1` forbids changing the
//! setting from inside the query. What reads tables around it (`merge()`, `file()`,
//! query logs) is refused before sending (see `statement`).

use std::collections::HashSet;

use clickhouse::Row;
use serde::Deserialize;
use tokio::sync::OnceCell;

/// `s` as a ClickHouse string literal (backslash and quote escaped).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A table with a `Tenant` column.
#[derive(Debug, Row, Deserialize)]
pub struct TenantTable {
    /// Its database.
    pub database: String,
    /// Its name.
    pub table: String,
    /// Whether `database` is the connection's current database.
    pub current: bool,
}

/// The tables (and views) with a `Tenant` column, in every database but the system ones.
pub async fn tenant_tables(
    client: &clickhouse::Client,
) -> clickhouse::error::Result<Vec<TenantTable>> {
    client
        .query(
            "SELECT database, table, database = currentDatabase() AS current FROM system.columns \
             WHERE name = 'Tenant' AND database NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema') \
             ORDER BY database, table",
        )
        .fetch_all()
        .await
}

/// The value of `additional_table_filters` restricting `tables` to `tenant`: a map keyed by
/// `db.table` and, for the current database, by the bare name too.
pub fn table_filters(tables: &[TenantTable], tenant: &str) -> String {
    let filter = literal(&format!("Tenant = {}", literal(tenant)));
    let mut entries = Vec::new();
    for t in tables {
        entries.push(format!(
            "{}:{filter}",
            literal(&format!("{}.{}", t.database, t.table))
        ));
        if t.current {
            entries.push(format!("{}:{filter}", literal(&t.table)));
        }
    }
    format!("{{{}}}", entries.join(", "))
}

/// The engine's table function names, lower case (asked once per process).
pub async fn table_functions(
    client: &clickhouse::Client,
) -> clickhouse::error::Result<&'static HashSet<String>> {
    static NAMES: OnceCell<HashSet<String>> = OnceCell::const_new();
    NAMES
        .get_or_try_init(|| async {
            let names: Vec<String> = client
                .query("SELECT lower(name) FROM system.table_functions")
                .fetch_all()
                .await?;
            Ok(names.into_iter().collect())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{TENANT_HEADER, tenant};
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn tenants_are_validated_and_filters_escaped() {
        let mut h = HeaderMap::new();
        assert_eq!(tenant(&h).unwrap(), "default");
        h.insert(TENANT_HEADER, HeaderValue::from_static("team-a.prod"));
        assert_eq!(tenant(&h).unwrap(), "team-a.prod");
        h.insert(TENANT_HEADER, HeaderValue::from_static("a' OR 1=1"));
        assert!(tenant(&h).unwrap_err().contains("invalid X-Scope-OrgID"));
        let tables = [
            TenantTable {
                database: "obs".into(),
                table: "otel_logs".into(),
                current: true,
            },
            TenantTable {
                database: "old".into(),
                table: "o'dd".into(),
                current: false,
            },
        ];
        assert_eq!(
            table_filters(&tables, "a"),
            r"{'obs.otel_logs':'Tenant = \'a\'', 'otel_logs':'Tenant = \'a\'', 'old.o\'dd':'Tenant = \'a\''}"
        );
        assert_eq!(literal(r"x\'"), r"'x\\\''");
    }
}
