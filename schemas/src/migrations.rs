//! Versioned, idempotent ClickHouse migrations (`obs migrate`).
//!
//! Each migration is a file in `schemas/migrations/`, embedded at build time. Statements
//! are separated by a `;` at the end of a line and sent one per request (ClickHouse's HTTP
//! interface takes one statement per request). Every statement is `IF NOT EXISTS`, and the
//! applied versions are recorded in `obs_schema_migrations`, so running the migrations
//! again (or after a crash half-way) is always safe.

use crate::cluster::Cluster;
use anyhow::Context;
use clickhouse::Client;
use serde::Deserialize;

/// One versioned migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Monotonic version.
    pub version: u32,
    /// Short name (the file name without the version).
    pub name: &'static str,
    /// The SQL, with `{..._ttl_days}` placeholders.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "otel_logs",
        sql: include_str!("../migrations/0001_otel_logs.sql"),
    },
    Migration {
        version: 2,
        name: "otel_traces",
        sql: include_str!("../migrations/0002_otel_traces.sql"),
    },
    Migration {
        version: 3,
        name: "metrics",
        sql: include_str!("../migrations/0003_metrics.sql"),
    },
    Migration {
        version: 4,
        name: "events",
        sql: include_str!("../migrations/0004_events.sql"),
    },
    Migration {
        version: 5,
        name: "sink_intents",
        sql: include_str!("../migrations/0005_sink_intents.sql"),
    },
    Migration {
        version: 6,
        name: "metrics_metadata",
        sql: include_str!("../migrations/0006_metrics_metadata.sql"),
    },
    Migration {
        version: 7,
        name: "replay_log",
        sql: include_str!("../migrations/0007_replay_log.sql"),
    },
    Migration {
        version: 8,
        name: "trace_index_tenant",
        sql: include_str!("../migrations/0008_trace_index_tenant.sql"),
    },
    Migration {
        version: 9,
        name: "alerts",
        sql: include_str!("../migrations/0009_alerts.sql"),
    },
    Migration {
        version: 10,
        name: "trace_summaries_servicegraph",
        sql: include_str!("../migrations/0010_trace_summaries_servicegraph.sql"),
    },
    Migration {
        version: 11,
        name: "error_events",
        sql: include_str!("../migrations/0011_error_events.sql"),
    },
    Migration {
        version: 12,
        name: "metrics_rollups",
        sql: include_str!("../migrations/0012_metrics_rollups.sql"),
    },
    Migration {
        version: 13,
        name: "metrics_exemplars",
        sql: include_str!("../migrations/0013_metrics_exemplars.sql"),
    },
    Migration {
        version: 14,
        name: "late_writes",
        sql: include_str!("../migrations/0014_late_writes.sql"),
    },
    Migration {
        version: 15,
        name: "sink_intents_token",
        sql: include_str!("../migrations/0015_sink_intents_token.sql"),
    },
];

/// Retention per table family, in days (TTL clauses of the DDL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    /// `otel_logs`.
    pub logs_ttl_days: u32,
    /// `otel_traces` and its trace-id index.
    pub traces_ttl_days: u32,
    /// `metrics_series`, `metrics_samples`.
    pub metrics_ttl_days: u32,
    /// `obs_events`.
    pub events_ttl_days: u32,
    /// `metrics_rollups` (kept longer than the raw samples: they answer long ranges).
    pub rollups_ttl_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            logs_ttl_days: 30,
            traces_ttl_days: 30,
            metrics_ttl_days: 90,
            events_ttl_days: 365,
            rollups_ttl_days: 400,
        }
    }
}

