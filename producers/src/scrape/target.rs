//! One target's scrape loop: fetch the page every interval, label and relabel its samples,
//! add `up` and the other per-scrape series, write stale markers for series that went
//! away (and for everything when the target fails or is removed), publish.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use obs_schemas::records::{Attrs, Exemplar, MetricMetadata};
use tokio::sync::watch;

use super::exposition::{self, Page};
use super::relabel::Relabeller;
use crate::metrics::families::SUFFIXES;
use crate::metrics::{STALE_NAN_BITS, SeriesSet};
use crate::server::AppState;

/// What a job's targets share.
#[derive(Debug)]
pub struct JobRuntime {
    /// `job_name`.
    pub name: String,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
    /// Keep exposed timestamps.
    pub honor_timestamps: bool,
    /// Keep exposed labels that clash with target labels.
    pub honor_labels: bool,
    /// `metric_relabel_configs`.
    pub metric_relabel: Relabeller,
    /// Most series per scrape (0: no limit).
    pub sample_limit: usize,
    /// Tenant the series belong to.
    pub tenant: String,
}

/// A target after relabelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The URL scraped.
    pub url: String,
    /// Labels on every series of the target (`job`, `instance`, ...).
    pub labels: Attrs,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Scrapes `target` until `stop` turns true, then marks its series stale.
pub async fn run(
    job: Arc<JobRuntime>,
    target: Target,
    state: AppState,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder().timeout(job.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the scrape client");
            return;
        }
    };
    // Spread targets over the interval, as Prometheus does.
    let offset =
        xxhash_rust::xxh3::xxh3_64(target.url.as_bytes()) % job.interval.as_millis().max(1) as u64;
    let mut next = Instant::now() + Duration::from_millis(offset);
    let mut previous: HashMap<i64, (String, Attrs, String)> = HashMap::new();
    let mut sent_metadata: BTreeMap<String, exposition::Family> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        next += job.interval;
        while next < Instant::now() {
            next += job.interval;
        }
        let ts = now_ms();
        let started = Instant::now();
        let result = scrape(&client, &job, &target.url).await;
        let duration = started.elapsed().as_secs_f64();
        let mut batch = SeriesSet::default();
        let (report, metadata) = match result {
            Ok(page) => {
                let kept = add_page(&mut batch, &job, &target, &page, ts);
                let metadata = new_metadata(&job, &page, &mut sent_metadata);
                (
                    Report {
                        up: 1.0,
                        duration,
                        scraped: page.samples.len(),
                        kept,
                    },
                    metadata,
                )
            }
            Err(e) => {
                tracing::warn!(target = %target.url, job = %job.name, error = %e, "scrape failed");
                (
                    Report {
                        up: 0.0,
                        duration,
                        scraped: 0,
                        kept: 0,
                    },
                    vec![],
                )
            }
        };
        let done = Scrape {
            ts,
            report: Some(report),
            metadata,
        };
        publish(&state, &job, &target, &mut batch, &mut previous, done).await;
    }
    // Removed or stopped: every series of the target goes stale, `up` included.
    let mut batch = SeriesSet::default();
    let gone = Scrape {
        ts: now_ms(),
        report: None,
        metadata: vec![],
    };
    publish(&state, &job, &target, &mut batch, &mut previous, gone).await;
}

/// The per-scrape numbers Prometheus reports as series.
struct Report {
    up: f64,
    duration: f64,
    scraped: usize,
    kept: usize,
}

/// One scrape's outcome: when, its report (`None`: the target is gone) and new metadata.
struct Scrape {
    ts: i64,
    report: Option<Report>,
    metadata: Vec<MetricMetadata>,
}

async fn scrape(client: &reqwest::Client, job: &JobRuntime, url: &str) -> Result<Page, String> {
    let resp = client
        .get(url)
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", job.timeout.as_secs_f64()),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("server returned HTTP status {}", resp.status()));
    }
    let om = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(exposition::is_openmetrics);
    let text = resp.text().await.map_err(|e| e.to_string())?;
    let page = exposition::parse(&text, om)?;
    if job.sample_limit > 0 && page.samples.len() > job.sample_limit {
        return Err(format!(
            "sample limit exceeded: {} > {}",
            page.samples.len(),
            job.sample_limit
        ));
    }
    Ok(page)
}

