//! Every error the HTTP API returns: RFC 9457 `application/problem+json` with a stable `type`, a
//! `title` per type and a `detail` that tells the caller what to fix. This file holds the only
//! table from error kind to status code. 5xx details are generic; the cause is logged.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `Retry-After` of a problem caused by an unreachable store: long enough for a restarting
/// Qdrant node to come back, short enough that clients recover quickly.
pub const STORE_RETRY_AFTER_SECS: u64 = 2;

/// Media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The kinds of problem; each has a stable `type` URI (`urn:mirage:problem:<slug>`) and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not well-formed JSON (or not well-formed multipart).
    InvalidJson,
    /// Well-formed but wrong: types, missing fields, values out of range.
    InvalidRequest,
    /// An image could not be decoded (bad base64, corrupt or unsupported file).
    InvalidImage,
    /// A DICOM transfer syntax or image format this server does not decode.
    UnsupportedImage,
    /// Content-Type other than JSON or multipart.
    UnsupportedMediaType,
    /// No such route, collection or item.
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// The collection exists with other settings or another model.
    Conflict,
    /// The served bundle lacks something the route needs (the text bank for audit).
    NotSupportedByModel,
    /// Body above the configured limit.
    PayloadTooLarge,
    /// Missing or unknown API key.
    Unauthorized,
    /// The key's scope does not allow this route.
    Forbidden,
    /// The inference queue is full; retry later.
    Overloaded,
    /// Still loading, or draining for shutdown.
    NotReady,
    /// The request took longer than the configured timeout.
    Timeout,
    /// The vector store (Qdrant) is unreachable or overloaded; retry later.
    StoreUnavailable,
    /// The vector store (Qdrant) refused the request or this server's credentials.
    StoreError,
    /// A bug or an unexpected failure; details are in the server log.
    Internal,
}

impl ErrorKind {
    /// The single kind → status table.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidJson => StatusCode::BAD_REQUEST,
            Self::InvalidRequest | Self::InvalidImage => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedImage | Self::UnsupportedMediaType => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict | Self::NotSupportedByModel => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady | Self::Timeout | Self::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::StoreError => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable slug of the `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid-json",
            Self::InvalidRequest => "invalid-request",
            Self::InvalidImage => "invalid-image",
            Self::UnsupportedImage => "unsupported-image",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict => "conflict",
            Self::NotSupportedByModel => "not-supported-by-model",
            Self::PayloadTooLarge => "payload-too-large",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Overloaded => "overloaded",
            Self::NotReady => "not-ready",
            Self::Timeout => "timeout",
            Self::StoreUnavailable => "store-unavailable",
            Self::StoreError => "store-error",
            Self::Internal => "internal",
        }
    }

    /// Stable title.
    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidJson => "Malformed request body",
            Self::InvalidRequest => "Invalid request",
            Self::InvalidImage => "Image could not be decoded",
            Self::UnsupportedImage => "Unsupported image encoding",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict => "Conflict",
            Self::NotSupportedByModel => "Not supported by the served model",
            Self::PayloadTooLarge => "Payload too large",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::Overloaded => "Server overloaded",
            Self::NotReady => "Not ready",
            Self::Timeout => "Request timed out",
            Self::StoreUnavailable => "Vector store unavailable",
            Self::StoreError => "Vector store error",
            Self::Internal => "Internal server error",
        }
    }

    /// The kind a bare status code (from a layer or the router) stands for.
    pub fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::InvalidJson,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            408 | 504 => Self::Timeout,
            409 => Self::Conflict,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            422 => Self::InvalidRequest,
            429 => Self::Overloaded,
            502 => Self::StoreError,
            503 => Self::NotReady,
            _ => Self::Internal,
        }
    }
}

/// RFC 9457 problem details, as every error response carries them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem, `urn:mirage:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary, the same for every occurrence of the type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong this time and how to fix it.
    pub detail: String,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The request id (also in the `x-request-id` header); quote it when reporting a problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Seconds to wait before retrying (429 and 503), as in the `Retry-After` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError {
    /// What kind.
    pub kind: ErrorKind,
    /// What to tell the caller.
    pub detail: String,
    /// For 429/503.
    pub retry_after: Option<u64>,
    /// For 5xx: what to log (never sent).
    pub internal: Option<String>,
}

/// Result alias of the HTTP layer.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error of `kind` with a caller-facing `detail`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            retry_after: None,
            internal: None,
        }
    }

    /// 422 with `detail`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, detail)
    }

    /// 404 with `detail`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, detail)
    }

    /// 500: the caller sees a generic detail, the log sees `cause`.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Internal,
            detail: "the server failed to process the request; the cause is in its log".into(),
            retry_after: None,
            internal: Some(cause.to_string()),
        }
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:mirage:problem:{}", self.kind.slug()),
            title: self.kind.title().into(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            instance: None,
            request_id: None,
            retry_after: self.retry_after,
        }
    }
}

