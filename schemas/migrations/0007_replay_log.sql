-- What `obs replay` has stored: per target table, the offsets it read and the record-time
-- range it kept. A later replay skips records inside a logged (offsets × time) area, so
-- replaying a range twice, or an overlapping range, stores no record twice.
CREATE TABLE IF NOT EXISTS obs_replay_log (
    Target String,
    Topic LowCardinality(String),
    Partition Int32,
    FirstOffset Int64,
    LastOffset Int64,
    FromNs Int64,
    ToNs Int64,
    DoneAt DateTime64(3) DEFAULT now64(3)
) ENGINE = MergeTree
ORDER BY (Target, Topic, Partition, FirstOffset);
