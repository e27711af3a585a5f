-- Exceptions, one row per occurrence, from span events named "exception" (obs.spans) and
-- from error logs carrying exception.* attributes (obs.logs), with the fingerprint that
-- groups them (type, normalised message, innermost frames). Replacing by occurrence, so a
-- replay stores each once; /api/v1/errors groups them by Fingerprint.
CREATE TABLE IF NOT EXISTS obs_error_events (
    Tenant LowCardinality(String),
    Fingerprint String,
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    Source LowCardinality(String),
    ServiceName LowCardinality(String),
    Release LowCardinality(String),
    ExceptionType LowCardinality(String),
    ExceptionMessage String CODEC(ZSTD(1)),
    NormalizedMessage String CODEC(ZSTD(1)),
    TopFrames Array(String),
    Stacktrace String CODEC(ZSTD(3)),
    TraceId String,
    SpanId String,
    Occurrence String
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (Tenant, Fingerprint, Timestamp, Occurrence)
TTL toDateTime(Timestamp) + toIntervalDay({events_ttl_days});
