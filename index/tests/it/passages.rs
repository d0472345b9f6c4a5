//! Passages: token windows checked against the tokenizer itself, split documents written by the
//! pipeline (ids, spans, sections, resume), truncation reported without splitting, a new
//! version of a document leaving none of the old passages behind, and grouping by document —
//! in the embedded store and in Qdrant.

use mirage_data::corpus::{BadRow, CorpusRecord};
use mirage_index::hybrid::{self, Query, RetrievalMode};
use mirage_index::passages::{self, ChunkOptions, Chunking, PassageInfo};
use mirage_index::pipeline::{index_records, model_ref, PipelineOptions, ProgressMode};
use mirage_index::{Collection, CollectionConfig, Item, StoreSpec, VectorName};
use mirage_model::testing::{write_tiny_bundle, TinyVision};
use mirage_model::MirageModel;
use serde_json::{json, Map};

use crate::common::runtime;
use crate::semantics::{qdrant_spec, unique_qdrant_name};

/// Long reports in the tiny tokenizer's words (most words spell out letter by letter).
/// Report `n`: its number heads FINDINGS, so the FINDINGS passage the grouping test searches for
/// embeds like no passage of another report (a tie at cosine 1 has no defined order in an
/// approximate index).
fn report(n: usize) -> String {
    format!(
        "EXAMINATION: chest radiograph {n}.\nFINDINGS: {n} left pleural effusion with edema of the right lung. \
         no pneumothorax. heart normal. the brain scan showing a normal thalamus and hippocampus.\n\
         IMPRESSION: pleural effusion consistent with pneumonia, not cardiomegaly {n}."
    )
}

fn record(line: usize, id: &str, text: &str) -> Result<CorpusRecord, BadRow> {
    Ok(CorpusRecord {
        line,
        id: id.into(),
        text: Some(text.into()),
        image: None,
        image_ref: None,
        payload: Map::from_iter([("site".to_owned(), json!(format!("s{}", line % 2)))]),
    })
}

fn tiny_model(dir: &std::path::Path) -> MirageModel {
    let bundle = dir.join("bundle");
    write_tiny_bundle(&bundle, TinyVision::ResNetMean, 16, 5).unwrap();
    MirageModel::open_cpu(&bundle).unwrap()
}

