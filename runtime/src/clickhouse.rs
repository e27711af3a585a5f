//! The ClickHouse client every stage uses: the `clickhouse` crate with its defaults (LZ4,
//! RowBinary with schema validation), pointed at any server speaking ClickHouse's HTTP
//! interface.

use crate::config::ClickHouseConfig;

/// A client for the configured server, without a database (for `CREATE DATABASE`).
pub fn server_client(cfg: &ClickHouseConfig) -> clickhouse::Client {
    let mut c = clickhouse::Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user);
    if !cfg.password.is_empty() {
        c = c.with_password(&cfg.password);
    }
    c
}

/// A client for the pipeline's database.
pub fn client(cfg: &ClickHouseConfig) -> clickhouse::Client {
    server_client(cfg).with_database(&cfg.database)
}
