//! `obs sql`: ad-hoc SQL through the query API (ClickHouse), or with `--topic` DataFusion
//! SQL over a topic's records read from the broker; printed as a table, JSON or CSV.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

/// Runs `query` as `tenant` (the API's default tenant when `None`) against the query API at
/// `base` and prints the result in `format`.
pub async fn run(
    base: &str,
    query: &str,
    format: &str,
    tenant: Option<&str>,
) -> anyhow::Result<()> {
    let api_format = match format {
        "table" | "json" => "json",
        "csv" => "csv",
        other => anyhow::bail!("unknown --format {other:?}: use table, json or csv"),
    };
    let text = crate::query_api::get(
        base,
        "/api/v1/sql",
        &[("query", query), ("format", api_format)],
        tenant,
        "query",
    )
    .await?;
    if format != "table" {
        print!("{text}");
        return Ok(());
    }
    let v: Value = serde_json::from_str(&text)?;
    let columns: Vec<String> = v["meta"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(&columns);
    let rows = v["data"].as_array().cloned().unwrap_or_default();
    for row in &rows {
        table.add_row(columns.iter().map(|c| match &row[c] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
    }
    println!("{table}");
    println!(
        "{} row{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Runs `query` with DataFusion over the records of `topic` in the record-time range
/// `(from, to, slack)` and prints the result in `format` (the counts read go to stderr).
pub async fn run_on_topic(
    cfg: &obs_runtime::Config,
    topic: &str,
    (from, to, slack): (&str, &str, &str),
    query: &str,
    format: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use datafusion::arrow;
    if !matches!(format, "table" | "json" | "csv") {
        anyhow::bail!("unknown --format {format:?}: use table, json or csv");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let q = obs_stream_processors::sql::adhoc::TopicQuery {
        topic: obs_schemas::Topic::parse(topic)?,
        from_ns: crate::replay::parse_time(from, now).context("--from")?,
        to_ns: crate::replay::parse_time(to, now).context("--to")?,
        slack: humantime::parse_duration(slack)
            .with_context(|| format!("--slack {slack:?} is not a duration (e.g. 5m)"))?,
        sql: query.to_string(),
    };
    let a = obs_stream_processors::sql::adhoc::run(cfg, &q).await?;
    eprintln!(
        "{} records of {} in the range ({} messages read, {} records outside the range)",
        a.records, q.topic, a.messages, a.outside_range
    );
    match format {
        "table" => {
            println!(
                "{}",
                arrow::util::pretty::pretty_format_batches(&a.batches)?
            );
            let rows: usize = a.batches.iter().map(|b| b.num_rows()).sum();
            println!("{rows} row{}", if rows == 1 { "" } else { "s" });
        }
        "json" => {
            let mut w = arrow::json::LineDelimitedWriter::new(std::io::stdout());
            for b in &a.batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        _ => {
            let mut w = arrow::csv::Writer::new(std::io::stdout());
            for b in &a.batches {
                w.write(b)?;
            }
        }
    }
    Ok(())
}
