//! MM-RAG context assembly, shared by `POST /v1/rag/context` and `mirage rag`: search a
//! collection in any retrieval mode ([`crate::hybrid`]: a question's vector and words, an
//! image's vector), abstain when the best match is below a bound, choose how many passages to
//! pass on (adaptive k), drop near-duplicate passages (word Jaccard), and number the rest as
//! citations within a character budget.
//!
//! Adaptive k, in rank order, each rule optional but the first: a passage is dropped when its
//! dense cosine is below `min_score` (a passage only the lexical leg found has no cosine and is
//! not judged by it); when its ranking score is below `relative_score` × the best ranking score;
//! and from the first passage whose score falls below the previous one by more than
//! `max_score_gap` × the best score, every later passage goes. Near-duplicates of a kept
//! passage, passages past `k` and past the budget go too. Every candidate's fate is reported.
//! A passage of a split text is cited by its document and character span
//! ([`crate::passages`]).

use std::collections::HashSet;
use std::sync::Arc;

use mirage_model::reranker::Reranker;

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::hybrid::{self, Query, RetrievalMode};
use crate::passages::PassageInfo;
use crate::types::MAX_SEARCH_DEPTH;
use crate::{Collection, Hit};

/// Largest character budget of a context.
pub const MAX_CONTEXT_CHARS: usize = 1_000_000;
/// Smallest character budget of a context: room for one citation.
pub const MIN_CONTEXT_CHARS: usize = 100;
/// Most passages one context cites.
pub const MAX_PASSAGES: usize = 100;

/// How to assemble a context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RagOptions {
    /// Passages to cite at most, 1–[`MAX_PASSAGES`].
    pub k: usize,
    /// Character budget of the context, [`MIN_CONTEXT_CHARS`]–[`MAX_CONTEXT_CHARS`].
    pub max_chars: usize,
    /// Passages whose word overlap (Jaccard) with a better one is at least this are dropped;
    /// in [0, 1].
    pub dedup_threshold: f32,
    /// Abstain when the best score is below this cosine, in [-1, 1].
    pub min_score: f32,
    /// Drop passages scoring below this fraction of the best score, in [0, 1].
    pub relative_score: Option<f32>,
    /// Stop at the first drop between consecutive scores larger than this fraction of the best
    /// score, in [0, 1].
    pub max_score_gap: Option<f32>,
}

impl Default for RagOptions {
    /// The defaults of `POST /v1/rag/context` and `mirage rag`: 5 passages in 4,000 characters,
    /// near-duplicates at Jaccard 0.9, abstention below cosine 0.2.
    fn default() -> Self {
        Self {
            k: 5,
            max_chars: 4000,
            dedup_threshold: 0.9,
            min_score: 0.2,
            relative_score: None,
            max_score_gap: None,
        }
    }
}

impl RagOptions {
    /// Checks every bound.
    ///
    /// # Errors
    ///
    /// [`IndexError::InvalidRequest`] naming the first option out of range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(IndexError::invalid(m));
        if self.k == 0 || self.k > MAX_PASSAGES {
            return invalid(format!("k must be 1–{MAX_PASSAGES} (got {})", self.k));
        }
        if !(MIN_CONTEXT_CHARS..=MAX_CONTEXT_CHARS).contains(&self.max_chars) {
            return invalid(format!(
                "max_chars must be {MIN_CONTEXT_CHARS}–{MAX_CONTEXT_CHARS} (got {}): at least one citation, at most a long prompt",
                self.max_chars
            ));
        }
        if !(0.0..=1.0).contains(&self.dedup_threshold) {
            return invalid("dedup_threshold must be in [0, 1]".to_owned());
        }
        if !(-1.0..=1.0).contains(&self.min_score) {
            return invalid(format!(
                "min_score must be in [-1, 1] (got {})",
                self.min_score
            ));
        }
        for (field, v) in [
            ("relative_score", self.relative_score),
            ("max_score_gap", self.max_score_gap),
        ] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return invalid(format!("{field} must be in [0, 1] (got {v})"));
            }
        }
        Ok(())
    }
}

