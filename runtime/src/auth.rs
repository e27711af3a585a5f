//! Who may call a listener, and for which tenants (`[auth]`).
//!
//! A request presents a credential, `Authorization: Bearer <token>` or `Basic
//! <user:password>`; the configuration holds only SHA-256 hashes of the secrets. Each
//! credential allows a set of tenants (`["*"]` for an operator) and reading, writing or
//! both. The tenant of a request comes from its credential: `X-Scope-OrgID` chooses among
//! the credential's tenants and is refused (403) outside them; without the header a
//! credential of one tenant acts for it. After [`Auth::check`] the handlers find the
//! decided tenant in `X-Scope-OrgID`, so they keep one rule for the tenant.
//!
//! Collectors need `write`, the query API `read`, the schema registry `read` for GET and
//! `write` otherwise; `/metrics`, `/healthz` and `/readyz` stay open unless
//! `open_ops = false`. Off by default for local runs; a listener that is not on loopback
//! while auth is off gets a loud warning at start.

use std::fmt;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tenant::TENANT_HEADER;

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require a credential on every listener (except the open ops paths).
    pub enabled: bool,
    /// Leave `/metrics`, `/healthz` and `/readyz` open (scrapers and health checks).
    pub open_ops: bool,
    /// The bearer token obs's own clients send: stages to the schema registry, and `obs
    /// sql`, `explain`, `demo`, `bench` to the listeners. Needs a credential allowing it.
    pub client_token: String,
    /// Who may call, and for which tenants.
    pub credentials: Vec<CredentialConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            open_ops: true,
            client_token: String::new(),
            credentials: Vec::new(),
        }
    }
}

/// `[[auth.credentials]]`: one token, or one user and password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialConfig {
    /// A name for logs and errors.
    pub name: String,
    /// SHA-256 (hex) of a bearer token (`obs auth token` makes one).
    pub token_sha256: String,
    /// User of HTTP basic auth (with `password_sha256`).
    pub username: String,
    /// SHA-256 (hex) of the basic-auth password.
    pub password_sha256: String,
    /// Tenants it may act for; `"*"` for any.
    pub tenants: Vec<String>,
    /// `"read"` (queries), `"write"` (ingest, schema registration), or both.
    pub access: Vec<String>,
}

/// What a request needs to be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Queries.
    Read,
    /// Ingest and schema registration.
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credential, or one that is not known (401).
    Unauthenticated(String),
    /// A known credential that does not allow this (403).
    Forbidden(String),
}

impl Denied {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Denied::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The reason, for the answer's body.
    pub fn message(&self) -> &str {
        match self {
            Denied::Unauthenticated(m) | Denied::Forbidden(m) => m,
        }
    }

    /// Counts the refusal in `obs_auth_refused_total{reason}`.
    pub fn count(&self) {
        let reason = match self {
            Denied::Unauthenticated(_) => "unauthenticated",
            Denied::Forbidden(_) => "forbidden",
        };
        metrics::counter!("obs_auth_refused_total", "reason" => reason).increment(1);
    }

    /// The gRPC status code: UNAUTHENTICATED (16) or PERMISSION_DENIED (7).
    pub fn grpc_code(&self) -> i32 {
        match self {
            Denied::Unauthenticated(_) => 16,
            Denied::Forbidden(_) => 7,
        }
    }
}

/// The SHA-256 of `secret`, hex: what the configuration stores.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[derive(Debug, Clone)]
enum Secret {
    Token([u8; 32]),
    Basic { user: String, password: [u8; 32] },
}

#[derive(Debug, Clone)]
struct Credential {
    name: String,
    secret: Secret,
    /// `None`: any tenant.
    tenants: Option<Vec<String>>,
    read: bool,
    write: bool,
}

/// The checked credentials of `[auth]`; cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    enabled: bool,
    open_ops: bool,
    credentials: std::sync::Arc<Vec<Credential>>,
}

fn sha256_hex(what: &str, name: &str, hex_text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_text.trim()).ok().filter(|b| b.len() == 32);
    let Some(bytes) = bytes else {
        anyhow::bail!(
            "[[auth.credentials]] {name:?}: {what} must be 64 hex digits (a SHA-256; `obs auth hash` makes one)"
        );
    };
    Ok(bytes.try_into().expect("32 bytes"))
}

