//! The records of a streaming SQL query (`[[queries]]` of the SQL processor): their shape
//! is the query's output, so it is made here from the output's columns rather than
//! written down once.
//!
//! * Topic `obs.sql.<query>`: each message a record `Rows { rows: [Row] }`; a `Row` holds
//!   `window_start_ms`, `window_end_ms`, `row` (its place in the window's sorted output)
//!   and the query's columns, as an Avro schema registered under `obs.sql.<query>-value`.
//! * Table `sql_<query>`: the same columns; a `ReplacingMergeTree` ordered by window and
//!   row, so a window written again after a restart replaces itself.
//!
//! Column types are those SQL aggregates give: 64-bit integers, doubles, strings and
//! booleans, each nullable or not.

use anyhow::{Context, bail};
use apache_avro::types::Value as Avro;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Columns every output row has before the query's own.
pub const WINDOW_COLUMNS: [&str; 3] = ["window_start_ms", "window_end_ms", "row"];

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 64-bit signed integer (Avro `long`, ClickHouse `Int64`).
    Long,
    /// 64-bit float (Avro `double`, ClickHouse `Float64`).
    Double,
    /// UTF-8 text (Avro `string`, ClickHouse `String`).
    Text,
    /// Boolean (Avro `boolean`, ClickHouse `Bool`).
    Boolean,
}

impl Kind {
    fn avro(self) -> &'static str {
        match self {
            Kind::Long => "long",
            Kind::Double => "double",
            Kind::Text => "string",
            Kind::Boolean => "boolean",
        }
    }

    fn clickhouse(self) -> &'static str {
        match self {
            Kind::Long => "Int64",
            Kind::Double => "Float64",
            Kind::Text => "String",
            Kind::Boolean => "Bool",
        }
    }
}

/// One output column of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name: a SQL/Avro identifier (`[A-Za-z_][A-Za-z0-9_]*`).
    pub name: String,
    /// Its type.
    pub kind: Kind,
    /// Whether it may be null.
    pub nullable: bool,
}

/// Checks a query or column name: letters, digits and `_`, not starting with a digit (so
/// it is an Avro name, a topic suffix and a ClickHouse identifier as it is).
pub fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!(
            "{what} {name:?} is not a name: use letters, digits and _ (not starting with a digit)"
        );
    }
    Ok(())
}

/// The topic of query `query`'s output.
pub fn topic_name(query: &str) -> String {
    format!("obs.sql.{query}")
}

/// The table of query `query`'s output.
pub fn table_name(query: &str) -> String {
    format!("sql_{query}")
}

/// Checks the query's own columns: names, no duplicates, none named like a window column.
pub fn check_columns(columns: &[Column]) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        check_name("the output column", &c.name).map_err(|e| {
            anyhow::anyhow!("{e}; name every computed column with AS (e.g. count(*) AS errors)")
        })?;
        if WINDOW_COLUMNS.contains(&c.name.as_str()) {
            bail!(
                "the output column {:?} is reserved (every row has window_start_ms, window_end_ms and row); rename it with AS",
                c.name
            );
        }
        if !seen.insert(c.name.as_str()) {
            bail!("two output columns are named {:?}", c.name);
        }
    }
    Ok(())
}

/// The Avro schema of `obs.sql.<query>` messages.
pub fn avro_schema(query: &str, columns: &[Column]) -> String {
    let mut fields = vec![
        json!({"name": "window_start_ms", "type": "long", "doc": "Window start, ms since the epoch (inclusive)."}),
        json!({"name": "window_end_ms", "type": "long", "doc": "Window end, ms since the epoch (exclusive)."}),
        json!({"name": "row", "type": "int", "doc": "The row's place in the window's output, sorted by every column."}),
    ];
    for c in columns {
        fields.push(if c.nullable {
            json!({"name": c.name, "type": ["null", c.kind.avro()], "default": null})
        } else {
            json!({"name": c.name, "type": c.kind.avro()})
        });
    }
    json!({
        "type": "record",
        "name": "Rows",
        "namespace": format!("obs.sql.{query}"),
        "doc": format!("The output of streaming SQL query {query}: a window's rows."),
        "fields": [{
            "name": "rows",
            "type": {"type": "array", "items": {"type": "record", "name": "Row", "fields": fields}}
        }]
    })
    .to_string()
}

/// The query's columns back from the Avro schema of its topic (what the sink makes the
/// table from).
pub fn columns_from_avro(schema: &str) -> anyhow::Result<Vec<Column>> {
    let v: Value = serde_json::from_str(schema).context("the schema is not JSON")?;
    let fields = v["fields"][0]["type"]["items"]["fields"]
        .as_array()
        .context("not the schema of a SQL query's output (no rows.items.fields)")?;
    let mut out = Vec::new();
    for f in fields {
        let name = f["name"].as_str().context("a field without a name")?;
        if WINDOW_COLUMNS.contains(&name) {
            continue;
        }
        let (ty, nullable) = match &f["type"] {
            Value::String(t) => (t.as_str(), false),
            Value::Array(u) if u.len() == 2 && u[0] == "null" => {
                (u[1].as_str().unwrap_or_default(), true)
            }
            other => bail!("field {name} has type {other}, not one a SQL output has"),
        };
        let kind = match ty {
            "long" => Kind::Long,
            "double" => Kind::Double,
            "string" => Kind::Text,
            "boolean" => Kind::Boolean,
            other => bail!("field {name} has type {other}, not one a SQL output has"),
        };
        out.push(Column {
            name: name.to_string(),
            kind,
            nullable,
        });
    }
    Ok(out)
}

