//! Configuration: documented defaults, then a TOML file, then `OBS_*` environment variables.
//!
//! Environment names are the TOML path in upper case with `__` between levels, e.g.
//! `OBS_KAFKA__BROKERS=10.0.0.1:9092` sets `[kafka] brokers`. The file is `--config PATH`
//! or `OBS_CONFIG`; `obs config` prints the merged result. `config/obs.example.toml`
//! documents every key.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use obs_schemas::migrations::Retention;

/// Everything a stage can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the Kafka brokers are and how we talk to them.
    pub kafka: KafkaConfig,
    /// The schema registry the stages use, and the one `obs registry` serves.
    pub registry: RegistryConfig,
    /// The ClickHouse HTTP endpoint.
    pub clickhouse: ClickHouseConfig,
    /// The collector's listeners and limits.
    pub collector: CollectorConfig,
    /// The sink's batching.
    pub sink: SinkConfig,
    /// The query API's listener and limits.
    pub query: QueryConfig,
    /// The stream processors (rule evaluation).
    pub processor: ProcessorConfig,
    /// The trace processor of `obs processor` (span metrics, service graph, sampling).
    pub traces: TracesConfig,
    /// Log pipelines (parse, shape, redact) the log processor of `obs processor` runs.
    pub logs: LogsConfig,
    /// The rollup processor of `obs processor` (1m/1h windows of every series).
    pub rollups: RollupsConfig,
    /// Streaming SQL queries `obs processor` runs over topics in event-time windows.
    pub sql: SqlConfig,
    /// Table retention applied by `obs migrate`.
    pub retention: Retention,
    /// Credentials every listener requires, and the tenants each may act for.
    pub auth: crate::auth::AuthConfig,
    /// The certificate the listeners serve and the CA the clients trust.
    pub tls: crate::tls::TlsConfig,
}

/// `[kafka]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Partitions of each raw topic (obs.metrics, obs.logs, obs.spans) when we create it.
    pub raw_partitions: i32,
    /// How long a produce may wait for the broker's acknowledgement before the collector
    /// answers 503 (librdkafka `message.timeout.ms`; the answer comes at most 2 s later).
    pub produce_timeout_ms: u64,
    /// How the producer compresses its batches (librdkafka `compression.type`).
    pub compression: Compression,
    /// How long the broker may hold a fetch of a raw topic waiting for more data
    /// (librdkafka `fetch.wait.max.ms` of their readers; other topics keep librdkafka's
    /// 500). tansu 0.6 holds even a fetch that found data about this long and answers at
    /// most 5 MiB, so this bounds what one reader can read (see docs/PERFORMANCE.md); a
    /// shorter wait polls an idle broker more often.
    pub raw_fetch_wait_ms: u64,
    /// librdkafka debug contexts for consumers (e.g. "cgrp,fetch"), logged through the
    /// stage's log; "" = none. For diagnosing group and fetch problems.
    pub debug: String,
    /// librdkafka `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`;
    /// "" = librdkafka's default (plaintext).
    pub security_protocol: String,
    /// PEM CA file that verifies the brokers' certificates (`ssl.ca.location`); "" = the
    /// system's.
    pub ssl_ca_file: String,
    /// SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`); "" = no SASL.
    pub sasl_mechanism: String,
    /// SASL user name.
    pub sasl_username: String,
    /// SASL password.
    pub sasl_password: String,
    /// Any other librdkafka client property, applied last (e.g. `"ssl.endpoint.identification.algorithm" = "none"`).
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            raw_partitions: 3,
            produce_timeout_ms: 10_000,
            compression: Compression::None,
            raw_fetch_wait_ms: 100,
            debug: String::new(),
            security_protocol: String::new(),
            ssl_ca_file: String::new(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            properties: Default::default(),
        }
    }
}

/// A Kafka compression codec, as librdkafka names it: the producer's choice for the broker
/// at hand (none for tansu 0.6, which decompresses every compressed batch it is sent, at
/// ~6× the CPU of storing it uncompressed; lz4 suits Apache Kafka, see
/// docs/PERFORMANCE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Batches sent as they are (the default).
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// librdkafka's `compression.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// URL the stages use (ours or Confluent's).
    pub url: String,
    /// Address `obs registry` listens on.
    pub listen: String,
    /// Directory where `obs registry` keeps its log.
    pub data_dir: PathBuf,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: "http://127.0.0.1:8081".into(),
            listen: "127.0.0.1:8081".into(),
            data_dir: PathBuf::from(".obs/registry"),
        }
    }
}

