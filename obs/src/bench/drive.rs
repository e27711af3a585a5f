//! The load generator: `concurrency` senders posting request bodies for a fixed time,
//! counting what was acknowledged and how long each answer took.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// One workload's collector-side numbers.
pub struct Measured {
    /// Records acknowledged (2xx).
    pub records: u64,
    /// Request bytes of the acknowledged requests.
    pub bytes: u64,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Latency of each acknowledged request.
    pub latencies: Vec<Duration>,
    /// Requests answered with anything but 2xx, or not answered.
    pub failures: u64,
}

impl Measured {
    /// Acknowledged records per second.
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile (0..=1) of request latency.
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// The `p` quantile (0..=1, nearest rank) of `values`; zero when there are none.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut l = values.to_vec();
    l.sort();
    l[((l.len() - 1) as f64 * p).round() as usize]
}

/// Posts bodies from `make(sender, request)` to `url` from `concurrency` senders for
/// `seconds`; each 2xx counts `per_request` records. With a `pace`, each sender starts a
/// request every `pace` (the senders spread evenly across it), or at once when behind.
pub async fn drive<F>(
    url: String,
    headers: &'static [(&'static str, &'static str)],
    per_request: u64,
    (concurrency, pace): (usize, Option<Duration>),
    seconds: u64,
    make: F,
) -> Measured
where
    F: Fn(usize, usize) -> Vec<u8> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|sender| {
            let (make, stop, records, bytes, failures, latencies, client, url) = (
                make.clone(),
                stop.clone(),
                records.clone(),
                bytes.clone(),
                failures.clone(),
                latencies.clone(),
                client.clone(),
                url.clone(),
            );
            tokio::spawn(async move {
                let mut request = 0;
                let mut next = tokio::time::Instant::now()
                    + pace.unwrap_or_default() * sender as u32 / concurrency as u32;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(pace) = pace {
                        tokio::time::sleep_until(next).await;
                        next = (next + pace).max(tokio::time::Instant::now());
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    let body = {
                        let make = make.clone();
                        tokio::task::spawn_blocking(move || make(sender, request))
                            .await
                            .unwrap_or_default()
                    };
                    let size = body.len() as u64;
                    let mut req = crate::query_api::authorized(client.post(&url)).body(body);
                    for (k, v) in headers {
                        req = req.header(*k, *v);
                    }
                    let t = Instant::now();
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            latencies.lock().await.push(t.elapsed());
                            records.fetch_add(per_request, Ordering::Relaxed);
                            bytes.fetch_add(size, Ordering::Relaxed);
                            request += 1;
                        }
                        Ok(r) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            eprintln!("{url}: {status} {}", text.trim());
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{url}: {e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock().await);
    Measured {
        records: records.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        elapsed,
        latencies,
        failures: failures.load(Ordering::Relaxed),
    }
}
