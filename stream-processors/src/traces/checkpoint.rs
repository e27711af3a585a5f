//! Checkpoints of a partition's trace state on `obs.processor.state`: written after every
//! output before them was acknowledged, read back (the latest per partition) at start.
//!
//! A checkpoint holds what cannot be read again from the input: the counters, the
//! decisions remembered, the partition's time, and where each open trace began (its spans
//! are read again from `obs.spans`). Stored as [`crate::state`] stores every checkpoint.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::state;

use super::assembly::{OpenRef, TraceKey};
use super::registry;
use super::servicegraph::EdgeTotals;

/// Format version; a checkpoint of another version is not used (the partition starts over
/// from the group's committed offset).
pub const VERSION: u32 = 1;

/// The state of one `obs.spans` partition after every message below `next_offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`VERSION`].
    pub version: u32,
    /// The `obs.spans` partition.
    pub partition: i32,
    /// Every input message below this offset is reflected.
    pub next_offset: i64,
    /// The partition's event time (ms).
    pub time_ms: Option<i64>,
    /// The partition's time at its last input message (idle time goes on from there).
    #[serde(default)]
    pub input_time_ms: Option<i64>,
    /// The next event-time boundary at which metrics and edges are written (ms).
    pub next_flush_ms: Option<i64>,
    /// Where the current edge window began (ms).
    pub window_start_ms: Option<i64>,
    /// Open traces and where they began.
    pub open: Vec<OpenRef>,
    /// Recent decisions, oldest first.
    pub decisions: Vec<(TraceKey, bool)>,
    /// Span-metric and service-graph counters.
    pub registry: registry::Snapshot,
    /// Edges paired in the current window.
    pub edges: Vec<EdgeTotals>,
    /// Rate-limiting policies' budget state.
    pub sampling: super::sampling::State,
    /// Offset of `obs.spans.sampled` (same partition) after the outputs this checkpoint
    /// reflects.
    pub sampled_end: i64,
    /// Kept spans published after an earlier checkpoint and before a crash, not to publish
    /// again: `(trace id, span id)`.
    pub skip_sampled: Vec<(String, String)>,
}

impl Checkpoint {
    /// The checkpoint as stored ([`state::to_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        state::to_bytes(self)
    }

    /// A stored checkpoint ([`state::from_bytes`]).
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Checkpoint> {
        state::from_bytes(bytes)
    }

    /// The counters as JSON, for comparing two states in tests.
    pub fn registry_json(&self) -> String {
        serde_json::to_string(&self.registry).expect("serialises")
    }
}

/// The key of partition `p`'s checkpoints.
pub fn key(partition: i32) -> Vec<u8> {
    state::key("traces", partition)
}

/// The latest checkpoint of each of `partitions` (those with none are absent).
pub fn load_latest(
    brokers: &obs_runtime::config::KafkaConfig,
    partitions: &[i32],
    state_partitions: i32,
) -> anyhow::Result<HashMap<i32, Checkpoint>> {
    state::load_latest(
        brokers,
        "traces",
        partitions,
        state_partitions,
        |c: &Checkpoint| c.version,
        VERSION,
    )
}