#[test]
fn token_windows_fit_overlap_and_cover_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let tok = model.tokenizer();
    let text = report(7);
    let chars: Vec<char> = text.chars().collect();
    for (window, overlap) in [(12, 3), (8, 0), (30, 29), (5, 2)] {
        let w = tok.windows(&text, 0..chars.len(), window, overlap).unwrap();
        assert!(w.len() > 1, "{window}: {w:?}");
        let first_char = chars.iter().position(|c| !c.is_whitespace()).unwrap();
        assert_eq!(w[0].start, first_char);
        assert_eq!(w.last().unwrap().end, chars.len());
        let mut overlapping = 0;
        for pair in w.windows(2) {
            // Progress, nothing left out between windows, and overlap only when asked for (a
            // word longer than what is left of a window may take its place).
            assert!(pair[1].end > pair[0].end, "{pair:?}");
            let between: String = chars[pair[0].end.min(pair[1].start)..pair[1].start]
                .iter()
                .collect();
            assert!(between.trim().is_empty(), "{pair:?}");
            overlapping += usize::from(pair[1].start < pair[0].end);
        }
        if overlap == 0 {
            assert_eq!(overlapping, 0, "{w:?}");
        } else {
            assert!(overlapping * 2 >= w.len() - 1, "{window}/{overlap}: {w:?}");
        }
        let mut cut_on_words = 0;
        for x in &w {
            assert!(x.tokens <= window, "{x:?}");
            let piece: String = chars[x.start..x.end].iter().collect();
            assert_eq!(piece.trim(), piece, "spans are trimmed");
            // Cut on word boundaries, a window re-tokenised alone is what was counted (a word
            // longer than the window is cut inside, and its pieces tokenise differently).
            let word = |i: usize| chars.get(i).is_some_and(|c| c.is_alphanumeric());
            let cut_at = |i: usize| i > 0 && word(i - 1) && word(i);
            let whole_words = !cut_at(x.start) && !cut_at(x.end);
            if whole_words {
                let alone = tok.full_length(&piece).unwrap() - tok.special_tokens();
                assert_eq!(alone, x.tokens, "{piece:?}");
            }
            cut_on_words += usize::from(whole_words);
        }
        // Only the longest words (12 tokens: "cardiomegaly") are wider than 12-token windows.
        if window >= 12 {
            assert!(cut_on_words + 1 >= w.len(), "{window}: {w:?}");
        }
        assert!(cut_on_words > 0, "{window}: {w:?}");
    }
    assert!(tok.windows(&text, 0..5, 4, 4).is_err());
    assert!(tok.windows(&text, 0..5, 0, 0).is_err());
    // The limits come from the bundle: 32 tokens, 2 of them [CLS] and [SEP].
    assert_eq!(tok.max_content_tokens(), 30);
    let e = ChunkOptions::new(Chunking::Tokens, Some(31), None, tok).unwrap_err();
    assert!(e.to_string().contains("1–30"), "{e}");
    let e = ChunkOptions::new(Chunking::Tokens, Some(10), Some(10), tok).unwrap_err();
    assert!(e.to_string().contains("0–9"), "{e}");
    let o = ChunkOptions::new(Chunking::Sections, None, None, tok).unwrap();
    assert_eq!((o.tokens, o.overlap), (30, 3));
}

fn chunked(tokens: usize, overlap: usize) -> PipelineOptions {
    PipelineOptions {
        batch_size: 3,
        decode_threads: 1,
        progress: ProgressMode::Quiet,
        chunking: Some(ChunkOptions {
            mode: Chunking::Sections,
            tokens,
            overlap,
        }),
        ..Default::default()
    }
}

/// Every passage of `parent` in `c`, by passage number.
fn passages_of(rt: &tokio::runtime::Runtime, c: &Collection, parent: &str) -> Vec<PassageInfo> {
    let ids: Vec<String> = (0..200).map(|i| passages::passage_id(parent, i)).collect();
    let mut got: Vec<PassageInfo> = rt
        .block_on(c.get(ids))
        .unwrap()
        .iter()
        .map(|s| PassageInfo::of(&s.payload).expect("a passage records its place"))
        .collect();
    got.sort_by_key(|p| p.index);
    got
}