/// `[clickhouse]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP interface URL.
    pub url: String,
    /// Database holding the pipeline's tables (created by `obs migrate`).
    pub database: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// A cluster of the servers' `remote_servers` to create the tables on (`ON CLUSTER`,
    /// `Replicated*MergeTree` per shard under `Distributed` tables, each server defining the
    /// `{shard}` and `{replica}` macros); empty: one server. `obs migrate --print` shows the
    /// DDL.
    pub cluster: String,
    /// Whether request and response bodies are LZ4-compressed (ClickHouse's block
    /// compression): `auto` compresses unless the server is on this host.
    pub compression: HttpCompression,
}

/// The body compression of the ClickHouse HTTP interface: LZ4 saves a network's bandwidth,
/// and on loopback only costs both ends CPU (~0.3 CPU µs per span row, compressed by `obs`
/// and decompressed by the server; docs/PERFORMANCE.md, fifteenth round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpCompression {
    /// LZ4 unless the URL's host is a loopback address or `localhost` (the default).
    Auto,
    /// Always LZ4.
    Lz4,
    /// Never.
    None,
}

impl HttpCompression {
    /// Whether bodies to and from the server at `url` are compressed.
    pub fn compresses(self, url: &str) -> bool {
        match self {
            HttpCompression::Lz4 => true,
            HttpCompression::None => false,
            HttpCompression::Auto => !is_loopback_url(url),
        }
    }
}

/// Whether `url`'s host is `localhost` or a loopback address (`127.0.0.0/8`, `::1`).
fn is_loopback_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(is_loopback_host))
        .unwrap_or(false)
}

/// Whether `host` (a name, an IPv4 address, or an IPv6 address with or without brackets)
/// is `localhost` or a loopback address: a listener or server only this machine reaches.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ClickHouseConfig {
    /// The cluster layout of `cluster`, `None` for one server.
    pub fn cluster_layout(&self) -> anyhow::Result<Option<obs_schemas::cluster::Cluster>> {
        if self.cluster.is_empty() {
            return Ok(None);
        }
        obs_schemas::cluster::Cluster::new(&self.cluster, &self.database).map(Some)
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "obs".into(),
            user: "default".into(),
            password: String::new(),
            cluster: String::new(),
            compression: HttpCompression::Auto,
        }
    }
}

/// `[collector]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// Main HTTP listener (every push protocol).
    pub listen: String,
    /// OTLP/HTTP listener (the standard port; same routes as `listen`).
    pub otlp_http_listen: String,
    /// OTLP/gRPC listener (the standard port); empty: none.
    pub otlp_grpc_listen: String,
    /// Zipkin listener (the standard port; same routes as `listen`); empty: none.
    pub zipkin_listen: String,
    /// Largest accepted request body, after decompression.
    pub max_body_bytes: usize,
    /// Most request-body bytes all listeners hold at once (as sent, `Content-Length`; a
    /// chunked body counts as `max_body_bytes`): past it a request waits up to 1 s for room,
    /// then gets 503 with `Retry-After`. Bounds the collector's memory under overload.
    pub max_inflight_bytes: usize,
    /// Tenant for requests without `X-Scope-OrgID`.
    pub default_tenant: String,
    /// Most labels a metric series may have, `__name__` included.
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value, in bytes.
    pub max_label_value_bytes: usize,
    /// Most active metric series per tenant (the cardinality limit); a request that would
    /// add series past it is refused whole.
    pub max_series_per_tenant: usize,
    /// A series unseen this long no longer counts as active.
    pub series_idle_secs: u64,
    /// Prometheus-format scrape configuration (`scrape_configs`, `probe_configs`); empty:
    /// no scraping.
    pub scrape_config: String,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: "127.0.0.1:8080".into(),
            otlp_http_listen: "127.0.0.1:4318".into(),
            zipkin_listen: "127.0.0.1:9411".into(),
            otlp_grpc_listen: "127.0.0.1:4317".into(),
            max_body_bytes: 16 << 20,
            max_inflight_bytes: 256 << 20,
            default_tenant: "default".into(),
            max_labels_per_series: 40,
            max_label_name_bytes: 128,
            max_label_value_bytes: 2048,
            max_series_per_tenant: 1_000_000,
            series_idle_secs: 3600,
            scrape_config: String::new(),
        }
    }
}

