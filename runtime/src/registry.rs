//! The schema registry client every stage uses.

use obs_schemas::wire::Codec;

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
