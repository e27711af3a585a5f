-- What the rollup processor derives from obs.metrics (obs.metrics.rollup): one row per series
-- and event-time window per resolution (1m and 1h by default), with Thanos's downsampling
-- aggregates plus the counter increase. A window written again after a restart of the
-- processor is the same row, so the table replaces by (series, resolution, window).
-- Labels are those of metrics_series for the same fingerprint.
CREATE TABLE IF NOT EXISTS metrics_rollups (
    Tenant LowCardinality(String),
    MetricName LowCardinality(String),
    Fingerprint Int64 CODEC(ZSTD(1)),
    ResolutionMs Int64,
    WindowStartMs Int64 CODEC(DoubleDelta, ZSTD(1)),
    Count Int64 CODEC(ZSTD(1)),
    Sum Float64 CODEC(Gorilla, ZSTD(1)),
    Min Float64 CODEC(Gorilla, ZSTD(1)),
    Max Float64 CODEC(Gorilla, ZSTD(1)),
    First Float64 CODEC(Gorilla, ZSTD(1)),
    FirstTimestampMs Int64 CODEC(DoubleDelta, ZSTD(1)),
    Last Float64 CODEC(Gorilla, ZSTD(1)),
    LastTimestampMs Int64 CODEC(DoubleDelta, ZSTD(1)),
    Increase Float64 CODEC(Gorilla, ZSTD(1))
) ENGINE = ReplacingMergeTree
PARTITION BY (ResolutionMs, toYYYYMM(toDateTime(intDiv(WindowStartMs, 1000))))
ORDER BY (Tenant, ResolutionMs, MetricName, Fingerprint, WindowStartMs)
TTL toDateTime(intDiv(WindowStartMs, 1000)) + toIntervalDay({rollups_ttl_days})
SETTINGS non_replicated_deduplication_window = 1000;
