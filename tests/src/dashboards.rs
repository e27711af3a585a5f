//! Grafana's dashboards (config/grafana/dashboards/*.json) checked the way Grafana runs
//! them: every panel's queries, with the dashboard's variables and Grafana's built-in
//! variables and ClickHouse macros expanded, sent to the API their datasource names
//! (PromQL and LogQL to the query API, SQL to ClickHouse, trace search to the Jaeger API).
//! A query fails when the API answers an error or no data.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

/// The window the panels are run over (Grafana's time picker: `now-15m` to `now`).
const RANGE_SECS: i64 = 15 * 60;
/// The step of range queries, and `$__interval`.
const STEP_SECS: i64 = 15;

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The dashboard file's name.
    pub dashboard: String,
    /// The panel's title.
    pub panel: String,
    /// The datasource uid it runs on (`obs-prometheus`, `obs-loki`, `obs-clickhouse`,
    /// `obs-jaeger`).
    pub datasource: String,
    /// The query with every variable expanded (for Jaeger: the service searched).
    pub query: String,
    /// Whether the panel shows the query's exemplars (Prometheus targets).
    pub exemplars: bool,
}

/// Where the stack's APIs are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The query API (Prometheus, Loki and Jaeger APIs).
    pub query_api: String,
    /// ClickHouse's HTTP interface.
    pub clickhouse: String,
    /// The database the ClickHouse datasource uses.
    pub database: String,
}

