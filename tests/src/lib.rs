//! The harness for end-to-end tests: every test starts its own real stack on free loopback
//! ports — the tansu broker (sqlite storage), the ClickHouse HTTP endpoint over chDB, and the
//! `obs` binary — and stops it when dropped. Nothing is mocked.
//!
//! Where the parts come from (`scripts/stack test` sets all three):
//! * `OBS_TANSU_BIN`: the tansu binary (else `tansu` on PATH);
//! * `OBS_PYTHON`: a Python with chdb and the OpenTelemetry SDK (else `python3`);
//! * `OBS_BIN`: the `obs` binary (else the one next to the test binary's target dir).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

pub mod alertmanager;
pub mod dashboards;
pub mod load;
pub mod prometheus;
pub mod promql_demo;
pub mod remote_write;
pub mod rules;
pub mod tls;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A whole second ten minutes ago, in ns: a fixed-looking test time that stays inside the
/// tables' TTLs whatever the date (tests never depend on the calendar).
pub fn recent_whole_second_ns() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    (now - 600) * 1_000_000_000
}

/// `ns` since the epoch as RFC 3339 in UTC with milliseconds (`YYYY-MM-DDThh:mm:ss.mmmZ`).
pub fn rfc3339_ms(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Lowest port [`free_port`] hands out.
const TEST_PORTS_FROM: u32 = 20_000;
/// How many ports [`free_port`] chooses from: all below Linux's ephemeral range (32768 and
/// up), which outgoing connections take their local ports from.
const TEST_PORTS: u32 = 12_000;

/// A port nothing listens on right now. It is below the kernel's ephemeral range: a port
/// the kernel handed out (binding port 0) could be taken by any outgoing connection while
/// a test restarts the process listening on it (seen: "Address already in use" when a
/// SIGKILLed processor came back). Each test process starts at its own pseudo-random
/// place in the range, so concurrent tests rarely try the same ports.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(2_654_435_761) ^ nanos) % TEST_PORTS
    });
    for _ in 0..TEST_PORTS {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (TEST_PORTS_FROM + (start + n) % TEST_PORTS) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port in {TEST_PORTS_FROM}..{}",
        TEST_PORTS_FROM + TEST_PORTS
    )
}

