//! What the rule processor's end-to-end tests share: a stack whose processor evaluates a
//! given rule file, remote writes that must be accepted, live traffic, and polling
//! ClickHouse until rows are there.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::remote_write::{self, Series};
use crate::{Stack, wait_for};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A stack whose rule processor evaluates one rule file.
pub struct RulesStack {
    /// The stack.
    pub stack: Stack,
    /// The rule file.
    pub rules: PathBuf,
    /// A directory that lives as long as the stack (the rule file is in it).
    pub dir: tempfile::TempDir,
}

impl RulesStack {
    /// Writes `rules` to a file and starts a stack evaluating it, with `extra` settings.
    pub async fn start(rules: &str, extra: &[(&str, &str)]) -> RulesStack {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rules.yml");
        std::fs::write(&path, rules).expect("rule file written");
        let files = format!("[\"{}\"]", path.display());
        let mut env = vec![("OBS_PROCESSOR__RULE_FILES", files.as_str())];
        env.extend_from_slice(extra);
        let stack = Stack::start_with(&env).await.expect("stack started");
        RulesStack {
            stack,
            rules: path,
            dir,
        }
    }

    /// Remote-writes `series` to the collector; anything but 2xx fails the test.
    pub async fn write(&self, series: &[Series<'_>]) {
        let url = format!("{}/api/v1/write", self.stack.collector_url());
        let (status, text) = remote_write::post(&url, remote_write::body(series)).await;
        assert!(
            status == 204 || status == 200,
            "remote write: {status} {text}"
        );
    }

    /// Polls `sql` until `enough` says the rows are there (60 s at most).
    pub async fn rows_until<T>(
        &self,
        what: &str,
        sql: &str,
        enough: impl Fn(&[T]) -> bool,
    ) -> Vec<T>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let db = self.stack.db();
        wait_for(what, Duration::from_secs(60), || {
            let q = db.query(sql);
            let enough = &enough;
            async move {
                let rows: Vec<T> = q.fetch_all().await.ok()?;
                enough(&rows).then_some(rows)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// Live traffic: a remote-write body made for the current time, posted to each URL at a
/// fixed period until stopped. Sends that fail (a target down) are counted, not retried.
pub struct LiveWrite {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    /// Time of the newest body posted to every URL (ms).
    sent_ms: Arc<std::sync::atomic::AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl LiveWrite {
    /// Starts posting `body(now_ms)` to `urls` every `period`.
    pub fn start(
        urls: Vec<String>,
        period: Duration,
        body: impl Fn(i64) -> Vec<u8> + Send + 'static,
    ) -> LiveWrite {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let sent_ms = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let task = tokio::spawn({
            let (stop, failures, sent_ms) = (stop.clone(), failures.clone(), sent_ms.clone());
            async move {
                // The period paces the traffic; nothing waits on it.
                let mut tick = tokio::time::interval(period);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let t = now_ms();
                    let b = body(t);
                    for url in &urls {
                        let (status, _) = remote_write::post(url, b.clone()).await;
                        if status != 204 && status != 200 {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    sent_ms.store(t, Ordering::Relaxed);
                }
            }
        });
        LiveWrite {
            stop,
            failures,
            sent_ms,
            task,
        }
    }

    /// Waits until a body timestamped at or after `t_ms` has been posted to every URL.
    pub async fn sent_through(&self, t_ms: i64) {
        let timeout = Duration::from_millis((t_ms - now_ms()).max(0) as u64 + 30_000);
        wait_for("the live traffic to reach its end", timeout, || async {
            (self.sent_ms.load(Ordering::Relaxed) >= t_ms).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Stops the traffic; returns how many posts failed.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("live write task");
        self.failures.load(Ordering::Relaxed)
    }
}
