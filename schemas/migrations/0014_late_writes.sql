-- Sink batches that stored records older than a results cache may hold answers for
-- (obs_schemas::late_writes): per tenant and table, the earliest record time of the batch.
-- Written after the batch's insert and before its offset commit; the query API reads the
-- rows newer than its last look and drops the cached answers from FromMs on.
CREATE TABLE IF NOT EXISTS obs_late_writes (
    Tenant LowCardinality(String),
    TableName LowCardinality(String),
    FromMs Int64,
    WrittenAt DateTime64(3) DEFAULT now64(3)
) ENGINE = MergeTree
ORDER BY (Tenant, TableName, WrittenAt)
TTL toDateTime(WrittenAt) + toIntervalDay(1);
