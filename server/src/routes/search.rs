//! `POST /v1/search` and `POST /v1/rag/context`.

use axum::extract::State;
use axum::Json;
use mirage_index::hybrid::{self, RetrievalMode};
use mirage_index::passages::{self, Group, PassageInfo};
use mirage_index::rag::{self, RagOptions};
use mirage_index::rerank;
use mirage_index::types::{page_limit, unit_vector};
use mirage_index::{Hit, ModelRef, SearchMode, VectorName};

use crate::dto::{
    ContentPart, GroupBy, GroupPassage, Mode, Provenance, RagRequest, RagResponse, SearchHit,
    SearchRequest, SearchResponse, Target,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiBody;
use crate::infer::Input;
use crate::models::ServedModel;
use crate::routes::{parse_filter, prepare_images};
use crate::state::AppState;

/// Passages a grouped hit lists when the request does not say.
const DEFAULT_GROUP_SIZE: usize = 3;

/// A cosine bound given in a request: within [-1, 1] (beyond, it would keep or drop everything).
pub fn check_score(field: &str, value: Option<f32>) -> ApiResult<()> {
    match value {
        Some(v) if !(-1.0..=1.0).contains(&v) => Err(ApiError::invalid(format!(
            "{field} must be in [-1, 1] (got {v})"
        ))),
        _ => Ok(()),
    }
}

fn vector_name(t: Target) -> VectorName {
    match t {
        Target::Text => VectorName::Text,
        Target::Image => VectorName::Image,
    }
}

async fn embed_text(served: &ServedModel, text: String, what: &str) -> ApiResult<Vec<f32>> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid(format!("{what} is empty")));
    }
    Ok(served
        .encoder
        .embed(vec![Input::Query(text)])
        .await?
        .pop()
        .expect("one text in, one vector out — this is a bug"))
}

async fn embed_image(
    state: &AppState,
    served: &ServedModel,
    data: String,
    what: &str,
    frame: u32,
) -> ApiResult<Vec<f32>> {
    let (pixels, _) = prepare_images(state, served, vec![(what.to_owned(), data)], frame)
        .await?
        .pop()
        .expect("one image in, one out — this is a bug");
    Ok(served
        .encoder
        .embed(vec![Input::Pixels(pixels)])
        .await?
        .pop()
        .expect("one image in, one vector out — this is a bug"))
}

struct Searched {
    hits: Vec<Hit>,
    model: ModelRef,
    index_version: Option<u64>,
    store: &'static str,
    mode: Mode,
}

fn to_hit(collection: &str, s: &Searched, rank: usize, h: Hit) -> SearchHit {
    SearchHit {
        rank,
        provenance: Provenance {
            collection: collection.to_owned(),
            item_id: h.id.clone(),
            model_id: s.model.model_id.clone(),
            bundle_sha256: s.model.sha256.clone(),
            store: s.store.to_owned(),
            index_version: s.index_version,
            score: h.score,
            mode: s.mode,
        },
        passage: PassageInfo::of(&h.payload).map(Into::into),
        id: h.id,
        score: h.score,
        legs: h.legs.into(),
        text: h.text,
        image: h.image,
        payload: h.payload,
        parent: None,
        passages: None,
    }
}

fn to_hits(collection: &str, mut s: Searched, first_rank: usize) -> Vec<SearchHit> {
    let hits = std::mem::take(&mut s.hits);
    hits.into_iter()
        .enumerate()
        .map(|(i, h)| to_hit(collection, &s, first_rank + i, h))
        .collect()
}

/// Grouped hits: each document at its best passage, listing its passages.
fn to_groups(
    collection: &str,
    s: &Searched,
    groups: Vec<Group>,
    first_rank: usize,
) -> Vec<SearchHit> {
    groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let passages = g
                .hits
                .iter()
                .map(|h| GroupPassage {
                    id: h.id.clone(),
                    score: h.score,
                    legs: h.legs.into(),
                    text: h.text.clone(),
                    passage: PassageInfo::of(&h.payload).map(Into::into),
                })
                .collect();
            let best = g
                .hits
                .into_iter()
                .next()
                .expect("a group holds at least one passage — this is a bug");
            let mut hit = to_hit(collection, s, first_rank + i, best);
            hit.parent = Some(g.parent);
            hit.passages = Some(passages);
            hit
        })
        .collect()
}

