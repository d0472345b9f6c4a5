//! Probes, server information and metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use crate::dto::{HealthResponse, InfoResponse, Limits, RerankerInfo, StoreHealth};
use crate::error::{ApiError, ApiResult, ErrorKind, Problem, STORE_RETRY_AFTER_SECS};
use crate::metrics::ModelLine;
use crate::state::AppState;

/// Liveness: the process answers (also at `/livez`).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthResponse)))]
pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "pass".into(),
        model_id: state.models.default_model().model_ref.model_id.clone(),
        stores: Vec::new(),
    })
}

/// Readiness: the model is loaded and warmed up, the server is not draining and its default
/// store answers (also at `/readyz`). A second (Qdrant) store that is down makes the status
/// `warn`: collections of the other store keep being served.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready (`warn`: a non-default store is down, see `stores`)", body = HealthResponse),
        (status = 503, description = "Loading, draining, or the default store is down", body = Problem, content_type = "application/problem+json")
    ))]
pub async fn ready(State(state): State<AppState>) -> ApiResult<Json<HealthResponse>> {
    if !state.is_ready() {
        return Err(ApiError::new(
            ErrorKind::NotReady,
            "the server is warming up or shutting down",
        )
        .retry_after(1));
    }
    let mut stores = Vec::new();
    let mut status = "pass";
    for (i, spec) in state.stores().iter().enumerate() {
        let kind = spec.kind();
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, mirage_index::probe(spec)).await;
        let detail = match outcome {
            Ok(Ok(what)) => Ok(what),
            Ok(Err(e)) => {
                tracing::warn!(store = %spec, error = %e, "readiness: store is down");
                Err(store_down_reason(&e))
            }
            Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        };
        if let Err(why) = &detail {
            if i == 0 {
                return Err(ApiError::new(
                    ErrorKind::StoreUnavailable,
                    format!("the default store ({kind}) is down: {why}"),
                )
                .retry_after(STORE_RETRY_AFTER_SECS));
            }
            status = "warn";
        }
        stores.push(StoreHealth {
            store: kind.into(),
            default: i == 0,
            status: if detail.is_ok() { "pass" } else { "fail" }.into(),
            detail: detail.unwrap_or_else(|why| why),
        });
    }
    Ok(Json(HealthResponse {
        status: status.into(),
        model_id: state.models.default_model().model_ref.model_id.clone(),
        stores,
    }))
}

/// Why a store is down, in words an operator acts on (the full cause goes to the log only).
fn store_down_reason(e: &mirage_index::IndexError) -> String {
    use mirage_index::{IndexError, StoreFailure};
    let why = match e {
        IndexError::Qdrant {
            failure: StoreFailure::Unavailable,
            ..
        } => "unreachable (connection refused, timed out or overloaded)",
        IndexError::Qdrant {
            failure: StoreFailure::Unauthenticated,
            ..
        } => "authentication failed: check MIRAGE_QDRANT_API_KEY",
        _ => "it failed the probe request",
    };
    format!("{why}; the cause is in the server log")
}

/// How long readiness waits for a store: probes run every few seconds and must not pile up.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The served model, the stores and the limits a client must respect.
#[utoipa::path(get, path = "/info", tag = "operations",
    responses((status = 200, description = "Server information", body = InfoResponse)))]
pub async fn info(State(state): State<AppState>) -> Json<InfoResponse> {
    let served = state.models.default_model();
    let m = served.model();
    let c = m.config();
    let s = &state.settings;
    Json(InfoResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        model_id: m.model_id().into(),
        bundle_sha256: m.bundle_sha256().into(),
        embed_dim: m.dim(),
        vision: c.architecture.vision.describe(),
        device: m.inference_device().as_str().into(),
        engine: m.engine().as_str().into(),
        engine_detail: m.engine_description(),
        image_size: c.preprocess.image_size,
        max_tokens: c.tokenizer.max_length,
        calibration_temperature: c.calibration.as_ref().map(|c| c.temperature),
        text_bank_size: served.text_bank.as_ref().map(|b| b.captions.len()),
        store: state.store.to_string(),
        qdrant: state.qdrant.is_some(),
        auth: s.auth_enabled(),
        rag_min_score: s.rag_min_score,
        audit_threshold: s.audit_threshold,
        media: s.media_root.is_some(),
        reranker: state.reranker.as_ref().map(|r| RerankerInfo {
            model_id: r.model_id().into(),
            engine: r.engine().as_str().into(),
            max_tokens: r.config().max_length,
            num_labels: r.config().num_labels,
        }),
        models: crate::routes::models::cards(&state),
        model_loading: s.models_dir.is_some(),
        limits: Limits {
            max_body_bytes: s.max_body_bytes,
            max_inputs_per_request: s.max_inputs_per_request,
            max_queue_items: s.max_queue_items,
            batch_size: s.batch_size,
            request_timeout_secs: s.request_timeout_secs,
            max_image_side: mirage_model::image_input::MAX_SIDE,
        },
    })
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let models = state.models.all();
    let default = &models[0];
    let loaded: Vec<ModelLine> = models
        .iter()
        .map(|m| ModelLine {
            model_id: m.model_ref.model_id.clone(),
            model_sha: m.model_ref.sha256.clone(),
            engine: m.model().engine().as_str(),
            weight_bytes: m.weight_bytes,
            queue_depth: m.encoder.depth(),
        })
        .collect();
    let text = state.metrics.render(
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("model_id", &default.model_ref.model_id),
            ("model_sha", &default.model_ref.sha256),
            ("engine", default.model().engine().as_str()),
        ],
        &loaded,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