/// `[sink]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Consumer group id prefix; each table's sink appends its name.
    pub group_prefix: String,
    /// A table's batches (one per partition, inserted together) are inserted when they
    /// hold this many rows between them... (ClickHouse wants few, large inserts: every
    /// insert is a part its merges rewrite; see docs/PERFORMANCE.md)
    pub batch_max_rows: usize,
    /// ...or this many bytes of Kafka messages (bounds a sink's memory where rows are
    /// large: logs, spans)...
    pub batch_max_bytes: usize,
    /// ...or when the oldest one's first message is this old.
    pub batch_max_wait_ms: u64,
    /// Address serving the sink's /metrics, /healthz, /readyz.
    pub listen: String,
    /// This sink instance's number, from 0: it reads the partitions `p` with
    /// `p % instances == instance`. Partitions are assigned, not balanced by the broker's
    /// group coordinator (see `obs_runtime::kafka::assign`).
    pub instance: u32,
    /// How many sink instances share the topics' partitions.
    pub instances: u32,
    /// A partition with messages waiting whose committed offset has not moved for this long
    /// is stalled: `/readyz` answers 503 naming it, and the log says so at WARN.
    pub stall_after_secs: u64,
    /// Which spans `otel_traces` stores: `all` (from `obs.spans`) or `sampled` (only the
    /// traces the trace processor's tail sampling keeps, from `obs.spans.sampled`).
    pub traces_from: String,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            group_prefix: "obs-sink".into(),
            batch_max_rows: 250_000,
            batch_max_bytes: 32 << 20,
            batch_max_wait_ms: 1_000,
            listen: "127.0.0.1:8091".into(),
            instance: 0,
            instances: 1,
            stall_after_secs: 60,
            traces_from: "all".into(),
        }
    }
}

/// `[processor]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Prometheus rule files (paths or globs) the rule processor evaluates on
    /// `obs.metrics`; none: the rule processor idles.
    pub rule_files: Vec<String>,
    /// Consumer group id prefix; instance `n` commits in `<prefix>-<n>`.
    pub group_prefix: String,
    /// Address serving the processor's /metrics, /healthz, /readyz and its rule API.
    pub listen: String,
    /// This instance's number, from 0: it evaluates the tenants whose hash modulo
    /// `instances` is `instance` (rules aggregate across series, so every instance reads
    /// every partition of `obs.metrics` and keeps only its tenants' selected series).
    pub instance: u32,
    /// How many processor instances share the tenants.
    pub instances: u32,
    /// Interval of rule groups that set none (s), as Prometheus's evaluation_interval.
    pub evaluation_interval_secs: u64,
    /// How far behind the newest sample of a partition event time may arrive and still be
    /// evaluated with it (ms): a partition's watermark is its newest event time minus this.
    pub allowed_lateness_ms: u64,
    /// A partition without messages for this long stops holding back event time (ms);
    /// when every partition is idle, event time follows the wall clock.
    pub idle_partition_ms: u64,
    /// Samples one tenant may hold in the rule windows; beyond it the tenant's new samples
    /// are refused, counted and logged until its windows shrink.
    pub max_samples_per_tenant: usize,
    /// External URL (`$externalURL` in templates, alerts' generatorURL): the query API.
    pub external_url: String,
    /// External labels (`$externalLabels`; added to alerts sent to Alertmanager).
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Alertmanager base URLs (`http://host:9093`); alerts go to each over its v2 API.
    pub alertmanagers: Vec<String>,
    /// A firing alert is sent again after this long (s), as Prometheus's
    /// `--rules.alert.resend-delay`.
    pub resend_delay_secs: u64,
    /// Evaluations older than this (s, against the wall clock) notify nobody: catching up
    /// on retained history must not page anyone.
    pub notify_max_age_secs: u64,
    /// A processor checkpoint larger than this (bytes, compressed) goes to
    /// `obs.processor.state` in parts of this size; at most 4 MiB, half the producer's
    /// message limit.
    pub state_part_bytes: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            rule_files: Vec::new(),
            group_prefix: "obs-processor".into(),
            listen: "127.0.0.1:8092".into(),
            instance: 0,
            instances: 1,
            evaluation_interval_secs: 60,
            allowed_lateness_ms: 5_000,
            idle_partition_ms: 10_000,
            max_samples_per_tenant: 5_000_000,
            external_url: "http://127.0.0.1:8090".into(),
            external_labels: Default::default(),
            alertmanagers: Vec::new(),
            resend_delay_secs: 60,
            notify_max_age_secs: 600,
            state_part_bytes: 4 << 20,
        }
    }
}

