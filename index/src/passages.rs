//! Passages: a long text split into pieces the model embeds whole, each stored as an item of
//! its own that remembers its document (design: `docs/RETRIEVAL.md`, "Passages").
//!
//! - **Splitting.** `tokens` mode cuts a text into windows of at most `tokens` content tokens
//!   that overlap by about `overlap` tokens and end on word boundaries
//!   ([`mirage_model::tokenize::TextTokenizer::windows`]). `sections` mode first cuts a report
//!   at its headings (a line or sentence starting with capitals and a colon: `FINDINGS:`,
//!   `IMPRESSION:`, `CLINICAL HISTORY:`), then windows each section; the heading stays in its
//!   passage's text and its name goes into the payload.
//! - **Items.** Passage `i` of document `D` is the item `D#i`, with the payload key
//!   [`PASSAGE_PAYLOAD_KEY`] holding `{parent, index, count, section, start, end}` (character
//!   span in the document, end exclusive) next to the document's own payload. The document's
//!   image vector, if any, goes on passage 0; every passage keeps the image reference.
//! - **Replacing.** Passages are written first, then the previous version's surplus passages
//!   (and an unsplit item of the same id) are deleted ([`remove_stale`]): a crash between the two
//!   leaves extra passages, never a missing document.
//! - **Grouping.** [`group`] folds a ranked list of passages into documents, each at its best
//!   passage; items without the key are their own document. Items split elsewhere can declare
//!   their document with the same key.

use std::collections::HashMap;
use std::ops::Range;

use mirage_model::tokenize::TextTokenizer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{IndexError, Result};
use crate::types::{Hit, Item, MAX_ID_CHARS};
use crate::Collection;

/// The payload key of a passage's place in its document.
pub const PASSAGE_PAYLOAD_KEY: &str = "passage";

/// Between a document id and a passage number in passage ids (`report-7#2`).
pub const ID_SEPARATOR: char = '#';

/// Most passages one document may be split into.
pub const MAX_PASSAGES_PER_DOCUMENT: usize = 10_000;

/// How texts are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Chunking {
    /// Token windows with overlap.
    Tokens,
    /// Report sections at their headings, then token windows inside long sections.
    Sections,
}

impl Chunking {
    /// The name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Sections => "sections",
        }
    }
}

impl std::str::FromStr for Chunking {
    type Err = IndexError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tokens" => Ok(Self::Tokens),
            "sections" => Ok(Self::Sections),
            other => Err(IndexError::invalid(format!(
                "chunking must be tokens or sections (got {other:?})"
            ))),
        }
    }
}

/// Splitting settings, checked against one model's token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChunkOptions {
    /// How.
    pub mode: Chunking,
    /// Content tokens per passage at most.
    pub tokens: usize,
    /// Tokens consecutive windows of one text share.
    pub overlap: usize,
}

impl ChunkOptions {
    /// `mode` with `tokens` (default: the model's limit less its special tokens) and `overlap`
    /// (default: an eighth of the window), checked: the window must fit the model and the
    /// overlap be smaller than the window.
    pub fn new(
        mode: Chunking,
        tokens: Option<usize>,
        overlap: Option<usize>,
        tokenizer: &TextTokenizer,
    ) -> Result<Self> {
        let most = tokenizer.max_content_tokens();
        let tokens = tokens.unwrap_or(most);
        if tokens == 0 || tokens > most {
            return Err(IndexError::invalid(format!(
                "chunk tokens must be 1–{most} for this model ({} tokens at most, {} of them special; got {tokens})",
                tokenizer.max_length(),
                tokenizer.special_tokens()
            )));
        }
        let overlap = overlap.unwrap_or(tokens / 8);
        if overlap >= tokens {
            return Err(IndexError::invalid(format!(
                "chunk overlap must be smaller than the window of {tokens} tokens: 0–{} (got {overlap})",
                tokens - 1
            )));
        }
        Ok(Self {
            mode,
            tokens,
            overlap,
        })
    }
}

/// One passage of a text before it is embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The section heading it falls under (`sections` mode), upper case.
    pub section: Option<String>,
    /// First character in the document.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

impl Span {
    /// The passage's text.
    pub fn text(&self, chars: &[char]) -> String {
        chars[self.start..self.end].iter().collect()
    }
}

/// A passage's place in its document, as stored under [`PASSAGE_PAYLOAD_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassageInfo {
    /// The document's id.
    pub parent: String,
    /// 0-based passage number.
    pub index: usize,
    /// Passages of the document.
    pub count: usize,
    /// Section heading, when split by sections.
    #[serde(default)]
    pub section: Option<String>,
    /// First character (Unicode scalar values) in the document.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

