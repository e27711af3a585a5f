//! The tenant of a request, from `X-Scope-OrgID`: the same rule for the collectors and the
//! query API, so that whatever a tenant can write it can read.

use axum::http::HeaderMap;

/// The tenant header.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// The request's tenant: `X-Scope-OrgID` (1-128 letters, digits, `-`, `_`, `.`), else
/// `default`; anything else is refused with the reason.
pub fn tenant(headers: &HeaderMap, default: &str) -> Result<String, String> {
    let Some(value) = headers.get(TENANT_HEADER) else {
        return Ok(default.to_string());
    };
    let t = value
        .to_str()
        .map_err(|_| format!("{TENANT_HEADER} is not valid text"))?
        .trim();
    let valid = !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        return Err(format!(
            "invalid {TENANT_HEADER} {t:?}: use 1-128 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(t.to_string())
}
