//! The streaming SQL queries of `[sql] queries_file`: what the SQL processor runs and the
//! sink stores. A TOML file of `[[queries]]`:
//!
//! ```toml
//! [[queries]]
//! name = "errors_per_route"        # output: topic obs.sql.errors_per_route, table sql_errors_per_route
//! topic = "obs.logs"               # obs.logs, obs.logs.ingest, obs.spans, obs.spans.sampled, obs.events, obs.metrics
//! window_ms = 60000                # window length
//! hop_ms = 60000                   # distance between window starts (default: the length, tumbling)
//! allowed_lateness_ms = 30000      # how far behind the newest record a record still counts
//! sql = "SELECT attrs['http.route'] AS route, count(*) AS errors FROM records WHERE severity_number >= 17 GROUP BY 1"
//! ```

use std::path::Path;

use anyhow::Context;
use obs_schemas::Topic;
use obs_schemas::sql_output::check_name;
use serde::Deserialize;

/// One query as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryDef {
    /// Names the output topic `obs.sql.<name>` and table `sql_<name>`.
    pub name: String,
    /// The topic whose records are the table `records`.
    pub topic: String,
    /// Window length (ms).
    pub window_ms: u64,
    /// Distance between window starts (ms); the length when absent (tumbling windows).
    pub hop_ms: Option<u64>,
    /// A record this far behind the newest record of its partition still counts (ms).
    #[serde(default)]
    pub allowed_lateness_ms: u64,
    /// The statement over `records`, run once per window.
    pub sql: String,
}

impl QueryDef {
    /// The input topic.
    pub fn input(&self) -> anyhow::Result<Topic> {
        Topic::parse(&self.topic).with_context(|| format!("query {}", self.name))
    }

    /// The hop (ms).
    pub fn hop(&self) -> u64 {
        self.hop_ms.unwrap_or(self.window_ms)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueriesFile {
    #[serde(default)]
    queries: Vec<QueryDef>,
}

/// The queries of `path` (none for an empty path), checked: names, topics, windows.
pub fn load(path: &str) -> anyhow::Result<Vec<QueryDef>> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(Path::new(path))
        .with_context(|| format!("reading [sql] queries_file {path}"))?;
    parse(&text).with_context(|| format!("in [sql] queries_file {path}"))
}

/// The queries of a file's text, checked.
pub fn parse(text: &str) -> anyhow::Result<Vec<QueryDef>> {
    let file: QueriesFile = toml::from_str(text)?;
    let mut names = std::collections::HashSet::new();
    for q in &file.queries {
        check_name("the query name", &q.name)?;
        anyhow::ensure!(
            names.insert(q.name.clone()),
            "two queries are named {}",
            q.name
        );
        q.input()?;
        anyhow::ensure!(
            q.window_ms > 0 && q.hop() > 0 && q.window_ms % q.hop() == 0,
            "query {}: window_ms ({}) must be positive and a multiple of hop_ms ({})",
            q.name,
            q.window_ms,
            q.hop()
        );
    }
    Ok(file.queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked() {
        let ok = parse(
            r#"
            [[queries]]
            name = "errors"
            topic = "logs"
            window_ms = 60000
            sql = "SELECT count(*) AS n FROM records"
            "#,
        )
        .unwrap();
        assert_eq!(ok[0].input().unwrap(), Topic::Logs);
        assert_eq!((ok[0].hop(), ok[0].allowed_lateness_ms), (60_000, 0));
        for (bad, why) in [
            (
                "name = \"a-b\"\ntopic = \"logs\"\nwindow_ms = 1\nsql = \"\"",
                "not a name",
            ),
            (
                "name = \"a\"\ntopic = \"nope\"\nwindow_ms = 1\nsql = \"\"",
                "unknown topic",
            ),
            (
                "name = \"a\"\ntopic = \"logs\"\nwindow_ms = 5\nhop_ms = 2\nsql = \"\"",
                "multiple",
            ),
        ] {
            let e = format!("{:#}", parse(&format!("[[queries]]\n{bad}")).unwrap_err());
            assert!(e.contains(why), "{e}");
        }
        assert!(load("").unwrap().is_empty());
    }
}