/// Searches a collection by text, image or vector: densely, lexically or both (hybrid).
#[utoipa::path(
    post,
    path = "/v1/search",
    tag = "retrieval",
    request_body(content((SearchRequest = "application/json"), (SearchRequest = "multipart/form-data"))),
    responses((status = 200, description = "Hits by decreasing score, with the rank each retrieval leg gave them and provenance", body = SearchResponse))
)]
pub async fn search(
    State(state): State<AppState>,
    ApiBody(req): ApiBody<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    // Checked before the query is embedded; the store cuts a page reaching past the last rank.
    page_limit(req.limit, req.offset).map_err(|e| ApiError::invalid(e.to_string()))?;
    check_score("score_threshold", req.score_threshold)?;
    if req.group_size.is_some() && req.group_by.is_none() {
        return Err(ApiError::invalid(
            "group_size goes with group_by: add \"group_by\": \"parent\", or drop group_size",
        ));
    }
    let filter = parse_filter(req.filter)?;
    let q = req.query;
    let modality = match (&q.text, &q.image, &q.vector) {
        (_, Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "query takes \"image\" or \"vector\", not both: each is a dense query",
            ))
        }
        (None, None, None) => return Err(ApiError::invalid(
            "query needs \"text\", \"image\" or \"vector\" (text may join either of the others)",
        )),
        (Some(_), None, None) => "text",
        (None, Some(_), None) => "image",
        (None, None, Some(_)) => "vector",
        (Some(_), Some(_), None) => "text+image",
        (Some(_), None, Some(_)) => "text+vector",
    };
    let rerank = state.rerank(req.rerank, q.text.is_some(), "query.text")?;
    let (collection, served) = state.collection_and_model(&req.collection).await?;
    let (mode, fusion) = state
        .retrieval(&collection, q.text.is_some(), req.mode, req.fusion)
        .await?;
    if mode == RetrievalMode::Lexical && (q.image.is_some() || q.vector.is_some()) {
        return Err(ApiError::invalid(
            "mode lexical matches query.text's words only: drop query.image / query.vector, or use mode hybrid",
        ));
    }
    let mut vectors = Vec::new();
    if mode != RetrievalMode::Lexical {
        match (&q.vector, &q.text) {
            (Some(v), _) => vectors.push(unit_vector("query.vector", v, served.model().dim())?),
            (None, Some(t)) => vectors.push(embed_text(&served, t.clone(), "query.text").await?),
            (None, None) => {}
        }
        if let Some(i) = q.image {
            vectors.push(embed_image(&state, &served, i, "query.image", req.frame.into()).await?);
        }
    }
    let mut query = hybrid::Query::new(vectors, q.text, vector_name(req.target), mode, req.limit);
    query.fusion = fusion;
    query.offset = req.offset;
    query.filter = filter.clone();
    query.score_threshold = req.score_threshold;
    query.ef = req.ef;
    query.search_mode = if req.exact {
        SearchMode::Exact
    } else {
        SearchMode::Auto
    };
    let total = collection.count(filter).await?;
    let mut searched = Searched {
        hits: Vec::new(),
        model: served.model_ref.clone(),
        index_version: collection.index_version(),
        store: collection.kind(),
        mode: mode.into(),
    };
    let size = req.group_size.unwrap_or(DEFAULT_GROUP_SIZE);
    let hits = match (req.group_by, rerank) {
        (Some(GroupBy::Parent), None) => {
            let groups = hybrid::search_groups(&collection, &query, size).await?;
            to_groups(&req.collection, &searched, groups, req.offset + 1)
        }
        (group_by, Some((reranker, candidates))) => {
            let _turn = state.rerank_gate.acquire().await;
            let reranked =
                rerank::search_reranked(&collection, &query, reranker, candidates).await?;
            if group_by.is_some() {
                let groups = passages::group(reranked, size);
                let groups = groups
                    .into_iter()
                    .skip(req.offset)
                    .take(req.limit)
                    .collect();
                to_groups(&req.collection, &searched, groups, req.offset + 1)
            } else {
                searched.hits = reranked
                    .into_iter()
                    .skip(req.offset)
                    .take(req.limit)
                    .collect();
                to_hits(&req.collection, searched, req.offset + 1)
            }
        }
        (None, None) => {
            searched.hits = hybrid::search(&collection, &query).await?;
            to_hits(&req.collection, searched, req.offset + 1)
        }
    };
    Ok(Json(SearchResponse {
        hits,
        collection: req.collection,
        model_id: served.model_ref.model_id.clone(),
        query_modality: modality.into(),
        mode: mode.into(),
        target: req.target,
        total,
    }))
}

