//! `GET /v1/models` (the OpenAI list), and loading and unloading bundles while the server runs
//! (`POST /v1/models`, `DELETE /v1/models/{id}`, admin scope).

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::dto::{LoadModelRequest, ModelCard, ModelList};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::extract::ApiBody;
use crate::models::ServedModel;
use crate::state::AppState;

/// The card of a loaded model.
pub fn card(m: &ServedModel, default: bool) -> ModelCard {
    let model = m.model();
    let c = model.config();
    ModelCard {
        id: m.model_ref.model_id.clone(),
        object: "model".into(),
        created: m.loaded_at,
        owned_by: "mirage".into(),
        default,
        bundle_sha256: m.model_ref.sha256.clone(),
        embed_dim: model.dim(),
        text: c.architecture.text.describe(),
        vision: c.architecture.vision.describe(),
        engine: model.engine().as_str().into(),
        image_size: c.preprocess.image_size,
        max_tokens: c.tokenizer.max_length,
        text_bank_size: m.text_bank.as_ref().map(|b| b.captions.len()),
        weight_bytes: m.weight_bytes,
        queue_depth: m.encoder.depth(),
    }
}

/// Every loaded model's card, the default first.
pub fn cards(state: &AppState) -> Vec<ModelCard> {
    state
        .models
        .all()
        .iter()
        .enumerate()
        .map(|(i, m)| card(m, i == 0))
        .collect()
}

/// The loaded models.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "The loaded models, the default first", body = ModelList)))]
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: cards(&state),
    })
}

/// `rel` under `root`, refusing what would leave it (absolute paths, `..`, symlinks out).
fn under(root: &FsPath, rel: &str) -> ApiResult<PathBuf> {
    let p = FsPath::new(rel);
    if rel.trim().is_empty()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ApiError::invalid(format!(
            "path {rel:?} must be relative to the models folder, without \"..\""
        )));
    }
    let full = root.join(p);
    let real = full.canonicalize().map_err(|_| {
        ApiError::not_found(format!("no bundle directory {rel:?} in the models folder"))
    })?;
    let root = root.canonicalize().map_err(ApiError::internal)?;
    if !real.starts_with(&root) {
        return Err(ApiError::invalid(format!(
            "path {rel:?} leads out of the models folder"
        )));
    }
    Ok(real)
}

/// Loads a bundle from the server's models folder and serves it next to the others.
#[utoipa::path(post, path = "/v1/models", tag = "models",
    request_body(content = LoadModelRequest, content_type = "application/json"),
    responses((status = 201, description = "Loaded and warmed up", body = ModelCard)))]
pub async fn load_model(
    State(state): State<AppState>,
    ApiBody(req): ApiBody<LoadModelRequest>,
) -> ApiResult<(StatusCode, Json<ModelCard>)> {
    let Some(root) = state.settings.models_dir.clone() else {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            "this server loads no models at run time: start it with --models-dir DIR",
        ));
    };
    let dir = under(&root, &req.path)?;
    if !dir.join(mirage_model::config::BUNDLE_JSON).is_file() {
        return Err(ApiError::not_found(format!(
            "{:?} in the models folder is not a bundle (no bundle.json)",
            req.path
        )));
    }
    let served = ServedModel::load(&dir, &state.settings, state.metrics.clone())
        .await
        .map_err(|e| ApiError::invalid(format!("cannot load {:?}: {e:#}", req.path)))?;
    let served = Arc::new(served);
    state.models.add(served.clone())?;
    tracing::info!(model_id = %served.model_ref.model_id, dir = %dir.display(), "model loaded");
    Ok((StatusCode::CREATED, Json(card(&served, false))))
}

/// Unloads a model no collection needs; requests already using it finish first.
#[utoipa::path(delete, path = "/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses((status = 200, description = "Unloaded", body = ModelCard)))]
pub async fn unload_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelCard>> {
    let served = state.models.get(Some(&id))?;
    let using = state.collections_using(&served.model_ref).await?;
    if !using.is_empty() {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!(
                "model {id:?} is the model of collection(s) {}; delete them first or keep it loaded",
                using
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let default = Arc::ptr_eq(&served, &state.models.default_model());
    let removed = state.models.remove(&id)?;
    tracing::info!(model_id = %id, "model unloaded");
    Ok(Json(card(&removed, default)))
}