impl PassageInfo {
    /// The passage information in `payload`, when it holds a well-formed one.
    pub fn of(payload: &Map<String, Value>) -> Option<Self> {
        serde_json::from_value(payload.get(PASSAGE_PAYLOAD_KEY)?.clone()).ok()
    }
}

/// The id of passage `index` of document `parent`.
pub fn passage_id(parent: &str, index: usize) -> String {
    format!("{parent}{ID_SEPARATOR}{index}")
}

/// Splits `text` into passages; a text without tokens (punctuation only) is one passage.
pub fn split(tokenizer: &TextTokenizer, text: &str, o: &ChunkOptions) -> Result<Vec<Span>> {
    let total = text.chars().count();
    let parts = match o.mode {
        Chunking::Tokens => vec![(None, 0..total)],
        Chunking::Sections => sections(text),
    };
    let mut out = Vec::new();
    for (section, range) in parts {
        for w in tokenizer.windows(text, range, o.tokens, o.overlap)? {
            out.push(Span {
                section: section.clone(),
                start: w.start,
                end: w.end,
            });
        }
    }
    if out.is_empty() {
        out.push(Span {
            section: None,
            start: 0,
            end: total,
        });
    }
    if out.len() > MAX_PASSAGES_PER_DOCUMENT {
        return Err(IndexError::invalid(format!(
            "the text splits into {} passages; at most {MAX_PASSAGES_PER_DOCUMENT} per document (use a larger chunk size)",
            out.len()
        )));
    }
    Ok(out)
}

/// Splits a report at its section headings: (heading, character range) in text order, the part
/// before the first heading without one; sections with nothing after their heading are left out.
///
/// A heading is 4 or more capital letters (words joined by spaces, `/`, `&` or `-`) followed by
/// a colon, at the start of the text or a line, or after a sentence's end (`.`, `;`, `:`).
pub fn sections(text: &str) -> Vec<(Option<String>, Range<usize>)> {
    let chars: Vec<char> = text.chars().collect();
    let mut heads: Vec<(usize, usize, String)> = Vec::new(); // (start, after colon, name)
    let mut i = 0;
    while i < chars.len() {
        if starts_clause(&chars, i) {
            if let Some((after, name)) = heading_at(&chars, i) {
                heads.push((i, after, name));
                i = after;
                continue;
            }
        }
        i += 1;
    }
    let mut out = Vec::new();
    let first = heads.first().map_or(chars.len(), |h| h.0);
    if chars[..first].iter().any(|c| !c.is_whitespace()) {
        out.push((None, 0..first));
    }
    for (k, (start, after, name)) in heads.iter().enumerate() {
        let end = heads.get(k + 1).map_or(chars.len(), |h| h.0);
        if chars[*after..end].iter().any(|c| c.is_alphanumeric()) {
            out.push((Some(name.clone()), *start..end));
        }
    }
    out
}

/// Whether a heading may start at `i`: the text's or a line's start, or after a sentence end
/// and whitespace.
fn starts_clause(chars: &[char], i: usize) -> bool {
    let mut j = i;
    while j > 0 && chars[j - 1].is_whitespace() && chars[j - 1] != '\n' {
        j -= 1;
    }
    if j == 0 || chars[j - 1] == '\n' {
        return true;
    }
    j < i && matches!(chars[j - 1], '.' | ';' | ':')
}

/// The heading starting at `i`: the index after its colon and its name.
fn heading_at(chars: &[char], i: usize) -> Option<(usize, String)> {
    let mut j = i;
    let mut letters = 0;
    while j < chars.len() {
        let c = chars[j];
        if c.is_uppercase() {
            letters += 1;
        } else if c.is_lowercase() || c.is_numeric() || c == '\n' {
            return None;
        } else if c == ':' {
            break;
        } else if !matches!(c, ' ' | '/' | '&' | '-' | '\t') {
            return None;
        }
        j += 1;
        if j - i > 40 {
            return None;
        }
    }
    if j >= chars.len() || letters < 4 || !chars[i].is_uppercase() {
        return None;
    }
    let name = chars[i..j]
        .iter()
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Some((j + 1, name))
}

