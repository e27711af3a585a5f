//! `/metrics`, `/healthz` and `/readyz`, served by every stage on each of its listeners.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::telemetry::metrics_handle;

/// Whether a stage is ready to take traffic; cheap to clone and share.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the stage ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether it is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Routes for `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (503 until ready).
pub fn router(ready: Readiness) -> Router {
    // Install the recorder now: counts made before the first scrape must not be lost.
    metrics_handle();
    Router::new()
        .route("/metrics", get(|| async { metrics_handle().render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.get() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
}

/// Binds `addr` and serves `app` until the process ends.
pub async fn serve(addr: &str, app: Router, what: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("{what}: cannot listen on {addr}: {e} (is another process using the port?)")
    })?;
    tracing::info!("{what} listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
