//! `POST /v1/audit`: the matching score s of (image, caption) pairs against the bundle's text
//! bank, as in training; low s flags a likely mismatched pair.

use axum::extract::State;
use axum::Json;
use mirage_model::matching::{audit_pairs, default_matching};

use crate::dto::{AuditRequest, AuditResponse, AuditResult};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::extract::ApiBody;
use crate::routes::{check_input_count, prepare_images};
use crate::state::AppState;

/// Scores (image, caption) pairs and flags likely mismatches.
#[utoipa::path(
    post,
    path = "/v1/audit",
    tag = "inference",
    request_body(content((AuditRequest = "application/json"), (AuditRequest = "multipart/form-data"))),
    responses((status = 200, description = "Matching score of every pair", body = AuditResponse))
)]
pub async fn audit(
    State(state): State<AppState>,
    ApiBody(req): ApiBody<AuditRequest>,
) -> ApiResult<Json<AuditResponse>> {
    let served = state.models.get(req.model.as_deref())?;
    if served.text_bank.is_none() {
        return Err(ApiError::new(
            ErrorKind::NotSupportedByModel,
            format!(
                "model {:?} has no text bank (text_bank.safetensors), so s cannot be computed; serve a bundle exported by mirage-train",
                served.model_ref.model_id
            ),
        ));
    }
    check_input_count(&state, req.pairs.len(), "pairs")?;
    crate::routes::search::check_score("threshold", req.threshold)?;
    let threshold = req.threshold.unwrap_or(state.settings.audit_threshold);
    let mut captions = Vec::with_capacity(req.pairs.len());
    let mut images = Vec::with_capacity(req.pairs.len());
    let mut ids = Vec::with_capacity(req.pairs.len());
    for (i, p) in req.pairs.into_iter().enumerate() {
        if p.caption.trim().is_empty() {
            return Err(ApiError::invalid(format!("pairs[{i}].caption is empty")));
        }
        captions.push(p.caption);
        images.push((format!("pairs[{i}].image"), p.image));
        ids.push(p.id);
    }
    let n = captions.len();
    let pixels: Vec<f32> = prepare_images(&state, &served, images, req.frame.into())
        .await?
        .into_iter()
        .flat_map(|(p, _)| p)
        .collect();
    let worker = served.clone();
    let audits = served
        .encoder
        .run(2 * n, move |m| {
            let bank = worker
                .text_bank
                .as_ref()
                .expect("checked above — this is a bug");
            let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
            Ok(audit_pairs(
                m,
                bank,
                &pixels,
                n,
                &refs,
                default_matching(m),
            )?)
        })
        .await?;
    let bank = served
        .text_bank
        .as_ref()
        .expect("checked above — this is a bug");
    let results: Vec<AuditResult> = audits
        .into_iter()
        .zip(ids)
        .enumerate()
        .map(|(index, (a, id))| AuditResult {
            index,
            id,
            s: a.s,
            flagged: a.s < threshold,
            image_caption_similarity: a.image_caption_similarity,
            nearest_bank_caption: bank.captions[a.nearest].clone(),
            nearest_bank_weight: a.nearest_weight,
        })
        .collect();
    Ok(Json(AuditResponse {
        model_id: served.model_ref.model_id.clone(),
        threshold,
        bank_size: bank.captions.len(),
        flagged: results.iter().filter(|r| r.flagged).count(),
        results,
    }))
}