/// The payload of passage `index` of `count`: the document's payload and the passage key.
pub fn passage_payload(
    parent: &str,
    payload: &Map<String, Value>,
    span: &Span,
    index: usize,
    count: usize,
) -> Result<Map<String, Value>> {
    if payload.contains_key(PASSAGE_PAYLOAD_KEY) {
        return Err(IndexError::invalid(format!(
            "item {parent:?}: payload key {PASSAGE_PAYLOAD_KEY:?} is where split texts record their passages; rename it or index without chunking"
        )));
    }
    let info = PassageInfo {
        parent: parent.to_owned(),
        index,
        count,
        section: span.section.clone(),
        start: span.start,
        end: span.end,
    };
    let mut out = payload.clone();
    out.insert(
        PASSAGE_PAYLOAD_KEY.into(),
        serde_json::to_value(info).expect("passage info serialises — this is a bug"),
    );
    Ok(out)
}

/// The passages document `id` (with `payload`) splits into, checked before anything is embedded:
/// its id leaves room for the passage numbers and its payload does not hold the passage key.
pub fn plan(
    tokenizer: &TextTokenizer,
    id: &str,
    text: &str,
    payload: &Map<String, Value>,
    o: &ChunkOptions,
) -> Result<Vec<Span>> {
    if payload.contains_key(PASSAGE_PAYLOAD_KEY) {
        return Err(IndexError::invalid(format!(
            "item {id:?}: payload key {PASSAGE_PAYLOAD_KEY:?} is where split texts record their passages; rename it or index without chunking"
        )));
    }
    let spans = split(tokenizer, text, o)?;
    check_parent_id(id, spans.len())?;
    Ok(spans)
}

/// The items of document `doc` split into `spans`, given each passage's text vector in order:
/// item `D#i` holds passage i's text and the document's payload with its place under
/// [`PASSAGE_PAYLOAD_KEY`]; every passage keeps the image reference, passage 0 the image vector.
pub fn expand(
    doc: Item,
    spans: &[Span],
    text_vectors: impl IntoIterator<Item = Vec<f32>>,
) -> Result<Vec<Item>> {
    let chars: Vec<char> = doc.text.as_deref().unwrap_or("").chars().collect();
    let mut image_vector = doc.image_vector;
    let mut vectors = text_vectors.into_iter();
    let mut out = Vec::with_capacity(spans.len());
    for (i, span) in spans.iter().enumerate() {
        out.push(Item {
            id: passage_id(&doc.id, i),
            text: Some(span.text(&chars)),
            image: doc.image.clone(),
            payload: passage_payload(&doc.id, &doc.payload, span, i, spans.len())?,
            text_vector: vectors.next(),
            image_vector: image_vector.take(),
        });
    }
    Ok(out)
}