impl Auth {
    /// Checks `[auth]`: every credential has a name, one secret, tenants and access.
    pub fn new(cfg: &AuthConfig) -> anyhow::Result<Auth> {
        let mut credentials = Vec::new();
        for c in &cfg.credentials {
            let name = &c.name;
            if name.is_empty() {
                anyhow::bail!("[[auth.credentials]]: every credential needs a name");
            }
            let secret = match (
                c.token_sha256.is_empty(),
                c.username.is_empty(),
                c.password_sha256.is_empty(),
            ) {
                (false, true, true) => {
                    Secret::Token(sha256_hex("token_sha256", name, &c.token_sha256)?)
                }
                (true, false, false) => Secret::Basic {
                    user: c.username.clone(),
                    password: sha256_hex("password_sha256", name, &c.password_sha256)?,
                },
                _ => anyhow::bail!(
                    "[[auth.credentials]] {name:?}: give token_sha256, or username and password_sha256"
                ),
            };
            if c.tenants.is_empty() {
                anyhow::bail!(
                    "[[auth.credentials]] {name:?}: tenants is empty (list them, or \"*\" for any)"
                );
            }
            let tenants = if c.tenants.iter().any(|t| t == "*") {
                None
            } else {
                Some(c.tenants.clone())
            };
            let mut read = false;
            let mut write = false;
            for a in &c.access {
                match a.as_str() {
                    "read" => read = true,
                    "write" => write = true,
                    other => anyhow::bail!(
                        "[[auth.credentials]] {name:?}: access {other:?} is not read or write"
                    ),
                }
            }
            if !read && !write {
                anyhow::bail!("[[auth.credentials]] {name:?}: access is empty (read, write)");
            }
            credentials.push(Credential {
                name: name.clone(),
                secret,
                tenants,
                read,
                write,
            });
        }
        if cfg.enabled && credentials.is_empty() {
            anyhow::bail!("[auth] enabled = true but no [[auth.credentials]] are configured");
        }
        Ok(Auth {
            enabled: cfg.enabled,
            open_ops: cfg.open_ops,
            credentials: std::sync::Arc::new(credentials),
        })
    }

    /// Auth off: every request passes with its own `X-Scope-OrgID`.
    pub fn disabled() -> Auth {
        Auth {
            enabled: false,
            open_ops: true,
            credentials: Default::default(),
        }
    }

    /// Whether credentials are required.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `path` is an ops path left open.
    pub fn is_open(&self, path: &str) -> bool {
        !self.enabled || (self.open_ops && matches!(path, "/metrics" | "/healthz" | "/readyz"))
    }

    fn find(&self, authorization: &str) -> Result<&Credential, Denied> {
        let unknown = || Denied::Unauthenticated("the credential is not known".into());
        let (scheme, value) = authorization.split_once(' ').ok_or_else(|| {
            Denied::Unauthenticated(
                "Authorization is not 'Bearer <token>' or 'Basic <user:password>'".into(),
            )
        })?;
        if scheme.eq_ignore_ascii_case("bearer") {
            let hash: [u8; 32] = Sha256::digest(value.trim().as_bytes()).into();
            return self
                .credentials
                .iter()
                .find(|c| matches!(&c.secret, Secret::Token(h) if *h == hash))
                .ok_or_else(unknown);
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Denied::Unauthenticated(
                        "Basic credentials are not base64 of user:password".into(),
                    )
                })?;
            let (user, password) = decoded.split_once(':').ok_or_else(|| {
                Denied::Unauthenticated("Basic credentials are not user:password".into())
            })?;
            let hash: [u8; 32] = Sha256::digest(password.as_bytes()).into();
            return self
                .credentials
                .iter()
                .find(|c| {
                    matches!(&c.secret, Secret::Basic { user: u, password: h } if u == user && *h == hash)
                })
                .ok_or_else(unknown);
        }
        Err(Denied::Unauthenticated(format!(
            "Authorization scheme {scheme:?} is not Bearer or Basic"
        )))
    }

    /// Decides a request: its `Authorization` value and `X-Scope-OrgID` value, for `need`.
    /// `Ok(Some(tenant))`: allowed, acting for `tenant`; `Ok(None)`: allowed, tenant as the
    /// request says (auth off, or an operator credential without the header).
    pub fn check(
        &self,
        authorization: Option<&str>,
        tenant: Option<&str>,
        need: Access,
    ) -> Result<Option<String>, Denied> {
        if !self.enabled {
            return Ok(None);
        }
        let Some(authorization) = authorization else {
            return Err(Denied::Unauthenticated(
                "no credential: send Authorization: Bearer <token> or Basic <user:password>".into(),
            ));
        };
        let c = self.find(authorization)?;
        let allowed = match need {
            Access::Read => c.read,
            Access::Write => c.write,
        };
        if !allowed {
            return Err(Denied::Forbidden(format!(
                "credential {:?} may not {need}",
                c.name
            )));
        }
        match (&c.tenants, tenant) {
            (None, t) => Ok(t.map(str::to_string)),
            (Some(ts), Some(t)) if ts.iter().any(|x| x == t) => Ok(Some(t.to_string())),
            (Some(_), Some(t)) => Err(Denied::Forbidden(format!(
                "credential {:?} may not act for tenant {t:?}",
                c.name
            ))),
            (Some(ts), None) if ts.len() == 1 => Ok(Some(ts[0].clone())),
            (Some(_), None) => Err(Denied::Forbidden(format!(
                "credential {:?} allows several tenants: choose one with {TENANT_HEADER}",
                c.name
            ))),
        }
    }

    /// [`Auth::check`] on request headers; on success the decided tenant is written into
    /// `X-Scope-OrgID`, where the handlers read it.
    pub fn admit(&self, headers: &mut HeaderMap, need: Access) -> Result<(), Denied> {
        let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let tenant = headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok());
        if let Some(t) = self.check(authorization, tenant, need)? {
            let v = HeaderValue::from_str(&t)
                .map_err(|_| Denied::Forbidden(format!("tenant {t:?} is not a header value")))?;
            headers.insert(TENANT_HEADER, v);
        }
        Ok(())
    }
}

