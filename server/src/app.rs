//! The router: routes, OpenAPI, and the layers every request passes (request id, problem
//! details for every error, metrics, auth, CORS, timeout, body limit, panic catching).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorKind, InternalCause, Problem, PROBLEM_JSON};
use crate::openapi::{finish_spec, Contract};
use crate::routes::{
    audit, classify, collections, embeddings, media, models, ops, rerank, search, snapshots,
};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MIRAGE-RS",
        description = "Noise-robust medical image–text retrieval: zero-shot classification, cross-modal search, MM-RAG context and caption audit. Every error is application/problem+json (RFC 9457).",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "inference", description = "Embeddings, zero-shot classification, audit"),
        (name = "retrieval", description = "Search and RAG context"),
        (name = "collections", description = "Collection lifecycle and items"),
        (name = "operations", description = "Probes, info, metrics")
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(embeddings::embeddings))
        .routes(routes!(classify::classify))
        .routes(routes!(search::search))
        .routes(routes!(search::rag_context))
        .routes(routes!(rerank::rerank))
        .routes(routes!(media::media))
        .routes(routes!(audit::audit))
        .routes(routes!(collections::list_collections))
        .routes(routes!(
            collections::create_collection,
            collections::get_collection,
            collections::delete_collection
        ))
        .routes(routes!(
            collections::upsert_items,
            collections::delete_items
        ))
        .routes(routes!(snapshots::create_snapshot))
        .routes(routes!(snapshots::list_snapshots))
        .routes(routes!(
            snapshots::download_snapshot,
            snapshots::delete_snapshot
        ))
        .routes(routes!(snapshots::restore_snapshot))
        .routes(routes!(models::list_models, models::load_model))
        .routes(routes!(models::unload_model))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::info))
        .routes(routes!(ops::metrics))
}

/// The OpenAPI document for the default configuration (what `mirage openapi` prints).
pub fn openapi() -> serde_json::Value {
    let (_, api) = routes().split_for_parts();
    crate::openapi::document(&finish_spec(api), &Contract::default())
}

/// The contract of the server `state` describes: its limits, model, stores and keys.
fn contract(state: &AppState) -> Contract {
    let mut stores = vec![state.store.kind()];
    if let Some(q) = &state.qdrant {
        let kind = q.kind();
        if !stores.contains(&kind) {
            stores.push(kind);
        }
    }
    // The served document is fixed when the server starts: it states a vector length and a
    // passage size only when every model that can be served shares them.
    let models = state.models.all();
    let fixed = state.settings.models_dir.is_none();
    let same = |f: &dyn Fn(&mirage_model::MirageModel) -> usize| {
        let first = f(models[0].model());
        (fixed && models.iter().all(|m| f(m.model()) == first)).then_some(first)
    };
    Contract {
        max_inputs_per_request: state.settings.max_inputs_per_request,
        embed_dim: same(&|m| m.dim()),
        max_chunk_tokens: same(&|m| m.tokenizer().max_content_tokens()),
        stores,
        auth: state.settings.auth_enabled(),
    }
}

/// The service: routes plus every layer. Pure: binds nothing, spawns nothing.
pub fn app(state: AppState) -> Router {
    let (router, api) = routes().split_for_parts();
    let spec = crate::openapi::document(&finish_spec(api), &contract(&state));
    let settings = &state.settings;
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let spec = spec.clone();
                async move { Json(spec) }
            }),
        )
        .route("/", axum::routing::get(media::page))
        .route("/livez", axum::routing::get(ops::health))
        .route("/readyz", axum::routing::get(ops::ready))
        .fallback(|| async { ApiError::not_found("no such route; GET /openapi.json lists them") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorKind::MethodNotAllowed,
                "this route does not take that method; GET /openapi.json lists the methods",
            )
        })
        .route_layer(middleware::from_fn_with_state(state.clone(), record_route))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(settings.request_timeout_secs),
        ))
        .layer(CatchPanicLayer::new());
    let router = match cors(&settings.cors_origins) {
        Some(c) => router.layer(c),
        None => router,
    };
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            problems_and_telemetry,
        ))
        .with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            "x-api-key".parse().expect("static header"),
        ])
        .expose_headers([
            "x-request-id".parse().expect("static header"),
            header::RETRY_AFTER,
        ]);
    Some(if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        layer.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
    })
}