/// Checks that a document id leaves room for its passage numbers.
pub fn check_parent_id(id: &str, count: usize) -> Result<()> {
    let longest = passage_id(id, count.saturating_sub(1)).chars().count();
    if longest > MAX_ID_CHARS {
        return Err(IndexError::invalid(format!(
            "item id {:?}… is too long to split: its passage ids would be {longest} characters (limit {MAX_ID_CHARS})",
            id.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

/// Removes what a rewrite of documents leaves behind: for each `(id, passages)` just written
/// (`passages` 0 when the text was stored unsplit as `id`), the earlier version's passages past
/// the new count and, for a split document, an unsplit item `id`. Call after the new version's
/// write is durable. Returns the items deleted.
pub async fn remove_stale(collection: &Collection, written: &[(String, usize)]) -> Result<u64> {
    if written.is_empty() {
        return Ok(0);
    }
    // Passages are written 0..count in one batch, so an earlier version had more passages
    // exactly when the first number past the new count exists.
    let mut probes = Vec::with_capacity(written.len() * 2);
    for (id, n) in written {
        probes.push(passage_id(id, *n));
        if *n > 0 {
            probes.push(id.clone());
        }
    }
    let present = collection.existing(probes.clone()).await?;
    if present.is_empty() {
        return Ok(0);
    }
    let mut doomed = Vec::new();
    let first_stale: HashMap<String, (&str, usize)> = written
        .iter()
        .map(|(id, n)| (passage_id(id, *n), (id.as_str(), *n)))
        .collect();
    let mut to_read = Vec::new();
    for p in &probes {
        if !present.contains(p) {
            continue;
        }
        if first_stale.contains_key(p) {
            to_read.push(p.clone());
        } else {
            doomed.push(p.clone());
        }
    }
    for stored in collection.get(to_read).await? {
        let (parent, from) = first_stale[&stored.id];
        let old_count = PassageInfo::of(&stored.payload)
            .filter(|p| p.parent == parent)
            .map_or(from + 1, |p| p.count.max(from + 1));
        doomed.extend((from..old_count).map(|i| passage_id(parent, i)));
    }
    collection.delete(doomed).await
}

/// One document of a grouped result: its best passages, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The document's id.
    pub parent: String,
    /// Its passages among the candidates, best first (the first gives the group its rank).
    pub hits: Vec<Hit>,
}

/// The document a hit belongs to: its passage's parent, else itself.
pub fn parent_of(hit: &Hit) -> String {
    PassageInfo::of(&hit.payload).map_or_else(|| hit.id.clone(), |p| p.parent)
}

/// Folds hits ranked best first into documents ranked by their best passage, keeping at most
/// `per_group` passages each.
pub fn group(hits: Vec<Hit>, per_group: usize) -> Vec<Group> {
    let mut order: Vec<Group> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for h in hits {
        let parent = parent_of(&h);
        match at.get(&parent) {
            Some(&g) => {
                if order[g].hits.len() < per_group {
                    order[g].hits.push(h);
                }
            }
            None => {
                at.insert(parent.clone(), order.len());
                order.push(Group {
                    parent,
                    hits: vec![h],
                });
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(text: &str) -> Vec<(Option<String>, String)> {
        let chars: Vec<char> = text.chars().collect();
        sections(text)
            .into_iter()
            .map(|(n, r)| (n, chars[r].iter().collect::<String>()))
            .collect()
    }

    #[test]
    fn report_headings_start_sections_and_other_capitals_do_not() {
        let report = "EXAMINATION: CHEST (PA AND LAT)\nINDICATION: ___ with cough.\n\nFINDINGS: \
                      Small left pleural effusion. No PTX. IMPRESSION: Effusion, L4/L5 normal.\nNOTE:\n";
        let got = names(report);
        let heads: Vec<Option<&str>> = got.iter().map(|(n, _)| n.as_deref()).collect();
        assert_eq!(
            heads,
            [
                Some("EXAMINATION"),
                Some("INDICATION"),
                Some("FINDINGS"),
                Some("IMPRESSION")
            ]
        );
        assert!(got[2].1.starts_with("FINDINGS: Small left"), "{got:?}");
        assert!(got[3].1.starts_with("IMPRESSION: Effusion"), "{got:?}");
        // Capitals inside a sentence, lower case, digits and short words are not headings.
        assert_eq!(
            names("Compared with CT: stable. ET tube: in place. Seen at C5-C6: narrowing."),
            [(
                None,
                "Compared with CT: stable. ET tube: in place. Seen at C5-C6: narrowing.".into()
            )]
        );
        assert_eq!(
            names("CLINICAL HISTORY: fall.  Comparison: none."),
            [(
                Some("CLINICAL HISTORY".into()),
                "CLINICAL HISTORY: fall.  Comparison: none.".into()
            )]
        );
        assert!(sections("   ").is_empty());
    }

    #[test]
    fn groups_keep_the_best_passages_in_rank_order() {
        let hit = |id: &str, parent: Option<&str>, score: f32| {
            let mut payload = Map::new();
            if let Some(p) = parent {
                payload.insert(
                    PASSAGE_PAYLOAD_KEY.into(),
                    json!({"parent": p, "index": 0, "count": 3, "start": 0, "end": 1}),
                );
            }
            Hit::new(id.into(), score, None, None, payload)
        };
        let hits = vec![
            hit("a#1", Some("a"), 0.9),
            hit("b", None, 0.8),
            hit("a#0", Some("a"), 0.7),
            hit("a#2", Some("a"), 0.6),
            hit("c#0", Some("c"), 0.5),
        ];
        let g = group(hits, 2);
        let parents: Vec<&str> = g.iter().map(|g| g.parent.as_str()).collect();
        assert_eq!(parents, ["a", "b", "c"]);
        let a: Vec<&str> = g[0].hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(a, ["a#1", "a#0"]);
    }

    #[test]
    fn passage_payload_refuses_a_callers_passage_key_and_long_ids() {
        let span = Span {
            section: Some("FINDINGS".into()),
            start: 3,
            end: 9,
        };
        let p = passage_payload("r1", &Map::new(), &span, 1, 2).unwrap();
        let info = PassageInfo::of(&p).unwrap();
        assert_eq!(info.parent, "r1");
        assert_eq!((info.index, info.count, info.start, info.end), (1, 2, 3, 9));
        let mut taken = Map::new();
        taken.insert(PASSAGE_PAYLOAD_KEY.into(), json!(1));
        let e = passage_payload("r1", &taken, &span, 0, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rename it"), "{e}");
        assert!(check_parent_id(&"x".repeat(MAX_ID_CHARS - 2), 10).is_ok());
        assert!(check_parent_id(&"x".repeat(MAX_ID_CHARS - 2), 11).is_err());
        assert_eq!("sections".parse::<Chunking>().unwrap(), Chunking::Sections);
        assert!("words".parse::<Chunking>().is_err());
    }
}
