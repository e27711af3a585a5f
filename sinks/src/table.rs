//! The contract between the generic driver and one table.

use std::borrow::Cow;
use std::collections::BTreeMap;

use clickhouse::Row;
use obs_schemas::Topic;
use obs_schemas::records::Attrs;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A table fed from a topic: the driver does the Kafka and ClickHouse work, the table says
/// only what a message becomes.
pub trait TableSink: Default + Send + Sync + 'static {
    /// The topic's value type.
    type Message: DeserializeOwned + Clone + Send + Sync + 'static;
    /// One row of the table; field names are the table's column names.
    type Row: Row
        + for<'a> Row<Value<'a> = Self::Row>
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;
    /// Source topic.
    const TOPIC: Topic;
    /// Target table.
    const TABLE: &'static str;
    /// The column holding each row's record time (`row_time_ns`): `obs replay` reads the
    /// target's rows of a time range back through it, to store only the rows missing there.
    /// `None` for rows without a time (series, metadata: replacing tables, where a row
    /// written again is harmless).
    const TIME_COLUMN: Option<TimeColumn>;
    /// Names the sink's consumer group (`<group_prefix>-<NAME>`); two sinks of one table
    /// need different names.
    const NAME: &'static str = Self::TABLE;
    /// Whether this sink sends the topic's undecodable messages to `obs.dlq`. A second sink
    /// of a topic (one deriving rows from it) leaves that to the topic's main sink, so a
    /// bad message is one dead letter, not one per sink.
    const DEAD_LETTERS_UNDECODABLE: bool = true;
    /// For a topic that is not Avro: decodes a message itself (`Err` names what is wrong
    /// and sends the message to the DLQ). `None`: the registry codec decodes it.
    fn decode_raw(_payload: &[u8]) -> Option<Result<Self::Message, String>> {
        None
    }
    /// A test on the undecoded message that is `false` only when the message cannot give
    /// a row: such a message is not decoded at all. For a sink that keeps few of a topic's
    /// messages (exceptions among all logs), this spares the decode of the rest.
    fn may_have_rows(_payload: &[u8]) -> bool {
        true
    }
    /// Whether the table reads each message as decoded once for all the topic's tables
    /// that say so (`rows` then gets it borrowed) rather than decoding it for itself
    /// (owned). For tables that only read from a message (`obs.metrics`' four): a table
    /// that moves the message's strings into its rows is faster with its own decode.
    const SHARES_DECODE: bool = false;
    /// Appends the rows a message becomes to `out`: the message is borrowed when the table
    /// shares decodes ([`TableSink::SHARES_DECODE`]), owned otherwise. The rows of a
    /// message must not depend on state unless a row written again is harmless (a
    /// replacing table).
    fn rows(&mut self, message: Cow<'_, Self::Message>, out: &mut Vec<Self::Row>);
    /// The record time of a row in ns (what `obs replay --from/--to` selects on); `None`
    /// for rows that describe rather than record (series, metadata), which replay keeps.
    fn row_time_ns(row: &Self::Row) -> Option<i64>;
    /// Per tenant, the earliest record time (ms) of `rows` older than `before_ms`: rows the
    /// query API's results cache may hold answers for (`obs_schemas::late_writes`). Only
    /// the tables that cache reads say so; the rest keep the default, none.
    fn late_from_ms(_rows: &[Self::Row], _before_ms: i64) -> BTreeMap<String, i64> {
        BTreeMap::new()
    }
}

/// A table's record-time column and how it counts time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeColumn {
    /// A `DateTime64(9)` column.
    Nanos(&'static str),
    /// An `Int64` column of ms since the epoch.
    Millis(&'static str),
}

impl TimeColumn {
    /// The condition "record time in `[?, ?]`", bound with two ns values.
    pub fn between_sql(self) -> String {
        match self {
            TimeColumn::Nanos(c) => format!(
                "{c} BETWEEN fromUnixTimestamp64Nano(toInt64(?)) AND fromUnixTimestamp64Nano(toInt64(?))"
            ),
            TimeColumn::Millis(c) => {
                format!("{c} BETWEEN intDiv(toInt64(?), 1000000) AND intDiv(toInt64(?), 1000000)")
            }
        }
    }
}

/// Attributes as a ClickHouse `Map` column takes them from the `clickhouse` crate.
pub fn pairs(attrs: Attrs) -> Vec<(String, String)> {
    attrs.into_iter().collect()
}

/// [`pairs`] of attributes the table only borrows (a decode shared with other tables).
pub fn pairs_cloned(attrs: &Attrs) -> Vec<(String, String)> {
    attrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
