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
}

/// Asks the query API and prints the statements and the Rust steps.
pub async fn run(a: ExplainArgs<'_>) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/explain", a.url.trim_end_matches('/'));
    let mut params = vec![("query", a.query), ("language", a.language)];
    if let Some((start, end, step)) = a.range {
        params.extend([("start", start), ("end", end), ("step", step)]);
    }
    let mut req = reqwest::Client::new().get(&url).query(&params);
    if let Some(t) = a.tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the query API at {url}: {e} (is `obs up` or `obs query` running?)"
        )
    })?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if !status.is_success() {
        anyhow::bail!(
            "cannot explain ({status}): {}",
            v["error"].as_str().unwrap_or("no reason given")
        );
    }
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
