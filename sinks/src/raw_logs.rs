//! `obs.logs.raw` → `otel_logs`: JSON lines that log agents publish straight to Kafka
//! (Fluent Bit's and Vector's Kafka outputs with a JSON codec), normalised by
//! `obs_runtime::json_lines` (which names the fields read). When log pipelines are
//! configured, the log processor reads `obs.logs.raw` instead and this sink does not run.
//!
//! A line that is not a JSON object sends the whole message to `obs.dlq`, naming the line.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use obs_runtime::json_lines::parse;
use obs_schemas::Topic;
use obs_schemas::records::LogBatch;

use crate::logs::{OtelLogRow, OtelLogs};
use crate::table::{TableSink, TimeColumn};

/// The raw JSON-lines sink.
#[derive(Default)]
pub struct RawLogs;

impl TableSink for RawLogs {
    type Message = LogBatch;
    type Row = OtelLogRow;
    const TOPIC: Topic = Topic::LogsRaw;
    const TABLE: &'static str = "otel_logs";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Nanos("Timestamp"));
    const NAME: &'static str = "otel_logs_raw";

    fn decode_raw(payload: &[u8]) -> Option<Result<LogBatch, String>> {
        Some(parse(payload, now_ns()))
    }

    fn rows(&mut self, message: Cow<'_, LogBatch>, out: &mut Vec<OtelLogRow>) {
        OtelLogs.rows(message, out);
    }

    fn row_time_ns(row: &OtelLogRow) -> Option<i64> {
        Some(row.timestamp)
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
