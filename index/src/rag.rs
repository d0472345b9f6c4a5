//! MM-RAG context assembly, shared by `POST /v1/rag/context` and `mirage rag`: search a
//! collection with one or more query vectors, keep each item's best score, abstain when the best
//! match is below a bound, drop near-duplicate passages (word Jaccard), and number the rest as
//! citations within a character budget.

use std::collections::{HashMap, HashSet};

use crate::error::{IndexError, Result};
use crate::types::MAX_SEARCH_DEPTH;
use crate::{Collection, Filter, Hit, SearchMode, SearchRequest, VectorName};

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

/// Searches `collection` (called `name` in citations) with every query vector, merges the hits
/// and assembles the context.
///
/// # Errors
///
/// Options out of range, no query, or a store failure.
pub async fn rag_context(
    collection: &Collection,
    name: &str,
    queries: Vec<Vec<f32>>,
    target: VectorName,
    filter: Option<Filter>,
    options: &RagOptions,
) -> Result<RagContext> {
    options.validate()?;
    if queries.is_empty() {
        return Err(IndexError::invalid("give a question, an image, or both"));
    }
    // Over-fetch so near-duplicate removal still leaves k passages.
    let fetch = (options.k * 3).min(MAX_SEARCH_DEPTH);
    let mut best: HashMap<String, Hit> = HashMap::new();
    for vector in queries {
        let mut req = SearchRequest::new(vector, target, fetch);
        req.filter = filter.clone();
        req.mode = SearchMode::Auto;
        for h in collection.search(req).await? {
            match best.get(&h.id) {
                Some(prev) if prev.score >= h.score => {}
                _ => {
                    best.insert(h.id.clone(), h);
                }
            }
        }
    }
    let mut hits: Vec<Hit> = best.into_values().collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    Ok(assemble(name, hits, options))
}

/// Assembles a context from hits sorted by decreasing score.
fn assemble(name: &str, hits: Vec<Hit>, o: &RagOptions) -> RagContext {
    let min_score = o.min_score;
    let best_score = hits.first().map(|h| h.score);
    let abstain_reason = match best_score {
        None => Some("the collection has no item that matches the query and filter".to_owned()),
        Some(s) if s < min_score => Some(format!(
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
        };
    }
    let mut kept: Vec<(Hit, HashSet<String>)> = Vec::new();
    let mut duplicates_removed = 0;
    for h in hits.into_iter().filter(|h| h.score >= min_score) {
        let w = words(h.text.as_deref().unwrap_or(""));
        if kept
            .iter()
            .any(|(_, k)| jaccard(k, &w) >= o.dedup_threshold)
        {
            duplicates_removed += 1;
            continue;
        }
        kept.push((h, w));
        if kept.len() == o.k {
            break;
        }
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
        let entry = format!(
            "[{n}] {} (source: {name}/{}, score {:.3})\n",
            body.trim(),
            h.id,
            h.score
        );
        if context.chars().count() + entry.chars().count() > o.max_chars {
            truncated = true;
            if citations.is_empty() {
                // Cut the best passage to fit rather than return nothing.
                let room = o.max_chars.saturating_sub(1);
                context = entry
                    .chars()
                    .take(room.saturating_sub(1))
                    .collect::<String>()
                    + "…\n";
                citations.push(h);
            }
            break;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32, text: &str) -> Hit {
        Hit {
            id: id.to_owned(),
            score,
            text: Some(text.to_owned()),
            image: None,
            payload: serde_json::Map::new(),
        }
    }

    fn options() -> RagOptions {
        RagOptions {
            k: 2,
            max_chars: 1000,
            dedup_threshold: 0.9,
            min_score: 0.2,
        }
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
        ] {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        options().validate().unwrap();
    }
}
