-- Which offsets a sink batch covers, written before the batch's insert. After a crash between
-- insert and offset commit, the sink re-forms exactly the same batch from this row, so the
-- retried insert carries the same insert_deduplication_token and is stored once.
CREATE TABLE IF NOT EXISTS obs_sink_intents (
    ConsumerGroup LowCardinality(String),
    Topic LowCardinality(String),
    Partition Int32,
    FirstOffset Int64,
    LastOffset Int64,
    CreatedAt DateTime64(3) DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (ConsumerGroup, Topic, Partition, FirstOffset)
TTL toDateTime(CreatedAt) + toIntervalDay(30);
