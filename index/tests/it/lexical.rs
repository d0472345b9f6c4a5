//! Lexical (BM25) and hybrid retrieval, the same in both stores: every ranking is checked
//! against BM25 computed here from the analyzer's terms, so the stores agree with each other by
//! agreeing with one oracle; deletes, replaces and reopening keep the lexical index in step.

use std::collections::HashMap;

use mirage_index::hybrid::{self, Fusion, FusionMethod, Query, RetrievalMode};
use mirage_index::lexical::{analyze, idf, query_terms, tf_weight};
use mirage_index::{
    Collection, EmbeddedCollection, Filter, Item, LexicalRequest, StoreSpec, VectorName,
};
use serde_json::json;

use crate::common::*;
use crate::semantics::{qdrant_spec, unique_qdrant_name};

const DIM: usize = 8;

const REPORTS: [&str; 16] = [
    "Small left pleural effusion. No pneumothorax.",
    "Large right pleural effusion with adjacent atelectasis.",
    "Tracheostomy tube in place. Lungs are clear.",
    "ET tube terminates 3 cm above the carina. Bilateral pleural effusions.",
    "Cardiomegaly. No pleural effusion.",
    "Degenerative disc disease at C5-C6 with foraminal narrowing.",
    "T2-weighted images show a hyperintense lesion in the left temporal lobe.",
    "No acute cardiopulmonary process.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Nasogastric tube courses below the diaphragm. Small effusion on the left.",
    "Stable cardiomegaly and pulmonary edema.",
    "Pneumothorax on the right, chest tube recommended.",
    "Mild degenerative changes of the thoracic spine.",
    "Left pleural effusion has increased since the prior study, with effusion tracking into the fissure.",
    "Hyperinflated lungs consistent with emphysema.",
    "Central venous catheter tip in the superior vena cava.",
];

const QUERIES: [&str; 6] = [
    "pleural effusion",
    "tracheostomy tube",
    "left effusion",
    "C5-C6",
    "cardiomegaly edema",
    "tube",
];

fn items() -> Vec<Item> {
    let vectors = random_vectors(REPORTS.len(), DIM, 11);
    REPORTS
        .iter()
        .zip(vectors)
        .enumerate()
        .map(|(i, (text, v))| Item {
            id: format!("r{i:02}"),
            text: Some((*text).to_owned()),
            image: None,
            payload: payload(json!({"side": if text.contains("eft") { "left" } else { "other" }})),
            text_vector: Some(v),
            image_vector: None,
        })
        .collect()
}

