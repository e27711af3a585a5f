//! A streaming SQL query ready to run: its windows, the shape of its input and of its
//! output. The output columns come from planning the statement over an empty table of the
//! input's shape, so a statement DataFusion refuses, or an output column without a name
//! or of a type no table can hold, is an error when `obs processor` starts, not later.

use anyhow::{Context, bail};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use obs_runtime::sql_queries::QueryDef;
use obs_schemas::Topic;
use obs_schemas::sql_output::{self, Cell, Column, Kind, WindowRows};

use super::tables::Rows;
use super::windows::{WindowSpec, evaluate};

/// A checked query.
#[derive(Debug, Clone)]
pub struct Query {
    /// As configured.
    pub def: QueryDef,
    /// The topic it reads.
    pub input: Topic,
    /// Its windows.
    pub spec: WindowSpec,
    /// Its output columns after the window columns.
    pub columns: Vec<Column>,
}

impl Query {
    /// Checks `def`: its topic, windows, and its statement planned over the input's shape.
    pub async fn plan(def: QueryDef) -> anyhow::Result<Query> {
        let what = || format!("query {}", def.name);
        let input = def.input()?;
        let spec = WindowSpec::new(def.window_ms as i64, def.hop() as i64).with_context(what)?;
        let empty = Rows::empty(input).with_context(what)?;
        let df = super::plan(empty.to_batch()?, &def.sql)
            .await
            .with_context(what)?;
        let mut columns = Vec::new();
        for f in df.schema().fields() {
            columns.push(Column {
                name: f.name().clone(),
                kind: kind_of(f.data_type())
                    .with_context(|| format!("query {}: output column {}", def.name, f.name()))?,
                nullable: f.is_nullable(),
            });
        }
        sql_output::check_columns(&columns).with_context(what)?;
        Ok(Query {
            def,
            input,
            spec,
            columns,
        })
    }

    /// The query's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The allowed lateness (ms).
    pub fn lateness_ms(&self) -> i64 {
        self.def.allowed_lateness_ms as i64
    }

    /// A fingerprint of everything that decides its output (a checkpoint of another
    /// version of the query is not used).
    pub fn fingerprint(&self) -> String {
        let d = &self.def;
        format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(
                format!(
                    "{}\n{}\n{}\n{}\n{}",
                    d.topic,
                    d.window_ms,
                    d.hop(),
                    d.allowed_lateness_ms,
                    d.sql
                )
                .as_bytes()
            )
        )
    }

    /// The rows of one window.
    pub async fn evaluate(
        &self,
        start_ms: i64,
        end_ms: i64,
        rows: &Rows,
    ) -> anyhow::Result<WindowRows> {
        let batches = evaluate(&self.def.sql, (start_ms, end_ms), rows).await?;
        let mut out = Vec::new();
        for b in &batches {
            cells(b, &self.columns, &mut out)?;
        }
        Ok(WindowRows {
            start_ms,
            end_ms,
            rows: out,
        })
    }
}

/// The column type an Arrow type is stored as; an error says how to cast others.
fn kind_of(t: &DataType) -> anyhow::Result<Kind> {
    Ok(match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Kind::Long,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Kind::Double,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
        DataType::Boolean => Kind::Boolean,
        other => bail!(
            "has type {other}, which no output table holds: CAST it to BIGINT, DOUBLE, VARCHAR or BOOLEAN"
        ),
    })
}

/// Appends the rows of `b` (window columns first, then `columns`) as cells.
fn cells(b: &RecordBatch, columns: &[Column], out: &mut Vec<Vec<Cell>>) -> anyhow::Result<()> {
    let first = out.len();
    out.extend((0..b.num_rows()).map(|_| Vec::with_capacity(columns.len())));
    // The first two columns are the window's bounds, which the rows carry separately.
    for (c, array) in columns.iter().zip(b.columns().iter().skip(2)) {
        let rows = &mut out[first..];
        match c.kind {
            Kind::Long => {
                let a = cast(array, &DataType::Int64)?;
                let a = a.as_primitive::<Int64Type>();
                for (i, row) in rows.iter_mut().enumerate() {
                    row.push(if a.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Long(a.value(i))
                    });
                }
            }
            Kind::Double => {
                let a = cast(array, &DataType::Float64)?;
                let a = a.as_primitive::<Float64Type>();
                for (i, row) in rows.iter_mut().enumerate() {
                    row.push(if a.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Double(a.value(i))
                    });
                }
            }
            Kind::Text => {
                let a = cast(array, &DataType::Utf8)?;
                let a = a.as_string::<i32>();
                for (i, row) in rows.iter_mut().enumerate() {
                    row.push(if a.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Text(a.value(i).to_string())
                    });
                }
            }
            Kind::Boolean => {
                let a = array.as_boolean();
                for (i, row) in rows.iter_mut().enumerate() {
                    row.push(if a.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Boolean(a.value(i))
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use obs_schemas::records::LogRecord;

    fn def(sql: &str) -> QueryDef {
        QueryDef {
            name: "errors".into(),
            topic: "obs.logs".into(),
            window_ms: 60_000,
            hop_ms: None,
            allowed_lateness_ms: 0,
            sql: sql.into(),
        }
    }

    #[tokio::test]
    async fn output_columns_come_from_the_plan_and_rows_are_cells() {
        let q = Query::plan(def(
            "SELECT service, attrs['route'] AS route, count(*) AS n, avg(severity_number) AS sev, \
             count(*) > 1 AS many FROM records GROUP BY 1, 2",
        ))
        .await
        .unwrap();
        let shape: Vec<(&str, Kind, bool)> = q
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.kind, c.nullable))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("service", Kind::Text, false),
                ("route", Kind::Text, true),
                ("n", Kind::Long, false),
                ("sev", Kind::Double, true),
                ("many", Kind::Boolean, false),
            ]
        );
        let mut with_route = obs_schemas::records::Attrs::new();
        with_route.insert("route".into(), "/a".into());
        let logs = Rows::Logs(vec![
            LogRecord {
                service: "a".into(),
                severity_number: 17,
                ..Default::default()
            },
            LogRecord {
                service: "a".into(),
                severity_number: 9,
                ..Default::default()
            },
            LogRecord {
                service: "b".into(),
                severity_number: 9,
                attrs: with_route,
                ..Default::default()
            },
        ]);
        let w = q.evaluate(0, 60_000, &logs).await.unwrap();
        assert_eq!(
            w.rows,
            vec![
                vec![
                    Cell::Text("a".into()),
                    Cell::Null,
                    Cell::Long(2),
                    Cell::Double(13.0),
                    Cell::Boolean(true)
                ],
                vec![
                    Cell::Text("b".into()),
                    Cell::Text("/a".into()),
                    Cell::Long(1),
                    Cell::Double(9.0),
                    Cell::Boolean(false)
                ],
            ]
        );
    }

    #[tokio::test]
    async fn unnamed_or_unstorable_columns_are_refused_at_start() {
        let e = format!(
            "{:#}",
            Query::plan(def("SELECT count(*) FROM records"))
                .await
                .unwrap_err()
        );
        assert!(e.contains("AS"), "{e}");
        let e = format!(
            "{:#}",
            Query::plan(def("SELECT attrs FROM records"))
                .await
                .unwrap_err()
        );
        assert!(e.contains("CAST it"), "{e}");
        let e = format!(
            "{:#}",
            Query::plan(def("SELECT nope FROM records"))
                .await
                .unwrap_err()
        );
        assert!(e.contains("nope"), "{e}");
    }
}