fn split_documents_in(spec: StoreSpec, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let rt = runtime();
    let cfg = CollectionConfig::new(model.dim(), model_ref(&model));
    let c = rt
        .block_on(Collection::create_or_open(&spec, name, &cfg))
        .unwrap();
    let docs: Vec<(String, String)> = (0..5)
        .map(|i| (format!("doc{i}"), report(i)))
        .chain([("short".to_owned(), "normal chest radiograph.".to_owned())])
        .collect();
    let records = || {
        docs.iter()
            .enumerate()
            .map(|(i, (id, t))| record(i + 1, id, t))
            .collect::<Vec<_>>()
            .into_iter()
    };
    let options = chunked(12, 3);
    let s = index_records(&model, &c, rt.handle(), records(), &options).unwrap();
    assert_eq!(s.indexed, 6);
    assert_eq!(s.truncated, 0);
    let mut total = 0;
    for (line, (id, text)) in docs.iter().enumerate() {
        let chars: Vec<char> = text.chars().collect();
        let parts = passages_of(&rt, &c, id);
        assert!(!parts.is_empty(), "{id}");
        total += parts.len();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(
                (p.index, p.count, p.parent.as_str()),
                (i, parts.len(), id.as_str())
            );
        }
        let stored = rt
            .block_on(c.get(vec![passages::passage_id(id, 0)]))
            .unwrap()
            .remove(0);
        let first: String = chars[parts[0].start..parts[0].end].iter().collect();
        assert_eq!(stored.text.as_deref(), Some(first.as_str()));
        // The document's payload is every passage's.
        assert_eq!(
            stored.payload["site"],
            json!(format!("s{}", (line + 1) % 2))
        );
        if id.starts_with("doc") {
            let sections: Vec<Option<&str>> = parts.iter().map(|p| p.section.as_deref()).collect();
            assert_eq!(sections[0], Some("EXAMINATION"), "{sections:?}");
            assert!(sections.contains(&Some("FINDINGS")), "{sections:?}");
            assert_eq!(*sections.last().unwrap(), Some("IMPRESSION"));
            assert!(parts.len() >= 4, "{id}: {}", parts.len());
        } else {
            assert_eq!(parts.len(), 1);
            assert_eq!(parts[0].section, None);
        }
    }
    assert_eq!(s.items_written as usize, total);
    assert_eq!(rt.block_on(c.count(None)).unwrap() as usize, total);

    // A second run finds every document in place.
    let again = index_records(&model, &c, rt.handle(), records(), &options).unwrap();
    assert_eq!((again.indexed, again.already_present), (0, 6));

    // Grouped search: one hit per document, its passages listed best first; pages count
    // documents. The query is a FINDINGS passage of doc3, so doc3 comes first.
    let target = passages_of(&rt, &c, "doc3")
        .into_iter()
        .find(|p| p.section.as_deref() == Some("FINDINGS"))
        .unwrap();
    let text: String = docs[3].1.chars().collect::<Vec<_>>()[target.start..target.end]
        .iter()
        .collect();
    let v = model.embed_texts(&[text.as_str()]).unwrap().remove(0);
    let mut q = Query::new(vec![v], None, VectorName::Text, RetrievalMode::Dense, 3);
    let groups = rt.block_on(hybrid::search_groups(&c, &q, 2)).unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0].parent, "doc3");
    assert_eq!(
        groups[0].hits[0].id,
        passages::passage_id("doc3", target.index)
    );
    assert!((groups[0].hits[0].score - 1.0).abs() < 1e-4);
    // The oracle: every passage ranked, folded by hand.
    q.limit = 1000;
    let all = rt.block_on(hybrid::search(&c, &q)).unwrap();
    let mut seen: Vec<String> = Vec::new();
    for h in &all {
        let p = passages::parent_of(h);
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    assert_eq!(seen.len(), 6);
    q.limit = 2;
    q.offset = 2;
    let page = rt.block_on(hybrid::search_groups(&c, &q, 5)).unwrap();
    let parents: Vec<&str> = page.iter().map(|g| g.parent.as_str()).collect();
    assert_eq!(parents, [seen[2].as_str(), seen[3].as_str()]);
    for g in &page {
        let expected: Vec<&str> = all
            .iter()
            .filter(|h| passages::parent_of(h) == g.parent)
            .take(5)
            .map(|h| h.id.as_str())
            .collect();
        let got: Vec<&str> = g.hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(got, expected);
    }
    assert!(rt.block_on(hybrid::search_groups(&c, &q, 0)).is_err());
    assert!(rt.block_on(hybrid::search_groups(&c, &q, 101)).is_err());

    // A shorter new version of doc1 (two passages) leaves none of the old ones, and an unsplit
    // item of the same id goes when the document is split.
    let before = passages_of(&rt, &c, "doc1").len();
    assert!(before > 2);
    let dim = model.dim();
    let new_passages: Vec<Item> = (0..2)
        .map(|i| Item {
            id: passages::passage_id("doc1", i),
            text: Some(format!("part {i}")),
            image: None,
            payload: passages::passage_payload(
                "doc1",
                &Map::new(),
                &passages::Span {
                    section: None,
                    start: i * 5,
                    end: i * 5 + 4,
                },
                i,
                2,
            )
            .unwrap(),
            text_vector: Some(vec![1.0; dim]),
            image_vector: None,
        })
        .collect();
    let plain = Item {
        id: "doc1".into(),
        text: Some("the unsplit version".into()),
        image: None,
        payload: Map::new(),
        text_vector: Some(vec![1.0; dim]),
        image_vector: None,
    };
    rt.block_on(c.upsert(vec![plain])).unwrap();
    rt.block_on(c.upsert(new_passages)).unwrap();
    let removed = rt
        .block_on(passages::remove_stale(&c, &[("doc1".into(), 2)]))
        .unwrap();
    assert_eq!(removed as usize, before - 2 + 1);
    assert_eq!(passages_of(&rt, &c, "doc1").len(), 2);
    assert!(rt
        .block_on(c.existing(vec!["doc1".into()]))
        .unwrap()
        .is_empty());
    assert_eq!(
        rt.block_on(c.count(None)).unwrap() as usize,
        total - before + 2
    );
    // Stored unsplit again: every passage goes.
    rt.block_on(c.upsert(vec![Item {
        id: "doc1".into(),
        text: Some("whole again".into()),
        image: None,
        payload: Map::new(),
        text_vector: Some(vec![1.0; dim]),
        image_vector: None,
    }]))
    .unwrap();
    let removed = rt
        .block_on(passages::remove_stale(&c, &[("doc1".into(), 0)]))
        .unwrap();
    assert_eq!(removed, 2);
    assert!(passages_of(&rt, &c, "doc1").is_empty());
    if let StoreSpec::Qdrant { .. } = spec {
        rt.block_on(mirage_index::drop_collection(&spec, name))
            .unwrap();
    }
}

