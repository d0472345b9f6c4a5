//! Thumbnails of indexed images for the web page and other clients. Hits carry the image
//! reference their corpus gave; the server reads it under `--media-root` (the image root the
//! collections were indexed from), never outside it, and answers a PNG thumbnail, so DICOM files
//! display in any browser.

use std::io::Cursor;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::dto::MediaQuery;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const DEFAULT_SIDE: u32 = 256;

/// A PNG thumbnail of an indexed image (PNG, JPEG or DICOM on disk).
#[utoipa::path(
    get,
    path = "/v1/media",
    tag = "retrieval",
    params(MediaQuery),
    responses((status = 200, description = "PNG thumbnail", content_type = "image/png", body = Vec<u8>))
)]
pub async fn media(
    State(state): State<AppState>,
    q: Result<Query<MediaQuery>, QueryRejection>,
) -> ApiResult<Response> {
    // A missing or mistyped parameter is an invalid request (422), as in every JSON body.
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("query string: {}", e.body_text())))?;
    let root = state.settings.media_root.clone().ok_or_else(|| {
        ApiError::not_found(
            "this server serves no images: start it with --media-root DIR (the image root the collections were indexed from)",
        )
    })?;
    let reference = Some(q.path)
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("give the image reference of a hit as ?path=…"))?;
    let side = q.max_side.unwrap_or(DEFAULT_SIDE);
    if !(16..=1024).contains(&side) {
        return Err(ApiError::invalid(format!(
            "max_side {side} must be between 16 and 1024"
        )));
    }
    let path =
        mirage_data::corpus::resolve_under_root(&root, &reference).map_err(ApiError::invalid)?;
    let png = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ApiError::not_found(format!("no image {reference:?} under the media root"))
            }
            _ => ApiError::internal(format!("{}: {e}", path.display())),
        })?;
        let decoded = mirage_model::image_input::decode_image(
            &bytes,
            &reference,
            mirage_model::image_input::DecodeOptions::default(),
        )?;
        let thumb = image::DynamicImage::ImageRgb32F(decoded.rgb)
            .thumbnail(side, side)
            .into_rgb8();
        let mut out = Cursor::new(Vec::new());
        thumb
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(ApiError::internal)?;
        Ok(out.into_inner())
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        png,
    )
        .into_response())
}

/// The web page: search by text or image, zero-shot classify; one self-contained file, so it
/// works offline (no CDN).
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            ),
        ],
        include_str!("../ui/index.html"),
    )
}
