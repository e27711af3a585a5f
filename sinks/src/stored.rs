//! What a table already holds of some rows, compared by content: `obs replay` stores only
//! the rows a target lacks, and the live sink checks a batch whose insert ClickHouse may
//! have acknowledged without storing it (see `driver`).

use std::collections::HashMap;

use serde::Serialize;

use crate::table::{TableSink, TimeColumn};

/// A row's content, for comparing rows with what a table holds.
pub fn fingerprint<R: Serialize>(row: &R) -> u128 {
    xxhash_rust::xxh3::xxh3_128(&serde_json::to_vec(row).expect("rows serialise"))
}

/// How many times `table` holds each row content of the record-time span `[lo, hi]` (ns).
pub async fn stored_rows<T: TableSink>(
    client: &clickhouse::Client,
    table: &str,
    time: TimeColumn,
    (lo, hi): (i64, i64),
) -> clickhouse::error::Result<HashMap<u128, u32>> {
    let mut cursor = client
        .query(&format!(
            "SELECT ?fields FROM {table} WHERE {}",
            time.between_sql()
        ))
        .bind(lo)
        .bind(hi)
        .fetch::<T::Row>()?;
    let mut held = HashMap::new();
    while let Some(row) = cursor.next().await? {
        *held.entry(fingerprint(&row)).or_insert(0) += 1;
    }
    Ok(held)
}

/// The positions of the `rows` that `table` does not hold, as a multiset (two equal rows
/// need two stored). Read back through the table's record-time column; a table without one
/// (series, metadata: replacing tables, where a row written again is harmless) and rows
/// without a time count as missing.
pub async fn missing<T: TableSink>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[T::Row],
) -> clickhouse::error::Result<Vec<usize>> {
    let times = rows.iter().filter_map(T::row_time_ns);
    let (Some(time), Some(lo), Some(hi)) = (T::TIME_COLUMN, times.clone().min(), times.max())
    else {
        return Ok((0..rows.len()).collect());
    };
    let mut held = stored_rows::<T>(client, table, time, (lo, hi)).await?;
    Ok(rows
        .iter()
        .enumerate()
        .filter(|(_, row)| {
            T::row_time_ns(row).is_none()
                || match held.get_mut(&fingerprint(*row)) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        false
                    }
                    _ => true,
                }
        })
        .map(|(i, _)| i)
        .collect())
}
