-- Where the engine's CPU went during a benchmark with OBS_BENCH_ENGINE_LOG=1: statements by
-- shape, then part events (merges) by table. CPU is user + system time of each statement.
SELECT any(left(replaceRegexpAll(query, '\\s+', ' '), 100)) AS statement, count() AS n,
  round(sum(ProfileEvents['UserTimeMicroseconds'] + ProfileEvents['SystemTimeMicroseconds']) / 1e6, 2) AS cpu_s,
  round(sum(query_duration_ms) / 1e3, 2) AS wall_s, sum(written_rows) AS written_rows
FROM system.query_log WHERE type = 'QueryFinish' AND query NOT LIKE '%system.query_log%'
GROUP BY normalizedQueryHash(query) ORDER BY cpu_s DESC LIMIT 20
FORMAT PrettyCompactMonoBlock;
SELECT event_type, table, count() AS n, sum(rows) AS rows,
  round(sum(ProfileEvents['UserTimeMicroseconds'] + ProfileEvents['SystemTimeMicroseconds']) / 1e6, 2) AS cpu_s,
  round(sum(duration_ms) / 1e3, 2) AS wall_s
FROM system.part_log GROUP BY event_type, table ORDER BY cpu_s DESC LIMIT 20
FORMAT PrettyCompactMonoBlock;
