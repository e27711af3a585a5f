//! `obs explain`: the SQL a PromQL (or LogQL) query becomes, and what is evaluated in Rust
//! over the rows it reads, from the query API's `/api/v1/explain`.

use serde_json::Value;

/// What to explain.
pub struct ExplainArgs<'a> {
    /// Query API base URL.
    pub url: &'a str,
    /// The query.
    pub query: &'a str,
    /// `promql` or `logql`.
    pub language: &'a str,
    /// Range start/end (Unix seconds or RFC 3339) and step, for a range query.
    pub range: Option<(&'a str, &'a str, &'a str)>,
    /// Tenant (`X-Scope-OrgID`).
    pub tenant: Option<&'a str>,
    /// Rollups range functions may read (`max_source_resolution`).
    pub max_source_resolution: Option<&'a str>,
}

/// Asks the query API and prints the statements and the Rust steps.
pub async fn run(a: ExplainArgs<'_>) -> anyhow::Result<()> {
    let mut params = vec![("query", a.query), ("language", a.language)];
    if let Some((start, end, step)) = a.range {
        params.extend([("start", start), ("end", end), ("step", step)]);
    }
    if let Some(r) = a.max_source_resolution {
        params.push(("max_source_resolution", r));
    }
    let text =
        crate::query_api::get(a.url, "/api/v1/explain", &params, a.tenant, "explain").await?;
    let v: Value = serde_json::from_str(&text)?;
    let data = &v["data"];
    if let Some(plan) = data["plan"].as_str() {
        println!("{plan}");
        return Ok(());
    }
    println!("-- SQL sent to ClickHouse (values shown inline; they are sent as bound parameters)");
    for s in data["sql"].as_array().into_iter().flatten() {
        println!("{};\n", s.as_str().unwrap_or_default());
    }
    println!("-- evaluated in Rust over the rows read, innermost first");
    for s in data["rust"].as_array().into_iter().flatten() {
        println!("  {}", s.as_str().unwrap_or_default());
    }
    Ok(())
}