/// Builds an MLLM-ready context from the best passages of a collection.
#[utoipa::path(
    post,
    path = "/v1/rag/context",
    tag = "retrieval",
    request_body(content((RagRequest = "application/json"), (RagRequest = "multipart/form-data"))),
    responses((status = 200, description = "Context with numbered citations and each candidate's fate, or an abstention", body = RagResponse))
)]
pub async fn rag_context(
    State(state): State<AppState>,
    ApiBody(req): ApiBody<RagRequest>,
) -> ApiResult<Json<RagResponse>> {
    let mut options = RagOptions {
        k: req.k,
        max_chars: req.max_chars,
        dedup_threshold: req.dedup_threshold,
        min_score: req.min_score.unwrap_or(0.0),
        relative_score: req.relative_score,
        max_score_gap: req.max_score_gap,
    };
    options.validate()?;
    if req.question.is_none() && req.image.is_none() {
        return Err(ApiError::invalid(
            "give a \"question\", an \"image\", or both",
        ));
    }
    let filter = parse_filter(req.filter)?;
    let rerank = state.rerank(req.rerank, req.question.is_some(), "question")?;
    let (collection, served) = state.collection_and_model(&req.collection).await?;
    options.min_score = match req.min_score {
        Some(m) => m,
        None => state
            .collection_settings(&req.collection)
            .await
            .and_then(|s| s.rag_min_score)
            .unwrap_or(state.settings.rag_min_score),
    };
    let (mode, fusion) = state
        .retrieval(&collection, req.question.is_some(), req.mode, req.fusion)
        .await?;
    if mode == RetrievalMode::Lexical && req.image.is_some() {
        return Err(ApiError::invalid(
            "mode lexical matches the question's words only: drop the image, or use mode hybrid",
        ));
    }
    let mut vectors = Vec::new();
    if mode != RetrievalMode::Lexical {
        if let Some(q) = &req.question {
            vectors.push(embed_text(&served, q.clone(), "question").await?);
        }
        if let Some(i) = req.image {
            vectors.push(embed_image(&state, &served, i, "image", req.frame.into()).await?);
        }
    }
    let mut query = hybrid::Query::new(
        vectors,
        req.question,
        vector_name(req.target),
        mode,
        options.k,
    );
    query.fusion = fusion;
    query.filter = filter;
    let _turn = match rerank {
        Some(_) => Some(state.rerank_gate.acquire().await),
        None => None,
    };
    let rag = rag::rag_context(&collection, &req.collection, query, &options, rerank).await?;
    if rag.abstained {
        state.metrics.abstained(&req.collection);
    }
    Ok(Json(rag_response(
        &req.collection,
        &collection,
        served.model_ref.clone(),
        mode,
        rag,
    )))
}

/// The response of a RAG context, as `POST /v1/rag/context` returns it and `mirage rag` prints it.
pub fn rag_response(
    name: &str,
    collection: &mirage_index::Collection,
    model: ModelRef,
    mode: RetrievalMode,
    rag: rag::RagContext,
) -> RagResponse {
    let content_parts = if rag.abstained {
        Vec::new()
    } else {
        vec![ContentPart {
            kind: "text".into(),
            text: rag.prompt_text(),
        }]
    };
    let searched = Searched {
        hits: rag.citations,
        model,
        index_version: collection.index_version(),
        store: collection.kind(),
        mode: mode.into(),
    };
    RagResponse {
        citations: to_hits(name, searched, 1),
        content_parts,
        context: rag.context,
        abstained: rag.abstained,
        reason: rag.reason,
        best_score: rag.best_score,
        min_score: rag.min_score,
        duplicates_removed: rag.duplicates_removed,
        truncated: rag.truncated,
        mode: mode.into(),
        passages: rag.passages.into_iter().map(Into::into).collect(),
    }
}
