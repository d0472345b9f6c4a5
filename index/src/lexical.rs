//! Lexical retrieval: one analyzer and one BM25 for both stores.
//!
//! The embedded store keeps the analyzed terms of every item's text in an SQLite FTS5 table and
//! ranks with FTS5's `bm25()`; the Qdrant store keeps them as a sparse vector whose values are
//! BM25's term-frequency part and asks with the inverse document frequencies as query weights.
//! Both therefore compute, for a query of distinct terms `t`,
//!
//! ```text
//! score(d) = Σ_t idf(t) · tf(t,d)·(k1+1) / (tf(t,d) + k1·(1 − b + b·|d|/avgdl))
//! idf(t)   = ln((N − n(t) + 0.5) / (n(t) + 0.5)), at least 1e-6   (FTS5's form)
//! ```
//!
//! with k1 = 1.2, b = 0.75, N the number of items with at least one term, n(t) those holding
//! `t`, and |d| the number of terms of `d`. They differ in one thing only: FTS5 normalises by the
//! live average length, Qdrant by the average length of the first batch written to the collection
//! (its sparse values are fixed when written). A collection built in one go ranks identically in
//! both; see `docs/RETRIEVAL.md`.
//!
//! The analyzer ([`analyze`]): text is split into words of letters and digits that may be joined
//! inside by `-` `.` `/` `+` (and end in `+`: "HER2+"); each word is folded (Unicode NFKD with
//! combining marks removed, then lowercased). A joined word ("C5-C6", "T2-weighted", "L4/L5",
//! "3.5") is kept whole and also gives its parts. A word with a digit ("T2", "c5") is kept as
//! is; other words lose English stopwords (Lucene's 33; kept when written in capitals, so the
//! abbreviation "IT" survives while "it" does not) and are stemmed with the Snowball English
//! stemmer. Nothing else is dropped: two-letter abbreviations ("ET tube") stay.

use std::sync::OnceLock;

use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

/// The analyzer's name and version, recorded by both stores: a collection whose lexical index
/// was made by another version is re-analyzed (embedded) or refused (Qdrant).
pub const ANALYZER: &str = "mirage-en-1";

/// BM25's term-frequency saturation.
pub const K1: f64 = 1.2;
/// BM25's length normalisation.
pub const B: f64 = 0.75;

/// Lucene's English stopwords.
const STOPWORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

fn is_joiner(c: char) -> bool {
    matches!(c, '-' | '.' | '/' | '+')
}

fn stemmer() -> &'static rust_stemmers::Stemmer {
    static STEMMER: OnceLock<rust_stemmers::Stemmer> = OnceLock::new();
    STEMMER.get_or_init(|| rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English))
}

