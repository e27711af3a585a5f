-- The trace-id index carries the tenant: a lookup by id is tenant-scoped in the index too,
-- and ad-hoc SQL (which filters every table with a Tenant column) cannot list another
-- tenant's trace ids through it. Rows indexed before this migration have Tenant ''.
ALTER TABLE otel_traces_trace_id_ts ADD COLUMN IF NOT EXISTS Tenant LowCardinality(String) CODEC(ZSTD(1));
DROP VIEW IF EXISTS otel_traces_trace_id_ts_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS otel_traces_trace_id_ts_mv
TO otel_traces_trace_id_ts
AS SELECT
    Tenant,
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM otel_traces
WHERE TraceId != ''
GROUP BY Tenant, TraceId;
