//! The SQL processor on Kafka (part of `obs processor`): each query of
//! `[sql] queries_file` reads every partition of its topic, puts each record in its
//! event-time windows, and once event time has passed a window's end (the watermark of
//! [`crate::window::Watermarks`]: the slowest active partition's newest record minus the
//! allowed lateness, the wall clock when every partition is quiet) runs its statement over
//! the window's records and publishes the rows to `obs.sql.<query>` (Avro, schema
//! registered from the output's columns). A record whose every window was already run is
//! late: counted in `obs_sql_late_records_total`, not used. A window the statement fails on
//! (a division by zero, say) has no rows; it goes to `obs.dlq` naming the window.
//!
//! Exactly once: when windows are run, their rows and the new window frontier are
//! checkpointed on `obs.processor.state` *before* they are published (an outbox). A
//! restart therefore never runs a published window again (a record read again for it is
//! ignored), publishes the outbox again (the same rows, which the replacing table keeps
//! once), and reads its input again from the first message an open window still needs,
//! which the checkpoint names per partition. Instances share the queries (query `i` runs
//! on instance `i % instances`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use obs_runtime::publish::{Outgoing, Publisher};
use obs_runtime::sql_queries::{self, QueryDef};
use obs_runtime::{Config, kafka, ops};
use obs_schemas::records::DeadLetter;
use obs_schemas::sql_output::{self, WindowRows};
use obs_schemas::wire::{Codec, DynamicWriter};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::query::Query;
use super::tables::Rows;
use super::windows::Windows;
use crate::processor::{self, Checkpointed, Wiring};
use crate::state;
use crate::window::Watermarks;

/// Format version of [`Checkpoint`]; another version is not used.
const VERSION: u32 = 1;

/// Most rows in one output message.
const ROWS_PER_MESSAGE: usize = 5_000;

/// What a restart of one query needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    /// [`Query::fingerprint`]: a checkpoint of another version of the query is not used.
    fingerprint: String,
    /// Windows ending at or before this were run (ms).
    done_until_ms: i64,
    /// Per input partition, where reading resumes: the first message an open window needs.
    resume: BTreeMap<i32, i64>,
    /// Per input partition, the offset after the last message read: below it, input is
    /// read again (its late records were counted already).
    read_until: BTreeMap<i32, i64>,
    /// Windows run but perhaps not published yet.
    outbox: Vec<WindowRows>,
}

/// Runs this instance's queries until a shutdown is asked for or one fails.
pub async fn run(cfg: Config, ready: ops::Readiness) -> anyhow::Result<()> {
    let defs = sql_queries::load(&cfg.sql.queries_file)?;
    let pc = &cfg.processor;
    let mine: Vec<QueryDef> = defs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 % pc.instances.max(1) == pc.instance)
        .map(|(_, d)| d)
        .collect();
    if mine.is_empty() {
        tracing::info!("[sql] no queries for this instance: the SQL processor idles");
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for def in mine {
        tasks.spawn(run_query(cfg.clone(), ready.clone(), def));
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a SQL query task")??;
    }
    Ok(())
}

/// Runs one query until a shutdown is asked for.
async fn run_query(cfg: Config, ready: ops::Readiness, def: QueryDef) -> anyhow::Result<()> {
    let component = format!("sql-{}", def.name);
    ready.report(
        &component,
        Some(format!("SQL query {} is starting", def.name)),
    );
    let q = Query::plan(def).await?;
    let Wiring {
        counts,
        codec,
        publisher,
        consumer,
        ..
    } = processor::connect(&cfg, &component, q.input).await?;
    let topic = sql_output::topic_name(q.name());
    kafka::ensure_named_topics(&cfg.kafka, &[(topic.clone(), 1)]).await?;
    let writer = codec
        .register(&topic, &sql_output::avro_schema(q.name(), &q.columns))
        .await
        .with_context(|| format!("registering the output schema of query {}", q.name()))?;
    let partitions: Vec<i32> = (0..counts[&q.input]).collect();
    let cp = restore(
        &cfg,
        &component,
        &q,
        counts[&obs_schemas::Topic::ProcessorState],
    )
    .await?;
    let resume = match &cp {
        Some(cp) => cp.resume.clone(),
        None => processor::committed_or_earliest(&cfg, &consumer, q.input, &partitions).await?,
    };
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let at = resume
            .get(&p)
            .map_or(Offset::Beginning, |&o| Offset::Offset(o));
        tpl.add_partition_offset(q.input.name(), p, at)?;
    }
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning the partitions of {}", q.input))?;
    let empty = Rows::empty(q.input)?;
    let done_until = cp.as_ref().map_or(i64::MIN, |c| c.done_until_ms);
    let mut s = SqlQuery {
        windows: Windows::new(q.spec, empty.clone(), done_until),
        marks: Watermarks::new(
            &partitions,
            q.lateness_ms(),
            Duration::from_millis(cfg.sql.idle_partition_ms),
            Instant::now(),
        ),
        empty,
        codec,
        writer,
        publisher,
        topic,
        component: component.clone(),
        state_partitions: counts[&obs_schemas::Topic::ProcessorState],
        state_part_bytes: cfg.processor.state_part_bytes,
        read_before: cp
            .as_ref()
            .map(|c| c.read_until.clone())
            .unwrap_or_default(),
        read_until: cp
            .as_ref()
            .map(|c| c.read_until.clone())
            .unwrap_or_default(),
        resume,
        outbox: cp.map(|c| c.outbox).unwrap_or_default(),
        checkpoint_every: Duration::from_millis(cfg.sql.checkpoint_interval_ms),
        last_checkpoint: Instant::now(),
        dirty: false,
        q,
    };
    // Windows checkpointed before a crash may not have been published.
    if !s.publish().await {
        return Ok(());
    }
    tracing::info!(query = s.q.name(), input = %s.q.input, output = s.topic, done_until_ms = done_until, "SQL query started");
    ready.report(&component, None);
    let input = s.q.input;
    processor::drive(&mut s, &mut processor::Input::assigned(consumer, input)).await;
    tracing::info!(query = s.q.name(), "SQL query stopped");
    Ok(())
}

