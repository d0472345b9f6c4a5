//! `POST /v1/embeddings`: OpenAI's embeddings shape, with images.

use axum::extract::State;
use axum::Json;
use base64::Engine;
use serde_json::Value;

use crate::dto::{
    Embedding, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, EncodingFormat, InputType,
    Usage,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiBody;
use crate::infer::Input;
use crate::routes::{check_input_count, prepare_images};
use crate::state::AppState;

enum Item {
    Text(String),
    Image(String),
}

fn parse_input(input: Value) -> ApiResult<Vec<Item>> {
    let list = match input {
        Value::String(s) => return Ok(vec![Item::Text(s)]),
        Value::Array(list) => list,
        other => {
            return Err(ApiError::invalid(format!(
                "input must be a string or a list, got {}",
                kind(&other)
            )))
        }
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(Item::Text(s)),
            Value::Object(mut m) => {
                // null is "not given", as for every optional field.
                let text = m.remove("text").filter(|v| !v.is_null());
                let image = m.remove("image").filter(|v| !v.is_null());
                if let Some(k) = m.keys().next() {
                    return Err(ApiError::invalid(format!(
                        "input[{i}]: unknown field {k:?}; an object has either \"text\" or \"image\""
                    )));
                }
                match (text, image) {
                    (Some(Value::String(t)), None) => Ok(Item::Text(t)),
                    (None, Some(Value::String(d))) => Ok(Item::Image(d)),
                    (Some(_), Some(_)) => Err(ApiError::invalid(format!(
                        "input[{i}]: give \"text\" or \"image\", not both"
                    ))),
                    (None, None) => Err(ApiError::invalid(format!(
                        "input[{i}]: an object needs \"text\" or \"image\""
                    ))),
                    _ => Err(ApiError::invalid(format!(
                        "input[{i}]: \"text\" and \"image\" must be strings"
                    ))),
                }
            }
            other => Err(ApiError::invalid(format!(
                "input[{i}] must be a string or an object with \"text\" or \"image\", got {}",
                kind(&other)
            ))),
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number (token arrays are not supported: send text)",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Embeds texts and images into the joint space.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "inference",
    request_body(description = "OpenAI-compatible; items may be images", content((EmbeddingsRequest = "application/json"), (EmbeddingsRequest = "multipart/form-data"))),
    responses((status = 200, description = "Unit vectors in input order", body = EmbeddingsResponse))
)]
pub async fn embeddings(
    State(state): State<AppState>,
    ApiBody(req): ApiBody<EmbeddingsRequest>,
) -> ApiResult<Json<EmbeddingsResponse>> {
    let served = state.models.get(req.model.as_deref())?;
    let model = served.model();
    if let Some(d) = req.dimensions {
        if d != model.dim() {
            return Err(ApiError::invalid(format!(
                "dimensions {d} is not available: the model's embeddings have {} dimensions (omit the field)",
                model.dim()
            )));
        }
    }
    let items = parse_input(req.input)?;
    check_input_count(&state, items.len(), "inputs")?;
    let mut prompt_tokens = 0;
    let mut images = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::Text(t) => {
                if t.trim().is_empty() {
                    return Err(ApiError::invalid(format!("input[{i}] is an empty text")));
                }
                let role = match req.input_type {
                    InputType::Document => mirage_model::TextRole::Document,
                    InputType::Query => mirage_model::TextRole::Query,
                };
                prompt_tokens += model.tokenizer_for(role).count_tokens(t)?;
            }
            Item::Image(d) => images.push((format!("input[{i}]"), d.clone())),
        }
    }
    let mut pixels = prepare_images(&state, &served, images, req.frame.into())
        .await?
        .into_iter();
    let inputs = items
        .into_iter()
        .map(|item| match item {
            Item::Text(t) => match req.input_type {
                InputType::Document => Input::Text(t),
                InputType::Query => Input::Query(t),
            },
            Item::Image(_) => Input::Pixels(
                pixels
                    .next()
                    .expect("one preprocessed image per image input — this is a bug")
                    .0,
            ),
        })
        .collect();
    let vectors = served.encoder.embed(inputs).await?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| Embedding {
            object: "embedding".into(),
            index,
            embedding: match req.encoding_format {
                EncodingFormat::Float => EmbeddingVector::Float(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list".into(),
        data,
        model: model.model_id().to_owned(),
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    }))
}
