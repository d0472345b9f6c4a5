//! `POST /v1/rerank`: a query and documents in, the documents by a cross-encoder's relevance
//! out, in the shape Cohere's and Jina's rerank APIs use.

use axum::extract::State;
use axum::Json;

use crate::dto::{RerankDocumentObject, RerankRequest, RerankResponse, RerankResult, RerankUsage};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiBody;
use crate::routes::check_input_count;
use crate::state::AppState;

/// Orders documents by their relevance to a query, read together by the server's
/// cross-encoder (`--reranker`).
#[utoipa::path(
    post,
    path = "/v1/rerank",
    tag = "retrieval",
    request_body(content = RerankRequest, content_type = "application/json"),
    responses((status = 200, description = "Documents by decreasing relevance", body = RerankResponse))
)]
pub async fn rerank(
    State(state): State<AppState>,
    ApiBody(req): ApiBody<RerankRequest>,
) -> ApiResult<Json<RerankResponse>> {
    let reranker = state.reranker()?;
    if let Some(m) = req.model.as_deref().filter(|m| *m != reranker.model_id()) {
        // As in /v1/embeddings: an unknown model is a missing resource.
        return Err(ApiError::not_found(format!(
            "model {m:?} is not served here; this server reranks with {:?}",
            reranker.model_id()
        )));
    }
    if req.query.trim().is_empty() {
        return Err(ApiError::invalid("query is empty"));
    }
    check_input_count(&state, req.documents.len(), "documents")?;
    if req.documents.is_empty() {
        return Err(ApiError::invalid("documents is empty: give at least one"));
    }
    if let Some(i) = req
        .documents
        .iter()
        .position(|d| d.text().trim().is_empty())
    {
        return Err(ApiError::invalid(format!("documents[{i}] is empty")));
    }
    if req.top_n == Some(0) {
        return Err(ApiError::invalid("top_n must be at least 1"));
    }
    let texts: Vec<String> = req.documents.iter().map(|d| d.text().to_owned()).collect();
    let query = req.query.clone();
    let model = reranker.model_id().to_owned();
    let _turn = state.rerank_gate.acquire().await;
    let scores = tokio::task::spawn_blocking(move || {
        let docs: Vec<&str> = texts.iter().map(String::as_str).collect();
        reranker.score(&query, &docs)
    })
    .await
    .map_err(|e| ApiError::internal(format!("rerank task failed: {e}")))??;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Stable: equal relevance keeps the input order.
    order.sort_by(|&a, &b| scores[b].relevance.total_cmp(&scores[a].relevance));
    order.truncate(req.top_n.unwrap_or(order.len()));
    let results = order
        .into_iter()
        .map(|i| RerankResult {
            index: i,
            relevance_score: scores[i].relevance,
            document: req.return_documents.then(|| RerankDocumentObject {
                text: req.documents[i].text().to_owned(),
            }),
        })
        .collect();
    Ok(Json(RerankResponse {
        model,
        results,
        usage: RerankUsage {
            total_tokens: scores.iter().map(|s| s.tokens).sum(),
        },
    }))
}
