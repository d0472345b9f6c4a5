//! `POST /v1/classify`: zero-shot classification with prompt ensembles.

use axum::extract::State;
use axum::Json;
use mirage_model::zeroshot::{classify as zero_shot, validate_labels, ClassifyMode};

use crate::dto::{ClassifyRequest, ClassifyResponse, LabelResult};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiBody;
use crate::routes::{check_input_count, prepare_images};
use crate::state::AppState;

/// Classifies an image against labels.
#[utoipa::path(
    post,
    path = "/v1/classify",
    tag = "inference",
    request_body(content((ClassifyRequest = "application/json"), (ClassifyRequest = "multipart/form-data"))),
    responses((status = 200, description = "Labels by decreasing probability", body = ClassifyResponse))
)]
pub async fn classify(
    State(state): State<AppState>,
    ApiBody(req): ApiBody<ClassifyRequest>,
) -> ApiResult<Json<ClassifyResponse>> {
    validate_labels(&req.labels)?;
    check_input_count(&state, req.labels.len(), "labels")?;
    let served = state.models.get(req.model.as_deref())?;
    let model = served.model();
    let templates = model
        .prompt_templates()
        .with_overrides(req.templates, req.negative_templates);
    let problems = templates.problems();
    if !problems.is_empty() {
        return Err(ApiError::invalid(format!(
            "templates: {}",
            problems.join("; ")
        )));
    }
    let mode = if req.multi_label {
        ClassifyMode::MultiLabel
    } else {
        ClassifyMode::SingleLabel
    };
    if let Some(t) = req.temperature {
        // Below 0.001 the logits overflow to infinity and the probabilities to NaN.
        if !(0.001..=1000.0).contains(&t) {
            return Err(ApiError::invalid(format!(
                "temperature must be 0.001–1000 (got {t})"
            )));
        }
    }
    let temperature = req
        .temperature
        .unwrap_or_else(|| mirage_model::zeroshot::served_temperature(model));
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(ApiError::invalid(format!(
            "the bundle's calibration temperature {temperature} is not a positive number"
        )));
    }
    let (pixels, _) = prepare_images(
        &state,
        &served,
        vec![("image".into(), req.image)],
        req.frame.into(),
    )
    .await?
    .pop()
    .expect("one image in, one out — this is a bug");
    let labels = req.labels;
    let prompts = labels.len()
        * (templates.positive.len()
            + if req.multi_label {
                templates.negative.len()
            } else {
                0
            });
    let cost = 1 + prompts;
    let scores = served
        .encoder
        .run(cost, move |m| {
            let emb = m.embed_pixel_batch(&pixels, 1)?;
            let mut out = zero_shot(m, &emb, &labels, Some(&templates), mode, Some(temperature))?;
            Ok(out
                .pop()
                .expect("one image in, one result out — this is a bug"))
        })
        .await?;
    let mut labels: Vec<LabelResult> = scores
        .into_iter()
        .map(|s| LabelResult {
            label: s.label,
            probability: s.probability,
            score: s.score,
        })
        .collect();
    labels.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    Ok(Json(ClassifyResponse {
        model_id: model.model_id().to_owned(),
        multi_label: req.multi_label,
        temperature,
        calibrated: req.temperature.is_none() && model.config().calibration.is_some(),
        labels,
    }))
}