/// `[traces]`: the trace processor run by `obs processor` on `obs.spans`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracesConfig {
    /// Whether `obs processor` correlates spans at all.
    pub enabled: bool,
    /// A trace is decided once none of its spans arrived for this long of its partition's
    /// event time (ms), as the OpenTelemetry Collector's `decision_wait`.
    pub decision_wait_ms: u64,
    /// A trace still receiving spans is decided anyway this long after its first span
    /// arrived (ms, event time).
    pub max_trace_age_ms: u64,
    /// Open traces one partition holds; beyond it the trace due first is decided early
    /// (counted in `obs_traces_decided_total{reason="max_open_traces"}`).
    pub max_open_traces: usize,
    /// Bytes of open spans one partition holds; beyond it the trace due first is decided
    /// early (`reason="max_open_bytes"`).
    pub max_open_bytes: usize,
    /// A partition without input for this long lets its time go on at the wall clock's
    /// pace from its last input (ms), so the last traces before a pause are decided.
    pub idle_partition_ms: u64,
    /// Interval of the span-metric and service-graph samples and of the edge windows (ms),
    /// in event time.
    pub metrics_interval_ms: u64,
    /// Extra span-metric labels taken from span, then resource attributes (Tempo's
    /// `dimensions`; a name colliding with a built-in label is prefixed with `__`).
    pub dimensions: Vec<String>,
    /// Upper bounds (s) of `traces_spanmetrics_latency` (Tempo's defaults).
    pub spanmetrics_buckets: Vec<f64>,
    /// Upper bounds (s) of the service-graph latency histograms (Tempo's defaults).
    pub servicegraph_buckets: Vec<f64>,
    /// Span attributes naming an uninstrumented server of a client span, first found wins
    /// (Tempo's `peer_attributes`).
    pub peer_attributes: Vec<String>,
    /// Tail-sampling policies: a YAML file in the OpenTelemetry Collector's
    /// `tail_sampling` shape (`policies: [...]`); empty keeps every trace.
    pub sampling_file: String,
    /// When the kept traces' spans are published to `obs.spans.sampled`: `auto` when
    /// something reads them (tail-sampling policies, `[sink] traces_from = "sampled"`, or
    /// an SQL query on that topic; without policies they are every span of `obs.spans`,
    /// and a copy nobody reads costs an encode, a produce and a broker write per span),
    /// `always`, or `never`.
    pub publish_sampled: String,
    /// Decisions remembered per partition so spans arriving after their trace was decided
    /// follow its decision.
    pub decision_cache_size: usize,
    /// How often each partition's state is checkpointed (ms of wall clock); a restart
    /// reads input again from the oldest open trace of its latest checkpoint, which is at
    /// least a decision wait back anyway, so checkpointing much more often than
    /// `decision_wait_ms` only costs (a checkpoint lists every open trace).
    pub checkpoint_interval_ms: u64,
}

/// `[rollups]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollupsConfig {
    /// Whether `obs processor` rolls up `obs.metrics` into `obs.metrics.rollup`.
    pub enabled: bool,
    /// Window lengths (ms), ascending, each a multiple of the first (Thanos keeps 5m and
    /// 1h; 1m suits dashboards over days).
    pub resolutions_ms: Vec<u64>,
    /// How far a sample may be behind the newest sample of its partition and still count
    /// in its window (ms); later ones are counted in `obs_rollups_late_samples_total`.
    pub allowed_lateness_ms: u64,
    /// A partition without input for this long moves its time on towards the wall clock
    /// (ms), far enough that the windows of the samples it has are written.
    pub idle_partition_ms: u64,
    /// How often each partition's state is checkpointed (ms of wall clock); a restart
    /// reads input again from its latest checkpoint.
    pub checkpoint_interval_ms: u64,
}