fn fold(word: &str) -> String {
    word.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// One word without joiners: `raw` as written, for the capitals rule.
fn push_simple(raw: &str, out: &mut Vec<String>) {
    // Possessives and elisions: "patient's" is "patient".
    let raw = raw
        .strip_suffix("'s")
        .or_else(|| raw.strip_suffix("’s"))
        .unwrap_or(raw);
    let raw: String = raw.chars().filter(|c| !matches!(c, '\'' | '’')).collect();
    if raw.is_empty() {
        return;
    }
    let folded = fold(&raw);
    if folded.is_empty() {
        return;
    }
    if folded.chars().any(|c| c.is_numeric()) {
        out.push(folded);
        return;
    }
    let capitals = raw.chars().filter(|c| c.is_alphabetic()).count() >= 2
        && !raw.chars().any(char::is_lowercase);
    if !capitals && STOPWORDS.contains(&folded.as_str()) {
        return;
    }
    out.push(stemmer().stem(&folded).into_owned());
}

/// The terms of `text`, in order, with repeats (their count is the term frequency).
pub fn analyze(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let word_char = |c: char| c.is_alphanumeric() || is_joiner(c) || c == '\'' || c == '’';
    for raw in text.split(|c: char| !word_char(c)) {
        // Joiners and apostrophes only join: trim them at the edges, except a closing '+'.
        let edge = |c: char| is_joiner(c) || c == '\'' || c == '’';
        let raw = raw.trim_start_matches(edge);
        let trimmed = raw.trim_end_matches(edge);
        let raw = if !trimmed.is_empty() && raw[trimmed.len()..].starts_with('+') {
            &raw[..=trimmed.len()]
        } else {
            trimmed
        };
        if raw.is_empty() {
            continue;
        }
        let inner_joiner = raw
            .trim_end_matches('+')
            .chars()
            .any(|c| matches!(c, '-' | '.' | '/' | '+'));
        if !inner_joiner {
            let (body, plus) = match raw.strip_suffix('+') {
                Some(body) => (body, true),
                None => (raw, false),
            };
            if plus {
                out.push(fold(raw));
                push_simple(body, &mut out);
            } else {
                push_simple(body, &mut out);
            }
            continue;
        }
        let whole: String = fold(raw)
            .chars()
            .filter(|c| !matches!(c, '\'' | '’'))
            .collect();
        let decimal = raw
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        out.push(whole);
        if !decimal {
            for part in raw.split(is_joiner).filter(|p| !p.is_empty()) {
                push_simple(part, &mut out);
            }
        }
    }
    out
}

/// The distinct terms of a query, in first-seen order (a repeated query word counts once in
/// both stores).
pub fn query_terms(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    analyze(text)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

/// FTS5's inverse document frequency: `n_docs` items with terms, `df` of them holding the term.
pub fn idf(n_docs: u64, df: u64) -> f64 {
    let idf = ((n_docs as f64 - df as f64 + 0.5) / (df as f64 + 0.5)).ln();
    if idf <= 0.0 {
        1e-6
    } else {
        idf
    }
}

/// BM25's term-frequency part for a term seen `tf` times in a document of `len` terms.
pub fn tf_weight(tf: u32, len: usize, avg_len: f64) -> f64 {
    let tf = f64::from(tf);
    let norm = if avg_len > 0.0 {
        1.0 - B + B * len as f64 / avg_len
    } else {
        1.0
    };
    tf * (K1 + 1.0) / (tf + K1 * norm)
}

/// A term's index in the Qdrant sparse vector: 32-bit FNV-1a of its UTF-8 bytes. Two terms of a
/// vocabulary of 100k share an index with probability ~1 in 1 (birthday bound), which merges
/// their term frequencies in that store only; document frequencies are counted per term.
pub fn term_index(term: &str) -> u32 {
    term.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Hits read past a page to order its last scores' ties by id in both stores (ties wider than
/// this at the page's end may differ between them).
pub const TIE_WINDOW: usize = 64;

/// Sorts hits best first, equal scores by id: both stores' lexical order, whatever order the
/// engine returned ties in.
pub fn rank_ties_by_id<T>(hits: &mut [T], key: impl Fn(&T) -> (f32, &str)) {
    hits.sort_by(|a, b| {
        let (sa, ia) = key(a);
        let (sb, ib) = key(b);
        sb.total_cmp(&sa).then_with(|| ia.cmp(ib))
    });
}

/// The terms as one FTS5 document: space-separated (the FTS5 table splits on spaces only).
pub fn fts_document(terms: &[String]) -> String {
    terms.join(" ")
}

/// An FTS5 query matching any of `terms`, each quoted so no term is read as an operator.
pub fn fts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Term frequencies of a document and its length, sorted by term.
pub fn term_counts(terms: &[String]) -> (Vec<(String, u32)>, usize) {
    let mut counts = std::collections::BTreeMap::<&str, u32>::new();
    for t in terms {
        *counts.entry(t).or_default() += 1;
    }
    (
        counts.into_iter().map(|(t, n)| (t.to_owned(), n)).collect(),
        terms.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(text: &str) -> Vec<String> {
        analyze(text)
    }

    #[test]
    fn medical_forms_survive_and_words_are_stemmed() {
        assert_eq!(
            a("Small left pleural effusions."),
            ["small", "left", "pleural", "effus"]
        );
        assert_eq!(a("C5-C6 disc"), ["c5-c6", "c5", "c6", "disc"]);
        assert_eq!(a("T2-weighted"), ["t2-weighted", "t2", "weight"]);
        assert_eq!(a("ET tube at 3.5 cm"), ["et", "tube", "3.5", "cm"]);
        assert_eq!(
            a("HER2+ and ER+ tumour"),
            ["her2+", "her2", "er+", "er", "tumour"]
        );
        assert_eq!(a("L4/L5"), ["l4/l5", "l4", "l5"]);
        // Stopwords go, unless written in capitals (an abbreviation, or an all-caps report).
        assert_eq!(a("no acute findings"), ["acut", "find"]);
        assert_eq!(a("NO ACUTE FINDINGS"), ["no", "acut", "find"]);
        // Unicode folding: accents and compatibility forms.
        assert_eq!(a("Sjögren café ﬁbrosis"), a("Sjogren cafe fibrosis"));
        assert_eq!(a("patient's"), ["patient"]);
        assert!(a("... -- / + ''").is_empty());
        assert_eq!(a("Effusion"), a("effusions"));
    }

    #[test]
    fn query_terms_are_distinct_and_fts_queries_are_quoted() {
        assert_eq!(query_terms("effusion, effusions OR not"), ["effus", "or"]);
        let q = fts_query(&query_terms("NOT c5-c6"));
        assert_eq!(q, "\"not\" OR \"c5-c6\" OR \"c5\" OR \"c6\"");
    }

    #[test]
    fn bm25_parts_follow_fts5() {
        // FTS5 floors a term in more than half the documents at 1e-6.
        assert_eq!(idf(10, 9), 1e-6);
        assert!((idf(100, 1) - (99.5f64 / 1.5).ln()).abs() < 1e-12);
        // tf part at average length: tf (k1 + 1) / (tf + k1).
        assert!((tf_weight(2, 10, 10.0) - 2.0 * 2.2 / 3.2).abs() < 1e-12);
        assert!(tf_weight(1, 20, 10.0) < tf_weight(1, 5, 10.0));
        assert_eq!(term_index("a"), 0xe40c292c);
        let (counts, len) = term_counts(&a("effusion effusion tube"));
        assert_eq!(len, 3);
        assert_eq!(counts, [("effus".to_owned(), 2), ("tube".to_owned(), 1)]);
    }
}
