//! A GET to the query API as the CLI makes it: optional tenant, a clear error when the API
//! cannot be reached, and the API's own error message when it refuses.

use serde_json::Value;

/// `[auth] client_token` of this run: the CLI's requests to the listeners carry it.
static CLIENT_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the token the CLI's requests carry (once, from the configuration).
pub fn set_client_token(token: &str) {
    let _ = CLIENT_TOKEN.set(token.to_string());
}

/// An HTTP client for the pipeline's own services, trusting `[tls] ca_file` too.
pub fn client() -> reqwest::Client {
    obs_runtime::tls::http_client()
        .build()
        .expect("an HTTP client with the CA roots trust() validated")
}

/// `req` with the CLI's bearer token, when one is configured.
pub fn authorized(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match CLIENT_TOKEN.get().filter(|t| !t.is_empty()) {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// GETs `path` with `params` (as `tenant` when given) and returns the body of a successful
/// answer; `what` names the request in errors.
pub async fn get(
    base: &str,
    path: &str,
    params: &[(&str, &str)],
    tenant: Option<&str>,
    what: &str,
) -> anyhow::Result<String> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut req = authorized(client().get(&url).query(params));
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the query API at {url}: {e} (is `obs up` or `obs query` running?)"
        )
    })?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from))
            .unwrap_or(text);
        anyhow::bail!("{what} failed ({status}): {msg}");
    }
    Ok(text)
}
