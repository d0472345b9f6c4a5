//! Retrieval modes over one collection, shared by `POST /v1/search`, `POST /v1/rag/context`,
//! `mirage search`, `mirage rag` and `mirage eval-retrieval`: dense (vectors), lexical (BM25,
//! [`crate::lexical`]) and hybrid, which fuses the two ranked lists.
//!
//! Hybrid: each leg fetches `fusion.candidates` hits (at least the page's depth), both with the
//! same filter; the union is ranked by the fused score and paged. Fusion is either reciprocal
//! rank fusion, `Σ w_leg / (k + rank_leg)` (a leg that did not find the hit adds nothing), or
//! weighted score fusion, `Σ w_leg · (s − min_leg) / (max_leg − min_leg)` over each leg's
//! candidates (1 when a leg's scores are all equal). Each hit records its rank and score in every
//! leg that found it. With several query vectors (a question and an image) the dense leg keeps
//! each item's best cosine over them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::types::{page_limit, LegHit, MAX_SEARCH_DEPTH};
use crate::{Collection, Filter, Hit, LexicalRequest, SearchMode, SearchRequest, VectorName};

/// Which retrieval legs a search runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    /// Vector search only.
    Dense,
    /// BM25 over the texts only.
    Lexical,
    /// Both, fused.
    Hybrid,
}

impl RetrievalMode {
    /// Every mode, in the order reports list them.
    pub const ALL: [RetrievalMode; 3] = [Self::Dense, Self::Lexical, Self::Hybrid];

    /// The name used on the wire and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::Lexical => "lexical",
            Self::Hybrid => "hybrid",
        }
    }

    /// The mode a request that names none gets: hybrid when there is text to match and the
    /// collection has a lexical index, else dense.
    pub fn default_for(has_text: bool, has_lexical_index: bool) -> Self {
        if has_text && has_lexical_index {
            Self::Hybrid
        } else {
            Self::Dense
        }
    }
}

impl std::str::FromStr for RetrievalMode {
    type Err = IndexError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                IndexError::invalid(format!("mode must be dense, lexical or hybrid (got {s:?})"))
            })
    }
}

impl std::fmt::Display for RetrievalMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How hybrid search merges its legs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    /// Reciprocal rank fusion.
    #[default]
    Rrf,
    /// Weighted sum of min-max normalised scores.
    Weighted,
}

/// Largest RRF constant accepted.
pub const MAX_RRF_K: f64 = 10_000.0;
/// Largest leg weight accepted.
pub const MAX_WEIGHT: f64 = 1_000.0;

/// Fusion settings of hybrid search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fusion {
    /// `rrf` or `weighted`.
    #[serde(default)]
    pub method: FusionMethod,
    /// RRF's k, 0–[`MAX_RRF_K`] (60, as in the RRF paper).
    #[serde(default = "default_rrf_k")]
    pub rrf_k: f64,
    /// Weight of the dense leg, 0–[`MAX_WEIGHT`].
    #[serde(default = "one")]
    pub dense_weight: f64,
    /// Weight of the lexical leg, 0–[`MAX_WEIGHT`]; not both zero.
    #[serde(default = "one")]
    pub lexical_weight: f64,
    /// Hits each leg fetches, 1–1000 (raised to the page's depth when smaller).
    #[serde(default = "default_candidates")]
    pub candidates: usize,
}

fn default_rrf_k() -> f64 {
    60.0
}
fn one() -> f64 {
    1.0
}
fn default_candidates() -> usize {
    100
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            method: FusionMethod::Rrf,
            rrf_k: default_rrf_k(),
            dense_weight: 1.0,
            lexical_weight: 1.0,
            candidates: default_candidates(),
        }
    }
}

impl Fusion {
    /// Checks every setting against its range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(IndexError::invalid(m));
        if !(0.0..=MAX_RRF_K).contains(&self.rrf_k) {
            return invalid(format!(
                "fusion.rrf_k must be 0–{MAX_RRF_K} (got {})",
                self.rrf_k
            ));
        }
        for (field, w) in [
            ("fusion.dense_weight", self.dense_weight),
            ("fusion.lexical_weight", self.lexical_weight),
        ] {
            if !(0.0..=MAX_WEIGHT).contains(&w) {
                return invalid(format!("{field} must be 0–{MAX_WEIGHT} (got {w})"));
            }
        }
        if self.dense_weight == 0.0 && self.lexical_weight == 0.0 {
            return invalid("fusion weights are both 0: give at least one leg a weight".into());
        }
        if !(1..=MAX_SEARCH_DEPTH).contains(&self.candidates) {
            return invalid(format!(
                "fusion.candidates must be 1–{MAX_SEARCH_DEPTH} (got {})",
                self.candidates
            ));
        }
        Ok(())
    }
}

