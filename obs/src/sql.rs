//! `obs sql`: ad-hoc SQL through the query API, printed as a table, JSON or CSV.

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
