//! `obs_late_writes`: the contract between the sinks, which store records late, and the
//! query API's results cache, which must not answer from before they arrived.
//!
//! A sink batch holding records older than [`LATE_AFTER_MS`] when it is stored writes one
//! row per tenant (the batch's earliest such record time) after its insert and before its
//! offset commit. The results cache keeps answers only for steps older than its freshness
//! window, which is at least [`LATE_AFTER_MS`]: a record that is not marked late is newer
//! than every step the cache held when it was stored, so it cannot change a cached answer.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// The table.
pub const TABLE: &str = "obs_late_writes";

/// A record older than this (ms, against the sink's clock when its batch is stored) is late.
pub const LATE_AFTER_MS: i64 = 5 * 60 * 1000;

/// One late write; `WrittenAt` is the engine's clock at the insert (its column default).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LateWrite {
    /// The tenant whose records were stored late.
    pub tenant: String,
    /// The table they were stored in.
    pub table_name: String,
    /// The earliest late record time, ms since the epoch (`i64::MIN`: any time).
    pub from_ms: i64,
}