/// The `CREATE TABLE` of `sql_<query>` (rows kept `ttl_days` after their window).
pub fn table_statement(query: &str, columns: &[Column], ttl_days: u32) -> String {
    let mut cols = vec![
        "`window_start_ms` Int64".to_string(),
        "`window_end_ms` Int64".to_string(),
        "`row` UInt32".to_string(),
    ];
    cols.extend(columns.iter().map(column_type));
    format!(
        "CREATE TABLE IF NOT EXISTS `{}` ({}) ENGINE = ReplacingMergeTree \
         ORDER BY (window_start_ms, window_end_ms, row) \
         TTL toDateTime(intDiv(window_start_ms, 1000)) + INTERVAL {ttl_days} DAY",
        table_name(query),
        cols.join(", ")
    )
}

/// Creates `sql_<query>` for `columns` if it is missing (`client` on the pipeline's
/// database; on every node of `cluster` if set) and checks that an existing one has exactly
/// those columns: one made for another version of the query's output is an error saying
/// what to do.
pub async fn ensure_table(
    client: &clickhouse::Client,
    query: &str,
    columns: &[Column],
    ttl_days: u32,
    cluster: Option<&crate::cluster::Cluster>,
) -> anyhow::Result<()> {
    let table = table_name(query);
    let create = table_statement(query, columns, ttl_days);
    let statements = match cluster {
        None => vec![create],
        Some(c) => c.rewrite(&create)?,
    };
    for stmt in statements {
        client
            .query(&stmt)
            .execute()
            .await
            .with_context(|| format!("creating table {table}"))?;
    }
    let have: Vec<(String, String)> = client
        .query(
            "SELECT name, type FROM system.columns \
             WHERE database = currentDatabase() AND table = ? ORDER BY position",
        )
        .bind(&table)
        .fetch_all()
        .await
        .with_context(|| format!("reading the columns of {table}"))?;
    let want = table_columns(columns);
    if have != want {
        bail!(
            "table {table} has columns {have:?} but query {query}'s output has {want:?}: the query's output changed; \
             drop the table (DROP TABLE {table}) or rename the query"
        );
    }
    Ok(())
}

/// A column as `system.columns` names it (`` `name` Type ``).
pub fn column_type(c: &Column) -> String {
    if c.nullable {
        format!("`{}` Nullable({})", c.name, c.kind.clickhouse())
    } else {
        format!("`{}` {}", c.name, c.kind.clickhouse())
    }
}

/// Every column of the table as `(name, ClickHouse type)`, window columns first.
pub fn table_columns(columns: &[Column]) -> Vec<(String, String)> {
    let mut out = vec![
        ("window_start_ms".to_string(), "Int64".to_string()),
        ("window_end_ms".to_string(), "Int64".to_string()),
        ("row".to_string(), "UInt32".to_string()),
    ];
    for c in columns {
        let ty = if c.nullable {
            format!("Nullable({})", c.kind.clickhouse())
        } else {
            c.kind.clickhouse().to_string()
        };
        out.push((c.name.clone(), ty));
    }
    out
}

/// One value of an output row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// An integer.
    Long(i64),
    /// A float.
    Double(f64),
    /// Text.
    Text(String),
    /// A boolean.
    Boolean(bool),
}

/// The rows one window of a query gave, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRows {
    /// Window start, ms (inclusive).
    pub start_ms: i64,
    /// Window end, ms (exclusive).
    pub end_ms: i64,
    /// The rows, each with a cell per output column.
    pub rows: Vec<Vec<Cell>>,
}

/// Rows of one window as the Avro value of an `obs.sql.<query>` message (rows `first..`
/// of the window's output, numbered from `first`).
pub fn avro_message(columns: &[Column], w: &WindowRows, first: usize, end: usize) -> Avro {
    let rows = w.rows[first..end]
        .iter()
        .enumerate()
        .map(|(i, cells)| {
            let mut fields = vec![
                ("window_start_ms".to_string(), Avro::Long(w.start_ms)),
                ("window_end_ms".to_string(), Avro::Long(w.end_ms)),
                ("row".to_string(), Avro::Int((first + i) as i32)),
            ];
            for (c, cell) in columns.iter().zip(cells) {
                let v = match cell {
                    Cell::Null => Avro::Null,
                    Cell::Long(x) => Avro::Long(*x),
                    Cell::Double(x) => Avro::Double(*x),
                    Cell::Text(x) => Avro::String(x.clone()),
                    Cell::Boolean(x) => Avro::Boolean(*x),
                };
                let v = match (c.nullable, v) {
                    (true, Avro::Null) => Avro::Union(0, Box::new(Avro::Null)),
                    (true, v) => Avro::Union(1, Box::new(v)),
                    (false, v) => v,
                };
                fields.push((c.name.clone(), v));
            }
            Avro::Record(fields)
        })
        .collect();
    Avro::Record(vec![("rows".to_string(), Avro::Array(rows))])
}