/// The Python interpreter with the test dependencies.
pub fn python() -> PathBuf {
    std::env::var_os("OBS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into())
}

/// Runs one of `tests/python/` (a sender built on a client we did not write) with `args`
/// and parses the JSON line per sent item it prints; fails the test with its stderr if it
/// fails.
pub fn run_python_sender<T: serde::de::DeserializeOwned>(script: &str, args: &[&str]) -> Vec<T> {
    let out = Command::new(python())
        .arg(repo_root().join("tests/python").join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn tansu_bin() -> PathBuf {
    std::env::var_os("OBS_TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "tansu".into())
}

/// The `obs` binary under test.
pub fn obs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OBS_BIN") {
        return p.into();
    }
    // target/debug/deps/<test> → target/debug/obs
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("obs"))
        .expect("target dir")
}

/// Waits until `url` answers 2xx (60 s at most); failing, the error names `what` and holds
/// the end of `proc`'s log.
pub async fn wait_answering(url: &str, what: &str, proc: &Proc) -> anyhow::Result<()> {
    let ready = wait_for(
        &format!("{what} to be ready"),
        Duration::from_secs(60),
        || async {
            let r = http(5).get(url).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    ready.map_err(|e| anyhow::anyhow!("{e}\n{}", proc.log_tail()))
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        // A check that hangs must not outlive the deadline either.
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        if let Ok(Some(v)) = tokio::time::timeout(remaining, check()).await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `[auth]` stores of a secret: its SHA-256, hex (computed here, not by obs).
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// The `/metrics` text of the listener at `base` (a stage's ops address).
/// The value of the line of a `/metrics` page that is exactly `series` (name and labels).
fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_page(base: &str) -> anyhow::Result<String> {
    Ok(http(10)
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// An HTTP client whose requests fail after `secs` instead of hanging a test.
pub fn http(secs: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(secs))
        .build()
        .expect("HTTP client")
}

/// The end offset (high watermark) of each partition of `topic`, in partition order.
fn end_offsets(client: &rdkafka::consumer::BaseConsumer, topic: &str) -> anyhow::Result<Vec<i64>> {
    use rdkafka::consumer::Consumer;
    let timeout = Duration::from_secs(10);
    let partitions = client
        .fetch_metadata(Some(topic), timeout)?
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .context("no such topic")?;
    (0..partitions)
        .map(|p| Ok(client.fetch_watermarks(topic, p, timeout)?.1))
        .collect()
}

/// Whether `url` answers 2xx through `client`.
async fn ok(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A child process that is killed when dropped; its output goes to a log file.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with its stdout and stderr in `dir/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = File::options().create(true).append(true).open(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.into(),
            child,
            log,
        })
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with SIGTERM (a clean shutdown) and waits up to `timeout` for it
    /// to exit, then kills it.
    pub async fn terminate(&mut self, timeout: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let exited = wait_for("a clean exit", timeout, || {
            let done = self.exited();
            async move { done.then_some(()) }
        })
        .await;
        if exited.is_err() {
            self.kill();
        }
    }

    /// The exit code, once the process has ended (`None` while running or if killed by a
    /// signal).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    /// Whether the process has ended.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(tail_lines())..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        self.kill();
    }
}

/// The tansu broker with durable sqlite storage in its own directory.
pub struct Broker {
    /// Kafka port.
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
    /// With a secured front: tansu's own (plain) port and what the front requires.
    front: Option<(u16, KafkaFront)>,
    front_proc: Option<Proc>,
}

/// What the test broker's front (tests/python/kafka_front.py) requires of clients.
#[derive(Debug, Clone)]
pub struct KafkaFront {
    /// TLS with this certificate.
    pub cert: tls::ServerCert,
    /// SASL/SCRAM-SHA-256 as this user and password.
    pub user: (String, String),
}

impl Broker {
    /// Starts a broker storing in `dir`, waiting until it accepts connections.
    pub async fn start(dir: &Path) -> anyhow::Result<Broker> {
        let mut b = Broker {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
            front: None,
            front_proc: None,
        };
        b.restart().await?;
        Ok(b)
    }

    /// Starts a broker that clients reach only over TLS and SASL/SCRAM-SHA-256 (`front`):
    /// tansu listens on a port of its own and advertises the port of a front that requires
    /// both (tests/python/kafka_front.py; tansu 0.6 can do neither for librdkafka).
    pub async fn start_secured(dir: &Path, front: KafkaFront) -> anyhow::Result<Broker> {
        let mut b = Broker {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
            front: Some((free_port(), front)),
            front_proc: None,
        };
        b.restart().await?;
        Ok(b)
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (its storage stays).
    pub fn stop(&mut self) {
        for p in [self.proc.take(), self.front_proc.take()]
            .iter_mut()
            .flatten()
        {
            p.kill();
        }
    }

    /// Starts the broker again on the same port and storage.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let listen = match &self.front {
            Some((own, front)) => {
                let mut cmd = Command::new(python());
                cmd.arg(repo_root().join("tests/python/kafka_front.py"))
                    .args(["--listen", &self.port.to_string(), "--to", &own.to_string()])
                    .arg("--cert")
                    .arg(&front.cert.cert)
                    .arg("--key")
                    .arg(&front.cert.key)
                    .args(["--user", &front.user.0, "--password", &front.user.1]);
                self.front_proc = Some(Proc::spawn("kafka-front", cmd, &self.dir)?);
                format!("tcp://127.0.0.1:{own}")
            }
            None => url.clone(),
        };
        let mut cmd = Command::new(tansu_bin());
        cmd.args([
            "broker",
            "--listener-url",
            &listen,
            "--advertised-listener-url",
            &url,
        ])
        .arg("--storage-engine")
        .arg(format!("sqlite:///{}", self.dir.join("tansu.db").display()));
        self.proc = Some(Proc::spawn("tansu", cmd, &self.dir)?);
        let ports = [Some(self.port), self.front.as_ref().map(|t| t.0)];
        wait_for("tansu to listen", Duration::from_secs(30), || async move {
            ports.iter().flatten().all(|p| port_open(*p)).then_some(())
        })
        .await
    }
}

/// The ClickHouse HTTP endpoint over chDB (tools/chdb-http/server.py).
pub struct ClickHouse {
    /// HTTP port.
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
    /// A server configuration file (clusters, macros) the engine starts with.
    config_file: Option<PathBuf>,
    /// Served over HTTPS with this certificate, trusted by this client.
    tls: Option<(tls::ServerCert, reqwest::Client)>,
}

impl ClickHouse {
    /// Starts the endpoint with its data in `dir`, waiting for `/ping`.
    pub async fn start(dir: &Path) -> anyhow::Result<ClickHouse> {
        let mut ch = ClickHouse {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
            config_file: None,
            tls: None,
        };
        ch.restart().await?;
        Ok(ch)
    }

    /// Starts the endpoint with a ClickHouse server configuration (`config_xml`, e.g.
    /// `remote_servers` and `macros`) written into `dir`.
    pub async fn start_configured(dir: &Path, config_xml: &str) -> anyhow::Result<ClickHouse> {
        let config_file = dir.join("clickhouse-config.xml");
        std::fs::write(&config_file, config_xml)?;
        let mut ch = ClickHouse {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
            config_file: Some(config_file),
            tls: None,
        };
        ch.restart().await?;
        Ok(ch)
    }

    /// Starts the endpoint serving HTTPS with a certificate `ca` signs.
    pub async fn start_tls(dir: &Path, ca: &tls::TestCa) -> anyhow::Result<ClickHouse> {
        let mut ch = ClickHouse {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
            config_file: None,
            tls: Some((ca.issue("clickhouse")?, ca.client(5))),
        };
        ch.restart().await?;
        Ok(ch)
    }

    /// Stops the endpoint (SIGKILL); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the endpoint again on the same port and data, waiting for `/ping`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("tools/chdb-http/server.py"))
            .arg("--path")
            .arg(self.dir.join("clickhouse"))
            .args(["--port", &self.port.to_string()]);
        if let Some(config) = &self.config_file {
            cmd.arg("--config-file").arg(config);
        }
        if let Some((cert, _)) = &self.tls {
            cmd.arg("--tls-cert").arg(&cert.cert);
            cmd.arg("--tls-key").arg(&cert.key);
        }
        self.proc = Some(Proc::spawn("clickhouse", cmd, &self.dir)?);
        let url = format!("{}/ping", self.url());
        let client = self.tls.as_ref().map_or_else(|| http(5), |t| t.1.clone());
        wait_for("ClickHouse endpoint /ping", Duration::from_secs(60), || {
            let (url, client) = (url.clone(), client.clone());
            async move { ok(&client, &url).await.then_some(()) }
        })
        .await
    }

    /// Base URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A `clickhouse` crate client with its defaults (LZ4, validation).
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default().with_url(self.url())
    }
}

/// The SCRAM user and password of a [`Stack::start_tls`] broker.
pub const KAFKA_USER: (&str, &str) = ("obs-pipeline", "kafka-secret");

/// Ports of one `obs up`.
#[derive(Debug, Clone, Copy)]
pub struct ObsPorts {
    /// Schema registry.
    pub registry: u16,
    /// Collector main listener.
    pub collector: u16,
    /// Collector OTLP/HTTP listener.
    pub otlp_http: u16,
    /// Collector Zipkin listener.
    pub zipkin: u16,
    /// Collector OTLP/gRPC listener.
    pub otlp_grpc: u16,
    /// Sink ops.
    pub sink: u16,
    /// Query API.
    pub query: u16,
    /// Processor ops and rule API.
    pub processor: u16,
}

/// A whole local stack: broker, ClickHouse and `obs up`.
pub struct Stack {
    /// The broker (tests may stop and restart it).
    pub broker: Broker,
    /// The ClickHouse endpoint.
    pub clickhouse: ClickHouse,
    /// The pipeline's ports.
    pub ports: ObsPorts,
    obs: Proc,
    /// The exit code of the `obs up` process stopped by the last restart.
    last_obs_exit: Option<i32>,
    sink: Option<Proc>,
    separate_sink: bool,
    processor: Option<Proc>,
    separate_processor: bool,
    env: Vec<(String, String)>,
    /// `https` when every listener serves TLS, else `http`.
    scheme: &'static str,
    /// A client for the stack's listeners (trusting the test CA under TLS).
    client: reqwest::Client,
    dir: TempDir,
}

/// How a test stops `obs up` before starting it again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// SIGTERM: a clean shutdown.
    Term,
    /// SIGKILL: a crash.
    Kill,
}

impl Drop for Stack {
    /// A failed test keeps its stack's directory (logs, broker and ClickHouse data) for a
    /// post-mortem and says where it is.
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(empty) = tempfile::tempdir()
        {
            let kept = std::mem::replace(&mut self.dir, empty).keep();
            eprintln!(
                "the failed test's stack directory is kept: {}",
                kept.display()
            );
        }
    }
}

impl Stack {
    /// Starts everything with default settings.
    pub async fn start() -> anyhow::Result<Stack> {
        Stack::start_with(&[]).await
    }

    /// Starts everything, with extra `OBS_*` settings for the pipeline.
    pub async fn start_with(env: &[(&str, &str)]) -> anyhow::Result<Stack> {
        Stack::start_inner(env, false, false).await
    }

    /// Starts everything speaking TLS with certificates `ca` signs: every listener of `obs
    /// up` (`[tls]`, reloaded every second), ClickHouse over HTTPS and the broker behind a
    /// front requiring TLS and SASL/SCRAM-SHA-256 ([`KAFKA_USER`]); the stages trust `ca`
    /// (`[tls] ca_file`, `[kafka] ssl_ca_file`) and log in to Kafka (`[kafka] sasl_*`).
    pub async fn start_tls(ca: &tls::TestCa, env: &[(&str, &str)]) -> anyhow::Result<Stack> {
        match Stack::try_start(env, false, false, true, Some(ca)).await {
            Ok(stack) => Ok(stack),
            Err(e) => {
                eprintln!("stack start failed, retrying once on new ports: {e:#}");
                Stack::try_start(env, false, false, true, Some(ca)).await
            }
        }
    }

    /// Starts everything with the sink as its own process (`obs sink`), so tests can kill it.
    pub async fn start_with_separate_sink(env: &[(&str, &str)]) -> anyhow::Result<Stack> {
        Stack::start_inner(env, true, false).await
    }

    /// Starts everything with the stream processors as their own process (`obs
    /// processor`), so tests can kill them.
    pub async fn start_with_separate_processor(env: &[(&str, &str)]) -> anyhow::Result<Stack> {
        Stack::start_inner(env, false, true).await
    }

    /// Starts the broker, ClickHouse and `obs up` without sink and processor: the test
    /// starts those itself ([`Stack::spawn_member`]), as many instances as it wants.
    pub async fn start_without_sink_and_processor(env: &[(&str, &str)]) -> anyhow::Result<Stack> {
        match Stack::try_start(env, true, true, false, None).await {
            Ok(stack) => Ok(stack),
            Err(e) => {
                eprintln!("stack start failed, retrying once on new ports: {e:#}");
                Stack::try_start(env, true, true, false, None).await
            }
        }
    }

    /// Starts one more pipeline process, `obs <command>`, with the stack's settings plus
    /// `extra` (a second collector on other ports, sink instance 2 of 3, ...), and waits
    /// until `/readyz` on `ready_port` answers.
    pub async fn spawn_member(
        &self,
        name: &str,
        command: &str,
        extra: &[(String, String)],
        ready_port: u16,
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(obs_bin());
        cmd.arg(command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().map(|(k, v)| (k, v)));
        let proc = Proc::spawn(name, cmd, self.dir.path())?;
        let url = format!("{}://127.0.0.1:{ready_port}/readyz", self.scheme);
        let ready = wait_for(
            &format!("{name} to be ready"),
            Duration::from_secs(60),
            || {
                let (url, client) = (url.clone(), self.client.clone());
                async move { ok(&client, &url).await.then_some(()) }
            },
        )
        .await;
        if let Err(e) = ready {
            bail!("{e}\n{}", proc.log_tail());
        }
        Ok(proc)
    }

    async fn start_inner(
        extra: &[(&str, &str)],
        separate_sink: bool,
        separate_processor: bool,
    ) -> anyhow::Result<Stack> {
        // A port found free can be taken by a parallel test before our process binds it:
        // one more try on fresh ports, saying why.
        match Stack::try_start(extra, separate_sink, separate_processor, true, None).await {
            Ok(stack) => Ok(stack),
            Err(e) => {
                eprintln!("stack start failed, retrying once on new ports: {e:#}");
                Stack::try_start(extra, separate_sink, separate_processor, true, None).await
            }
        }
    }

    async fn try_start(
        extra: &[(&str, &str)],
        separate_sink: bool,
        separate_processor: bool,
        start_separate: bool,
        ca: Option<&tls::TestCa>,
    ) -> anyhow::Result<Stack> {
        let dir = tempfile::Builder::new().prefix("obs-e2e-").tempdir()?;
        let (broker, clickhouse, scheme, client, mut tls_env) = match ca {
            None => {
                let (b, c) =
                    tokio::try_join!(Broker::start(dir.path()), ClickHouse::start(dir.path()))?;
                (b, c, "http", http(5), Vec::new())
            }
            Some(ca) => {
                let (obs, kafka) = (ca.issue("obs")?, ca.issue("kafka")?);
                let front = KafkaFront {
                    cert: kafka,
                    user: (KAFKA_USER.0.into(), KAFKA_USER.1.into()),
                };
                let (b, c) = tokio::try_join!(
                    Broker::start_secured(dir.path(), front),
                    ClickHouse::start_tls(dir.path(), ca)
                )?;
                let ca_file = ca.ca_file().display().to_string();
                let env: Vec<(String, String)> = vec![
                    ("OBS_TLS__CERT_FILE".into(), obs.cert.display().to_string()),
                    ("OBS_TLS__KEY_FILE".into(), obs.key.display().to_string()),
                    ("OBS_TLS__CA_FILE".into(), ca_file.clone()),
                    ("OBS_TLS__RELOAD_SECS".into(), "1".into()),
                    ("OBS_KAFKA__SECURITY_PROTOCOL".into(), "sasl_ssl".into()),
                    ("OBS_KAFKA__SSL_CA_FILE".into(), ca_file),
                    ("OBS_KAFKA__SASL_MECHANISM".into(), "SCRAM-SHA-256".into()),
                    ("OBS_KAFKA__SASL_USERNAME".into(), KAFKA_USER.0.into()),
                    ("OBS_KAFKA__SASL_PASSWORD".into(), KAFKA_USER.1.into()),
                ];
                (b, c, "https", ca.client(5), env)
            }
        };
        let ports = ObsPorts {
            registry: free_port(),
            collector: free_port(),
            otlp_http: free_port(),
            zipkin: free_port(),
            otlp_grpc: free_port(),
            sink: free_port(),
            query: free_port(),
            processor: free_port(),
        };
        let mut env: Vec<(String, String)> = vec![
            ("RUST_LOG".into(), "info".into()),
            ("OBS_KAFKA__BROKERS".into(), broker.bootstrap()),
            (
                "OBS_REGISTRY__URL".into(),
                format!("{scheme}://127.0.0.1:{}", ports.registry),
            ),
            (
                "OBS_REGISTRY__LISTEN".into(),
                format!("127.0.0.1:{}", ports.registry),
            ),
            (
                "OBS_REGISTRY__DATA_DIR".into(),
                dir.path().join("registry").display().to_string(),
            ),
            ("OBS_CLICKHOUSE__URL".into(), clickhouse.url()),
            (
                "OBS_COLLECTOR__LISTEN".into(),
                format!("127.0.0.1:{}", ports.collector),
            ),
            (
                "OBS_COLLECTOR__OTLP_HTTP_LISTEN".into(),
                format!("127.0.0.1:{}", ports.otlp_http),
            ),
            (
                "OBS_COLLECTOR__OTLP_GRPC_LISTEN".into(),
                format!("127.0.0.1:{}", ports.otlp_grpc),
            ),
            (
                "OBS_COLLECTOR__ZIPKIN_LISTEN".into(),
                format!("127.0.0.1:{}", ports.zipkin),
            ),
            (
                "OBS_SINK__LISTEN".into(),
                format!("127.0.0.1:{}", ports.sink),
            ),
            ("OBS_SINK__BATCH_MAX_WAIT_MS".into(), "200".into()),
            (
                "OBS_QUERY__LISTEN".into(),
                format!("127.0.0.1:{}", ports.query),
            ),
            (
                "OBS_PROCESSOR__LISTEN".into(),
                format!("127.0.0.1:{}", ports.processor),
            ),
            (
                "OBS_QUERY__RULES_URL".into(),
                format!("{scheme}://127.0.0.1:{}", ports.processor),
            ),
        ];
        env.append(&mut tls_env);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let obs = spawn_obs(&env, separate_sink, separate_processor, dir.path())?;
        let mut stack = Stack {
            broker,
            clickhouse,
            ports,
            obs,
            last_obs_exit: None,
            sink: None,
            separate_sink,
            processor: None,
            separate_processor,
            env,
            scheme,
            client,
            dir,
        };
        stack.wait_obs_ready().await?;
        if separate_sink && start_separate {
            stack.start_sink().await?;
        }
        if separate_processor && start_separate {
            stack.start_processor().await?;
        }
        Ok(stack)
    }

    /// Waits until every listener of `obs up` answers `/readyz`.
    async fn wait_obs_ready(&self) -> anyhow::Result<()> {
        for port in [self.ports.collector, self.ports.query, self.ports.registry] {
            self.wait_ready(port).await?;
        }
        if !self.separate_processor {
            self.wait_ready(self.ports.processor).await?;
        }
        if !self.separate_sink {
            self.wait_ready(self.ports.sink).await?;
        }
        Ok(())
    }

    /// Stops `obs up` (`how`) and starts it again with the same settings, waiting until it
    /// is ready.
    pub async fn restart_obs(&mut self, how: Stop) -> anyhow::Result<()> {
        self.stop_obs(how).await;
        self.obs = spawn_obs(
            &self.env,
            self.separate_sink,
            self.separate_processor,
            self.dir.path(),
        )?;
        self.wait_obs_ready().await
    }

    async fn stop_obs(&mut self, how: Stop) {
        match how {
            Stop::Term => self.obs.terminate(Duration::from_secs(30)).await,
            Stop::Kill => self.obs.kill(),
        }
        self.last_obs_exit = self.obs.exit_code();
    }

    /// Stops everything as `scripts/stack down` does (`obs` with SIGTERM, then the broker
    /// and ClickHouse) and starts it all again on the same ports and data.
    pub async fn restart_all(&mut self) -> anyhow::Result<()> {
        self.stop_obs(Stop::Term).await;
        self.clickhouse.stop();
        self.broker.stop();
        let (broker, clickhouse) = (&mut self.broker, &mut self.clickhouse);
        tokio::try_join!(broker.restart(), clickhouse.restart())?;
        self.obs = spawn_obs(
            &self.env,
            self.separate_sink,
            self.separate_processor,
            self.dir.path(),
        )?;
        self.wait_obs_ready().await
    }

    /// The exit code of the `obs up` process the last restart stopped (`None` if it was
    /// killed by a signal).
    pub fn last_obs_exit_code(&self) -> Option<i32> {
        self.last_obs_exit
    }

    async fn wait_ready(&self, port: u16) -> anyhow::Result<()> {
        let url = format!("{}://127.0.0.1:{port}/readyz", self.scheme);
        let ready = wait_for("obs to be ready", Duration::from_secs(60), || {
            let (url, client) = (url.clone(), self.client.clone());
            async move { ok(&client, &url).await.then_some(()) }
        })
        .await;
        if let Err(e) = ready {
            let sink = self.sink.as_ref().map(Proc::log_tail).unwrap_or_default();
            bail!("{e}\n{}\n{sink}", self.obs.log_tail());
        }
        Ok(())
    }

    /// Starts the separate sink process (`obs sink`) and waits until it is ready.
    pub async fn start_sink(&mut self) -> anyhow::Result<()> {
        self.start_sink_with(&[]).await
    }

    /// Starts the separate sink process with extra environment variables.
    pub async fn start_sink_with(&mut self, extra: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut cmd = Command::new(obs_bin());
        cmd.arg("sink")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied());
        self.sink = Some(Proc::spawn("sink", cmd, self.dir.path())?);
        self.wait_ready(self.ports.sink).await
    }

    /// Starts the separate processor process (`obs processor`) and waits until it is ready.
    pub async fn start_processor(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(obs_bin());
        cmd.arg("processor")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.processor = Some(Proc::spawn("processor", cmd, self.dir.path())?);
        self.wait_ready(self.ports.processor).await
    }

    /// Kills the separate processor process with SIGKILL, whatever it is doing.
    pub fn kill_processor(&mut self) {
        if let Some(mut p) = self.processor.take() {
            p.kill();
        }
    }

    /// SIGKILLs the separate processor and starts it again, panicking with its log (and
    /// `what` was being done) if it does not come back.
    pub async fn crash_processor(&mut self, what: &str) {
        self.kill_processor();
        if let Err(e) = self.start_processor().await {
            panic!("restart {what}: {e:#}\n{}", self.processor_log());
        }
    }

    /// A value of the sink's `/metrics` (of `obs up`, or of the separate sink): the line
    /// that is exactly `series` (name and labels) followed by its value.
    pub async fn sink_metric(&self, series: &str) -> Option<f64> {
        series_value(&self.sink_metrics().await.ok()?, series)
    }

    /// A value of the query API's `/metrics`, as [`Stack::sink_metric`] reads the sink's
    /// (`None` also when the series has not been counted yet).
    pub async fn query_metric(&self, series: &str) -> Option<f64> {
        series_value(&metrics_page(&self.query_url()).await.ok()?, series)
    }

    /// A value of the separate processor's `/metrics` (the first line starting with
    /// `name`), 0 when it has no such line, `None` when it does not answer.
    pub async fn processor_metric(&self, name: &str) -> Option<f64> {
        let text = metrics_page(&format!("http://127.0.0.1:{}", self.ports.processor))
            .await
            .ok()?;
        Some(
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0),
        )
    }

    /// The separate processor's log.
    pub fn processor_log(&self) -> String {
        self.processor
            .as_ref()
            .map(Proc::log_tail)
            .unwrap_or_default()
    }

    /// Whether the separate sink process has exited (e.g. at a failpoint).
    pub fn sink_exited(&mut self) -> bool {
        self.sink.as_mut().is_none_or(Proc::exited)
    }

    /// Kills the separate sink process with SIGKILL, whatever it is doing.
    pub fn kill_sink(&mut self) {
        if let Some(mut p) = self.sink.take() {
            p.kill();
        }
    }

    /// The collector's OTLP/HTTP logs URL.
    pub fn otlp_logs_url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}/v1/logs",
            self.scheme, self.ports.otlp_http
        )
    }

    /// Posts OTLP/JSON log records (`logRecords` entries) of one service and scope to the
    /// collector and checks they were accepted.
    pub async fn post_otlp_logs(
        &self,
        service: &str,
        scope: &str,
        records: Vec<serde_json::Value>,
    ) {
        let body = serde_json::json!({"resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeLogs": [{"scope": {"name": scope}, "logRecords": records}]
        }]});
        let r = http(30)
            .post(self.otlp_logs_url())
            .json(&body)
            .send()
            .await
            .expect("the collector answers");
        assert!(r.status().is_success(), "OTLP logs refused: {}", r.status());
    }

    /// The base URL of the listener on `port` (`https://` under TLS).
    pub fn url_of(&self, port: u16) -> String {
        format!("{}://127.0.0.1:{port}", self.scheme)
    }

    /// The `OBS_*` settings `obs up` runs with.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// A client for the stack's listeners (trusting the test CA under TLS).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The collector's main listener, e.g. `http://127.0.0.1:8080`.
    pub fn collector_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.ports.collector)
    }

    /// The stack's scratch directory (logs, data), removed when the stack is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `obs <args>` against this stack (same configuration) and returns its output.
    pub fn run_obs(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        self.run_obs_with(args, &[])
    }

    /// [`Stack::run_obs`] with extra `OBS_*` settings over the stack's.
    pub fn run_obs_with(
        &self,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<std::process::Output> {
        Command::new(obs_bin())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            .env("RUST_LOG", "warn")
            .output()
            .with_context(|| format!("running obs {args:?}"))
    }

    /// Every letter on `obs.dlq` (read from the start by a fresh group), decoded with the
    /// Kafka key it was published under: waits up to `first` for one, then takes more until
    /// none comes for `quiet` (so a test can assert there is exactly the one it expects).
    pub async fn dead_letters(
        &self,
        first: Duration,
        quiet: Duration,
    ) -> anyhow::Result<Vec<(Option<Vec<u8>>, obs_schemas::records::DeadLetter)>> {
        self.read_topic(obs_schemas::Topic::Dlq.name(), first, quiet)
            .await
    }

    /// Every message of Avro topic `topic` (read from the start by a fresh group, decoded
    /// with the registry) with its Kafka key: waits up to `first` for one, then takes more
    /// until none comes for `quiet`.
    pub async fn read_topic<T: serde::de::DeserializeOwned>(
        &self,
        topic: &str,
        first: Duration,
        quiet: Duration,
    ) -> anyhow::Result<Vec<(Option<Vec<u8>>, T)>> {
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use rdkafka::message::Message;
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            .set("group.id", format!("topic-reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[topic])?;
        let codec =
            obs_schemas::wire::Codec::new(&format!("http://127.0.0.1:{}", self.ports.registry));
        let mut out = Vec::new();
        let mut wait = first;
        while let Ok(msg) = tokio::time::timeout(wait, consumer.recv()).await {
            let msg = msg?;
            let value = codec.decode(msg.payload().unwrap_or_default()).await?;
            out.push((msg.key().map(<[u8]>::to_vec), value));
            wait = quiet;
        }
        anyhow::ensure!(!out.is_empty(), "no message on {topic} within {first:?}");
        Ok(out)
    }

    /// How many messages `topic` has ever had: the sum of its partitions' end offsets.
    pub fn messages_on(&self, topic: &str) -> anyhow::Result<i64> {
        let client: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            .create()?;
        Ok(end_offsets(&client, topic)?.iter().sum())
    }

    /// The registry's latest version of `subject` (`{"subject", "version", "id", "schema"}`).
    pub async fn latest_schema(&self, subject: &str) -> serde_json::Value {
        http(30)
            .get(format!(
                "http://127.0.0.1:{}/subjects/{subject}/versions/latest",
                self.ports.registry
            ))
            .send()
            .await
            .expect("the registry answers")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// The collector's `/metrics` text.
    pub async fn collector_metrics(&self) -> anyhow::Result<String> {
        metrics_page(&self.collector_url()).await
    }

    /// The sink's `/metrics` text (of `obs up`, or of the separate sink).
    pub async fn sink_metrics(&self) -> anyhow::Result<String> {
        metrics_page(&format!("http://127.0.0.1:{}", self.ports.sink)).await
    }

    /// Waits until the sinks of `table` have stored everything published on their topics
    /// before this call: each sink's consumer group has committed, on every partition, at
    /// least the high watermark read at the call (a sink commits only after the insert). A
    /// count taken then is final for what came before: a missing record is provably not
    /// coming. (A table can have several sinks: `otel_traces` from `obs.spans` and from
    /// `obs.spans.sampled`.)
    pub async fn wait_sink_caught_up(&self, table: &str) -> anyhow::Result<()> {
        // Each sink of the table names its topic and group in its lag metric.
        let label = format!("table=\"{table}\"");
        let sinks = wait_for(
            &format!("the {table} sink's lag metric"),
            Duration::from_secs(60),
            || {
                let label = label.clone();
                async move {
                    let text = self.sink_metrics().await.ok()?;
                    let found = lag_groups(&text, &label);
                    (!found.is_empty()).then_some(found)
                }
            },
        )
        .await?;
        self.wait_groups_caught_up(&sinks).await
    }

    /// Waits until each `(topic, group)` has committed, on every partition of the topic, at
    /// least the partition's high watermark as read now: the group's lag as of this call is
    /// 0 (messages produced later do not count).
    pub async fn wait_groups_caught_up(
        &self,
        groups: &std::collections::BTreeSet<(String, String)>,
    ) -> anyhow::Result<()> {
        use rdkafka::ClientConfig;
        use rdkafka::consumer::BaseConsumer;
        let brokers = self
            .env
            .iter()
            .find(|(k, _)| k == "OBS_KAFKA__BROKERS")
            .map(|(_, v)| v.clone())
            .context("no broker address")?;
        let timeout = Duration::from_secs(10);
        for (topic, group) in groups {
            let client: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .create()?;
            let high = end_offsets(&client, topic)?;
            let partitions = high.len() as i32;
            wait_for(
                &format!("{group} to commit up to {topic}'s end offsets {high:?}"),
                Duration::from_secs(60),
                || {
                    let all: Vec<i32> = (0..partitions).collect();
                    let done = obs_runtime::kafka::committed(&client, topic, &all, timeout)
                        .ok()
                        .is_some_and(|c| {
                            all.iter()
                                .all(|p| c.get(p).copied().unwrap_or(0) >= high[*p as usize])
                        });
                    async move { done.then_some(()) }
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The query API's answer to an instant PromQL query, `None` if it does not answer.
    pub async fn instant_query(&self, q: &str) -> Option<serde_json::Value> {
        http(30)
            .get(format!("{}/api/v1/query", self.query_url()))
            .query(&[("query", q)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// The query API's base URL.
    pub fn query_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.ports.query)
    }

    /// A client for the pipeline's database.
    pub fn db(&self) -> clickhouse::Client {
        self.clickhouse.client().with_database("obs")
    }

    /// The whole log of the process started as `name` (every run of it: logs are appended).
    pub fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The separate sink's log so far (empty when the sink runs inside `obs up`).
    pub fn sink_log(&self) -> String {
        self.sink.as_ref().map(Proc::log_tail).unwrap_or_default()
    }

    /// The pipeline's log so far.
    pub fn obs_log(&self) -> String {
        self.obs.log_tail()
    }

    /// Polls until `SELECT count() FROM otel_logs WHERE <filter>` reaches `n` (exactly),
    /// failing if it overshoots or times out.
    pub async fn wait_log_count(
        &self,
        filter: &str,
        n: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let db = self.db();
        let sql = format!("SELECT count() FROM otel_logs WHERE {filter}");
        let got = wait_for(&format!("{n} rows where {filter}"), timeout, || {
            let (db, sql) = (db.clone(), sql.clone());
            async move {
                let c: u64 = db.query(&sql).fetch_one().await.ok()?;
                (c >= n).then_some(c)
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.obs_log()))?;
        anyhow::ensure!(
            got == n,
            "expected exactly {n} rows where {filter}, found {got}"
        );
        Ok(())
    }
}

/// Starts `obs up` with `env` (without its sink when `separate_sink`), logging to `dir`.
fn spawn_obs(
    env: &[(String, String)],
    separate_sink: bool,
    separate_processor: bool,
    dir: &Path,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(obs_bin());
    cmd.arg("up").envs(env.iter().map(|(k, v)| (k, v)));
    if separate_sink {
        cmd.arg("--no-sink");
    }
    if separate_processor {
        cmd.arg("--no-processor");
    }
    Proc::spawn("obs", cmd, dir)
}

/// The `(topic, group)` pairs a sink's `/metrics` text names in its
/// `obs_sink_consumer_lag` lines containing `filter` (e.g. `table="otel_logs"`; empty: all).
pub fn lag_groups(metrics: &str, filter: &str) -> std::collections::BTreeSet<(String, String)> {
    let value = |line: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let rest = &line[line.find(&key)? + key.len()..];
        Some(rest[..rest.find('"')?].to_string())
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("obs_sink_consumer_lag{") && l.contains(filter))
        .filter_map(|l| Some((value(l, "topic")?, value(l, "group")?)))
        .collect()
}

/// How many log lines a failing test prints per process (`OBS_E2E_LOG_LINES`, default 30).
fn tail_lines() -> usize {
    std::env::var("OBS_E2E_LOG_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}