impl Default for RollupsConfig {
    fn default() -> Self {
        RollupsConfig {
            enabled: true,
            resolutions_ms: vec![60_000, 3_600_000],
            allowed_lateness_ms: 60_000,
            idle_partition_ms: 30_000,
            checkpoint_interval_ms: 10_000,
        }
    }
}

/// `[sql]`: the SQL processor of `obs processor` and the sink of its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// A TOML file of `[[queries]]` (see [`crate::sql_queries`]); empty: no queries.
    pub queries_file: String,
    /// A topic partition without input for this long stops holding event time back; when
    /// every partition is quiet, event time follows the wall clock (ms), so the last
    /// windows before a pause are evaluated.
    pub idle_partition_ms: u64,
    /// How often each query's progress is checkpointed (ms of wall clock) besides when
    /// windows are written; a restart reads input again from its latest checkpoint.
    pub checkpoint_interval_ms: u64,
    /// Rows of `sql_<query>` tables are kept this long after their window (days).
    pub ttl_days: u32,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            queries_file: String::new(),
            idle_partition_ms: 30_000,
            checkpoint_interval_ms: 10_000,
            ttl_days: 400,
        }
    }
}

/// `[logs]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// A TOML file of `[[pipelines]]`; empty: no pipelines, collectors write `obs.logs`
    /// directly. Set: collectors write `obs.logs.ingest` and the log processor writes
    /// `obs.logs` after the pipelines (JSON lines on `obs.logs.raw` too).
    pub pipelines_file: String,
    /// Key of the `redact` stages' `hash` action (HMAC-SHA256), so equal values give equal
    /// hashes that cannot be reversed by hashing guesses without it; required when a stage
    /// hashes. Set it from the environment (`OBS_LOGS__REDACT_KEY`), not in a file.
    pub redact_key: String,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            enabled: true,
            decision_wait_ms: 10_000,
            max_trace_age_ms: 300_000,
            max_open_traces: 100_000,
            max_open_bytes: 256 << 20,
            idle_partition_ms: 5_000,
            metrics_interval_ms: 15_000,
            dimensions: Vec::new(),
            spanmetrics_buckets: (0..14).map(|i| 0.002 * f64::powi(2.0, i)).collect(),
            servicegraph_buckets: (0..8).map(|i| 0.1 * f64::powi(2.0, i)).collect(),
            peer_attributes: vec!["peer.service".into(), "db.name".into(), "db.system".into()],
            sampling_file: String::new(),
            publish_sampled: "auto".into(),
            decision_cache_size: 10_000,
            checkpoint_interval_ms: 10_000,
        }
    }
}

