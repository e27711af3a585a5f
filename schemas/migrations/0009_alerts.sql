-- Alert state changes from the rule processor (obs.alerts): one row per alert instance and
-- transition. A replacing table keyed by the transition, so a transition the processor sent
-- again after a restart is stored once.
CREATE TABLE IF NOT EXISTS obs_alerts (
    Tenant LowCardinality(String),
    GroupName LowCardinality(String),
    Rule LowCardinality(String),
    State LowCardinality(String),
    Fingerprint Int64,
    Labels Map(LowCardinality(String), String),
    Annotations Map(LowCardinality(String), String),
    Value Float64,
    ActiveAtMs Int64,
    EvaluatedAtMs Int64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(EvaluatedAtMs, 1000)))
ORDER BY (Tenant, Rule, Fingerprint, EvaluatedAtMs, State)
TTL toDateTime(intDiv(EvaluatedAtMs, 1000)) + toIntervalDay({events_ttl_days});