impl Migration {
    /// The migration's statements with retention filled in.
    pub fn statements(&self, retention: &Retention) -> Vec<String> {
        let sql = self
            .sql
            .replace("{logs_ttl_days}", &retention.logs_ttl_days.to_string())
            .replace("{traces_ttl_days}", &retention.traces_ttl_days.to_string())
            .replace(
                "{metrics_ttl_days}",
                &retention.metrics_ttl_days.to_string(),
            )
            .replace("{events_ttl_days}", &retention.events_ttl_days.to_string())
            .replace(
                "{rollups_ttl_days}",
                &retention.rollups_ttl_days.to_string(),
            );
        let mut out = vec![];
        let mut current = String::new();
        for line in sql.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("--") || trimmed.is_empty() {
                continue;
            }
            current.push_str(line);
            current.push('\n');
            if trimmed.ends_with(';') {
                let stmt = current.trim().trim_end_matches(';').trim().to_string();
                out.push(stmt);
                current.clear();
            }
        }
        if !current.trim().is_empty() {
            out.push(current.trim().to_string());
        }
        out
    }

    /// The migration's statements for one server (`None`) or a cluster.
    pub fn statements_on(
        &self,
        retention: &Retention,
        cluster: Option<&Cluster>,
    ) -> anyhow::Result<Vec<String>> {
        let statements = self.statements(retention);
        let Some(c) = cluster else {
            return Ok(statements);
        };
        let mut out = vec![];
        for s in statements {
            out.extend(c.rewrite(&s).with_context(|| {
                format!("migration {} ({}) on a cluster", self.version, self.name)
            })?);
        }
        Ok(out)
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run.
    pub applied: Vec<u32>,
    /// Versions that were already there.
    pub already: Vec<u32>,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct AppliedRow {
    version: u32,
}

/// Validates a database name; it is spliced into DDL, so only identifiers pass.
pub fn check_identifier(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    anyhow::ensure!(
        ok,
        "invalid ClickHouse identifier {name:?}: use letters, digits and underscores"
    );
    Ok(())
}

/// The table recording which versions are applied.
const APPLIED_TABLE: &str = "CREATE TABLE IF NOT EXISTS obs_schema_migrations (version UInt32, name String, \
     applied_at DateTime64(3) DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version";

/// What `migrate` runs before the migrations: the database (sent without a database set)
/// and the table of applied versions.
pub fn bootstrap_statements(
    database: &str,
    cluster: Option<&Cluster>,
) -> anyhow::Result<(String, Vec<String>)> {
    check_identifier(database)?;
    Ok(match cluster {
        None => (
            format!("CREATE DATABASE IF NOT EXISTS {database}"),
            vec![APPLIED_TABLE.to_string()],
        ),
        Some(c) => (c.create_database(), c.rewrite(APPLIED_TABLE)?),
    })
}

/// Every statement `migrate` would run on an empty database, in order (`obs migrate
/// --print`), so the DDL of a cluster can be reviewed before it is applied.
pub fn plan(
    database: &str,
    retention: &Retention,
    cluster: Option<&Cluster>,
) -> anyhow::Result<Vec<String>> {
    let (create, applied) = bootstrap_statements(database, cluster)?;
    let mut out = vec![create];
    out.extend(applied);
    for m in MIGRATIONS {
        out.extend(m.statements_on(retention, cluster)?);
    }
    Ok(out)
}

/// Creates `database` if needed and applies every pending migration in order, on one
/// server or, with `cluster`, on every node of a cluster (see [`crate::cluster`]).
///
/// `client` must not have a database set (it may not exist yet).
pub async fn migrate(
    client: &Client,
    database: &str,
    retention: &Retention,
    cluster: Option<&Cluster>,
) -> anyhow::Result<MigrationReport> {
    let (create, applied) = bootstrap_statements(database, cluster)?;
    client.query(&create).execute().await?;
    let db = client.clone().with_database(database);
    for stmt in applied {
        db.query(&stmt).execute().await?;
    }
    let done: Vec<u32> = db
        .query("SELECT DISTINCT version FROM obs_schema_migrations ORDER BY version")
        .fetch_all::<AppliedRow>()
        .await?
        .into_iter()
        .map(|r| r.version)
        .collect();
    let mut report = MigrationReport {
        applied: vec![],
        already: vec![],
    };
    for m in MIGRATIONS {
        if done.contains(&m.version) {
            report.already.push(m.version);
            continue;
        }
        for stmt in m.statements_on(retention, cluster)? {
            db.query(&stmt).execute().await.map_err(|e| {
                anyhow::anyhow!(
                    "migration {} ({}) failed: {e}\nstatement: {stmt}",
                    m.version,
                    m.name
                )
            })?;
        }
        db.query("INSERT INTO obs_schema_migrations (version, name) VALUES (?, ?)")
            .bind(m.version)
            .bind(m.name)
            .execute()
            .await?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        report.applied.push(m.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_and_filled() {
        let r = Retention {
            logs_ttl_days: 7,
            ..Default::default()
        };
        let logs = MIGRATIONS[0].statements(&r);
        assert_eq!(logs.len(), 1);
        assert!(logs[0].contains("toIntervalDay(7)"));
        assert!(!logs[0].ends_with(';'));
        let traces = MIGRATIONS[1].statements(&r);
        assert_eq!(traces.len(), 3);
        assert!(
            traces[2]
                .starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS otel_traces_trace_id_ts_mv")
        );
        for m in MIGRATIONS {
            for s in m.statements(&r) {
                assert!(
                    !s.contains('{') || s.contains("Nested"),
                    "unfilled placeholder in {}",
                    m.name
                );
                assert!(
                    !s.contains('?'),
                    "a ? would be taken as a bind placeholder in {}",
                    m.name
                );
            }
        }
    }

    #[test]
    fn versions_are_increasing() {
        for w in MIGRATIONS.windows(2) {
            assert!(w[0].version < w[1].version);
        }
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(check_identifier("obs_1").is_ok());
        assert!(check_identifier("1obs").is_err());
        assert!(check_identifier("a;DROP").is_err());
        assert!(check_identifier("").is_err());
    }
}
