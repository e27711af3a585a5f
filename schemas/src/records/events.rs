use serde::{Deserialize, Serialize};

use super::Attrs;

/// Value of `obs.events`: events from one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EventBatch {
    /// The events.
    pub events: Vec<Event>,
}

/// A discrete event: a deployment, an incident, a Kubernetes event, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Event {
    /// Sender's id, or a content hash.
    pub id: String,
    /// ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// `deploy`, `k8s`, `incident`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Who sent it.
    pub source: String,
    /// `info`, `warning`, `critical`, ...
    pub severity: String,
    /// One-line summary.
    pub title: String,
    /// Details.
    pub body: String,
    /// Free-form attributes.
    pub attrs: Attrs,
    /// Tenant.
    pub tenant: String,
}