/// An assembled context, or an abstention.
#[derive(Debug, Clone, PartialEq)]
pub struct RagContext {
    /// Numbered passages (`[1] …`) within the budget; empty when abstained.
    pub context: String,
    /// The cited hits, numbered as in `context` (the first is `[1]`).
    pub citations: Vec<Hit>,
    /// True when nothing was good enough to cite.
    pub abstained: bool,
    /// Why it abstained.
    pub reason: Option<String>,
    /// Best score found.
    pub best_score: Option<f32>,
    /// The bound applied.
    pub min_score: f32,
    /// Passages dropped as near-duplicates.
    pub duplicates_removed: usize,
    /// Whether the budget cut passages.
    pub truncated: bool,
    /// Every candidate considered, in rank order, with whether it was cited and why not.
    pub passages: Vec<PassageDecision>,
}

/// What became of one candidate passage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassageDecision {
    /// Item id.
    pub id: String,
    /// Its ranking score.
    pub score: f32,
    /// Why it was cited or dropped.
    pub decision: Decision,
}

/// The fate of a candidate passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Cited.
    Cited,
    /// Its dense cosine is below `min_score`.
    BelowMinScore,
    /// Its score is below `relative_score` × the best.
    BelowRelativeScore,
    /// It comes after a score gap larger than `max_score_gap` × the best.
    AfterScoreGap,
    /// A near-duplicate of a better passage.
    Duplicate,
    /// `k` passages were already cited.
    BeyondK,
    /// The character budget was spent.
    OverBudget,
}

impl RagContext {
    /// The context as one user-message text for a multimodal LLM (empty when abstained).
    pub fn prompt_text(&self) -> String {
        format!(
            "Reference passages retrieved for this case (cite them by number):\n{}",
            self.context
        )
    }
}

fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f32 / union as f32
}

/// Searches `collection` (called `name` in citations) with `query` (its page is set here:
/// three times `k` candidates, so near-duplicate removal still leaves `k`), reranks them when
/// `rerank` gives a cross-encoder and its candidate count ([`crate::rerank`]), and assembles
/// the context.
///
/// # Errors
///
/// Options out of range, a query the mode cannot run, or a store failure.
pub async fn rag_context(
    collection: &Collection,
    name: &str,
    mut query: Query,
    options: &RagOptions,
    rerank: Option<(Arc<Reranker>, usize)>,
) -> Result<RagContext> {
    options.validate()?;
    if query.vectors.is_empty() && query.text.is_none() {
        return Err(IndexError::invalid("give a question, an image, or both"));
    }
    query.limit = (options.k * 3).min(MAX_SEARCH_DEPTH);
    query.offset = 0;
    let hits = match rerank {
        Some((reranker, candidates)) => {
            let mut hits =
                crate::rerank::search_reranked(collection, &query, reranker, candidates).await?;
            hits.truncate(query.limit);
            hits
        }
        None => hybrid::search(collection, &query).await?,
    };
    Ok(assemble(name, hits, options, query.mode))
}

/// The dense cosine of a hit, when the dense leg found it.
fn cosine(h: &Hit) -> Option<f32> {
    h.legs.dense.map(|l| l.score)
}

