//! `obs.sql.<query>` → `sql_<query>`: the rows of the SQL processor's windows, for every
//! query of `[sql] queries_file`.
//!
//! The table is made by `obs migrate` (from the planned query) or, if missing, here from
//! the output's Avro schema, taken from the registry by the id in the first message
//! (`CREATE TABLE IF NOT EXISTS`, a `ReplacingMergeTree` ordered by window and row; see
//! `obs_schemas::sql_output`). A table that exists with other columns
//! (the query's output changed) is an error the sink repeats, storing nothing and
//! committing nothing, until the table is dropped or the query renamed. Rows are inserted
//! as `JSONEachRow`, then the offsets committed; a window written twice (a restart of
//! the processor or of this sink) replaces itself, so reads use `FINAL`. Messages that
//! cannot be decoded go to `obs.dlq`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use obs_runtime::kafka::{self, SharedProducer};
use obs_runtime::sql_queries;
use obs_runtime::{Config, clickhouse as ch, ops, shutdown};
use obs_schemas::records::DeadLetter;
use obs_schemas::sql_output;
use obs_schemas::wire::{Codec, WireError};
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::driver::{retry, send_dead_letter};

/// Runs a sink for every configured query until a shutdown is asked for or one fails.
pub async fn run(cfg: Config, _ready: ops::Readiness) -> anyhow::Result<()> {
    let defs = sql_queries::load(&cfg.sql.queries_file)?;
    let mut tasks = tokio::task::JoinSet::new();
    for def in defs {
        tasks.spawn(run_one(cfg.clone(), def.name));
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a SQL output sink task")??;
    }
    Ok(())
}

struct Sink {
    query: String,
    table: String,
    codec: Codec,
    dlq: SharedProducer,
    client: clickhouse::Client,
    ttl_days: u32,
    cluster: Option<obs_schemas::cluster::Cluster>,
    /// Schema ids whose table was made and checked.
    checked: HashSet<u32>,
}

/// Stores query `query`'s outputs until a shutdown is asked for.
async fn run_one(cfg: Config, query: String) -> anyhow::Result<()> {
    let topic = sql_output::topic_name(&query);
    kafka::ensure_named_topics(&cfg.kafka, &[(topic.clone(), 1)]).await?;
    let consumer = Arc::new(kafka::consumer(
        &cfg.kafka,
        &format!("{}-sql-{query}", cfg.sink.group_prefix),
        &topic,
    )?);
    let owned = kafka::assign(&consumer, &topic, cfg.sink.instance, cfg.sink.instances)?;
    if owned.is_empty() {
        return Ok(());
    }
    tracing::info!(
        topic,
        table = sql_output::table_name(&query),
        "SQL output sink started"
    );
    let mut sink = Sink {
        table: sql_output::table_name(&query),
        query,
        codec: obs_runtime::registry::codec(&cfg),
        dlq: SharedProducer::for_process(&cfg.kafka)?,
        client: ch::client(&cfg.clickhouse),
        ttl_days: cfg.sql.ttl_days,
        cluster: cfg.clickhouse.cluster_layout()?,
        checked: HashSet::new(),
    };
    let max_wait = Duration::from_millis(cfg.sink.batch_max_wait_ms);
    while !shutdown::requested() {
        let first = tokio::select! {
            m = consumer.recv() => m,
            _ = shutdown::wait() => break,
        };
        let mut batch = Vec::new();
        match first {
            Ok(m) => batch.push(m.detach()),
            Err(e) => {
                tracing::warn!(topic, error = %e, "reading");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        let started = Instant::now();
        while batch.len() < cfg.sink.batch_max_rows.max(1) {
            let left = max_wait.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        sink.store(&consumer, &topic, batch).await;
    }
    Ok(())
}

impl Sink {
    /// Inserts the rows of `batch` (retrying until ClickHouse accepts), then commits it.
    async fn store(
        &mut self,
        consumer: &Arc<StreamConsumer>,
        topic: &str,
        batch: Vec<OwnedMessage>,
    ) {
        let mut lines = Vec::new();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for m in &batch {
            next.insert(m.partition(), m.offset() + 1);
            let Some(payload) = m.payload() else {
                continue;
            };
            let decoded = retry("decoding (the registry is unavailable)", || async {
                match self.codec.decode_value(payload).await {
                    Err(WireError::Registry(e)) => Err(e),
                    other => Ok(other),
                }
            })
            .await;
            let rows = decoded
                .map_err(|e| e.to_string())
                .and_then(|(value, schema)| {
                    let rows = sql_output::json_rows(&value).map_err(|e| format!("{e:#}"))?;
                    Ok((schema, rows))
                });
            match rows {
                Ok((schema, rows)) => {
                    let id = obs_schemas::wire::schema_id(payload).unwrap_or_default();
                    // The table is checked once per writer schema, not per message.
                    if !self.checked.contains(&id) {
                        let text = serde_json::to_string(&*schema).expect("schemas serialise");
                        let table = self.table.clone();
                        retry(&format!("making table {table}"), || self.make_table(&text)).await;
                        self.checked.insert(id);
                    }
                    for row in rows {
                        serde_json::to_writer(&mut lines, &row).expect("JSON rows serialise");
                        lines.push(b'\n');
                    }
                }
                Err(error) => {
                    let letter = DeadLetter {
                        topic: topic.to_string(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: Some(payload.to_vec()),
                        stage: format!("sink:{}", self.table),
                        error,
                        failed_at_ms: SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64),
                    };
                    tracing::warn!(
                        topic,
                        offset = m.offset(),
                        error = letter.error,
                        "sent to the DLQ"
                    );
                    send_dead_letter(&self.codec, &self.dlq, &letter).await;
                    metrics::counter!("obs_sink_dlq_total", "table" => self.table.clone())
                        .increment(1);
                }
            }
        }
        if !lines.is_empty() {
            let body = bytes::Bytes::from(lines);
            let sql = format!("INSERT INTO `{}` FORMAT JSONEachRow", self.table);
            let rows = body.iter().filter(|&&b| b == b'\n').count();
            retry(&format!("inserting into {}", self.table), || async {
                let mut insert = self.client.insert_formatted_with(sql.clone());
                insert.send(body.clone()).await?;
                insert.end().await
            })
            .await;
            metrics::counter!("obs_sink_rows_total", "table" => self.table.clone())
                .increment(rows as u64);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in next {
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(offset));
        }
        if let Err(e) = kafka::commit_sync(consumer, &tpl).await {
            tracing::warn!(topic, error = %e, "committing offsets (the rows are stored; a restart stores them again, replacing themselves)");
        }
    }

    /// Creates the table for the output schema `schema` (Avro JSON) if missing and checks
    /// that an existing one has its columns.
    async fn make_table(&self, schema: &str) -> Result<(), String> {
        let columns = sql_output::columns_from_avro(schema).map_err(|e| format!("{e:#}"))?;
        let cluster = self.cluster.as_ref();
        sql_output::ensure_table(&self.client, &self.query, &columns, self.ttl_days, cluster)
            .await
            .map_err(|e| format!("{e:#}"))
    }
}