/// Carried in response extensions so the logging middleware can record 5xx causes inside the
/// request span without sending them.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).expect("problem serialises — this is a bug");
        let mut res = (self.kind.status(), body).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(cause) = self.internal {
            res.extensions_mut().insert(InternalCause(cause));
        }
        res
    }
}

impl From<mirage_model::Error> for ApiError {
    fn from(e: mirage_model::Error) -> Self {
        use mirage_model::Error as E;
        match e {
            E::UnsupportedTransferSyntax { .. } | E::UnsupportedImageFormat { .. } => {
                Self::new(ErrorKind::UnsupportedImage, e.to_string())
            }
            E::ImageDecode { .. } | E::Dicom { .. } => {
                Self::new(ErrorKind::InvalidImage, e.to_string())
            }
            E::InvalidInput(_) | E::Tokenizer(_) => Self::invalid(e.to_string()),
            other => Self::internal(other),
        }
    }
}

impl From<mirage_index::IndexError> for ApiError {
    fn from(e: mirage_index::IndexError) -> Self {
        use mirage_index::IndexError as E;
        match e {
            E::CollectionNotFound { ref name, .. } => Self::not_found(format!(
                "collection {name:?} does not exist; create it with PUT /v1/collections/{name}"
            )),
            E::CollectionExists { .. } | E::ModelMismatch { .. } => {
                Self::new(ErrorKind::Conflict, e.to_string())
            }
            // The problem's title already says "Invalid request".
            E::InvalidRequest(detail) => Self::invalid(detail),
            E::Dimension { .. } | E::Snapshot { .. } => Self::invalid(e.to_string()),
            E::Qdrant { failure, .. } => {
                use mirage_index::StoreFailure as F;
                let (kind, detail, retry_after) = match failure {
                    F::Unavailable => (
                        ErrorKind::StoreUnavailable,
                        "the Qdrant store is unreachable or overloaded; retry after Retry-After seconds (the cause is in the server log)",
                        Some(STORE_RETRY_AFTER_SECS),
                    ),
                    F::Unauthenticated => (
                        ErrorKind::StoreError,
                        "the Qdrant store refused this server's credentials (authentication failed): check MIRAGE_QDRANT_API_KEY",
                        None,
                    ),
                    F::Rejected => (
                        ErrorKind::StoreError,
                        "the Qdrant store failed the request; the cause is in the server log",
                        None,
                    ),
                };
                Self {
                    kind,
                    detail: detail.into(),
                    retry_after,
                    internal: Some(e.to_string()),
                }
            }
            E::Model(m) => m.into(),
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_status() {
        use ErrorKind::*;
        for k in [
            InvalidJson,
            InvalidRequest,
            NotFound,
            MethodNotAllowed,
            PayloadTooLarge,
            Unauthorized,
            Forbidden,
            Overloaded,
            UnsupportedMediaType,
            StoreError,
            Internal,
        ] {
            assert_eq!(ErrorKind::from_status(k.status()), k, "{k:?}");
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let e = ApiError::internal("disk /secret/path is full");
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("secret"));
        let res = e.into_response();
        assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(res.extensions().get::<InternalCause>().is_some());
    }
}
