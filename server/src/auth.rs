//! Who may call what: the public paths, the API and admin key scopes, and the middleware that
//! enforces them. The OpenAPI document reads the same rules (`crate::openapi`), so the security
//! it declares is the one enforced here.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorKind};
use crate::state::AppState;

/// Paths that answer without a key even when keys are configured (probes, metrics, the
/// document, the web page); every other path needs one.
pub fn public_path(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/livez" | "/ready" | "/readyz" | "/metrics" | "/openapi.json" | "/"
    )
}

/// Whether a request needs an admin key (a key of read scope is refused with 403).
pub fn needs_admin(method: &Method, path: &str) -> bool {
    // Snapshots hold whole collections: even reading them is an administrator's business.
    let snapshots = path == "/v1/snapshots" || path.starts_with("/v1/snapshots/");
    snapshots
        || ((path.starts_with("/v1/collections/")
            || path == "/v1/models"
            || path.starts_with("/v1/models/"))
            && method != Method::GET)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let s = &state.settings;
    if !s.auth_enabled() || public_path(req.uri().path()) || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let headers = req.headers();
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let unauthorized = |detail: &str| {
        let mut r = ApiError::new(ErrorKind::Unauthorized, detail).into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    };
    let Some(key) = key else {
        return unauthorized("this server requires an API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`");
    };
    let is = |keys: &[crate::config::Secret]| {
        keys.iter()
            .any(|k| constant_time_eq(k.0.as_bytes(), key.as_bytes()))
    };
    if is(&s.admin_keys) {
        return next.run(req).await;
    }
    if !is(&s.api_keys) {
        return unauthorized("the API key is not known to this server");
    }
    if needs_admin(req.method(), req.uri().path()) {
        return ApiError::new(
            ErrorKind::Forbidden,
            "this key has read scope; creating, deleting and writing collections, and snapshots, need an admin key",
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_collection_writes_need_admin_scope() {
        assert!(needs_admin(&Method::PUT, "/v1/collections/a"));
        assert!(needs_admin(&Method::POST, "/v1/collections/a/items"));
        assert!(!needs_admin(&Method::GET, "/v1/collections/a"));
        assert!(!needs_admin(&Method::POST, "/v1/search"));
        assert!(needs_admin(&Method::GET, "/v1/snapshots"));
        assert!(needs_admin(
            &Method::GET,
            "/v1/snapshots/a-1.mirage-snapshot.tar"
        ));
        assert!(needs_admin(&Method::POST, "/v1/collections/a/snapshots"));
        assert!(public_path("/ready") && !public_path("/v1/search"));
    }
}
