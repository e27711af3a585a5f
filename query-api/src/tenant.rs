//! The tenant of a query: `X-Scope-OrgID`, as the collectors read it.

use axum::http::HeaderMap;

pub use obs_runtime::tenant::TENANT_HEADER;

/// The request's tenant: `X-Scope-OrgID` (1-128 letters, digits, `-`, `_`, `.`, as the
/// collectors accept), else `default`; anything else is refused with the reason.
pub fn tenant(headers: &HeaderMap) -> Result<String, String> {
    obs_runtime::tenant::tenant(headers, "default")
}
