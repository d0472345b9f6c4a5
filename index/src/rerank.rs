//! Reranking retrieved hits with a cross-encoder ([`mirage_model::reranker`]), shared by
//! `POST /v1/search`, `POST /v1/rag/context` and `mirage eval-retrieval`: the first
//! `candidates` hits of any retrieval mode are scored by reading the query text and each hit's
//! text together, then ordered by that relevance. Design: `docs/RETRIEVAL.md`, "Rerank".
//!
//! A reranked hit's score is its relevance in [0, 1]; its `legs.rerank` gives its rank and
//! relevance, and its other legs keep what retrieval found. Hits without text cannot be read:
//! they follow every reranked hit, in their retrieval order, with their retrieval score.

use std::sync::Arc;

use mirage_model::reranker::Reranker;

use crate::error::{IndexError, Result};
use crate::hybrid::{self, Query};
use crate::types::{LegHit, MAX_SEARCH_DEPTH};
use crate::{Collection, Hit};

/// Candidates reranked when a request does not say.
pub const DEFAULT_CANDIDATES: usize = 50;

/// Checks a candidate count: 1–[`MAX_SEARCH_DEPTH`].
pub fn check_candidates(candidates: usize) -> Result<()> {
    if (1..=MAX_SEARCH_DEPTH).contains(&candidates) {
        Ok(())
    } else {
        Err(IndexError::invalid(format!(
            "rerank.candidates must be 1–{MAX_SEARCH_DEPTH} (got {candidates})"
        )))
    }
}

/// Orders `hits` by the cross-encoder's relevance of `query` and each hit's text.
pub fn rerank_hits(reranker: &Reranker, query: &str, hits: Vec<Hit>) -> Result<Vec<Hit>> {
    let (mut readable, unreadable): (Vec<Hit>, Vec<Hit>) =
        hits.into_iter().partition(|h| h.text.is_some());
    let docs: Vec<&str> = readable
        .iter()
        .map(|h| h.text.as_deref().unwrap_or_default())
        .collect();
    let scores = reranker.score(query, &docs)?;
    for (h, s) in readable.iter_mut().zip(&scores) {
        h.score = s.relevance;
    }
    // Stable: equal relevance keeps the retrieval order.
    readable.sort_by(|a, b| b.score.total_cmp(&a.score));
    for (i, h) in readable.iter_mut().enumerate() {
        h.legs.rerank = Some(LegHit {
            rank: i + 1,
            score: h.score,
        });
    }
    readable.extend(unreadable);
    Ok(readable)
}

/// Runs `q` for its first `candidates` hits (at least the page's depth) and reranks them all;
/// the caller pages the result. The query must have text.
pub async fn search_reranked(
    collection: &Collection,
    q: &Query,
    reranker: Arc<Reranker>,
    candidates: usize,
) -> Result<Vec<Hit>> {
    check_candidates(candidates)?;
    let Some(text) = q.text.clone().filter(|t| !t.trim().is_empty()) else {
        return Err(IndexError::invalid(
            "rerank reads the query text beside each hit's text: give query text",
        ));
    };
    let mut round = q.clone();
    round.offset = 0;
    round.limit = candidates.max(q.offset + q.limit).min(MAX_SEARCH_DEPTH);
    round.fusion.candidates = round.fusion.candidates.max(round.limit);
    let hits = hybrid::search(collection, &round).await?;
    tokio::task::spawn_blocking(move || rerank_hits(&reranker, &text, hits))
        .await
        .map_err(|e| IndexError::Graph(format!("rerank task failed: {e}")))?
}
