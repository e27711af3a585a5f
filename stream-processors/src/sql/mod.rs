//! SQL over topics with DataFusion: a topic's records as an Arrow table ([`tables`]),
//! ad-hoc queries over a time range of a topic before the sinks store it ([`adhoc`],
//! `obs sql --topic`), the event-time windows of streaming queries ([`windows`]: window
//! assignment, due windows, late records, evaluation), a configured query planned
//! ([`query`]), and the SQL processor of `obs processor` ([`run`]).

pub mod adhoc;
pub mod query;
pub mod run;
pub mod tables;
pub mod windows;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;

/// Plans `sql` over `records` as the table `records`, read-only: DDL, DML (`COPY … TO`
/// writes files) and `SET` are refused. Errors carry DataFusion's reason (an unknown column
/// lists the valid ones).
pub async fn plan(records: RecordBatch, sql: &str) -> anyhow::Result<DataFrame> {
    let ctx = SessionContext::new();
    ctx.register_batch("records", records)?;
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    ctx.sql_with_options(sql, read_only)
        .await
        .map_err(|e| anyhow::anyhow!("the statement {sql:?} failed: {e}"))
}