/// The query's latest checkpoint, if it is of this version of the query.
async fn restore(
    cfg: &Config,
    component: &str,
    q: &Query,
    state_partitions: i32,
) -> anyhow::Result<Option<Checkpoint>> {
    let brokers = cfg.kafka.clone();
    let name = component.to_string();
    let mut cps = tokio::task::spawn_blocking(move || {
        state::load_latest(
            &brokers,
            &name,
            &[0],
            state_partitions,
            |c: &Checkpoint| c.version,
            VERSION,
        )
    })
    .await
    .context("restore task")??;
    Ok(match cps.remove(&0) {
        Some(cp) if cp.fingerprint == q.fingerprint() => Some(cp),
        Some(_) => {
            tracing::warn!(
                query = q.name(),
                "the query changed since its checkpoint: starting it afresh from the committed offsets"
            );
            None
        }
        None => None,
    })
}

struct SqlQuery {
    q: Query,
    windows: Windows,
    marks: Watermarks,
    empty: Rows,
    codec: Arc<Codec>,
    writer: DynamicWriter,
    publisher: Publisher,
    topic: String,
    component: String,
    state_partitions: i32,
    /// `[processor] state_part_bytes`.
    state_part_bytes: usize,
    /// The checkpoint's `read_until`: messages below it are read again.
    read_before: BTreeMap<i32, i64>,
    read_until: BTreeMap<i32, i64>,
    resume: BTreeMap<i32, i64>,
    outbox: Vec<WindowRows>,
    checkpoint_every: Duration,
    last_checkpoint: Instant,
    dirty: bool,
}

impl Checkpointed for SqlQuery {
    async fn handle<M: Message + Sync>(&mut self, m: &M) {
        let (p, offset) = (m.partition(), m.offset());
        let query = self.q.name().to_string();
        let mut rows = self.empty.clone();
        if let Some(bytes) = m.payload()
            && let Err(e) = rows
                .add_message(&self.codec, bytes, (i64::MIN, i64::MAX))
                .await
        {
            metrics::counter!("obs_sql_undecodable_messages_total", "query" => query.clone())
                .increment(1);
            tracing::warn!(query, partition = p, offset, error = %e, "undecodable message skipped (the topic's sink sends it to obs.dlq)");
        }
        let newest = rows.times_ms().into_iter().max();
        self.marks.observe(p, offset, newest, Instant::now());
        let late = self.windows.add(&rows);
        metrics::counter!("obs_sql_records_total", "query" => query.clone())
            .increment(rows.len() as u64);
        let read_again = self.read_before.get(&p).is_some_and(|&r| offset < r);
        if !read_again {
            metrics::counter!("obs_sql_late_records_total", "query" => query).increment(late);
        }
        let next = self.read_until.entry(p).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        self.dirty = true;
    }

