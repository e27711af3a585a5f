-- Metrics as PromQL needs them: one row per series (labels stored once) and narrow sample
-- rows ordered by (tenant, metric, series, time) with delta/Gorilla codecs.
CREATE TABLE IF NOT EXISTS metrics_series (
    Tenant LowCardinality(String),
    MetricName LowCardinality(String),
    Fingerprint Int64,
    Labels Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Kind LowCardinality(String),
    LastSeenMs Int64
) ENGINE = ReplacingMergeTree(LastSeenMs)
ORDER BY (Tenant, MetricName, Fingerprint)
TTL toDateTime(intDiv(LastSeenMs, 1000)) + toIntervalDay({metrics_ttl_days})
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS metrics_samples (
    Tenant LowCardinality(String),
    MetricName LowCardinality(String),
    Fingerprint Int64 CODEC(ZSTD(1)),
    TimestampMs Int64 CODEC(DoubleDelta, ZSTD(1)),
    Value Float64 CODEC(Gorilla, ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(toDateTime(intDiv(TimestampMs, 1000)))
ORDER BY (Tenant, MetricName, Fingerprint, TimestampMs)
TTL toDateTime(intDiv(TimestampMs, 1000)) + toIntervalDay({metrics_ttl_days})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;