/// `[query]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Listener of the query API.
    pub listen: String,
    /// Rows an ad-hoc SQL query may return.
    pub sql_max_rows: u64,
    /// Seconds an ad-hoc SQL query may run.
    pub sql_max_seconds: u64,
    /// Bytes an ad-hoc SQL query may return.
    pub sql_max_result_bytes: u64,
    /// How far back a PromQL instant selector looks for a sample (Prometheus's
    /// `--query.lookback-delta`), seconds.
    pub promql_lookback_secs: u64,
    /// Samples one PromQL query may read before it is refused.
    pub promql_max_samples: usize,
    /// Steps one PromQL range query may have.
    pub promql_max_points: usize,
    /// Log lines one LogQL query may read from ClickHouse; a query that needs more fails
    /// with an error naming this limit (never a cut result).
    pub logql_max_rows: u64,
    /// Seconds ClickHouse may spend on one `SELECT` of a LogQL query (or label API call).
    pub logql_max_seconds: u64,
    /// Where `/api/v1/rules` and `/api/v1/alerts` are answered: the rule processor's
    /// listener (`[processor] listen`), to which the query API forwards them.
    pub rules_url: String,
    /// Which rollups (`metrics_rollups`) PromQL range functions may read when a query
    /// gives no `max_source_resolution`: `raw` (none), `auto` (the coarsest whose windows
    /// fit the query), or a duration (`1m`: rollups of at most 1m).
    pub max_source_resolution: String,
    /// Bytes of PromQL range-query answers the results cache may hold (0: no cache).
    pub results_cache_max_bytes: usize,
    /// Steps newer than this many seconds are never cached (their data may still come);
    /// at least 300, the age at which the sinks record a write as late
    /// (`obs_schemas::late_writes`), so late data reaches every cached answer it changes.
    pub results_cache_freshness_secs: u64,
    /// Series whose labels PromQL keeps between queries (by fingerprint, which names one
    /// label set for good), so a query reads `metrics_series` only for series new to it
    /// (0: every query reads it).
    pub series_labels_cache_entries: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            listen: "127.0.0.1:8090".into(),
            sql_max_rows: 10_000,
            sql_max_seconds: 30,
            sql_max_result_bytes: 64 << 20,
            promql_lookback_secs: 300,
            promql_max_samples: 50_000_000,
            promql_max_points: 11_000,
            logql_max_rows: 500_000,
            logql_max_seconds: 60,
            rules_url: "http://127.0.0.1:8092".into(),
            max_source_resolution: "raw".into(),
            results_cache_max_bytes: 128 << 20,
            results_cache_freshness_secs: 600,
            series_labels_cache_entries: 200_000,
        }
    }
}