/// BM25 of every document for `query`, as both stores define it, best first (ties by id).
fn oracle(docs: &[(String, String)], query: &str) -> Vec<(String, f64)> {
    let analyzed: Vec<(String, Vec<String>)> = docs
        .iter()
        .map(|(id, t)| (id.clone(), analyze(t)))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let n = analyzed.len() as u64;
    let avg = analyzed.iter().map(|(_, t)| t.len()).sum::<usize>() as f64 / n as f64;
    let terms = query_terms(query);
    let df: HashMap<&String, u64> = terms
        .iter()
        .map(|q| {
            (
                q,
                analyzed.iter().filter(|(_, t)| t.contains(q)).count() as u64,
            )
        })
        .collect();
    let mut scored: Vec<(String, f64)> = analyzed
        .iter()
        .filter_map(|(id, t)| {
            let mut score = 0.0;
            let mut matched = false;
            for q in &terms {
                let tf = t.iter().filter(|x| *x == q).count() as u32;
                if tf > 0 {
                    matched = true;
                    score += idf(n, df[q]) * tf_weight(tf, t.len(), avg);
                }
            }
            matched.then(|| (id.clone(), score))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored
}

async fn lexical(c: &Collection, query: &str, limit: usize) -> Vec<mirage_index::Hit> {
    c.lexical_search(LexicalRequest::new(query, limit))
        .await
        .unwrap()
}

/// Hits must be the oracle's, in its order (near-ties may swap: f32 in Qdrant), with its scores.
fn assert_matches_oracle(hits: &[mirage_index::Hit], want: &[(String, f64)], what: &str) {
    assert_eq!(hits.len(), want.len().min(hits.len()), "{what}");
    assert!(!hits.is_empty() || want.is_empty(), "{what}: no hits");
    for (h, (id, s)) in hits.iter().zip(want) {
        let tol = 1e-4 * s.abs().max(1.0);
        assert!(
            (f64::from(h.score) - s).abs() < tol,
            "{what}: {} scored {} where the oracle's {id} scores {s}",
            h.id,
            h.score
        );
        if h.id != *id {
            let theirs = want.iter().find(|(i, _)| *i == h.id).map(|w| w.1);
            assert!(
                theirs.is_some_and(|t| (t - s).abs() < tol),
                "{what}: {} where the oracle ranks {id}",
                h.id
            );
        }
    }
}

async fn lexical_semantics(spec: StoreSpec, name: &str) {
    let c = Collection::create_or_open(&spec, name, &config(DIM))
        .await
        .unwrap();
    assert!(c.has_lexical());
    let all = items();
    let docs: Vec<(String, String)> = all
        .iter()
        .map(|i| (i.id.clone(), i.text.clone().unwrap()))
        .collect();
    // One batch: Qdrant's recorded average length is then the live one FTS5 uses.
    c.upsert(all.clone()).await.unwrap();
    assert_eq!(
        c.info().await.unwrap().lexical.as_deref(),
        Some(mirage_index::lexical::ANALYZER)
    );
    for q in QUERIES {
        let want = oracle(&docs, q);
        let hits = lexical(&c, q, 10).await;
        assert_eq!(hits.len(), want.len().min(10), "{q}");
        assert_matches_oracle(&hits, &want, q);
        assert_eq!(
            hits[0].text.as_deref(),
            docs.iter()
                .find(|d| d.0 == hits[0].id)
                .map(|d| d.1.as_str())
        );
    }
    // Exact medical forms: "C5-C6" reaches the one disc report, and "3 cm" no report by "cm" alone.
    assert_eq!(lexical(&c, "c5-c6 narrowing", 3).await[0].id, "r05");
    assert!(
        lexical(&c, "the of and", 5).await.is_empty(),
        "stopwords only"
    );
    assert!(lexical(&c, "xylophone", 5).await.is_empty());

    // Pages and filters.
    let full = lexical(&c, "pleural effusion", 6).await;
    let mut req = LexicalRequest::new("pleural effusion", 3);
    req.offset = 3;
    let page = c.lexical_search(req).await.unwrap();
    assert_eq!(ids(&page), ids(&full[3..6]));
    let mut req = LexicalRequest::new("pleural effusion", 10);
    req.filter =
        Some(Filter::from_json(r#"{"must":[{"key":"side","match":{"value":"left"}}]}"#).unwrap());
    let left = c.lexical_search(req).await.unwrap();
    assert!(!left.is_empty());
    assert!(left.iter().all(|h| h.payload["side"] == "left"), "{left:?}");
    let mut req = LexicalRequest::new("tube", 10);
    req.with_content = false;
    let bare = c.lexical_search(req).await.unwrap();
    assert!(bare.iter().all(|h| h.text.is_none()) && !bare.is_empty());

    // Hybrid: both legs recorded; lexical-only hits come in; a dense hit keeps its cosine.
    let vector = all[2].text_vector.clone().unwrap();
    let mut q = Query::new(
        vec![vector.clone()],
        Some("tracheostomy tube".into()),
        VectorName::Text,
        RetrievalMode::Hybrid,
        5,
    );
    let fused = hybrid::search(&c, &q).await.unwrap();
    assert_eq!(fused.len(), 5);
    assert!(fused
        .iter()
        .all(|h| h.legs.dense.is_some() || h.legs.lexical.is_some()));
    assert!(fused.iter().any(|h| h.legs.lexical.is_some()));
    // r02 is first in both legs (its own vector; the one tracheostomy report).
    assert_eq!(fused[0].id, "r02");
    assert_eq!(fused[0].legs.dense.unwrap().rank, 1);
    assert_eq!(fused[0].legs.lexical.unwrap().rank, 1);
    assert!((fused[0].score - 2.0 / 61.0).abs() < 1e-6);
    q.fusion = Fusion {
        method: FusionMethod::Weighted,
        dense_weight: 0.0,
        ..Fusion::default()
    };
    q.limit = 3;
    let words_only = hybrid::search(&c, &q).await.unwrap();
    assert_eq!(
        ids(&words_only),
        ids(&lexical(&c, "tracheostomy tube", 3).await)
    );
    q.mode = RetrievalMode::Lexical;
    q.score_threshold = Some(0.5);
    let e = hybrid::search(&c, &q).await.unwrap_err().to_string();
    assert!(e.contains("score_threshold"), "{e}");
    q.score_threshold = None;
    q.text = None;
    let e = hybrid::search(&c, &q).await.unwrap_err().to_string();
    assert!(e.contains("needs query text"), "{e}");

    // Replacing a text replaces its terms; deleting an item removes them.
    let mut changed = all[2].clone();
    changed.text = Some("Xylophone artefact.".into());
    c.upsert(vec![changed]).await.unwrap();
    assert!(!ids(&lexical(&c, "tracheostomy", 5).await).contains(&"r02".to_string()));
    assert_eq!(ids(&lexical(&c, "xylophone", 5).await), ["r02"]);
    c.delete(vec!["r02".into()]).await.unwrap();
    assert!(lexical(&c, "xylophone", 5).await.is_empty());
    let mut no_text = all[5].clone();
    no_text.text = None;
    c.upsert(vec![no_text]).await.unwrap();
    assert!(lexical(&c, "c5-c6", 5).await.is_empty());
    c.delete_by_filter(
        Filter::from_json(r#"{"must":[{"key":"side","match":{"value":"left"}}]}"#).unwrap(),
    )
    .await
    .unwrap();
    assert!(lexical(&c, "left", 10).await.is_empty());
}

fn ids(hits: &[mirage_index::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

#[test]
fn embedded_lexical_semantics() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(lexical_semantics(
        StoreSpec::Embedded(dir.path().into()),
        "lex",
    ));
}

#[test]
fn qdrant_lexical_semantics() {
    let Some(spec) = qdrant_spec("the Qdrant lexical suite") else {
        return;
    };
    runtime().block_on(lexical_semantics(spec, &unique_qdrant_name("lex")));
}

/// The lexical index is part of the database: it survives reopening (with unflushed writes and
/// deletes), and a collection whose index is missing or stale is re-analyzed on open.
#[test]
fn the_lexical_index_survives_reopen_and_is_rebuilt_when_stale() {
    let dir = tempfile::tempdir().unwrap();
    let docs: Vec<(String, String)> = items()
        .iter()
        .map(|i| (i.id.clone(), i.text.clone().unwrap()))
        .collect();
    let search = |c: &EmbeddedCollection, q: &str| {
        c.lexical_search(&LexicalRequest::new(q, 20))
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect::<Vec<_>>()
    };
    {
        let c = EmbeddedCollection::create_or_open(dir.path(), "lex", &config(DIM)).unwrap();
        c.upsert(items()).unwrap();
        c.delete(&["r00".into()]).unwrap();
    }
    let live: Vec<(String, String)> = docs.iter().filter(|d| d.0 != "r00").cloned().collect();
    let want = |q: &str| {
        oracle(&live, q)
            .into_iter()
            .map(|w| w.0)
            .collect::<Vec<_>>()
    };
    let c = EmbeddedCollection::open(dir.path(), "lex").unwrap();
    assert_eq!(search(&c, "pleural effusion"), want("pleural effusion"));
    drop(c);
    // An index from an older build: terms wiped, analyzer record gone.
    let db = rusqlite::Connection::open(dir.path().join("lex/items.sqlite")).unwrap();
    db.execute_batch("DELETE FROM lexical; DELETE FROM meta WHERE key = 'lexical.analyzer';")
        .unwrap();
    drop(db);
    let c = EmbeddedCollection::open(dir.path(), "lex").unwrap();
    assert_eq!(search(&c, "pleural effusion"), want("pleural effusion"));
    assert_eq!(search(&c, "tube"), want("tube"));
}

/// The same corpus in both stores: every lexical and hybrid ranking is the same list of ids
/// (ties ordered by id in both), page by page.
#[test]
fn both_stores_rank_the_same_documents() {
    let Some(spec) = qdrant_spec("the cross-store lexical ranking test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let name = unique_qdrant_name("same");
    let stores = [StoreSpec::Embedded(dir.path().into()), spec];
    let collections: Vec<Collection> = stores
        .iter()
        .map(|s| {
            let c = rt
                .block_on(Collection::create_or_open(s, &name, &config(DIM)))
                .unwrap();
            rt.block_on(c.upsert(items())).unwrap();
            c
        })
        .collect();
    let vector = items()[4].text_vector.clone().unwrap();
    for q in QUERIES.iter().chain(&["effusion tube", "left right", "no"]) {
        for (mode, offset) in [
            (RetrievalMode::Lexical, 0),
            (RetrievalMode::Lexical, 2),
            (RetrievalMode::Hybrid, 0),
            (RetrievalMode::Hybrid, 3),
        ] {
            let mut query = Query::new(
                vec![vector.clone()],
                Some((*q).into()),
                VectorName::Text,
                mode,
                4,
            );
            query.offset = offset;
            query.search_mode = mirage_index::SearchMode::Exact;
            let got: Vec<Vec<String>> = collections
                .iter()
                .map(|c| ids(&rt.block_on(hybrid::search(c, &query)).unwrap()))
                .collect();
            assert_eq!(got[0], got[1], "{q:?} {mode} offset {offset}");
        }
    }
    rt.block_on(mirage_index::drop_collection(&stores[1], &name))
        .unwrap();
}
