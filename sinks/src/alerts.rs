//! `obs.alerts` → `obs_alerts`: the rule processor's alert transitions.

use std::borrow::Cow;

use clickhouse::Row;
use obs_schemas::Topic;
use obs_schemas::records::Alert;
use serde::{Deserialize, Serialize};

use crate::table::{TableSink, TimeColumn, pairs};

/// The `obs_alerts` sink.
#[derive(Default)]
pub struct ObsAlerts;

/// One alert transition.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlertRow {
    /// Tenant.
    pub tenant: String,
    /// `file:group` of the rule.
    pub group_name: String,
    /// Alert name.
    pub rule: String,
    /// `pending`, `firing`, `resolved` or `inactive` (pending that ended before firing).
    pub state: String,
    /// Fingerprint of tenant, rule and labels (the alert instance).
    pub fingerprint: i64,
    /// The alert's labels.
    pub labels: Vec<(String, String)>,
    /// Its annotations.
    pub annotations: Vec<(String, String)>,
    /// The expression's value.
    pub value: f64,
    /// When it became pending, ms.
    pub active_at_ms: i64,
    /// The evaluation that changed it, ms.
    pub evaluated_at_ms: i64,
}

impl TableSink for ObsAlerts {
    type Message = Alert;
    type Row = AlertRow;
    const TOPIC: Topic = Topic::Alerts;
    const TABLE: &'static str = "obs_alerts";
    const TIME_COLUMN: Option<TimeColumn> = Some(TimeColumn::Millis("EvaluatedAtMs"));

    fn rows(&mut self, a: Cow<'_, Alert>, out: &mut Vec<AlertRow>) {
        let a = a.into_owned();
        let fingerprint = obs_schemas::series_fingerprint(
            &a.tenant,
            &a.rule,
            a.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        out.push(AlertRow {
            tenant: a.tenant,
            group_name: a.group,
            rule: a.rule,
            state: a.state,
            fingerprint,
            labels: pairs(a.labels),
            annotations: pairs(a.annotations),
            value: a.value,
            active_at_ms: a.active_at_ms,
            evaluated_at_ms: a.evaluated_at_ms,
        });
    }

    fn row_time_ns(row: &AlertRow) -> Option<i64> {
        Some(row.evaluated_at_ms.saturating_mul(1_000_000))
    }
}