/// How a listener words a refusal, as its protocol's clients expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The collectors: OTLP answers (`google.rpc.Status` as JSON) on `/v1/*`, text
    /// elsewhere (remote write, Loki push, Zipkin, events).
    Collector,
    /// The query API and the processor's rules API: Prometheus's error JSON on `/api/*`,
    /// text on `/loki/*` (as Loki answers).
    Query,
    /// The schema registry: Confluent's `{"error_code", "message"}`.
    Registry,
}

/// A refusal in `dialect`'s shape for `path`.
pub fn refusal(denied: &Denied, dialect: Dialect, path: &str) -> Response {
    let status = denied.status();
    let msg = denied.message();
    let mut resp = match dialect {
        Dialect::Collector if path.starts_with("/v1/") => (
            status,
            [(CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": denied.grpc_code(), "message": msg}).to_string(),
        )
            .into_response(),
        Dialect::Query if path.starts_with("/api/") => (
            status,
            [(CONTENT_TYPE, "application/json")],
            serde_json::json!({
                "status": "error",
                "errorType": if status == StatusCode::UNAUTHORIZED { "unauthorized" } else { "forbidden" },
                "error": msg,
            })
            .to_string(),
        )
            .into_response(),
        Dialect::Registry => (
            status,
            [(CONTENT_TYPE, "application/vnd.schemaregistry.v1+json")],
            serde_json::json!({"error_code": status.as_u16() as u32 * 100 + 1, "message": msg})
                .to_string(),
        )
            .into_response(),
        _ => (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{msg}\n")).into_response(),
    };
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"obs\", Basic realm=\"obs\""),
        );
    }
    resp
}

/// What a listener requires: TLS or not, the access its requests need and how it words
/// refusals.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The certificate it serves (`None`: plain TCP).
    pub tls: Option<crate::tls::ServerTls>,
    /// The credentials.
    pub auth: Auth,
    /// How refusals are worded.
    pub dialect: Dialect,
    /// The access every request needs; `None`: read for GET/HEAD, write otherwise (the
    /// registry).
    pub need: Option<Access>,
}

/// axum middleware enforcing a [`Guard`] (`axum::middleware::from_fn_with_state`).
pub async fn require(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if guard.auth.is_open(&path) {
        return next.run(req).await;
    }
    let ops = matches!(path.as_str(), "/metrics" | "/healthz" | "/readyz");
    let need = guard.need.filter(|_| !ops).unwrap_or_else(|| {
        if ops || matches!(*req.method(), Method::GET | Method::HEAD) {
            Access::Read
        } else {
            Access::Write
        }
    });
    match guard.auth.admit(req.headers_mut(), need) {
        Ok(()) => next.run(req).await,
        Err(denied) => {
            denied.count();
            refusal(&denied, guard.dialect, &path)
        }
    }
}

/// `router` with `guard` in front of every route.
pub fn guarded(router: axum::Router, guard: Guard) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(guard, require))
}

