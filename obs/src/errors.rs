//! `obs errors`: the tenant's error groups from the query API's `/api/v1/errors`, newest
//! first, as a table or JSON.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

/// What `obs errors` was asked for.
pub struct ErrorsArgs<'a> {
    /// Query API base URL.
    pub base: &'a str,
    /// Only this service's groups.
    pub service: Option<&'a str>,
    /// How far back (`1h`, `30m`, `7d`).
    pub since: &'a str,
    /// Most groups.
    pub limit: u64,
    /// `table` or `json`.
    pub format: &'a str,
    /// Tenant (X-Scope-OrgID).
    pub tenant: Option<&'a str>,
}

fn time_of(ns: &Value) -> String {
    ns.as_i64()
        .and_then(|n| {
            chrono::DateTime::from_timestamp(n / 1_000_000_000, (n % 1_000_000_000) as u32)
        })
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Prints the error groups.
pub async fn run(a: &ErrorsArgs<'_>) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(a.format, "table" | "json"),
        "unknown --format {:?}: use table or json",
        a.format
    );
    let since = obs_stream_processors::rules::file::parse_duration(a.since)
        .map_err(|e| anyhow::anyhow!("--since {:?}: {e}", a.since))?;
    let start = (chrono::Utc::now().timestamp_millis() - since.as_millis() as i64) / 1000;
    let (start, limit) = (start.to_string(), a.limit.to_string());
    let mut params = vec![("start", start.as_str()), ("limit", limit.as_str())];
    if let Some(s) = a.service {
        params.push(("service", s));
    }
    let text = crate::query_api::get(a.base, "/api/v1/errors", &params, a.tenant, "errors").await?;
    if a.format == "json" {
        println!("{text}");
        return Ok(());
    }
    let v: Value = serde_json::from_str(&text)?;
    let groups = v["data"].as_array().cloned().unwrap_or_default();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "fingerprint",
        "type",
        "message",
        "count",
        "first seen",
        "last seen",
        "services",
        "releases",
    ]);
    for g in &groups {
        table.add_row([
            g["fingerprint"].as_str().unwrap_or("").to_string(),
            g["exception_type"].as_str().unwrap_or("").to_string(),
            g["normalized_message"].as_str().unwrap_or("").to_string(),
            g["count"].to_string(),
            time_of(&g["first_seen_ns"]),
            time_of(&g["last_seen_ns"]),
            list(&g["services"]),
            list(&g["releases"]),
        ]);
    }
    println!("{table}");
    println!(
        "{} group{} since {} ago",
        groups.len(),
        if groups.len() == 1 { "" } else { "s" },
        a.since
    );
    Ok(())
}
