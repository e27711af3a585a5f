//! `[clickhouse] cluster`: the DDL `obs migrate --print` shows for a cluster, checked by the
//! real engine. chDB has no ZooKeeper and no distributed-DDL queue, so `ON CLUSTER` and the
//! `Replicated*` engines cannot run here; everything else does:
//!
//! * every statement parses with ClickHouse's own parser (`formatQuery`);
//! * with `ON CLUSTER` taken out and each `Replicated*MergeTree(path, replica, args)` turned
//!   back into `*MergeTree(args)`, the statements run on chDB configured with a one-shard
//!   `obs_cluster` (its replica is the engine itself), the `Distributed` tables included:
//!   each node-local table has exactly the one-server table's columns, codecs, defaults,
//!   engine, sorting and partition keys; the views read and write the local tables;
//! * rows inserted through a distributed table with the stages' client settings land in
//!   the local table, once per deduplication token, and the query API's `IN (SELECT …)`
//!   shape reads through it.

use std::collections::BTreeMap;
use std::process::Command;

use obs_e2e::{ClickHouse, free_port, obs_bin};
use obs_schemas::cluster::{columns_of, is_sharded};

/// The statements `obs migrate --print` shows for `database` (on `cluster` if given).
fn plan(database: &str, cluster: Option<&str>) -> Vec<String> {
    let out = Command::new(obs_bin())
        .args(["migrate", "--print"])
        .env("OBS_CLICKHOUSE__DATABASE", database)
        .env("OBS_CLICKHOUSE__CLUSTER", cluster.unwrap_or(""))
        .output()
        .expect("obs runs");
    assert!(
        out.status.success(),
        "obs migrate --print: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split(";\n\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A cluster statement as one server runs it: no `ON CLUSTER`, `Replicated*` engines back to
/// their plain form (checking the replication path names the table and its shard), and the
/// replicated deduplication window back to the one-server setting.
fn on_one_node(stmt: &str) -> String {
    let s = stmt.replace(" ON CLUSTER obs_cluster", "");
    let Some(at) = s.find("ENGINE = Replicated") else {
        return s;
    };
    let (head, rest) = s.split_at(at + "ENGINE = ".len());
    let rest = rest.strip_prefix("Replicated").unwrap();
    let open = rest.find('(').unwrap();
    let engine = &rest[..open];
    let args = &rest[open + 1..];
    let path_end = args.find("', '{replica}'").expect("a {replica} macro");
    let path = &args[1..path_end];
    let table = s
        .strip_prefix("CREATE TABLE IF NOT EXISTS ")
        .unwrap()
        .split([' ', '('])
        .next()
        .unwrap()
        .trim_matches('`');
    let shard = if is_sharded(table.trim_end_matches("_local")) && table.ends_with("_local") {
        "{shard}"
    } else {
        "all"
    };
    assert_eq!(
        path,
        format!("/clickhouse/tables/{shard}/nodes/{table}"),
        "replication path of {table}"
    );
    let after = &args[path_end + "', '{replica}'".len()..];
    let after = after.strip_prefix(", ").unwrap_or(after);
    format!("{head}{engine}({after}").replace(
        "replicated_deduplication_window",
        "non_replicated_deduplication_window",
    )
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct TableRow {
    name: String,
    engine: String,
    sorting_key: String,
    partition_key: String,
    as_select: String,
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct ColumnRow {
    table: String,
    name: String,
    #[serde(rename = "type")]
    ty: String,
    default_kind: String,
    default_expression: String,
    compression_codec: String,
}

async fn tables(client: &clickhouse::Client, db: &str) -> BTreeMap<String, TableRow> {
    client
        .query(
            "SELECT name, engine, sorting_key, partition_key, as_select FROM system.tables \
             WHERE database = ? ORDER BY name",
        )
        .bind(db)
        .fetch_all::<TableRow>()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

async fn columns(client: &clickhouse::Client, db: &str, table: &str) -> Vec<ColumnRow> {
    let mut cols = client
        .query(
            "SELECT table, name, type, default_kind, default_expression, compression_codec \
             FROM system.columns WHERE database = ? AND table = ? ORDER BY position",
        )
        .bind(db)
        .bind(table)
        .fetch_all::<ColumnRow>()
        .await
        .unwrap();
    for c in &mut cols {
        c.table = String::new();
    }
    assert!(!cols.is_empty(), "{db}.{table} has no columns");
    cols
}

async fn run_all(client: &clickhouse::Client, db: &str, statements: &[String]) {
    client.query(&statements[0]).execute().await.unwrap();
    let in_db = client.clone().with_database(db);
    for s in &statements[1..] {
        if let Err(e) = in_db.query(s).execute().await {
            panic!("{e}\nstatement: {s}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_ddl_is_the_one_server_schema_sharded_replicated_and_distributed() {
    let single = plan("single", None);
    let clustered = plan("nodes", Some("obs_cluster"));
    assert!(single.iter().all(|s| !s.contains("ON CLUSTER")));
    assert_eq!(
        clustered[0],
        "CREATE DATABASE IF NOT EXISTS nodes ON CLUSTER obs_cluster"
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ch = ClickHouse::start_configured(
        dir.path(),
        &format!(
            "<clickhouse><tcp_port>{port}</tcp_port><remote_servers><obs_cluster><shard><replica>\
             <host>127.0.0.1</host><port>{port}</port></replica></shard></obs_cluster></remote_servers>\
             <macros><shard>01</shard><replica>r1</replica></macros></clickhouse>"
        ),
    )
    .await
    .unwrap();
    let client = ch.client();

    // ClickHouse's own parser takes every statement, ON CLUSTER and all.
    for s in &clustered {
        let formatted: String = client
            .query("SELECT formatQuerySingleLine(?)")
            .bind(s.as_str())
            .fetch_one()
            .await
            .unwrap_or_else(|e| panic!("{e}\nstatement: {s}"));
        assert!(formatted.contains("ON CLUSTER obs_cluster"), "{formatted}");
    }

    run_all(&client, "single", &single).await;
    let declustered: Vec<String> = clustered.iter().map(|s| on_one_node(s)).collect();
    run_all(&client, "nodes", &declustered).await;

    let one = tables(&client, "single").await;
    let nodes = tables(&client, "nodes").await;
    let mut checked = 0;
    for (name, t) in &one {
        if t.engine == "MaterializedView" {
            let v = &nodes[name];
            assert_eq!(v.engine, "MaterializedView");
            let mut want = t.as_select.clone();
            for (other, o) in &one {
                if o.engine.ends_with("MergeTree") && is_sharded(other) {
                    want = want.replace(
                        &format!("single.{other} "),
                        &format!("nodes.{other}_local "),
                    );
                }
            }
            assert_eq!(
                v.as_select,
                want.replace("single.", "nodes."),
                "view {name}"
            );
            continue;
        }
        let own = if is_sharded(name) {
            let d = &nodes[name];
            assert_eq!(d.engine, "Distributed", "{name}");
            let dist_cols: Vec<(String, String)> = columns(&client, "nodes", name)
                .await
                .into_iter()
                .map(|c| (c.name, c.ty))
                .collect();
            let one_cols: Vec<(String, String)> = columns(&client, "single", name)
                .await
                .into_iter()
                .map(|c| (c.name, c.ty))
                .collect();
            assert_eq!(dist_cols, one_cols, "distributed {name}");
            format!("{name}_local")
        } else {
            name.clone()
        };
        let local = &nodes[&own];
        assert_eq!(local.engine, t.engine, "{own}");
        assert_eq!(local.sorting_key, t.sorting_key, "{own}");
        assert_eq!(local.partition_key, t.partition_key, "{own}");
        assert_eq!(
            columns(&client, "nodes", &own).await,
            columns(&client, "single", name).await,
            "{own}"
        );
        checked += 1;
    }
    assert_eq!(checked, 17, "data and bookkeeping tables checked");

    // Every sharding key names columns of its table; replacing tables shard by sorting-key
    // columns only, so rows that replace each other meet on one shard.
    for s in clustered
        .iter()
        .filter(|s| s.contains("ENGINE = Distributed("))
    {
        let table = s.split_whitespace().nth(5).unwrap();
        let prefix = format!("ENGINE = Distributed(obs_cluster, nodes, {table}_local, ");
        let at = s.find(&prefix).unwrap_or_else(|| panic!("{s}")) + prefix.len();
        let key = s[at..].strip_suffix(')').unwrap().to_string();
        assert!(key.starts_with("cityHash64("), "{s}");
        let names: Vec<String> = columns(&client, "single", table)
            .await
            .into_iter()
            .map(|c| c.name)
            .collect();
        for col in columns_of(&key) {
            assert!(names.contains(&col), "{table}: key column {col}");
            if one[table].engine.starts_with("Replacing") {
                assert!(
                    columns_of(&one[table].sorting_key).contains(&col),
                    "{table}: {col} is not in the sorting key {}",
                    one[table].sorting_key
                );
            }
        }
    }

    // The stages' client on a cluster: settings the engine knows; an insert through a
    // distributed table lands in the local table once per token; IN over distributed tables.
    let cfg = obs_runtime::config::ClickHouseConfig {
        url: ch.url(),
        database: "nodes".into(),
        cluster: "obs_cluster".into(),
        ..Default::default()
    };
    let stage = obs_runtime::clickhouse::client(&cfg);
    let settings: (String, String) = stage
        .query(
            "SELECT toString(getSetting('distributed_foreground_insert')), \
             toString(getSetting('distributed_product_mode'))",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(settings, ("true".to_string(), "global".to_string()));
    let now_ms = obs_e2e::recent_whole_second_ns() / 1_000_000;
    for _ in 0..2 {
        stage
            .query(&format!(
                "INSERT INTO metrics_samples (Tenant, MetricName, Fingerprint, TimestampMs, Value) \
                 VALUES ('t', 'up', 7, {now_ms}, 1), ('t', 'up', 8, {now_ms}, 0)"
            ))
            .with_setting("insert_deduplication_token", "metrics/0:1-2")
            .execute()
            .await
            .unwrap();
        stage
            .query(&format!(
                "INSERT INTO metrics_series (Tenant, MetricName, Fingerprint, Labels, Kind, LastSeenMs) \
                 VALUES ('t', 'up', 7, map('job', 'a'), 'gauge', {now_ms})"
            ))
            .execute()
            .await
            .unwrap();
    }
    let local: u64 = stage
        .query("SELECT count() FROM metrics_samples_local")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(local, 2, "two rows, stored once for their token");
    let through: u64 = stage
        .query(
            "SELECT count() FROM metrics_samples WHERE Tenant = 't' AND Fingerprint IN \
             (SELECT Fingerprint FROM metrics_series WHERE Tenant = 't' AND Labels['job'] = 'a')",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(through, 1);
}
