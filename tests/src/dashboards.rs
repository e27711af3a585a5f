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

/// For a panel that shows exemplars, the hops Grafana offers: the query's exemplars, the
/// trace the newest one names (trace by id), and that trace's logs through the Tempo
/// datasource's trace-to-logs query.
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
    let (newest, span) = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["exemplars"].as_array().into_iter().flatten())
        .filter_map(|e| {
            let labels = &e["labels"];
            let ids = (labels["trace_id"].as_str()?, labels["span_id"].as_str()?);
            Some((e["timestamp"].as_f64()?, ids))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, (trace, span))| (trace.to_string(), span.to_string()))
        .with_context(|| format!("no exemplar with a trace_id and span_id: {answer}"))?;
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
    let trace: Value = trace.json().await?;
    let link = TraceToLogs::provisioned("obs-tempo")?;
    let found = link.logs(client, at, &trace, &span).await?;
    if found == 0 {
        bail!(
            "no logs of exemplar trace {newest} through the Tempo datasource's trace-to-logs query"
        );
    }
    Ok(())
}

/// A trace datasource's "Logs for this span" link (`tracesToLogsV2` in
/// `config/grafana/datasources.yml`), expanded and run as Grafana does.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceToLogs {
    /// The LogQL template (`${__tags}`, `${__trace.traceId}`, `${__span.spanId}`).
    pub query: String,
    /// Span or resource attribute → stream label, for `${__tags}`.
    pub tags: Vec<(String, String)>,
    /// Seconds added to the span's start (negative: earlier).
    pub start_shift: i64,
    /// Seconds added to the span's end.
    pub end_shift: i64,
}

impl TraceToLogs {
    /// The link the datasource `uid` provisions.
    pub fn provisioned(uid: &str) -> anyhow::Result<TraceToLogs> {
        let path = crate::repo_root().join("config/grafana/datasources.yml");
        // Provisioning files escape `$` as `$$`.
        let text = std::fs::read_to_string(&path)?.replace("$$", "$");
        let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
        let source = file["datasources"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|d| d["uid"].as_str() == Some(uid))
            .with_context(|| format!("no datasource {uid} in {}", path.display()))?;
        let link = &source["jsonData"]["tracesToLogsV2"];
        if link["customQuery"].as_bool() != Some(true) {
            bail!("{uid}: tracesToLogsV2 has no custom query");
        }
        let shift = |key: &str| -> anyhow::Result<i64> {
            let text = link[key].as_str().unwrap_or("0s").trim_start_matches('+');
            let (negative, text) = match text.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            let secs = match text.strip_suffix('m') {
                Some(m) => m.parse::<i64>()? * 60,
                None => text.trim_end_matches('s').parse::<i64>()?,
            };
            Ok(if negative { -secs } else { secs })
        };
        Ok(TraceToLogs {
            query: link["query"]
                .as_str()
                .with_context(|| format!("{uid}: tracesToLogsV2 has no query"))?
                .to_string(),
            tags: link["tags"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|t| Some((t["key"].as_str()?.into(), t["value"].as_str()?.into())))
                .collect(),
            start_shift: shift("spanStartTimeShift")?,
            end_shift: shift("spanEndTimeShift")?,
        })
    }

    /// The LogQL Grafana sends for a span with these attributes.
    pub fn expand(&self, attributes: &[(String, String)], trace: &str, span: &str) -> String {
        let tags: Vec<String> = self
            .tags
            .iter()
            .filter_map(|(key, label)| {
                let (_, value) = attributes.iter().find(|(k, _)| k == key)?;
                Some(format!("{label}=\"{value}\""))
            })
            .collect();
        self.query
            .replace("${__tags}", &tags.join(", "))
            .replace("${__trace.traceId}", trace)
            .replace("${__span.spanId}", span)
    }

    /// Runs the link for the span `span_id` of a Jaeger-JSON trace; how many log lines it
    /// found, each checked to carry the trace's id.
    pub async fn logs(
        &self,
        client: &reqwest::Client,
        at: &Endpoints,
        trace: &Value,
        span_id: &str,
    ) -> anyhow::Result<usize> {
        let data = &trace["data"][0];
        let trace_id = data["traceID"].as_str().context("trace without traceID")?;
        let span = data["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["spanID"].as_str() == Some(span_id))
            .with_context(|| format!("no span {span_id} in trace {trace_id}"))?;
        let process = &data["processes"][span["processID"].as_str().unwrap_or_default()];
        let mut attributes = vec![(
            "service.name".to_string(),
            process["serviceName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )];
        for tag in process["tags"].as_array().into_iter().flatten() {
            if let (Some(k), Some(v)) = (tag["key"].as_str(), tag["value"].as_str()) {
                attributes.push((k.into(), v.into()));
            }
        }
        let start_us = span["startTime"]
            .as_i64()
            .context("span without startTime")?;
        let end_us = start_us + span["duration"].as_i64().unwrap_or(0);
        let query = self.expand(&attributes, trace_id, span_id);
        let answer: Value = client
            .post(format!("{}/loki/api/v1/query_range", at.query_api))
            .form(&[
                ("query", query.clone()),
                (
                    "start",
                    ((start_us / 1_000_000 + self.start_shift) * 1_000_000_000).to_string(),
                ),
                (
                    "end",
                    ((end_us / 1_000_000 + 1 + self.end_shift) * 1_000_000_000).to_string(),
                ),
                ("limit", "100".into()),
            ])
            .send()
            .await?
            .json()
            .await?;
        let streams = answer["data"]["result"]
            .as_array()
            .with_context(|| format!("{query}: {answer}"))?;
        let mut lines = 0;
        for stream in streams {
            if stream["stream"]["trace_id"].as_str() != Some(trace_id) {
                bail!("{query}: a stream of another trace: {stream}");
            }
            lines += stream["values"].as_array().map_or(0, Vec::len);
        }
        Ok(lines)
    }
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

    #[test]
    fn the_tempo_trace_to_logs_link_expands_as_grafana_does() {
        let link = TraceToLogs::provisioned("obs-tempo").unwrap();
        assert_eq!((link.start_shift, link.end_shift), (-300, 300));
        let attributes = [
            ("service.name".to_string(), "checkout".to_string()),
            ("service.version".to_string(), "1.4.2".to_string()),
        ];
        assert_eq!(
            link.expand(
                &attributes,
                "0af7651916cd43dd8448eb211c80319c",
                "b7ad6b7169203331"
            ),
            r#"{service_name="checkout"} | trace_id="0af7651916cd43dd8448eb211c80319c""#
        );
        assert_eq!(TraceToLogs::provisioned("obs-jaeger").unwrap(), link);
    }
}
