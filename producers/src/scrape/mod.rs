//! Prometheus-style scraping and blackbox probes, configured by a Prometheus-format YAML file
//! (`[collector] scrape_config`).
//!
//! In: targets from `static_configs` and `file_sd_configs` (files re-read every
//! `refresh_interval`), relabelled by `relabel_configs`. Out: their samples, labelled with
//! `job` and `instance` and relabelled by `metric_relabel_configs`, plus `up`,
//! `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling` and `scrape_series_added` per target, published
//! to `obs.metrics` like remote-written samples (same limits). A series that disappears
//! from a page, and every series of a target that fails or is removed, gets a Prometheus
//! stale marker.
//!
//! * `config`: the YAML.
//! * `relabel`: relabelling rules.
//! * `exposition`: the text format and OpenMetrics parser.
//! * `target`: one target's scrape loop.
//! * `probe`: HTTP and TCP probes.

pub mod config;
pub(crate) mod exposition;
pub mod probe;
pub mod relabel;
mod target;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use obs_schemas::records::Attrs;
use tokio::sync::watch;

use self::config::{Job, ScrapeFile, TargetGroup};
use self::relabel::Relabeller;
use self::target::{JobRuntime, Target};
use crate::server::AppState;

/// Loads the scrape file and runs every job and probe until the process ends.
pub async fn run(path: &Path, state: AppState) -> anyhow::Result<()> {
    let file = ScrapeFile::load(path)?;
    for p in &file.probe_configs {
        p.check()?;
    }
    let tenant = state.cfg.default_tenant.clone();
    let mut tasks = Vec::new();
    for job in file.scrape_configs.clone() {
        let runtime = Arc::new(JobRuntime {
            name: job.job_name.clone(),
            interval: job.scrape_interval.unwrap_or(file.global.scrape_interval),
            timeout: job
                .scrape_timeout
                .unwrap_or(file.global.scrape_timeout)
                .min(job.scrape_interval.unwrap_or(file.global.scrape_interval)),
            honor_timestamps: job.honor_timestamps,
            honor_labels: job.honor_labels,
            metric_relabel: Relabeller::new(&job.metric_relabel_configs)?,
            sample_limit: job.sample_limit,
            tenant: tenant.clone(),
        });
        let relabel = Relabeller::new(&job.relabel_configs)?;
        let external = file.global.external_labels.clone();
        tasks.push(tokio::spawn(run_job(
            job,
            runtime,
            relabel,
            external,
            state.clone(),
        )));
    }
    for p in file.probe_configs.clone() {
        tasks.push(tokio::spawn(probe::run(
            Arc::new(p),
            state.clone(),
            tenant.clone(),
        )));
    }
    tracing::info!(
        jobs = file.scrape_configs.len(),
        probes = file.probe_configs.len(),
        config = %path.display(),
        "scraping started"
    );
    for t in tasks {
        t.await.context("a scrape job ended")?;
    }
    Ok(())
}

/// The targets a job has now: static ones and those in its SD files, relabelled.
fn targets(job: &Job, relabel: &Relabeller, external: &Attrs) -> Vec<Target> {
    let mut groups: Vec<(TargetGroup, Option<String>)> = job
        .static_configs
        .iter()
        .cloned()
        .map(|g| (g, None))
        .collect();
    for sd in &job.file_sd_configs {
        for pattern in &sd.files {
            for file in config::expand(pattern) {
                match config::read_groups(&file) {
                    Ok(gs) => groups.extend(
                        gs.into_iter()
                            .map(|g| (g, Some(file.display().to_string()))),
                    ),
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "cannot read file SD targets; keeping none from it")
                    }
                }
            }
        }
    }
    let interval = job
        .scrape_interval
        .map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (group, file) in groups {
        for address in &group.targets {
            let mut labels: Attrs = group.labels.clone();
            labels.insert("__address__".into(), address.clone());
            labels.insert("__scheme__".into(), job.scheme.clone());
            labels.insert("__metrics_path__".into(), job.metrics_path.clone());
            labels.insert("__scrape_interval__".into(), interval.clone());
            labels.insert("job".into(), job.job_name.clone());
            if let Some(f) = &file {
                labels.insert("__meta_filepath".into(), f.clone());
            }
            let Some(mut labels) = relabel.apply(labels) else {
                continue;
            };
            let address = labels.get("__address__").cloned().unwrap_or_default();
            if address.is_empty() {
                continue;
            }
            let mut url = format!(
                "{}://{}{}",
                labels
                    .get("__scheme__")
                    .map(String::as_str)
                    .unwrap_or("http"),
                address,
                labels
                    .get("__metrics_path__")
                    .map(String::as_str)
                    .unwrap_or("/metrics")
            );
            let query: Vec<String> = job
                .params
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}={v}")))
                .collect();
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }
            labels.entry("instance".into()).or_insert(address);
            labels.retain(|k, v| !k.starts_with("__") && !v.is_empty());
            for (k, v) in external {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            out.push(Target { url, labels });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Keeps one scrape loop per current target of `job`, re-reading SD files as configured.
async fn run_job(
    job: Job,
    runtime: Arc<JobRuntime>,
    relabel: Relabeller,
    external: Attrs,
    state: AppState,
) {
    let refresh = job
        .file_sd_configs
        .iter()
        .map(|f| f.refresh_interval)
        .min()
        .unwrap_or(Duration::from_secs(3600));
    let mut running: HashMap<Target, watch::Sender<bool>> = HashMap::new();
    loop {
        let now: Vec<Target> = targets(&job, &relabel, &external);
        running.retain(|t, stop| {
            let keep = now.contains(t);
            if !keep {
                tracing::info!(job = %job.job_name, target = %t.url, "target removed");
                let _ = stop.send(true);
            }
            keep
        });
        for t in now {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(t) {
                let t = slot.key().clone();
                tracing::info!(job = %job.job_name, target = %t.url, "target added");
                let (tx, rx) = watch::channel(false);
                tokio::spawn(target::run(runtime.clone(), t, state.clone(), rx));
                slot.insert(tx);
            }
        }
        tokio::time::sleep(refresh).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_get_job_instance_and_relabelling() {
        let job: Job = serde_yaml_ng::from_str(
            r#"
job_name: node
static_configs:
  - targets: ['10.0.0.1:9100', '10.0.0.2:9100']
    labels: {env: prod}
relabel_configs:
  - source_labels: [__address__]
    regex: '10.0.0.2:.*'
    action: drop
  - source_labels: [env]
    target_label: stage
"#,
        )
        .unwrap();
        let relabel = Relabeller::new(&job.relabel_configs).unwrap();
        let t = targets(&job, &relabel, &Attrs::new());
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].url, "http://10.0.0.1:9100/metrics");
        let l: Vec<(&str, &str)> = t[0]
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            l,
            vec![
                ("env", "prod"),
                ("instance", "10.0.0.1:9100"),
                ("job", "node"),
                ("stage", "prod")
            ]
        );
    }
}
