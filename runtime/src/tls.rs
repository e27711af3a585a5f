//! TLS (rustls with aws-lc-rs): the certificate every listener serves, reloaded when its
//! files change, and the roots every HTTP client of the stages trusts.
//!
//! `[tls] cert_file` + `key_file` turn every listener of the process (collector HTTP,
//! OTLP/HTTP, OTLP/gRPC, Zipkin, query API, registry, sink and processor ops) into a TLS
//! listener; `[tls] ca_file` adds a CA to what the stages' clients of each other, of the
//! registry, ClickHouse and Alertmanager trust. Kafka's TLS and SASL are librdkafka's
//! (`[kafka] security_protocol` and friends, see [`crate::kafka`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first) every listener serves; with `key_file` set, the
    /// listeners speak only TLS. "" = plain TCP.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`.
    pub key_file: String,
    /// How often the two files are checked for a new certificate, in seconds.
    pub reload_secs: u64,
    /// PEM CA certificates the stages' HTTP clients trust besides the system's roots (for a
    /// registry, ClickHouse, rules API or Alertmanager with a private CA). "" = system only.
    pub ca_file: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            reload_secs: 10,
            ca_file: String::new(),
        }
    }
}

impl TlsConfig {
    /// Whether the listeners serve TLS; a half-set pair is an error naming the missing file.
    pub fn serving(&self) -> anyhow::Result<bool> {
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, true) => Ok(false),
            (false, false) => Ok(true),
            (false, true) => anyhow::bail!("[tls] cert_file is set but key_file is not: set both"),
            (true, false) => anyhow::bail!("[tls] key_file is set but cert_file is not: set both"),
        }
    }
}

/// The crypto provider of every TLS endpoint and client (named explicitly, so a dependency
/// enabling another provider cannot make the choice ambiguous).
fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let p = rustls::crypto::aws_lc_rs::default_provider();
        // Clients built by crates (reqwest) use the process default: make it this one.
        let _ = p.clone().install_default();
        Arc::new(p)
    })
    .clone()
}

/// Reads a PEM certificate chain and key and checks that they belong together.
fn load_certified_key(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("[tls] cert_file {}: cannot read", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("[tls] cert_file {}: not PEM", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "[tls] cert_file {}: holds no CERTIFICATE block",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!(
            "[tls] key_file {}: no private key (PKCS#8, PKCS#1 or SEC1 PEM) read",
            key_file.display()
        )
    })?;
    CertifiedKey::from_der(certs, key, &provider()).with_context(|| {
        format!(
            "[tls] key_file {} does not match cert_file {} (or its key type is unsupported)",
            key_file.display(),
            cert_file.display()
        )
    })
}

/// What identifies a version of the two files: their modification times and sizes.
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(files: [&Path; 2]) -> Stamp {
    files.map(|f| match std::fs::metadata(f) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    })
}

/// The served certificate: swapped in place when the files change, so connections made
/// after a renewal get the new one without a restart.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file versions last loaded, and the last that failed (logged once).
    seen: Mutex<(Stamp, Option<Stamp>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").clone())
    }
}

impl ReloadingCert {
    /// Loads the files again if they changed since the last load; a pair that does not
    /// load keeps the previous certificate in service and is logged once.
    fn reload_if_changed(&self) {
        let now = stamp([&self.cert_file, &self.key_file]);
        let mut seen = self.seen.lock().expect("not poisoned");
        if now == seen.0 || Some(now) == seen.1 {
            return;
        }
        match load_certified_key(&self.cert_file, &self.key_file) {
            Ok(key) => {
                *self.current.write().expect("not poisoned") = Arc::new(key);
                *seen = (now, None);
                metrics::counter!("obs_tls_reloads_total", "result" => "loaded").increment(1);
                tracing::info!("TLS certificate reloaded from {}", self.cert_file.display());
            }
            Err(e) => {
                seen.1 = Some(now);
                metrics::counter!("obs_tls_reloads_total", "result" => "failed").increment(1);
                tracing::error!("TLS certificate not reloaded, the previous one stays: {e:#}");
            }
        }
    }
}

/// The TLS side of a process's listeners: one certificate (reloaded on change) behind an
/// acceptor per protocol family.
#[derive(Clone)]
pub struct ServerTls {
    http: TlsAcceptor,
    grpc: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

/// Which protocol a listener speaks, for the ALPN it offers: HTTP/1.1 for the HTTP APIs
/// (axum serves HTTP/1 here), h2 for gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    Grpc,
}

impl ServerTls {
    /// The process's listener TLS from `[tls]` (`None` when no certificate is configured).
    /// The first call loads the files and starts the reload check; later calls share it.
    pub fn from_config(cfg: &TlsConfig) -> anyhow::Result<Option<ServerTls>> {
        static SHARED: OnceLock<Mutex<Option<(TlsConfig, ServerTls)>>> = OnceLock::new();
        if !cfg.serving()? {
            return Ok(None);
        }
        let mut shared = SHARED
            .get_or_init(Mutex::default)
            .lock()
            .expect("not poisoned");
        if let Some((c, tls)) = shared.as_ref()
            && c == cfg
        {
            return Ok(Some(tls.clone()));
        }
        let tls = ServerTls::load(cfg)?;
        *shared = Some((cfg.clone(), tls.clone()));
        Ok(Some(tls))
    }

