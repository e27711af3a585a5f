-- Exemplars: the traces behind metric values (remote write, OTLP and scraped OpenMetrics
-- carry them on obs.metrics). One row per exemplar, by series fingerprint (labels in
-- metrics_series); TraceId and SpanId are taken out of the exemplar's labels (`trace_id`,
-- `span_id`, also `traceID`/`trace.id` spellings) for the metric → trace → logs hop.
CREATE TABLE IF NOT EXISTS metrics_exemplars (
    Tenant LowCardinality(String),
    MetricName LowCardinality(String),
    Fingerprint Int64 CODEC(ZSTD(1)),
    TimestampMs Int64 CODEC(DoubleDelta, ZSTD(1)),
    Value Float64 CODEC(Gorilla, ZSTD(1)),
    Labels Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(toDateTime(intDiv(TimestampMs, 1000)))
ORDER BY (Tenant, MetricName, Fingerprint, TimestampMs)
TTL toDateTime(intDiv(TimestampMs, 1000)) + toIntervalDay({metrics_ttl_days})
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;
