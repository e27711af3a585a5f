//! The scrape configuration: the subset of Prometheus's `scrape_configs` YAML the collector
//! understands, so an existing Prometheus configuration can be reused as it is. Unknown
//! keys are refused (a silently ignored option is worse than an error).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use obs_schemas::records::Attrs;
use serde::Deserialize;

use super::relabel::RelabelConfig;

/// The file: `global` defaults and the jobs.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScrapeFile {
    /// Defaults for every job.
    #[serde(default)]
    pub global: Global,
    /// The jobs.
    #[serde(default)]
    pub scrape_configs: Vec<Job>,
    /// Blackbox-style probe jobs.
    #[serde(default)]
    pub probe_configs: Vec<super::probe::ProbeJob>,
}

/// `global:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// How often to scrape (default 1m, as Prometheus).
    #[serde(with = "durations")]
    pub scrape_interval: Duration,
    /// How long a scrape may take (default 10s).
    #[serde(with = "durations")]
    pub scrape_timeout: Duration,
    /// Labels added to every series.
    pub external_labels: Attrs,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
            external_labels: Attrs::new(),
        }
    }
}

/// One `scrape_configs` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The `job` label.
    pub job_name: String,
    /// Overrides `global.scrape_interval`.
    #[serde(default, with = "durations::option")]
    pub scrape_interval: Option<Duration>,
    /// Overrides `global.scrape_timeout`.
    #[serde(default, with = "durations::option")]
    pub scrape_timeout: Option<Duration>,
    /// Path of the metrics page.
    #[serde(default = "default_path")]
    pub metrics_path: String,
    /// `http` or `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// Keep timestamps the target exposes (default true).
    #[serde(default = "yes")]
    pub honor_timestamps: bool,
    /// Keep target labels that clash with scraped ones (default false: scraped ones are
    /// renamed `exported_<name>`).
    #[serde(default)]
    pub honor_labels: bool,
    /// URL query parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    /// Fixed targets.
    #[serde(default)]
    pub static_configs: Vec<TargetGroup>,
    /// Targets from JSON or YAML files, re-read every `refresh_interval`.
    #[serde(default)]
    pub file_sd_configs: Vec<FileSd>,
    /// Relabelling of targets before scraping.
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Relabelling of scraped series before storing.
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Most series one scrape may return (0: no limit); past it the scrape fails.
    #[serde(default)]
    pub sample_limit: usize,
}

/// A group of targets with shared labels (`static_configs` entries and file SD content).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// `host:port` addresses.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels for these targets.
    #[serde(default)]
    pub labels: Attrs,
}

/// `file_sd_configs` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSd {
    /// Files (JSON or YAML lists of target groups); `*` in the file name matches.
    pub files: Vec<PathBuf>,
    /// How often to re-read them (default 5m).
    #[serde(default = "five_minutes", with = "durations")]
    pub refresh_interval: Duration,
}

fn default_path() -> String {
    "/metrics".into()
}
fn default_scheme() -> String {
    "http".into()
}
fn yes() -> bool {
    true
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

impl ScrapeFile {
    /// Reads and checks a scrape file.
    pub fn load(path: &Path) -> anyhow::Result<ScrapeFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the scrape config {}", path.display()))?;
        let file: ScrapeFile = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing the scrape config {}", path.display()))?;
        let mut names = std::collections::HashSet::new();
        for j in &file.scrape_configs {
            if !names.insert(j.job_name.clone()) {
                bail!(
                    "job_name {:?} appears twice in {}",
                    j.job_name,
                    path.display()
                );
            }
            if !matches!(j.scheme.as_str(), "http" | "https") {
                bail!("job {:?}: scheme must be http or https", j.job_name);
            }
            for r in j.relabel_configs.iter().chain(&j.metric_relabel_configs) {
                r.check().with_context(|| format!("job {:?}", j.job_name))?;
            }
        }
        Ok(file)
    }
}

/// Reads the target groups of one file SD file (JSON or YAML).
pub fn read_groups(path: &Path) -> anyhow::Result<Vec<TargetGroup>> {
    let text = std::fs::read_to_string(path)?;
    let groups: Vec<TargetGroup> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)?
    } else {
        serde_yaml_ng::from_str(&text)?
    };
    Ok(groups)
}

/// The files a `files` entry names (`*` allowed in the file name).
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !name.contains('*') {
        return vec![pattern.to_path_buf()];
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(prefix) && n.ends_with(suffix) && n.len() >= name.len() - 1
            })
        })
        .collect();
    out.sort();
    out
}

/// Prometheus durations (`15s`, `1m30s`, `500ms`) through serde.
pub(crate) mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// A duration from its text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("duration {s:?}: {e}")))
    }

    /// An optional duration from its text.
    pub mod option {
        use super::*;

        /// `Some` duration from its text.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_yaml_is_read() {
        let yaml = r#"
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: node
    scrape_interval: 1s
    static_configs:
      - targets: ['127.0.0.1:9100']
        labels: {env: test}
    file_sd_configs:
      - files: ['/tmp/targets.json']
        refresh_interval: 2s
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'go_.*'
        action: drop
"#;
        let f: ScrapeFile = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(f.global.scrape_interval, Duration::from_secs(15));
        let j = &f.scrape_configs[0];
        assert_eq!(j.scrape_interval, Some(Duration::from_secs(1)));
        assert_eq!(j.metrics_path, "/metrics");
        assert_eq!(j.static_configs[0].labels["env"], "test");
        assert_eq!(
            j.file_sd_configs[0].refresh_interval,
            Duration::from_secs(2)
        );
        assert!(
            serde_yaml_ng::from_str::<ScrapeFile>("scrape_configs: [{job_name: a, bogus: 1}]")
                .is_err()
        );
    }
}