/// The dashboard files of the repository.
pub fn dashboard_files() -> Vec<PathBuf> {
    let dir = crate::repo_root().join("config/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Every query of every panel of a dashboard file, variables expanded for the window
/// ending at `now` (unix seconds).
pub fn panel_queries(file: &Path, now: i64) -> anyhow::Result<Vec<PanelQuery>> {
    let text = std::fs::read_to_string(file)?;
    let dashboard: Value =
        serde_json::from_str(&text).with_context(|| format!("{}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let variables: Vec<(String, String)> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let value = v["current"]["value"].as_str().unwrap_or_default();
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                value.to_string(),
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = panels.pop() {
        // Rows hold their panels when collapsed.
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let datasource = target["datasource"]["uid"]
                .as_str()
                .or(panel["datasource"]["uid"].as_str())
                .with_context(|| format!("{name}: panel {title:?} names no datasource"))?;
            let raw = match datasource {
                "obs-prometheus" | "obs-loki" => target["expr"].as_str(),
                "obs-clickhouse" => target["rawSql"].as_str(),
                "obs-jaeger" => target["service"].as_str(),
                other => bail!("{name}: panel {title:?} uses datasource {other:?}, which the check does not know"),
            }
            .with_context(|| format!("{name}: panel {title:?} has a target without a query"))?;
            let query = expand(raw, &variables, now);
            if query.contains('$') && datasource != "obs-clickhouse" {
                bail!("{name}: panel {title:?}: a variable is left in {query:?}");
            }
            out.push(PanelQuery {
                dashboard: name.clone(),
                panel: title.to_string(),
                datasource: datasource.to_string(),
                query,
                exemplars: target["exemplar"].as_bool().unwrap_or(false),
            });
        }
    }
    out.reverse();
    Ok(out)
}

/// The query with the dashboard's variables, Grafana's built-in ones and the ClickHouse
/// datasource's time macros replaced, as Grafana sends it.
pub fn expand(query: &str, variables: &[(String, String)], now: i64) -> String {
    let from = now - RANGE_SECS;
    let mut q = query.to_string();
    for (name, value) in variables {
        q = q.replace(&format!("${{{name}}}"), value);
        q = q.replace(&format!("${name}"), value);
    }
    q = macro_calls(&q, "$__timeFilter", |col| {
        format!("{col} >= toDateTime({from}) AND {col} <= toDateTime({now})")
    });
    q = macro_calls(&q, "$__timeInterval", |col| {
        format!("toStartOfInterval({col}, INTERVAL {STEP_SECS} second)")
    });
    q.replace("$__rate_interval", "1m")
        .replace("$__interval_s", &STEP_SECS.to_string())
        .replace("$__interval", &format!("{STEP_SECS}s"))
        .replace("$__range", &format!("{RANGE_SECS}s"))
        .replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({now})"))
}

/// Replaces each `name(arg)` in `q` with `with(arg)`.
fn macro_calls(q: &str, name: &str, with: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = q;
    while let Some(at) = rest.find(&format!("{name}(")) {
        out.push_str(&rest[..at]);
        let args = &rest[at + name.len() + 1..];
        let Some(close) = args.find(')') else {
            out.push_str(&rest[at..]);
            return out;
        };
        out.push_str(&with(args[..close].trim()));
        rest = &args[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Runs a panel query against the stack; how many series, streams, rows or traces it
/// returned (an error when the API refuses it or when it returns nothing).
pub async fn run(
    client: &reqwest::Client,
    at: &Endpoints,
    q: &PanelQuery,
    now: i64,
) -> anyhow::Result<usize> {
    let from = now - RANGE_SECS;
    let (url, params): (String, Vec<(&str, String)>) = match q.datasource.as_str() {
        "obs-prometheus" => (
            format!("{}/api/v1/query_range", at.query_api),
            vec![
                ("query", q.query.clone()),
                ("start", from.to_string()),
                ("end", now.to_string()),
                ("step", STEP_SECS.to_string()),
            ],
        ),
        "obs-loki" => (
            format!("{}/loki/api/v1/query_range", at.query_api),
            vec![
                ("query", q.query.clone()),
                ("start", (from * 1_000_000_000).to_string()),
                ("end", (now * 1_000_000_000).to_string()),
                ("step", format!("{STEP_SECS}s")),
                ("limit", "100".into()),
            ],
        ),
        "obs-jaeger" => (
            format!("{}/api/traces", at.query_api),
            vec![
                ("service", q.query.clone()),
                ("start", (from * 1_000_000).to_string()),
                ("end", (now * 1_000_000).to_string()),
                ("limit", "20".into()),
            ],
        ),
        "obs-clickhouse" => (
            at.clickhouse.clone(),
            vec![
                ("database", at.database.clone()),
                ("default_format", "JSON".into()),
            ],
        ),
        other => bail!("unknown datasource {other}"),
    };
    let request = match q.datasource.as_str() {
        "obs-clickhouse" => client.post(&url).query(&params).body(q.query.clone()),
        "obs-jaeger" => client.get(&url).query(&params),
        _ => client.post(&url).form(&params),
    };
    let response = request.send().await.context("sending the query")?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("HTTP {status}: {text}");
    }
    let body: Value = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    let found = match q.datasource.as_str() {
        "obs-prometheus" | "obs-loki" => body["data"]["result"].as_array().map(Vec::len),
        // Jaeger's traces, ClickHouse's rows.
        _ => body["data"].as_array().map(Vec::len),
    }
    .with_context(|| format!("no result in {text}"))?;
    if found == 0 {
        bail!("no data");
    }
    if q.exemplars {
        exemplar_trace_and_logs(client, at, q, from, now).await?;
    }
    Ok(found)
}

/// For a panel that shows exemplars, the hop Grafana offers: the query's exemplars, the
/// trace the newest one names (Tempo's trace-by-id), and that trace's logs.
async fn exemplar_trace_and_logs(
    client: &reqwest::Client,
    at: &Endpoints,
    q: &PanelQuery,
    from: i64,
    now: i64,
) -> anyhow::Result<()> {
    let answer: Value = client
        .post(format!("{}/api/v1/query_exemplars", at.query_api))
        .form(&[
            ("query", q.query.clone()),
            ("start", from.to_string()),
            ("end", now.to_string()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let newest = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["exemplars"].as_array().into_iter().flatten())
        .filter_map(|e| Some((e["timestamp"].as_f64()?, e["labels"]["trace_id"].as_str()?)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, trace)| trace.to_string())
        .with_context(|| format!("no exemplar with a trace_id: {answer}"))?;
    if !newest.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("exemplar trace id {newest:?} is not hex");
    }
    let trace = client
        .get(format!("{}/api/traces/{newest}", at.query_api))
        .send()
        .await?;
    if !trace.status().is_success() {
        bail!("exemplar trace {newest}: HTTP {}", trace.status());
    }
    let sql = format!("SELECT count() AS n FROM otel_logs WHERE TraceId = '{newest}' FORMAT JSON");
    let logs: Value = client
        .post(&at.clickhouse)
        .query(&[("database", at.database.as_str())])
        .body(sql)
        .send()
        .await?
        .json()
        .await?;
    let n = logs["data"][0]["n"]
        .as_str()
        .and_then(|n| n.parse::<u64>().ok())
        .or(logs["data"][0]["n"].as_u64())
        .unwrap_or(0);
    if n == 0 {
        bail!("no logs of exemplar trace {newest}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_and_clickhouse_macros() {
        let vars = [("service".to_string(), "checkout".to_string())];
        assert_eq!(
            expand(
                "rate(x{service=\"$service\"}[$__rate_interval]) ${service}",
                &vars,
                1000
            ),
            "rate(x{service=\"checkout\"}[1m]) checkout"
        );
        assert_eq!(
            expand(
                "SELECT $__timeInterval(Timestamp) WHERE $__timeFilter(Timestamp) AND a",
                &vars,
                1000
            ),
            "SELECT toStartOfInterval(Timestamp, INTERVAL 15 second) WHERE Timestamp >= toDateTime(100) AND Timestamp <= toDateTime(1000) AND a"
        );
    }
}