/// The route template that served a request, passed from the inner layer to the outer one.
#[derive(Clone)]
struct RouteTemplate(String);

async fn record_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let mut res = next.run(req).await;
    if let Some(r) = route {
        res.extensions_mut().insert(RouteTemplate(r));
    }
    res
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req-{:x}", REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)))
}

/// Outermost layer: request id, span, metrics, and problem details for every error response,
/// whichever layer produced it (router 404/405, body limit 413, timeout, panic).
async fn problems_and_telemetry(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Attribute names follow OpenTelemetry's HTTP conventions; `otel.*` name and kind the
    // exported span.
    let span = tracing::info_span!(
        "request",
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        url.path = %path,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        request_id = %id,
    );
    crate::telemetry::continue_trace(&span, req.headers());
    let start = Instant::now();
    let res = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let mut res = if res.status().is_client_error() || res.status().is_server_error() {
        to_problem(res, &path, &id).await
    } else {
        res
    };
    let route = res
        .extensions()
        .get::<RouteTemplate>()
        .map_or_else(|| "unmatched".to_owned(), |r| r.0.clone());
    let status = res.status();
    span.record("otel.name", format!("{method} {route}"));
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let elapsed = start.elapsed().as_secs_f64();
    state
        .metrics
        .request(method.as_str(), &route, status.as_u16(), elapsed);
    let _g = span.enter();
    if let Some(cause) = res.extensions().get::<InternalCause>() {
        tracing::error!(status = status.as_u16(), cause = %cause.0, "request failed");
    } else if status.is_server_error() {
        tracing::error!(status = status.as_u16(), "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), seconds = elapsed, "request done");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

async fn to_problem(res: Response, path: &str, id: &str) -> Response {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let (mut parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut problem: Problem = match is_problem
        .then(|| serde_json::from_slice::<Problem>(&bytes).ok())
        .flatten()
    {
        Some(p) => p,
        None => {
            // A bare status from a layer: name it properly. A timeout becomes 503 + Retry-After.
            let kind = ErrorKind::from_status(parts.status);
            let detail = match kind {
                ErrorKind::Timeout => "the request took longer than the server's request_timeout_secs; retry, or send less per request".to_owned(),
                ErrorKind::PayloadTooLarge => "the request body exceeds the server's limit (see max_body_bytes in GET /info)".to_owned(),
                ErrorKind::Internal => "the server failed to process the request; the cause is in its log".to_owned(),
                _ => String::from_utf8_lossy(&bytes).trim().to_owned(),
            };
            let mut e = ApiError::new(kind, detail);
            if kind == ErrorKind::Timeout {
                e = e.retry_after(1);
                parts
                    .headers
                    .insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            parts.status = kind.status();
            e.problem()
        }
    };
    problem.instance = Some(path.to_owned());
    problem.request_id = Some(id.to_owned());
    if parts.status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was never read, so this connection cannot carry another request:
        // say so, or a client's pool reuses it and its next request fails mid-flight.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&problem).expect("problem serialises — this is a bug");
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    #[tokio::test]
    async fn a_bare_timeout_becomes_a_503_problem_with_retry_after() {
        let bare = (axum::http::StatusCode::REQUEST_TIMEOUT, "").into_response();
        let res = to_problem(bare, "/v1/search", "req-1").await;
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let p: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(p.kind, "urn:mirage:problem:timeout");
        assert_eq!(p.instance.as_deref(), Some("/v1/search"));
        assert_eq!(p.request_id.as_deref(), Some("req-1"));
        assert!(p.detail.contains("request_timeout_secs"));
    }
}