/// One search in any mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Dense query vectors (joint space); several are merged by each item's best cosine.
    pub vectors: Vec<Vec<f32>>,
    /// The text for the lexical leg.
    pub text: Option<String>,
    /// Which item vectors the dense leg searches.
    pub target: VectorName,
    /// Which legs run.
    pub mode: RetrievalMode,
    /// How hybrid merges them.
    pub fusion: Fusion,
    /// Hits to return.
    pub limit: usize,
    /// Best hits to skip.
    pub offset: usize,
    /// Payload filter, applied in both legs.
    pub filter: Option<Filter>,
    /// Dense leg: drop candidates below this cosine (lexical mode has no cosine: refused).
    pub score_threshold: Option<f32>,
    /// Dense leg: HNSW beam width.
    pub ef: Option<usize>,
    /// Dense leg: exact or automatic.
    pub search_mode: SearchMode,
    /// Attach texts and image references.
    pub with_content: bool,
}

impl Query {
    /// A top-`limit` query in `mode` with default fusion.
    pub fn new(
        vectors: Vec<Vec<f32>>,
        text: Option<String>,
        target: VectorName,
        mode: RetrievalMode,
        limit: usize,
    ) -> Self {
        Self {
            vectors,
            text,
            target,
            mode,
            fusion: Fusion::default(),
            limit,
            offset: 0,
            filter: None,
            score_threshold: None,
            ef: None,
            search_mode: SearchMode::Auto,
            with_content: true,
        }
    }

    /// Checks that the mode has what it needs (a vector for dense, text for lexical, both for
    /// hybrid) and that every setting is in range; returns the page's size.
    pub fn validate(&self, collection: &Collection) -> Result<usize> {
        let limit = page_limit(self.limit, self.offset)?;
        self.fusion.validate()?;
        let has_text = self.text.as_deref().is_some_and(|t| !t.trim().is_empty());
        match self.mode {
            RetrievalMode::Dense if self.vectors.is_empty() => {
                return Err(IndexError::invalid("mode dense needs a query vector"))
            }
            RetrievalMode::Lexical | RetrievalMode::Hybrid if !has_text => {
                return Err(IndexError::invalid(format!(
                    "mode {} needs query text (an image or a vector has no words): give text, or use mode dense",
                    self.mode
                )))
            }
            RetrievalMode::Hybrid if self.vectors.is_empty() => {
                return Err(IndexError::invalid("mode hybrid needs a query vector"))
            }
            RetrievalMode::Lexical if self.score_threshold.is_some() => {
                return Err(IndexError::invalid(
                    "score_threshold bounds the dense leg's cosine; mode lexical has none",
                ))
            }
            _ => {}
        }
        if self.mode != RetrievalMode::Dense && !collection.has_lexical() {
            return Err(crate::error::no_lexical_index(collection.name()));
        }
        Ok(limit)
    }

    fn dense_request(&self, vector: Vec<f32>, limit: usize, offset: usize) -> SearchRequest {
        SearchRequest {
            vector,
            target: self.target,
            limit,
            offset,
            score_threshold: self.score_threshold,
            filter: self.filter.clone(),
            ef: self.ef,
            mode: self.search_mode,
            with_content: self.with_content,
        }
    }
}

/// Runs the query: the hits of its page, best first, each with the ranks its legs gave it.
pub async fn search(collection: &Collection, q: &Query) -> Result<Vec<Hit>> {
    let limit = q.validate(collection)?;
    let depth = q.offset + limit;
    let (legs_from, fetch, offset) = match q.mode {
        // One leg: the store pages; leg ranks count the offset.
        RetrievalMode::Dense | RetrievalMode::Lexical => (q.offset, limit, q.offset),
        RetrievalMode::Hybrid => (0, q.fusion.candidates.max(depth), 0),
    };
    let dense = if q.mode == RetrievalMode::Lexical {
        Vec::new()
    } else {
        dense_leg(collection, q, fetch, offset).await?
    };
    let lexical = if q.mode == RetrievalMode::Dense {
        Vec::new()
    } else {
        let text = q.text.clone().unwrap_or_default();
        let mut req = LexicalRequest::new(text, fetch);
        req.offset = offset;
        req.filter = q.filter.clone();
        req.with_content = q.with_content;
        collection.lexical_search(req).await?
    };
    Ok(match q.mode {
        RetrievalMode::Dense => with_legs(dense, legs_from, true),
        RetrievalMode::Lexical => with_legs(lexical, legs_from, false),
        RetrievalMode::Hybrid => fuse(dense, lexical, &q.fusion)
            .into_iter()
            .skip(q.offset)
            .take(limit)
            .collect(),
    })
}