/// Logs a loud warning when `addr` is reachable from other machines while auth is off.
pub fn warn_if_open(auth: &Auth, addr: &str, what: &str) {
    if auth.enabled() {
        return;
    }
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    if !crate::config::is_loopback_host(host) {
        tracing::warn!(
            "{what} listens on {addr} WITHOUT AUTHENTICATION: anyone who can reach it can read and write every tenant. Set [auth] enabled = true with credentials (see config/obs.example.toml)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(&AuthConfig {
            enabled: true,
            open_ops: true,
            client_token: String::new(),
            credentials: vec![
                CredentialConfig {
                    name: "acme-writer".into(),
                    token_sha256: hash_secret("w-token"),
                    tenants: vec!["acme".into()],
                    access: vec!["write".into()],
                    ..Default::default()
                },
                CredentialConfig {
                    name: "acme-reader".into(),
                    username: "acme".into(),
                    password_sha256: hash_secret("s3cret"),
                    tenants: vec!["acme".into()],
                    access: vec!["read".into()],
                    ..Default::default()
                },
                CredentialConfig {
                    name: "ops".into(),
                    token_sha256: hash_secret("ops-token"),
                    tenants: vec!["*".into()],
                    access: vec!["read".into(), "write".into()],
                    ..Default::default()
                },
                CredentialConfig {
                    name: "two".into(),
                    token_sha256: hash_secret("two-token"),
                    tenants: vec!["a".into(), "b".into()],
                    access: vec!["read".into()],
                    ..Default::default()
                },
            ],
        })
        .unwrap()
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn the_tenant_comes_from_the_credential() {
        let a = auth();
        use Access::*;
        assert_eq!(
            a.check(Some("Bearer w-token"), None, Write),
            Ok(Some("acme".into()))
        );
        assert_eq!(
            a.check(Some("Bearer w-token"), Some("acme"), Write),
            Ok(Some("acme".into()))
        );
        assert!(matches!(
            a.check(Some("Bearer w-token"), Some("umbrella"), Write),
            Err(Denied::Forbidden(m)) if m.contains("tenant \"umbrella\"")
        ));
        assert_eq!(
            a.check(Some(&basic("acme", "s3cret")), None, Read),
            Ok(Some("acme".into()))
        );
        assert_eq!(
            a.check(Some("Bearer ops-token"), Some("umbrella"), Read),
            Ok(Some("umbrella".into()))
        );
        assert_eq!(a.check(Some("Bearer ops-token"), None, Write), Ok(None));
        assert!(matches!(
            a.check(Some("Bearer two-token"), None, Read),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(
            a.check(Some("Bearer two-token"), Some("b"), Read),
            Ok(Some("b".into()))
        );
    }

    #[test]
    fn reading_and_writing_are_apart() {
        let a = auth();
        assert!(matches!(
            a.check(Some("Bearer w-token"), None, Access::Read),
            Err(Denied::Forbidden(m)) if m.contains("may not read")
        ));
        assert!(matches!(
            a.check(Some(&basic("acme", "s3cret")), None, Access::Write),
            Err(Denied::Forbidden(_))
        ));
    }

    #[test]
    fn unknown_or_missing_credentials_are_401() {
        let a = auth();
        for bad in [
            None,
            Some("Bearer nope"),
            Some("Bearer"),
            Some("Digest x"),
            Some("Basic !!!"),
        ] {
            assert!(
                matches!(
                    a.check(bad, None, Access::Read),
                    Err(Denied::Unauthenticated(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            a.check(Some(&basic("acme", "wrong")), None, Access::Read),
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[test]
    fn off_lets_everything_through_and_ops_paths_stay_open() {
        let off = Auth::disabled();
        assert_eq!(off.check(None, Some("x"), Access::Write), Ok(None));
        let a = auth();
        assert!(a.is_open("/metrics") && a.is_open("/readyz"));
        assert!(!a.is_open("/api/v1/query"));
    }

    #[test]
    fn bad_configuration_names_the_credential() {
        let bad = |c: CredentialConfig| {
            Auth::new(&AuthConfig {
                enabled: true,
                credentials: vec![c],
                ..Default::default()
            })
            .unwrap_err()
            .to_string()
        };
        let base = CredentialConfig {
            name: "x".into(),
            token_sha256: hash_secret("t"),
            tenants: vec!["a".into()],
            access: vec!["read".into()],
            ..Default::default()
        };
        assert!(
            bad(CredentialConfig {
                token_sha256: "abc".into(),
                ..base.clone()
            })
            .contains("64 hex digits")
        );
        assert!(
            bad(CredentialConfig {
                access: vec!["admin".into()],
                ..base.clone()
            })
            .contains("\"admin\" is not read or write")
        );
        assert!(
            bad(CredentialConfig {
                tenants: vec![],
                ..base.clone()
            })
            .contains("tenants is empty")
        );
        assert!(
            Auth::new(&AuthConfig {
                enabled: true,
                ..Default::default()
            })
            .is_err()
        );
    }
}
