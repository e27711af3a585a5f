//! The schema registry client every stage uses.

use std::time::Duration;

use obs_schemas::wire::{Codec, WireError};
use serde::Deserialize;

use crate::config::Config;

/// A codec for the configured registry: its URL, `[auth] client_token` as the credential,
/// and the TLS roots of [`crate::tls::http_client`] for an `https://` registry.
pub fn codec(cfg: &Config) -> Codec {
    Codec::with_client(
        &cfg.registry.url,
        &cfg.auth.client_token,
        crate::tls::http_client(),
    )
}

/// The longest wait between two attempts at a registry that cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Decodes a message, waiting out a schema registry that cannot be reached: only bytes
/// that are not a record of their schema come back as an error. Why: a stage that
/// skipped or dead-lettered the messages it read while the registry was away lost them.
pub async fn decode<'a, T: Deserialize<'a>>(
    codec: &Codec,
    bytes: &'a [u8],
) -> Result<T, WireError> {
    retry_unreachable(|| codec.decode::<T>(bytes)).await
}

/// Runs `attempt` (a decode) until it succeeds or fails with anything but an unreachable
/// registry, with backoff from 200 ms to 10 s.
pub async fn retry_unreachable<T, F, Fut>(mut attempt: F) -> Result<T, WireError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, WireError>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match attempt().await {
            Err(e @ WireError::Registry(_)) => {
                tracing::warn!(error = %e, "schema registry unavailable; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn registry_outages_are_waited_out_and_malformed_bytes_are_not() {
        let mut calls = 0;
        let got = retry_unreachable(|| {
            calls += 1;
            let answer = if calls < 4 {
                Err(WireError::Registry("connection refused".into()))
            } else {
                Ok(7)
            };
            async move { answer }
        })
        .await;
        assert_eq!((got.unwrap(), calls), (7, 4));
        let mut calls = 0;
        let got = retry_unreachable(|| {
            calls += 1;
            async { Err::<i32, _>(WireError::Malformed("cut short".into())) }
        })
        .await;
        assert!(matches!(got, Err(WireError::Malformed(_))));
        assert_eq!(calls, 1);
    }
}
