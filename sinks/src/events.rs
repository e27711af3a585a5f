//! `obs.events` → `obs_events`.

use std::borrow::Cow;

use clickhouse::Row;
use obs_schemas::Topic;
use obs_schemas::records::EventBatch;
use serde::{Deserialize, Serialize};

use crate::table::{TableSink, TimeColumn, pairs};

/// The `obs_events` sink.
#[derive(Default)]
pub struct ObsEvents;

/// One event.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventRow {
    /// DateTime64(9) as ns.
    pub timestamp: i64,
    /// Sender's id or content hash.
    pub event_id: String,
    /// Tenant.
    pub tenant: String,
    /// deploy, k8s, incident, ...
    #[serde(rename = "Type")]
    pub kind: String,
    /// Who sent it.
    pub source: String,
    /// info, warning, critical, ...
    pub severity: String,
    /// One-line summary.
    pub title: String,
    /// Details.
    pub body: String,
    /// Free-form attributes.
    pub attributes: Vec<(String, String)>,
}

impl TableSink for ObsEvents {
    type Message = EventBatch;
    type Row = EventRow;
    const TOPIC: Topic = Topic::Events;
    const TABLE: &'static str = "obs_events";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Nanos("Timestamp"));

    fn rows(&mut self, message: Cow<'_, EventBatch>, out: &mut Vec<EventRow>) {
        let message = message.into_owned();
        out.extend(message.events.into_iter().map(|e| EventRow {
            timestamp: e.timestamp_ns,
            event_id: e.id,
            tenant: e.tenant,
            kind: e.kind,
            source: e.source,
            severity: e.severity,
            title: e.title,
            body: e.body,
            attributes: pairs(e.attrs),
        }));
    }

    fn row_time_ns(row: &EventRow) -> Option<i64> {
        Some(row.timestamp)
    }
}
