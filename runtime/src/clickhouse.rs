//! The ClickHouse client every stage uses: the `clickhouse` crate with its defaults
//! (RowBinary with schema validation; LZ4 as `[clickhouse] compression` says), pointed at
//! any server speaking ClickHouse's HTTP interface.

use crate::config::ClickHouseConfig;

/// A client for the configured server, without a database (for `CREATE DATABASE`).
///
/// An `https://` URL is verified against the system roots and `[tls] ca_file` (see
/// [`crate::tls::trust`]).
pub fn server_client(cfg: &ClickHouseConfig) -> clickhouse::Client {
    let base = if cfg.url.starts_with("https://") {
        match https_client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("ClickHouse TLS client: {e:#}");
                clickhouse::Client::default()
            }
        }
    } else {
        clickhouse::Client::default()
    };
    let compression = if cfg.compression.compresses(&cfg.url) {
        clickhouse::Compression::Lz4
    } else {
        clickhouse::Compression::None
    };
    let mut c = base
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_compression(compression);
    if !cfg.password.is_empty() {
        c = c.with_password(&cfg.password);
    }
    if !cfg.cluster.is_empty() {
        // An insert through a Distributed table is acknowledged once every shard holds its
        // block (a sink's read-back must see it), and `IN (SELECT …)` over distributed
        // tables runs the subquery once, cluster-wide (ClickHouse refuses it by default).
        c = c
            .with_setting("distributed_foreground_insert", "1")
            .with_setting("distributed_product_mode", "global");
    }
    c
}

/// A client for the pipeline's database.
pub fn client(cfg: &ClickHouseConfig) -> clickhouse::Client {
    server_client(cfg).with_database(&cfg.database)
}

/// A client whose TLS trusts `[tls] ca_file` as well as the system roots; otherwise the
/// `clickhouse` crate's defaults (keep-alive 60 s, idle connections dropped after 2 s, as
/// ClickHouse closes them after 3 s).
fn https_client() -> anyhow::Result<clickhouse::Client> {
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*crate::tls::client_config()?).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let hyper = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .build(https);
    Ok(clickhouse::Client::with_http_client(hyper))
}
