-- Discrete events (deployments, incidents, k8s events), for annotations and correlation.
CREATE TABLE IF NOT EXISTS obs_events (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    EventId String CODEC(ZSTD(1)),
    Tenant LowCardinality(String),
    Type LowCardinality(String),
    Source LowCardinality(String),
    Severity LowCardinality(String),
    Title String CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    Attributes Map(LowCardinality(String), String) CODEC(ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (Tenant, Type, Source, Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay({events_ttl_days})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;
