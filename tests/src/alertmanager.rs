//! A real Alertmanager 0.25 (Debian's `prometheus-alertmanager`) as a peer, and a webhook
//! receiver that records the notifications it gets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;

use crate::{Proc, free_port, http};

/// The `prometheus-alertmanager` binary (`OBS_ALERTMANAGER_BIN`, else on PATH).
pub fn alertmanager_bin() -> PathBuf {
    std::env::var_os("OBS_ALERTMANAGER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "prometheus-alertmanager".into())
}

/// A running Alertmanager.
pub struct Alertmanager {
    /// Its HTTP port.
    pub port: u16,
    proc: Proc,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (YAML) and state in `dir`, without clustering, and
    /// waits until it is ready.
    pub async fn start(dir: &Path, config: &str) -> anyhow::Result<Alertmanager> {
        let port = free_port();
        let config_path = dir.join("alertmanager.yml");
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new(alertmanager_bin());
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        let proc = Proc::spawn("alertmanager", cmd, dir)?;
        crate::wait_answering(
            &format!("http://127.0.0.1:{port}/-/ready"),
            "Alertmanager",
            &proc,
        )
        .await?;
        Ok(Alertmanager { port, proc })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /api/v2/alerts`.
    pub async fn alerts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(http(10)
            .get(format!("{}/api/v2/alerts", self.url()))
            .send()
            .await?
            .json()
            .await?)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }
}

/// A webhook receiver on a free port that keeps every notification body.
pub struct Webhook {
    /// Its URL.
    pub url: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Webhook {
    /// Starts the receiver.
    pub async fn start() -> anyhow::Result<Webhook> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route(
                "/hook",
                post(
                    |State(r): State<Arc<Mutex<Vec<serde_json::Value>>>>,
                     Json(body): Json<serde_json::Value>| async move {
                        r.lock().unwrap().push(body);
                    },
                ),
            )
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Webhook { url, received })
    }

    /// The notifications received so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }
}
