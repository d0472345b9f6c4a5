//! Route handlers, one file per area, and what they share: image decoding and input limits.

pub mod audit;
pub mod classify;
pub mod collections;
pub mod embeddings;
pub mod media;
pub mod models;
pub mod ops;
pub mod rerank;
pub mod search;
pub mod snapshots;

use base64::Engine;
use mirage_model::image_input::{decode_image, preprocess, DecodeOptions};

use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::state::AppState;

/// Decodes a data URI or bare base64 string; `what` names the input in errors.
pub fn decode_base64(data: &str, what: &str) -> ApiResult<Vec<u8>> {
    let payload = match data.strip_prefix("data:") {
        Some(rest) => {
            let (meta, payload) = rest.split_once(',').ok_or_else(|| {
                ApiError::new(
                    ErrorKind::InvalidImage,
                    format!("{what}: a data URI needs a comma before its data"),
                )
            })?;
            if !meta.ends_with(";base64") {
                return Err(ApiError::new(
                    ErrorKind::InvalidImage,
                    format!(
                        "{what}: only base64 data URIs are accepted (data:<type>;base64,<data>)"
                    ),
                ));
            }
            payload
        }
        None => data,
    };
    let cleaned: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidImage,
                format!("{what}: not valid base64 ({e}); send a data URI or standard base64 of the file"),
            )
        })
}

/// Decodes and preprocesses images on the blocking pool (decoding is CPU work that must not
/// stall the async workers). Returns the model-ready pixels of each, in order, and the DICOM
/// header fields of each.
pub async fn prepare_images(
    state: &AppState,
    model: &crate::models::ServedModel,
    images: Vec<(String, String)>,
    frame: u32,
) -> ApiResult<Vec<(Vec<f32>, std::collections::BTreeMap<String, String>)>> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let preprocess_cfg = model.model().config().preprocess.clone();
    let result = tokio::task::spawn_blocking(move || {
        images
            .into_iter()
            .map(|(what, data)| {
                let bytes = decode_base64(&data, &what)?;
                let img = decode_image(&bytes, &what, DecodeOptions { frame })?;
                let pixels = preprocess(&img, &preprocess_cfg)?;
                Ok((pixels, img.dicom_tags))
            })
            .collect::<ApiResult<Vec<_>>>()
    })
    .await
    .map_err(ApiError::internal)?;
    if let Err(e) = &result {
        if matches!(
            e.kind,
            ErrorKind::InvalidImage | ErrorKind::UnsupportedImage
        ) {
            state.metrics.decode_failure();
        }
    }
    result
}

/// Refuses requests with more inputs than the server allows.
pub fn check_input_count(state: &AppState, n: usize, what: &str) -> ApiResult<()> {
    let max = state.settings.max_inputs_per_request;
    if n == 0 {
        return Err(ApiError::invalid(format!(
            "{what} is empty; send at least one"
        )));
    }
    if n > max {
        return Err(ApiError::invalid(format!(
            "{n} {what} in one request; this server takes at most {max} (max_inputs_per_request): split the request"
        )));
    }
    Ok(())
}

/// Parses a filter JSON value.
pub fn parse_filter(v: Option<serde_json::Value>) -> ApiResult<Option<mirage_index::Filter>> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => {
            let f: mirage_index::Filter =
                serde_json::from_value(v).map_err(|e| ApiError::invalid(format!("filter: {e}")))?;
            f.validate()?;
            Ok(Some(f))
        }
    }
}