/// Adds a page's samples with target labels and metric relabelling; the count kept.
fn add_page(
    batch: &mut SeriesSet,
    job: &JobRuntime,
    target: &Target,
    page: &Page,
    ts: i64,
) -> usize {
    let mut kept = 0;
    for s in &page.samples {
        let mut labels = s.labels.clone();
        for (k, v) in &target.labels {
            match labels.get(k) {
                Some(_) if job.honor_labels => {}
                Some(existing) => {
                    let existing = existing.clone();
                    labels.insert(format!("exported_{k}"), existing);
                    labels.insert(k.clone(), v.clone());
                }
                None => {
                    labels.insert(k.clone(), v.clone());
                }
            }
        }
        labels.insert("__name__".into(), s.name.clone());
        let labels = if job.metric_relabel.is_empty() {
            Some(labels)
        } else {
            job.metric_relabel.apply(labels)
        };
        let Some(mut labels) = labels else { continue };
        let name = labels.remove("__name__").unwrap_or_default();
        labels.retain(|k, v| !k.starts_with("__") && !v.is_empty());
        let t = if job.honor_timestamps {
            s.timestamp_ms.unwrap_or(ts)
        } else {
            ts
        };
        let kind = family_kind(page, &name);
        let series = batch.push(&job.tenant, name, labels, &kind, (t, s.value));
        if let Some((el, ev, et)) = &s.exemplar {
            series.exemplars.push(Exemplar {
                timestamp_ms: et.unwrap_or(t),
                value: *ev,
                labels: el.clone(),
            });
        }
        kept += 1;
    }
    kept
}

fn family_kind(page: &Page, name: &str) -> String {
    let kind = |n: &str| {
        page.families
            .get(n)
            .map(|f| f.kind.clone())
            .filter(|k| !k.is_empty())
    };
    kind(name)
        .or_else(|| {
            SUFFIXES
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find_map(kind)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Families whose description changed since last sent.
fn new_metadata(
    job: &JobRuntime,
    page: &Page,
    sent: &mut BTreeMap<String, exposition::Family>,
) -> Vec<MetricMetadata> {
    let mut out = Vec::new();
    for (name, f) in &page.families {
        if sent.get(name) != Some(f) {
            sent.insert(name.clone(), f.clone());
            out.push(MetricMetadata {
                tenant: job.tenant.clone(),
                name: name.clone(),
                kind: if f.kind.is_empty() {
                    "unknown".into()
                } else {
                    f.kind.clone()
                },
                help: f.help.clone(),
                unit: f.unit.clone(),
            });
        }
    }
    out
}

/// Adds the per-scrape series (none when the target is gone), stale markers for series
/// not in this scrape, and publishes.
async fn publish(
    state: &AppState,
    job: &JobRuntime,
    target: &Target,
    batch: &mut SeriesSet,
    previous: &mut HashMap<i64, (String, Attrs, String)>,
    scrape: Scrape,
) {
    let ts = scrape.ts;
    if let Some(r) = scrape.report {
        let added = batch
            .iter()
            .filter(|s| !previous.contains_key(&s.fingerprint))
            .count();
        for (name, v) in [
            ("up", r.up),
            ("scrape_duration_seconds", r.duration),
            ("scrape_samples_scraped", r.scraped as f64),
            ("scrape_samples_post_metric_relabeling", r.kept as f64),
            ("scrape_series_added", added as f64),
        ] {
            batch.push(
                &job.tenant,
                name.into(),
                target.labels.clone(),
                "gauge",
                (ts, v),
            );
        }
    }
    let current: HashMap<i64, (String, Attrs, String)> = batch
        .iter()
        .map(|s| {
            (
                s.fingerprint,
                (s.name.clone(), s.labels.clone(), s.kind.clone()),
            )
        })
        .collect();
    for (name, labels, kind) in previous
        .iter()
        .filter(|(fp, _)| !current.contains_key(fp))
        .map(|(_, v)| v.clone())
        .collect::<Vec<_>>()
    {
        let stale = f64::from_bits(STALE_NAN_BITS);
        batch.push(&job.tenant, name, labels, &kind, (ts, stale));
    }
    *previous = current;
    let mut series = std::mem::take(batch).into_series();
    let outcome = match state.guard.admit(&job.tenant, &mut series) {
        Ok(admission) => match state.publisher.metrics(series, scrape.metadata).await {
            Ok(()) => {
                state.guard.commit(admission);
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => metrics::counter!("obs_scrapes_total", "job" => job.name.clone()).increment(1),
        Err(e) => {
            metrics::counter!("obs_scrape_publish_failures_total", "job" => job.name.clone())
                .increment(1);
            tracing::warn!(job = %job.name, error = %e, "scraped samples not published");
        }
    }
}