#[test]
fn split_documents_in_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    split_documents_in(StoreSpec::Embedded(dir.path().join("idx")), "passages");
}

#[test]
fn split_documents_in_qdrant() {
    let Some(spec) = qdrant_spec("the passages suite over Qdrant") else {
        return;
    };
    split_documents_in(spec, &unique_qdrant_name("passages"));
}

#[test]
fn texts_past_the_limit_are_counted_when_not_split() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let rt = runtime();
    let spec = StoreSpec::Embedded(dir.path().join("idx"));
    let cfg = CollectionConfig::new(model.dim(), model_ref(&model));
    let c = rt
        .block_on(Collection::create_or_open(&spec, "cut", &cfg))
        .unwrap();
    let long = report(1);
    let records = vec![
        record(1, "a", &long),
        record(2, "b", "normal chest radiograph."),
        record(3, "c", &long),
    ];
    let options = PipelineOptions {
        progress: ProgressMode::Quiet,
        ..Default::default()
    };
    let s = index_records(&model, &c, rt.handle(), records.into_iter(), &options).unwrap();
    assert_eq!((s.indexed, s.items_written, s.truncated), (3, 3, 2));
    let full = model.tokenizer().full_length(&long).unwrap();
    assert!(full > 32);
    let listed: Vec<(&str, usize, usize, usize)> = s
        .truncated_items
        .iter()
        .map(|t| (t.id.as_str(), t.line, t.tokens, t.limit))
        .collect();
    assert_eq!(listed, [("a", 1, full, 32), ("c", 3, full, 32)]);

    // A caller's own `passage` key cannot be overwritten by splitting: that record fails alone.
    let mut bad = record(1, "d", &long).unwrap();
    bad.payload.insert("passage".into(), json!("mine"));
    let s = index_records(
        &model,
        &c,
        rt.handle(),
        vec![Ok(bad), record(2, "e", &long)].into_iter(),
        &chunked(10, 2),
    )
    .unwrap();
    assert_eq!(s.indexed, 1);
    assert_eq!(s.failed.len(), 1);
    assert!(s.failed[0].reason.contains("rename it"), "{:?}", s.failed);
}
