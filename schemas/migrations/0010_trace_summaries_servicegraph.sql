-- What the trace processor derives. Trace summaries (obs.traces): one row per decided trace,
-- replacing by trace id, so a summary sent again after a restart is stored once; what trace
-- search by service, operation and duration reads. Service-graph edge windows
-- (obs.servicegraph): requests between two services per event-time window and input
-- partition, replacing by that key (a restarted processor writes the same window again).
CREATE TABLE IF NOT EXISTS obs_trace_summaries (
    Tenant LowCardinality(String),
    TraceId String,
    RootService LowCardinality(String),
    RootName LowCardinality(String),
    Start DateTime64(9) CODEC(Delta, ZSTD(1)),
    End DateTime64(9) CODEC(Delta, ZSTD(1)),
    DurationNs Int64,
    SpanCount Int32,
    ErrorCount Int32,
    Services Array(LowCardinality(String)),
    Kept Bool,
    DecidedAtMs Int64
) ENGINE = ReplacingMergeTree(DecidedAtMs)
PARTITION BY toDate(Start)
ORDER BY (Tenant, toStartOfHour(Start), TraceId)
TTL toDateTime(Start) + toIntervalDay({traces_ttl_days});

CREATE TABLE IF NOT EXISTS obs_servicegraph_edges (
    Tenant LowCardinality(String),
    Client LowCardinality(String),
    Server LowCardinality(String),
    ConnectionType LowCardinality(String),
    Partition Int32,
    WindowStartMs Int64,
    WindowEndMs Int64,
    RequestCount Int64,
    ErrorCount Int64,
    ServerLatencySumNs Int64,
    ClientLatencySumNs Int64
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(toDateTime(intDiv(WindowStartMs, 1000)))
ORDER BY (Tenant, WindowStartMs, Client, Server, ConnectionType, Partition)
TTL toDateTime(intDiv(WindowStartMs, 1000)) + toIntervalDay({traces_ttl_days});
