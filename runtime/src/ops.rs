//! `/metrics`, `/healthz` and `/readyz`, served by every stage on each of its listeners.
//!
//! `/readyz` is 200 only when the stage has started *and* no part of it reports a problem:
//! a sink whose partitions stopped making progress reports one (see [`Readiness::report`]),
//! so a stall answers 503 with its reason instead of looking healthy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::auth::{Access, Auth, Dialect, Guard, guarded, warn_if_open};
use crate::config::Config;
use crate::telemetry::metrics_handle;
use crate::tls::Alpn;

/// Whether a stage is ready to take traffic, and if not, why; cheap to clone and share.
#[derive(Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    /// Problems by the part that reports them (e.g. a sink's table and topic).
    problems: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Readiness {
    /// Marks the stage started (or not).
    pub fn set(&self, ready: bool) {
        self.started.store(ready, Ordering::SeqCst);
    }

    /// Whether it is started and reports no problem.
    pub fn get(&self) -> bool {
        self.started.load(Ordering::SeqCst) && self.problems().is_empty()
    }

    /// Sets (`Some`) or clears (`None`) the problem of the part named `part`.
    pub fn report(&self, part: &str, problem: Option<String>) {
        let mut problems = self.problems.lock().expect("readiness lock");
        match problem {
            Some(p) => problems.insert(part.to_string(), p),
            None => problems.remove(part),
        };
    }

    /// The problems reported now, one line each.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .expect("readiness lock")
            .values()
            .cloned()
            .collect()
    }

    fn answer(&self) -> (StatusCode, String) {
        if !self.started.load(Ordering::SeqCst) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting\n".into(),
            );
        }
        let problems = self.problems();
        if problems.is_empty() {
            (StatusCode::OK, "ready\n".into())
        } else {
            let mut text = String::from("not ready:\n");
            for p in problems {
                text.push_str(&p);
                text.push('\n');
            }
            (StatusCode::SERVICE_UNAVAILABLE, text)
        }
    }
}

/// Routes for `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (503 until
/// ready, and while any problem is reported, with the reasons as text).
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
                async move { ready.answer() }
            }),
        )
}

/// The [`Guard`] of a listener: `[auth]`'s credentials, the access its requests need
/// (`None`: read for GET, write otherwise) and how it words refusals.
pub fn guard(cfg: &Config, dialect: Dialect, need: Option<Access>) -> anyhow::Result<Guard> {
    Ok(Guard {
        tls: crate::tls::ServerTls::from_config(&cfg.tls)?,
        auth: Auth::new(&cfg.auth)?,
        dialect,
        need,
    })
}

/// Binds `addr` and serves `app` behind `guard` (over TLS when it has a certificate) until a shutdown is asked for (see
/// [`crate::shutdown`]); requests in flight are finished first.
pub async fn serve(addr: &str, app: Router, what: &str, guard: &Guard) -> anyhow::Result<()> {
    serve_until(addr, app, what, guard, crate::shutdown::wait()).await
}

/// Like [`serve`], but stops when `stop` completes: for a server other stages of the
/// process still need while they shut down (the schema registry in `obs up`).
pub async fn serve_until(
    addr: &str,
    app: Router,
    what: &str,
    guard: &Guard,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    warn_if_open(&guard.auth, addr, what);
    let app = guarded(app, guard.clone());
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("{what}: cannot listen on {addr}: {e} (is another process using the port?)")
    })?;
    let local = listener.local_addr()?;
    match &guard.tls {
        Some(tls) => {
            tracing::info!("{what} listening on https://{local}");
            axum::serve(tls.listen(listener, Alpn::Http1), app)
                .with_graceful_shutdown(stop)
                .await?
        }
        None => {
            tracing::info!("{what} listening on http://{local}");
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_problem_makes_it_unready_with_the_reason() {
        let r = Readiness::default();
        assert_eq!(r.answer().0, StatusCode::SERVICE_UNAVAILABLE);
        r.set(true);
        assert_eq!(r.answer(), (StatusCode::OK, "ready\n".to_string()));
        r.report("otel_logs", Some("sink otel_logs is stalled".into()));
        assert!(!r.get());
        let (code, text) = r.answer();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("sink otel_logs is stalled"), "{text}");
        r.report("otel_logs", None);
        assert!(r.get());
    }
}
