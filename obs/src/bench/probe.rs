//! Ingest → queryable latency under load: while a workload runs, one probe sample is sent
//! by remote write every [`EVERY`] (its own series, `obs_bench_probe{run, seq}`), and the
//! query API is asked every `poll` (`obs bench --probe-poll-ms`) which probes it returns. A probe's latency runs from
//! the moment its request is sent to the first answer holding it (so it is over by up to
//! one poll). It includes the collector's own answer time: under load a probe's
//! acknowledgement can arrive after the sample is already queryable, so timing from the
//! acknowledgement would miss most of the way.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use obs_producers::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// How often a probe sample is sent.
pub const EVERY: Duration = Duration::from_millis(250);

/// A running probe.
pub struct Probe {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<()>,
    poller: JoinHandle<Seen>,
}

/// What a probe measured.
#[derive(Default)]
pub struct Seen {
    /// Sent → visible, per probe seen.
    pub latencies: Vec<Duration>,
    /// Probes sent and accepted but never seen before the probe gave up waiting.
    pub unseen: usize,
}

/// Starts probing the collector at `collector` through the query API at `query`, asked
/// every `poll`; `run` labels this probe's series apart from every other's.
pub fn start(collector: &str, query: &str, run: &str, poll: Duration) -> Probe {
    let stop = Arc::new(AtomicBool::new(false));
    // Probes sent and not yet seen, with when they were sent.
    let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let sender = {
        let (stop, pending, client) = (stop.clone(), pending.clone(), client.clone());
        let (url, run) = (format!("{collector}/api/v1/write"), run.to_string());
        tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = probe_body(&run, seq);
                pending.lock().await.insert(seq.to_string(), Instant::now());
                let sent = crate::query_api::authorized(client.post(&url))
                    .header("Content-Type", "application/x-protobuf")
                    .header("Content-Encoding", "snappy")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body)
                    .send()
                    .await;
                if !matches!(&sent, Ok(r) if r.status().is_success()) {
                    // Refused: nothing to wait for.
                    pending.lock().await.remove(&seq.to_string());
                }
                seq += 1;
                tokio::time::sleep(EVERY).await;
            }
        })
    };
    let poller = {
        let (stop, pending) = (stop.clone(), pending.clone());
        let (query, run) = (query.to_string(), run.to_string());
        tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut stopped_at: Option<Instant> = None;
            loop {
                if stop.load(Ordering::Relaxed) {
                    let at = *stopped_at.get_or_insert_with(Instant::now);
                    if pending.lock().await.is_empty() || at.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                }
                if let Some(visible) = visible(&client, &query, &run).await {
                    let now = Instant::now();
                    let mut pending = pending.lock().await;
                    for seq in visible {
                        if let Some(at) = pending.remove(&seq) {
                            seen.latencies.push(now - at);
                        }
                    }
                }
                tokio::time::sleep(poll).await;
            }
            seen.unseen = pending.lock().await.len();
            seen
        })
    };
    Probe {
        stop,
        sender,
        poller,
    }
}

impl Probe {
    /// Stops sending and waits (at most a minute) until every acknowledged probe is seen.
    pub async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.sender.await;
        self.poller.await.unwrap_or_default()
    }
}

/// A remote-write request of one probe sample, stamped now.
fn probe_body(run: &str, seq: u64) -> Vec<u8> {
    let label = |name: &str, value: String| Label {
        name: name.into(),
        value,
    };
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                label("__name__", "obs_bench_probe".into()),
                label("run", run.into()),
                label("seq", seq.to_string()),
            ],
            samples: vec![Sample {
                value: seq as f64,
                timestamp: (super::workloads::now_ns() / 1_000_000) as i64,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}

/// The `seq` of every probe of `run` the query API returns now.
async fn visible(client: &reqwest::Client, query: &str, run: &str) -> Option<Vec<String>> {
    let promql = format!("obs_bench_probe{{run=\"{run}\"}}");
    let result = super::instant_query(client, query, &promql).await?;
    Some(
        result
            .as_array()?
            .iter()
            .filter_map(|s| Some(s["metric"]["seq"].as_str()?.to_string()))
            .collect(),
    )
}