/// Assembles a context from hits sorted by decreasing score.
fn assemble(name: &str, hits: Vec<Hit>, o: &RagOptions, mode: RetrievalMode) -> RagContext {
    let min_score = o.min_score;
    // The abstention bound is a cosine: in lexical mode only an empty answer abstains.
    let best_score = if mode == RetrievalMode::Lexical {
        hits.first().map(|h| h.score)
    } else {
        hits.iter().filter_map(cosine).reduce(f32::max)
    };
    let abstain_reason = match best_score {
        None if hits.is_empty() => {
            Some("the collection has no item that matches the query and filter".to_owned())
        }
        None => None,
        Some(s) if mode != RetrievalMode::Lexical && s < min_score => Some(format!(
            "the best match scores {s:.3}, below the abstention bound {min_score:.3}: the collection holds nothing close enough to cite"
        )),
        _ => None,
    };
    if let Some(reason) = abstain_reason {
        return RagContext {
            context: String::new(),
            citations: Vec::new(),
            abstained: true,
            reason: Some(reason),
            best_score,
            min_score,
            duplicates_removed: 0,
            truncated: false,
            passages: Vec::new(),
        };
    }
    let top = hits.first().map_or(0.0, |h| h.score);
    let mut passages = Vec::with_capacity(hits.len());
    let mut kept: Vec<(Hit, HashSet<String>)> = Vec::new();
    let mut duplicates_removed = 0;
    let mut gap_passed = false;
    let mut previous = top;
    for h in hits {
        let gap = previous - h.score;
        previous = h.score;
        gap_passed |= o.max_score_gap.is_some_and(|g| gap > g * top.abs());
        let decision = if cosine(&h).is_some_and(|c| c < min_score) {
            Decision::BelowMinScore
        } else if o.relative_score.is_some_and(|r| h.score < r * top) {
            Decision::BelowRelativeScore
        } else if gap_passed {
            Decision::AfterScoreGap
        } else if kept.len() == o.k {
            Decision::BeyondK
        } else {
            let w = words(h.text.as_deref().unwrap_or(""));
            if kept
                .iter()
                .any(|(_, k)| jaccard(k, &w) >= o.dedup_threshold)
            {
                duplicates_removed += 1;
                Decision::Duplicate
            } else {
                passages.push(PassageDecision {
                    id: h.id.clone(),
                    score: h.score,
                    decision: Decision::Cited,
                });
                kept.push((h, w));
                continue;
            }
        };
        passages.push(PassageDecision {
            id: h.id,
            score: h.score,
            decision,
        });
    }
    let mut context = String::new();
    let mut citations = Vec::new();
    let mut truncated = false;
    for (h, _) in kept {
        let n = citations.len() + 1;
        let body = h
            .text
            .clone()
            .unwrap_or_else(|| format!("(image {})", h.image.clone().unwrap_or_default()));
        // A passage cites its document and where in it the passage lies.
        let source = match PassageInfo::of(&h.payload) {
            Some(p) => format!(
                "{name}/{}, {}characters {}–{}",
                p.parent,
                p.section.map(|s| format!("{s}, ")).unwrap_or_default(),
                p.start,
                p.end
            ),
            None => format!("{name}/{}", h.id),
        };
        let entry = format!(
            "[{n}] {} (source: {source}, score {:.3})\n",
            body.trim(),
            h.score
        );
        if truncated || context.chars().count() + entry.chars().count() > o.max_chars {
            if citations.is_empty() {
                // Cut the best passage to fit rather than return nothing.
                let room = o.max_chars.saturating_sub(1);
                context = entry
                    .chars()
                    .take(room.saturating_sub(1))
                    .collect::<String>()
                    + "…\n";
                citations.push(h);
            } else if let Some(p) = passages.iter_mut().find(|p| p.id == h.id) {
                p.decision = Decision::OverBudget;
            }
            truncated = true;
            continue;
        }
        context.push_str(&entry);
        citations.push(h);
    }
    RagContext {
        context,
        citations,
        abstained: false,
        reason: None,
        best_score,
        min_score,
        duplicates_removed,
        truncated,
        passages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32, text: &str) -> Hit {
        let mut h = Hit::new(
            id.to_owned(),
            score,
            Some(text.to_owned()),
            None,
            serde_json::Map::new(),
        );
        h.legs.dense = Some(crate::LegHit { rank: 0, score });
        h
    }

    fn assemble(name: &str, hits: Vec<Hit>, o: &RagOptions) -> RagContext {
        super::assemble(name, hits, o, RetrievalMode::Dense)
    }

    fn options() -> RagOptions {
        RagOptions {
            k: 2,
            max_chars: 1000,
            dedup_threshold: 0.9,
            min_score: 0.2,
            relative_score: None,
            max_score_gap: None,
        }
    }

    fn decisions(r: &RagContext) -> Vec<(&str, Decision)> {
        r.passages
            .iter()
            .map(|p| (p.id.as_str(), p.decision))
            .collect()
    }

    #[test]
    fn adaptive_k_rules_each_drop_what_they_name() {
        let hits = || {
            vec![
                hit("a", 0.80, "effusion"),
                hit("b", 0.75, "atelectasis"),
                hit("c", 0.39, "cardiomegaly"),
                hit("d", 0.38, "pneumothorax"),
                hit("e", 0.15, "fracture"),
            ]
        };
        let o = RagOptions { k: 10, ..options() };
        let r = assemble("r", hits(), &o);
        use Decision::*;
        assert_eq!(
            decisions(&r),
            [
                ("a", Cited),
                ("b", Cited),
                ("c", Cited),
                ("d", Cited),
                ("e", BelowMinScore)
            ]
        );
        let r = assemble(
            "r",
            hits(),
            &RagOptions {
                relative_score: Some(0.5),
                ..o
            },
        );
        assert_eq!(
            decisions(&r),
            [
                ("a", Cited),
                ("b", Cited),
                ("c", BelowRelativeScore),
                ("d", BelowRelativeScore),
                ("e", BelowMinScore)
            ]
        );
        // The drop from b (0.75) to c (0.39) is 0.36 > 0.25 × 0.80: c and everything after go.
        let r = assemble(
            "r",
            hits(),
            &RagOptions {
                max_score_gap: Some(0.25),
                min_score: 0.0,
                ..o
            },
        );
        assert_eq!(
            decisions(&r),
            [
                ("a", Cited),
                ("b", Cited),
                ("c", AfterScoreGap),
                ("d", AfterScoreGap),
                ("e", AfterScoreGap)
            ]
        );
        assert_eq!(r.citations.len(), 2);
        let r = assemble("r", hits(), &RagOptions { k: 1, ..o });
        assert_eq!(decisions(&r)[1], ("b", BeyondK));
    }

    #[test]
    fn lexical_only_hits_are_not_judged_by_the_cosine_bound() {
        let mut words_only = hit("w", 0.01, "tracheostomy tube");
        words_only.legs.dense = None;
        let r = super::assemble(
            "r",
            vec![hit("a", 0.9, "effusion"), words_only.clone()],
            &options(),
            RetrievalMode::Hybrid,
        );
        assert_eq!(r.citations.len(), 2);
        // Lexical mode: BM25 scores, no abstention bound.
        let mut lex = words_only;
        lex.score = 7.5;
        let r = super::assemble("r", vec![lex], &options(), RetrievalMode::Lexical);
        assert!(!r.abstained);
        assert_eq!(r.best_score, Some(7.5));
    }

    #[test]
    fn duplicates_are_dropped_and_citations_numbered() {
        let hits = vec![
            hit("a", 0.9, "left lower lobe consolidation"),
            hit("b", 0.8, "Left lower-lobe consolidation."),
            hit("c", 0.7, "no pneumothorax"),
            hit("d", 0.6, "cardiomegaly"),
        ];
        let r = assemble("reports", hits, &options());
        assert!(!r.abstained);
        assert_eq!(r.duplicates_removed, 1);
        let ids: Vec<&str> = r.citations.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert!(r.context.starts_with(
            "[1] left lower lobe consolidation (source: reports/a, score 0.900)\n[2] "
        ));
    }

    #[test]
    fn weak_or_no_matches_abstain() {
        let r = assemble("reports", vec![hit("a", 0.1, "x")], &options());
        assert!(r.abstained && r.context.is_empty() && r.citations.is_empty());
        assert!(r.reason.unwrap().contains("below the abstention bound"));
        let r = assemble("reports", Vec::new(), &options());
        assert!(r.abstained && r.best_score.is_none());
    }

    #[test]
    fn the_budget_cuts_and_the_first_passage_is_shortened_to_fit() {
        let long = "word ".repeat(100);
        let o = RagOptions {
            max_chars: 100,
            ..options()
        };
        let r = assemble(
            "reports",
            vec![hit("a", 0.9, &long), hit("b", 0.8, "short")],
            &o,
        );
        assert!(r.truncated);
        assert_eq!(r.citations.len(), 1);
        assert!(r.context.chars().count() <= 100 && r.context.ends_with("…\n"));
    }

    #[test]
    fn every_bound_is_checked() {
        for (o, field) in [
            (RagOptions { k: 0, ..options() }, "k"),
            (
                RagOptions {
                    k: 101,
                    ..options()
                },
                "k",
            ),
            (
                RagOptions {
                    max_chars: 99,
                    ..options()
                },
                "max_chars",
            ),
            (
                RagOptions {
                    dedup_threshold: 1.5,
                    ..options()
                },
                "dedup_threshold",
            ),
            (
                RagOptions {
                    min_score: -2.0,
                    ..options()
                },
                "min_score",
            ),
            (
                RagOptions {
                    relative_score: Some(1.5),
                    ..options()
                },
                "relative_score",
            ),
            (
                RagOptions {
                    max_score_gap: Some(-0.1),
                    ..options()
                },
                "max_score_gap",
            ),
        ] {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        options().validate().unwrap();
    }
}