/// The rows of a decoded `obs.sql.<query>` message as JSON objects (ClickHouse's
/// `JSONEachRow`); a float that is not finite becomes null.
pub fn json_rows(message: &Avro) -> anyhow::Result<Vec<serde_json::Map<String, Value>>> {
    let Avro::Record(fields) = message else {
        bail!("not a record");
    };
    let Some((_, Avro::Array(rows))) = fields.iter().find(|(n, _)| n == "rows") else {
        bail!("no rows field");
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Avro::Record(fields) = row else {
            bail!("a row is not a record");
        };
        let mut object = serde_json::Map::new();
        for (name, v) in fields {
            object.insert(name.clone(), json_of(v)?);
        }
        out.push(object);
    }
    Ok(out)
}

fn json_of(v: &Avro) -> anyhow::Result<Value> {
    Ok(match v {
        Avro::Null => Value::Null,
        Avro::Union(_, inner) => json_of(inner)?,
        Avro::Int(x) => json!(x),
        Avro::Long(x) => json!(x),
        Avro::Double(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
        Avro::Float(x) => {
            serde_json::Number::from_f64(f64::from(*x)).map_or(Value::Null, Value::Number)
        }
        Avro::String(x) => Value::String(x.clone()),
        Avro::Boolean(x) => Value::Bool(*x),
        other => bail!("a value of type {other:?} is not one a SQL output has"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        vec![
            Column {
                name: "route".into(),
                kind: Kind::Text,
                nullable: true,
            },
            Column {
                name: "errors".into(),
                kind: Kind::Long,
                nullable: false,
            },
        ]
    }

    #[test]
    fn the_avro_schema_parses_and_gives_the_columns_back() {
        let text = avro_schema("errors_per_route", &columns());
        apache_avro::Schema::parse_str(&text).expect("a valid Avro schema");
        assert_eq!(columns_from_avro(&text).unwrap(), columns());
        let ddl = table_statement("errors_per_route", &columns(), 30);
        assert!(
            ddl.starts_with("CREATE TABLE IF NOT EXISTS `sql_errors_per_route` (`window_start_ms` Int64, `window_end_ms` Int64, `row` UInt32, `route` Nullable(String), `errors` Int64) ENGINE = ReplacingMergeTree"),
            "{ddl}"
        );
    }

    #[test]
    fn rows_encode_to_avro_and_come_back_as_json() {
        let schema = apache_avro::Schema::parse_str(&avro_schema("q", &columns())).unwrap();
        let w = WindowRows {
            start_ms: 60_000,
            end_ms: 120_000,
            rows: vec![
                vec![Cell::Null, Cell::Long(3)],
                vec![Cell::Text("/a".into()), Cell::Long(5)],
            ],
        };
        let value = avro_message(&columns(), &w, 1, 2);
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap();
        let bytes = writer.write_value_to_vec(value).unwrap();
        let back = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut bytes.as_slice())
            .unwrap();
        let rows = json_rows(&back).unwrap();
        assert_eq!(
            serde_json::Value::Object(rows[0].clone()),
            json!({"window_start_ms": 60000, "window_end_ms": 120000, "row": 1, "route": "/a", "errors": 5})
        );
        let all = avro_message(&columns(), &w, 0, 2);
        let rows = json_rows(&all).unwrap();
        assert_eq!(rows[0]["route"], Value::Null);
        // Cells survive a checkpoint (JSON) with their types.
        let cells: Vec<Cell> = serde_json::from_str(r#"[null, 3, 2.5, 3.0, "x", true]"#).unwrap();
        assert_eq!(
            cells,
            vec![
                Cell::Null,
                Cell::Long(3),
                Cell::Double(2.5),
                Cell::Double(3.0),
                Cell::Text("x".into()),
                Cell::Boolean(true)
            ]
        );
    }

    #[test]
    fn names_must_be_identifiers_and_not_reserved() {
        assert!(check_name("query", "errors_1").is_ok());
        assert!(check_name("query", "1errors").is_err());
        assert!(check_name("query", "a-b").is_err());
        let mut c = columns();
        c[1].name = "count(*)".into();
        let e = check_columns(&c).unwrap_err().to_string();
        assert!(e.contains("AS"), "{e}");
        c[1].name = "row".into();
        assert!(
            check_columns(&c)
                .unwrap_err()
                .to_string()
                .contains("reserved")
        );
        c[1].name = "route".into();
        assert!(check_columns(&c).unwrap_err().to_string().contains("two"));
    }
}