/// Most passages a grouped hit lists.
pub const MAX_GROUP_SIZE: usize = 100;

/// Runs the query with results grouped by document ([`crate::passages::group`]): `limit` and
/// `offset` count documents, each listing up to `group_size` of its passages, best first.
/// Candidates are fetched in growing rounds until the page's documents and their best passages
/// are found or ranks end at [`MAX_SEARCH_DEPTH`] passages.
pub async fn search_groups(
    collection: &Collection,
    q: &Query,
    group_size: usize,
) -> Result<Vec<crate::passages::Group>> {
    let limit = q.validate(collection)?;
    if !(1..=MAX_GROUP_SIZE).contains(&group_size) {
        return Err(IndexError::invalid(format!(
            "group_size must be 1–{MAX_GROUP_SIZE} (got {group_size})"
        )));
    }
    let depth = q.offset + limit;
    let mut fetch = (depth * group_size.max(2)).clamp(10, MAX_SEARCH_DEPTH);
    loop {
        let mut round = q.clone();
        round.offset = 0;
        round.limit = fetch;
        round.fusion.candidates = round.fusion.candidates.max(fetch);
        let hits = search(collection, &round).await?;
        let exhausted = hits.len() < fetch || fetch == MAX_SEARCH_DEPTH;
        let groups = crate::passages::group(hits, group_size);
        // A page is settled when each of its documents lists all the passages it can: group_size,
        // or every passage the document has (a filter may hide some; then ranks must end).
        let settled = groups.len() >= depth
            && groups[q.offset..depth].iter().all(|g| {
                let count =
                    crate::passages::PassageInfo::of(&g.hits[0].payload).map_or(1, |p| p.count);
                g.hits.len() >= group_size.min(count)
            });
        if settled || exhausted {
            return Ok(groups.into_iter().skip(q.offset).take(limit).collect());
        }
        fetch = (fetch * 4).min(MAX_SEARCH_DEPTH);
    }
}

/// The dense leg: one search per vector, each item at its best cosine.
async fn dense_leg(
    collection: &Collection,
    q: &Query,
    fetch: usize,
    offset: usize,
) -> Result<Vec<Hit>> {
    if q.vectors.len() == 1 {
        return collection
            .search(q.dense_request(q.vectors[0].clone(), fetch, offset))
            .await;
    }
    // Several vectors: merging needs every list from its top, then the page is cut.
    let mut best: HashMap<String, Hit> = HashMap::new();
    for v in &q.vectors {
        for h in collection
            .search(q.dense_request(v.clone(), fetch + offset, 0))
            .await?
        {
            match best.get(&h.id) {
                Some(prev) if prev.score >= h.score => {}
                _ => {
                    best.insert(h.id.clone(), h);
                }
            }
        }
    }
    let mut hits: Vec<Hit> = best.into_values().collect();
    sort_hits(&mut hits);
    Ok(hits.into_iter().skip(offset).take(fetch).collect())
}

fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
}

fn with_legs(mut hits: Vec<Hit>, first: usize, dense: bool) -> Vec<Hit> {
    for (i, h) in hits.iter_mut().enumerate() {
        let leg = Some(LegHit {
            rank: first + i + 1,
            score: h.score,
        });
        if dense {
            h.legs.dense = leg;
        } else {
            h.legs.lexical = leg;
        }
    }
    hits
}