    fn load(cfg: &TlsConfig) -> anyhow::Result<ServerTls> {
        let (cert_file, key_file) = (PathBuf::from(&cfg.cert_file), PathBuf::from(&cfg.key_file));
        let key = load_certified_key(&cert_file, &key_file)?;
        let resolver = Arc::new(ReloadingCert {
            seen: Mutex::new((stamp([&cert_file, &key_file]), None)),
            cert_file,
            key_file,
            current: RwLock::new(Arc::new(key)),
        });
        let every = Duration::from_secs(cfg.reload_secs.max(1));
        let watched = Arc::downgrade(&resolver);
        std::thread::Builder::new()
            .name("tls-reload".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    match watched.upgrade() {
                        Some(r) => r.reload_if_changed(),
                        None => return,
                    }
                }
            })
            .context("cannot start the TLS reload thread")?;
        let acceptor = |alpn: &[u8]| -> anyhow::Result<TlsAcceptor> {
            let mut sc = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            sc.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsAcceptor::from(Arc::new(sc)))
        };
        Ok(ServerTls {
            http: acceptor(b"http/1.1")?,
            grpc: acceptor(b"h2")?,
        })
    }

    /// Accepts TLS connections on `tcp` for a listener speaking `alpn`.
    pub fn listen(&self, tcp: TcpListener, alpn: Alpn) -> TlsListener {
        let acceptor = match alpn {
            Alpn::Http1 => self.http.clone(),
            Alpn::Grpc => self.grpc.clone(),
        };
        TlsListener::start(tcp, acceptor)
    }
}

/// How long a client may take over its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener handing out connections whose TLS handshake has completed; handshakes run
/// concurrently, so a slow or silent client cannot hold up the others.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(tcp: TcpListener, acceptor: TlsAcceptor) -> TlsListener {
        let local = tcp.local_addr().expect("a bound listener has an address");
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    // The server stopped: release the port.
                    _ = tx.closed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!("accept on {local} failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                // TLS records are small writes: no Nagle delay on them.
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("obs_tls_handshake_failures_total").increment(1);
                            tracing::debug!("TLS handshake from {peer} failed: {e}");
                        }
                        Err(_) => {
                            metrics::counter!("obs_tls_handshake_failures_total").increment(1);
                            tracing::debug!("TLS handshake from {peer} timed out");
                        }
                    }
                });
            }
        });
        TlsListener { ready, local }
    }

    /// The next connection whose handshake completed (`None` never comes while the
    /// listener lives).
    pub async fn next(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.ready.recv().await
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.next().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// What the stages' clients trust besides the system roots: `[tls] ca_file`, read once at
/// start by [`trust`].
#[derive(Default)]
struct Trust {
    /// For reqwest clients.
    certs: Vec<reqwest::Certificate>,
    /// The same certificates for clients taking a rustls configuration.
    ders: Vec<CertificateDer<'static>>,
}

static TRUST: OnceLock<Trust> = OnceLock::new();

/// Reads `[tls] ca_file` (if set) into what every [`http_client`] and [`client_config`]
/// trusts; an unreadable or certificate-less file is an error naming it. Call once at start.
pub fn trust(cfg: &TlsConfig) -> anyhow::Result<()> {
    provider();
    let mut t = Trust::default();
    if !cfg.ca_file.is_empty() {
        let pem = std::fs::read(&cfg.ca_file)
            .with_context(|| format!("[tls] ca_file {}: cannot read", cfg.ca_file))?;
        t.ders = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("[tls] ca_file {}: not PEM", cfg.ca_file))?;
        anyhow::ensure!(
            !t.ders.is_empty(),
            "[tls] ca_file {}: holds no CERTIFICATE block",
            cfg.ca_file
        );
        t.certs = t
            .ders
            .iter()
            .map(|d| reqwest::Certificate::from_der(d))
            .collect::<Result<_, _>>()
            .with_context(|| format!("[tls] ca_file {}: a bad CA certificate", cfg.ca_file))?;
    }
    let _ = TRUST.set(t);
    Ok(())
}

/// An HTTP client builder trusting the system roots and `[tls] ca_file`: every client of
/// another service (registry, rules API, Alertmanager, query API) starts here.
pub fn http_client() -> reqwest::ClientBuilder {
    provider();
    let mut b = reqwest::Client::builder();
    for c in TRUST.get().map(|t| t.certs.as_slice()).unwrap_or_default() {
        b = b.add_root_certificate(c.clone());
    }
    b
}

/// A rustls client configuration trusting the system roots and `[tls] ca_file`, for
/// clients that take one directly (ClickHouse); built once (reading the system roots is
/// file I/O) and shared.
pub fn client_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let c = Arc::new(build_client_config()?);
    Ok(CONFIG.get_or_init(|| c).clone())
}

fn build_client_config() -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for c in TRUST.get().map(|t| t.ders.as_slice()).unwrap_or_default() {
        roots
            .add(c.clone())
            .context("[tls] ca_file: a bad CA certificate")?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_set_certificate_pair_names_the_missing_file() {
        let mut c = TlsConfig::default();
        assert!(!c.serving().unwrap());
        c.cert_file = "cert.pem".into();
        let e = c.serving().unwrap_err().to_string();
        assert!(e.contains("key_file is not"), "{e}");
        c.cert_file.clear();
        c.key_file = "key.pem".into();
        let e = c.serving().unwrap_err().to_string();
        assert!(e.contains("cert_file is not"), "{e}");
        c.cert_file = "cert.pem".into();
        assert!(c.serving().unwrap());
    }

    #[test]
    fn unreadable_or_empty_files_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = format!(
            "{:#}",
            load_certified_key(&missing, &missing).err().unwrap()
        );
        assert!(e.contains("cert_file") && e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = format!("{:#}", load_certified_key(&empty, &empty).err().unwrap());
        assert!(e.contains("holds no CERTIFICATE"), "{e}");
        let ca = TlsConfig {
            ca_file: empty.display().to_string(),
            ..TlsConfig::default()
        };
        let e = format!("{:#}", trust(&ca).unwrap_err());
        assert!(e.contains("ca_file") && e.contains("no CERTIFICATE"), "{e}");
    }
}