impl Config {
    /// Defaults, then `file` (if given, it must exist), then `OBS_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            fig = fig.merge(Toml::file(path));
        }
        // Only nested keys (OBS_SECTION__KEY) are configuration; other OBS_* variables
        // (OBS_CONFIG, the test harness's OBS_BIN, ...) are not.
        fig = fig.merge(
            Env::prefixed("OBS_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let cfg: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Relations between settings that types alone do not enforce.
    fn check(&self) -> anyhow::Result<()> {
        check_instances("sink", self.sink.instance, self.sink.instances)?;
        check_instances(
            "processor",
            self.processor.instance,
            self.processor.instances,
        )?;
        anyhow::ensure!(
            self.processor.evaluation_interval_secs > 0,
            "invalid configuration: [processor] evaluation_interval_secs must be above 0"
        );
        anyhow::ensure!(
            self.traces.metrics_interval_ms > 0 && self.traces.decision_wait_ms > 0,
            "invalid configuration: [traces] metrics_interval_ms and decision_wait_ms must be above 0"
        );
        anyhow::ensure!(
            matches!(self.sink.traces_from.as_str(), "all" | "sampled"),
            "invalid configuration: [sink] traces_from = {:?}: expected \"all\" or \"sampled\"",
            self.sink.traces_from
        );
        anyhow::ensure!(
            matches!(
                self.traces.publish_sampled.as_str(),
                "auto" | "always" | "never"
            ),
            "invalid configuration: [traces] publish_sampled = {:?}: expected \"auto\", \"always\" or \"never\"",
            self.traces.publish_sampled
        );
        anyhow::ensure!(
            (1..=4 << 20).contains(&self.processor.state_part_bytes),
            "invalid configuration: [processor] state_part_bytes = {} must be from 1 to 4194304 \
             (4 MiB: half the producer's 8 MiB message.max.bytes)",
            self.processor.state_part_bytes
        );
        anyhow::ensure!(
            self.kafka.raw_fetch_wait_ms <= 300_000,
            "invalid configuration: [kafka] raw_fetch_wait_ms = {} must be at most 300000 \
             (librdkafka's largest fetch.wait.max.ms)",
            self.kafka.raw_fetch_wait_ms
        );
        let late_after_secs = obs_schemas::late_writes::LATE_AFTER_MS as u64 / 1000;
        anyhow::ensure!(
            self.query.results_cache_freshness_secs >= late_after_secs,
            "invalid configuration: [query] results_cache_freshness_secs = {} must be at least \
             {late_after_secs} (the age at which the sinks record a write as late)",
            self.query.results_cache_freshness_secs
        );
        Ok(())
    }
}

/// `instance` numbers one of `instances` (from 0) in `[section]`.
fn check_instances(section: &str, instance: u32, instances: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        instances >= 1 && instance < instances,
        "invalid configuration: [{section}] instance = {instance} must be below instances = {instances} \
         (instances numbered from 0)"
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closure returns figment's own error type
mod tests {
    use super::*;

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "obs.toml",
                "[kafka]\nbrokers = \"file:9092\"\n[query]\nsql_max_rows = 5\n",
            )?;
            jail.set_env("OBS_QUERY__SQL_MAX_ROWS", "7");
            jail.set_env("OBS_UNRELATED", "ignored");
            let c = Config::load(Some(Path::new("obs.toml"))).unwrap();
            assert_eq!(c.kafka.brokers, "file:9092");
            assert_eq!(c.query.sql_max_rows, 7);
            assert_eq!(c.collector.listen, "127.0.0.1:8080");
            Ok(())
        });
    }

    #[test]
    fn sink_instance_must_be_below_instances() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OBS_SINK__INSTANCE", "2");
            jail.set_env("OBS_SINK__INSTANCES", "2");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(
                e.contains("instance = 2 must be below instances = 2"),
                "{e}"
            );
            jail.set_env("OBS_SINK__INSTANCE", "1");
            assert_eq!(Config::load(None).unwrap().sink.instance, 1);
            Ok(())
        });
    }

    #[test]
    fn clickhouse_bodies_are_compressed_unless_the_server_is_on_this_host() {
        let auto = HttpCompression::Auto;
        for local in [
            "http://127.0.0.1:8123",
            "http://127.0.0.2:18123/",
            "http://localhost:8123",
            "https://LOCALHOST",
            "http://[::1]:8123",
            "http://user:pw@127.0.0.1:8123/?x=1",
        ] {
            assert!(!auto.compresses(local), "{local}");
            assert!(HttpCompression::Lz4.compresses(local), "{local}");
        }
        for remote in [
            "http://clickhouse:8123",
            "https://ch.example.com:8443",
            "http://10.0.0.5:8123",
            "http://[2001:db8::1]:8123",
            "http://127.0.0.1.example.com",
            "127.0.0.1:8123",
        ] {
            assert!(auto.compresses(remote), "{remote}");
            assert!(!HttpCompression::None.compresses(remote), "{remote}");
        }
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Config::load(None).unwrap().clickhouse.compression,
                HttpCompression::Auto
            );
            jail.set_env("OBS_CLICKHOUSE__COMPRESSION", "lz4");
            assert_eq!(
                Config::load(None).unwrap().clickhouse.compression,
                HttpCompression::Lz4
            );
            jail.set_env("OBS_CLICKHOUSE__COMPRESSION", "zstd");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains("zstd"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn compression_is_one_of_librdkafkas_codecs() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Config::load(None).unwrap().kafka.compression,
                Compression::None
            );
            jail.set_env("OBS_KAFKA__COMPRESSION", "lz4");
            assert_eq!(
                Config::load(None).unwrap().kafka.compression,
                Compression::Lz4
            );
            jail.set_env("OBS_KAFKA__RAW_FETCH_WAIT_MS", "300001");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(
                e.contains("[kafka] raw_fetch_wait_ms = 300001 must be at most 300000"),
                "{e}"
            );
            jail.set_env("OBS_KAFKA__RAW_FETCH_WAIT_MS", "300000");
            assert_eq!(Config::load(None).unwrap().kafka.raw_fetch_wait_ms, 300_000);
            assert_eq!(
                Config::load(None).unwrap().processor.state_part_bytes,
                4 << 20
            );
            jail.set_env("OBS_PROCESSOR__STATE_PART_BYTES", "4194305");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(
                e.contains("[processor] state_part_bytes = 4194305 must be from 1 to 4194304"),
                "{e}"
            );
            jail.set_env("OBS_PROCESSOR__STATE_PART_BYTES", "512");
            assert_eq!(Config::load(None).unwrap().processor.state_part_bytes, 512);
            jail.set_env("OBS_KAFKA__COMPRESSION", "brotli");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(
                e.contains("brotli") && e.contains("`none`, `gzip`, `snappy`, `lz4`"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("obs.toml", "[kafka]\nbrokerz = \"x\"\n")?;
            let e = Config::load(Some(Path::new("obs.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("brokerz"), "{e}");
            Ok(())
        });
    }
}