/// Fuses two ranked lists (best first) into one, best first, ties by id.
pub fn fuse(dense: Vec<Hit>, lexical: Vec<Hit>, fusion: &Fusion) -> Vec<Hit> {
    let weights = [fusion.dense_weight, fusion.lexical_weight];
    // Sums in f64: weights may be as small as f64 allows (the API takes any non-negative number).
    let mut merged: HashMap<String, (f64, Hit)> = HashMap::new();
    for (leg, hits) in [dense, lexical].into_iter().enumerate() {
        let (lo, hi) = hits
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), h| {
                (lo.min(h.score), hi.max(h.score))
            });
        for (i, h) in hits.into_iter().enumerate() {
            let rank = i + 1;
            let contribution = match fusion.method {
                FusionMethod::Rrf => weights[leg] / (fusion.rrf_k + rank as f64),
                FusionMethod::Weighted if hi > lo => {
                    weights[leg] * f64::from(h.score - lo) / f64::from(hi - lo)
                }
                FusionMethod::Weighted => weights[leg],
            };
            let found = Some(LegHit {
                rank,
                score: h.score,
            });
            let (total, entry) = merged.entry(h.id.clone()).or_insert_with(|| (0.0, h));
            *total += contribution;
            if leg == 0 {
                entry.legs.dense = found;
            } else {
                entry.legs.lexical = found;
            }
        }
    }
    let mut hits: Vec<Hit> = merged
        .into_values()
        .map(|(total, hit)| Hit {
            score: total as f32,
            ..hit
        })
        .collect();
    sort_hits(&mut hits);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(ids: &[(&str, f32)]) -> Vec<Hit> {
        ids.iter()
            .map(|(id, s)| Hit::new((*id).into(), *s, None, None, Default::default()))
            .collect()
    }

    #[test]
    fn rrf_rewards_agreement_and_records_each_legs_rank() {
        let dense = hits(&[("a", 0.9), ("b", 0.8), ("c", 0.7)]);
        let lexical = hits(&[("c", 12.0), ("d", 9.0), ("a", 1.0)]);
        let fused = fuse(dense, lexical, &Fusion::default());
        let ids: Vec<&str> = fused.iter().map(|h| h.id.as_str()).collect();
        // a: 1/61 + 1/63; c: 1/63 + 1/61 — tied, broken by id; then b (1/62) before d (1/62) by id.
        assert_eq!(ids, ["a", "c", "b", "d"]);
        assert!((fused[0].score - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-7);
        let c = &fused[1];
        assert_eq!(c.legs.dense.unwrap().rank, 3);
        assert_eq!(c.legs.lexical.unwrap().rank, 1);
        assert_eq!(c.legs.lexical.unwrap().score, 12.0);
        assert!(fused[3].legs.dense.is_none());
    }

    #[test]
    fn weighted_fusion_normalises_each_leg_and_weights_move_the_order() {
        let dense = hits(&[("a", 0.9), ("b", 0.5)]);
        let lexical = hits(&[("b", 20.0), ("c", 10.0)]);
        let mut f = Fusion {
            method: FusionMethod::Weighted,
            ..Fusion::default()
        };
        let order = |f: &Fusion| -> Vec<String> {
            fuse(dense.clone(), lexical.clone(), f)
                .into_iter()
                .map(|h| h.id)
                .collect()
        };
        // a: 1 + 0; b: 0 + 1; c: 0 + 0.
        assert_eq!(order(&f), ["a", "b", "c"]);
        f.lexical_weight = 2.0;
        assert_eq!(order(&f), ["b", "a", "c"]);
        f.dense_weight = 0.0;
        f.lexical_weight = 0.0;
        assert!(f.validate().is_err());
        for bad in [
            Fusion {
                rrf_k: -1.0,
                ..Fusion::default()
            },
            Fusion {
                dense_weight: f64::NAN,
                ..Fusion::default()
            },
            Fusion {
                lexical_weight: -0.5,
                ..Fusion::default()
            },
            Fusion {
                candidates: 0,
                ..Fusion::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes_parse_and_default_to_hybrid_only_with_text_and_an_index() {
        assert_eq!(
            "hybrid".parse::<RetrievalMode>().unwrap(),
            RetrievalMode::Hybrid
        );
        let e = "bm25".parse::<RetrievalMode>().unwrap_err().to_string();
        assert!(e.contains("dense, lexical or hybrid"), "{e}");
        assert_eq!(
            RetrievalMode::default_for(true, true),
            RetrievalMode::Hybrid
        );
        assert_eq!(
            RetrievalMode::default_for(false, true),
            RetrievalMode::Dense
        );
        assert_eq!(
            RetrievalMode::default_for(true, false),
            RetrievalMode::Dense
        );
    }
}
