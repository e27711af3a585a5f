//! A clean stop on SIGTERM or Ctrl-C, shared by every stage of the process.
//!
//! [`listen`] turns the first signal into a process-wide cancellation: listeners stop
//! accepting and finish the requests in flight (whose answers wait for Kafka's acks), sinks
//! insert and commit the batches they hold, and the process exits 0. A second signal exits at
//! once. Stages ask [`requested`] or await [`wait`]; nothing is lost either way, because
//! nothing is acknowledged or committed before it is durable.

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

fn token() -> &'static CancellationToken {
    static TOKEN: OnceLock<CancellationToken> = OnceLock::new();
    TOKEN.get_or_init(CancellationToken::new)
}

/// Watches for SIGTERM and SIGINT (call once, inside the runtime).
pub fn listen() {
    tokio::spawn(async {
        signal().await;
        tracing::info!(
            "shutting down: finishing requests and batches in flight (signal again to stop at once)"
        );
        token().cancel();
        signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

#[cfg(unix)]
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Asks every stage of the process to stop (what a signal does).
pub fn request() {
    token().cancel();
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    token().is_cancelled()
}

/// Completes when a stop is asked for.
pub async fn wait() {
    token().cancelled().await;
}