    async fn step(&mut self, consumer: &StreamConsumer) -> bool {
        let wall = processor::wall_ms();
        if let Some(watermark) = self.marks.watermark(Instant::now(), wall) {
            let due = self.windows.take_due(watermark);
            if !due.is_empty() {
                let mut letters = Vec::new();
                for (start, end, records) in due {
                    match self.q.evaluate(start, end, &records).await {
                        Ok(w) => self.outbox.push(w),
                        Err(e) => letters.push(self.failed_window(start, end, records.len(), &e)),
                    }
                }
                if !letters.is_empty()
                    && self
                        .publisher
                        .deliver(obs_schemas::Topic::Dlq, letters)
                        .await
                        .is_none()
                {
                    return false;
                }
                // Decided windows are checkpointed before anyone can see them.
                if !(self.checkpoint(consumer).await && self.publish().await) {
                    return false;
                }
            }
        }
        if self.dirty
            && self.last_checkpoint.elapsed() >= self.checkpoint_every
            && !self.checkpoint(consumer).await
        {
            return false;
        }
        true
    }

    /// Publishes the outbox until acknowledged; false when a shutdown interrupted it.
    async fn publish(&mut self) -> bool {
        let mut messages = Vec::new();
        for w in &self.outbox {
            for first in (0..w.rows.len()).step_by(ROWS_PER_MESSAGE) {
                let end = (first + ROWS_PER_MESSAGE).min(w.rows.len());
                let value = sql_output::avro_message(&self.q.columns, w, first, end);
                match self.writer.encode(&value) {
                    Ok(bytes) => messages.push((0, self.q.name().as_bytes().to_vec(), bytes)),
                    Err(e) => {
                        tracing::error!(query = self.q.name(), error = %e, "a window's rows do not fit the output schema")
                    }
                }
            }
        }
        if !messages.is_empty() && !self.publisher.deliver_encoded(&self.topic, &messages).await {
            return false;
        }
        let query = self.q.name().to_string();
        let rows: usize = self.outbox.iter().map(|w| w.rows.len()).sum();
        metrics::counter!("obs_sql_windows_total", "query" => query.clone())
            .increment(self.outbox.len() as u64);
        metrics::counter!("obs_sql_rows_total", "query" => query).increment(rows as u64);
        if !self.outbox.is_empty() {
            self.outbox.clear();
            self.dirty = true;
        }
        true
    }

    async fn checkpoint_all(&mut self, consumer: &StreamConsumer) {
        self.checkpoint(consumer).await;
    }
}

impl SqlQuery {
    /// The dead letter of a window the statement failed on (it has no rows): which window,
    /// how many records, why, and how to look at them.
    fn failed_window(
        &self,
        start: i64,
        end: i64,
        records: usize,
        e: &anyhow::Error,
    ) -> Outgoing<DeadLetter> {
        let query = self.q.name();
        metrics::counter!("obs_sql_failed_windows_total", "query" => query.to_string())
            .increment(1);
        let error = format!(
            "query {query}, window [{start}, {end}) ms of {records} records: {e:#} \
             (the records: obs sql --topic {} --from {} --to {} \"SELECT * FROM records\")",
            self.q.input,
            start.div_euclid(1000),
            (end + 999).div_euclid(1000)
        );
        tracing::error!(
            query,
            start_ms = start,
            end_ms = end,
            error,
            "the statement failed on a window: it has no rows; sent to obs.dlq"
        );
        Outgoing {
            partition: 0,
            value: DeadLetter {
                topic: self.q.input.name().to_string(),
                partition: -1,
                offset: -1,
                key: None,
                value: None,
                stage: format!("sql:{query}"),
                error,
                failed_at_ms: processor::wall_ms(),
            },
            headers: Vec::new(),
        }
    }

    /// Writes the checkpoint (frontier, resume offsets, outbox), then commits the resume
    /// offsets to the group (for lag); false when a shutdown interrupted.
    async fn checkpoint(&mut self, consumer: &StreamConsumer) -> bool {
        let needed = self.windows.needed_from_ms().unwrap_or(i64::MAX);
        for (p, offset) in self.marks.commit_offsets(needed) {
            self.resume.insert(p, offset);
        }
        let cp = Checkpoint {
            version: VERSION,
            fingerprint: self.q.fingerprint(),
            done_until_ms: self.windows.done_until_ms(),
            resume: self.resume.clone(),
            read_until: self.read_until.clone(),
            outbox: self.outbox.clone(),
        };
        let message = (
            0 % self.state_partitions.max(1),
            state::key(&self.component, 0),
            state::to_bytes(&cp),
        );
        if !state::write(&self.publisher, &[message], self.state_part_bytes).await {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &offset) in &self.resume {
            let _ = tpl.add_partition_offset(self.q.input.name(), p, Offset::Offset(offset));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "committing offsets (informational)");
        }
        self.last_checkpoint = Instant::now();
        self.dirty = false;
        true
    }
}
