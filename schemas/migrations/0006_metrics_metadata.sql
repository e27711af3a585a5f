-- Metric family metadata (type, help, unit) for /api/v1/metadata; the row inserted last per
-- family wins.
CREATE TABLE IF NOT EXISTS metrics_metadata (
    Tenant LowCardinality(String),
    MetricFamily String,
    Kind LowCardinality(String),
    Help String CODEC(ZSTD(1)),
    Unit LowCardinality(String)
) ENGINE = ReplacingMergeTree
ORDER BY (Tenant, MetricFamily)
SETTINGS non_replicated_deduplication_window = 1000;
