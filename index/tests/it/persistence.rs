//! Embedded store: what survives a reopen, a flush, a compaction and damaged graph files.

use mirage_index::{EmbeddedCollection, IndexError, SearchMode, SearchRequest, VectorName};
use serde_json::json;

use crate::common::*;

const DIM: usize = 32;

fn top_ids(c: &EmbeddedCollection, q: &[f32], mode: SearchMode) -> Vec<String> {
    let mut r = SearchRequest::new(q.to_vec(), VectorName::Text, 10);
    r.mode = mode;
    c.search(&r).unwrap().into_iter().map(|h| h.id).collect()
}

/// The graph search's top 10 with a beam of `ef`.
fn top_ids_ef(c: &EmbeddedCollection, q: &[f32], ef: usize) -> Vec<String> {
    let mut r = SearchRequest::new(q.to_vec(), VectorName::Text, 10);
    r.mode = SearchMode::Auto;
    r.ef = Some(ef);
    c.search(&r).unwrap().into_iter().map(|h| h.id).collect()
}

fn fill(c: &EmbeddedCollection, vectors: &[Vec<f32>], from: usize) {
    let items = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            text_item(
                &format!("id-{}", i + from),
                v.clone(),
                json!({"n": i + from}),
            )
        })
        .collect();
    c.upsert(items).unwrap();
}

fn small_threshold() -> mirage_index::CollectionConfig {
    let mut cfg = config(DIM);
    // Force the graph path on a few hundred vectors.
    cfg.hnsw.exact_threshold = 10;
    cfg
}

#[test]
fn reopen_replays_unflushed_writes_and_keeps_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = random_vectors(400, DIM, 1);
    let queries = random_vectors(5, DIM, 2);
    let before: Vec<Vec<String>>;
    {
        let c = EmbeddedCollection::create_or_open(dir.path(), "p", &small_threshold()).unwrap();
        fill(&c, &vectors[..200], 0);
        c.flush().unwrap();
        fill(&c, &vectors[200..], 200);
        assert_eq!(c.delete(&["id-3".into(), "id-250".into()]).unwrap(), 2);
        before = queries
            .iter()
            .map(|q| top_ids(&c, q, SearchMode::Exact))
            .collect();
        // No flush: the last 200 points and the deletes exist only in SQLite.
    }
    let c = EmbeddedCollection::open(dir.path(), "p").unwrap();
    let info = c.info();
    assert_eq!(info.items, 398);
    // id-3 sits in the dump as a tombstone; id-250 came after the dump and was never replayed.
    assert_eq!(info.tombstones, 1);
    let mut overlap = 0;
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&top_ids(&c, q, SearchMode::Exact), expected);
        let graph = top_ids(&c, q, SearchMode::Auto);
        assert!(!graph.contains(&"id-3".to_string()) && !graph.contains(&"id-250".to_string()));
        let found = graph.iter().filter(|id| expected.contains(id)).count();
        assert!(found >= 7, "graph search after replay: {found}/10");
        overlap += found;
        // A beam as wide as the collection walks every point linked into the graph, so it finds
        // the exact answer exactly when replay linked every point.
        assert_eq!(
            &top_ids_ef(&c, q, 512),
            expected,
            "a point replay did not link"
        );
    }
    // The default beam's recall, over all queries: parallel linking makes the graph differ from
    // run to run, so one query may lose two of its ten; a replay that left points out loses half.
    assert!(overlap >= 44, "graph search after replay: {overlap}/50");
    let got = c.get(&["id-399".into()]).unwrap();
    assert_eq!(got[0].payload, payload(json!({"n": 399})));

    // Compaction drops tombstones and changes no answer.
    c.compact().unwrap();
    assert_eq!(c.info().tombstones, 0);
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&top_ids(&c, q, SearchMode::Exact), expected);
    }
    drop(c);
    let c = EmbeddedCollection::open(dir.path(), "p").unwrap();
    assert_eq!(c.info().tombstones, 0);
    assert_eq!(c.info().items, 398);
    let dumps: Vec<_> = std::fs::read_dir(c.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with("graph-"))
        .collect();
    // One dump (a single file) of the text space; the empty image space writes none.
    assert_eq!(dumps.len(), 1, "{dumps:?}");
}

#[test]
fn damaged_graph_dump_is_rebuilt_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = random_vectors(300, DIM, 3);
    let q = &random_vectors(1, DIM, 4)[0];
    let expected;
    {
        let c = EmbeddedCollection::create_or_open(dir.path(), "d", &small_threshold()).unwrap();
        fill(&c, &vectors, 0);
        c.flush().unwrap();
        expected = top_ids(&c, q, SearchMode::Exact);
    }
    let coll = dir.path().join("d");
    let dump = std::fs::read_dir(&coll)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".hnsw"))
        .expect("a graph dump");
    let whole = std::fs::read(&dump).unwrap();
    let damages: [(&str, Vec<u8>); 4] = [
        ("garbage", b"garbage".to_vec()),
        ("empty", Vec::new()),
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("header only", whole[..64.min(whole.len())].to_vec()),
    ];
    for (what, bytes) in damages {
        std::fs::write(&dump, bytes).unwrap();
        let c = EmbeddedCollection::open(dir.path(), "d").unwrap();
        assert_eq!(c.info().items, 300, "{what}");
        assert_eq!(top_ids(&c, q, SearchMode::Exact), expected, "{what}");
        let graph = top_ids(&c, q, SearchMode::Auto);
        assert!(
            graph.iter().filter(|id| expected.contains(id)).count() >= 9,
            "{what}"
        );
    }
}

#[test]
fn a_collection_is_opened_by_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _c = EmbeddedCollection::create_or_open(dir.path(), "x", &config(4)).unwrap();
    let err = EmbeddedCollection::open(dir.path(), "x").err().unwrap();
    assert!(err.to_string().contains("open in another process"), "{err}");
}

/// Graph settings are checked before any engine sees them, at creation and when a manifest is
/// read.
#[test]
fn graph_settings_out_of_range_are_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_threshold();
    cfg.hnsw.m = 256;
    let c = EmbeddedCollection::create_or_open(dir.path(), "widest", &cfg).unwrap();
    let vectors = random_vectors(50, DIM, 3);
    fill(&c, &vectors, 0);
    assert_eq!(c.count(None).unwrap(), 50);
    assert_eq!(top_ids(&c, &vectors[7], SearchMode::Auto)[0], "id-7");
    drop(c);
    for (field, set, value) in [
        ("hnsw.m", 0, 257),
        ("hnsw.m", 0, 1),
        ("hnsw.ef_construction", 1, 3),
        ("hnsw.ef_construction", 1, 4097),
        ("hnsw.ef_search", 2, 0),
        ("hnsw.exact_threshold", 3, 100_000_001),
    ] {
        let mut cfg = config(DIM);
        match set {
            0 => cfg.hnsw.m = value,
            1 => cfg.hnsw.ef_construction = value,
            2 => cfg.hnsw.ef_search = value,
            _ => cfg.hnsw.exact_threshold = value,
        }
        let err = EmbeddedCollection::create_or_open(dir.path(), "bad", &cfg)
            .err()
            .unwrap_or_else(|| panic!("{field} {value} was accepted"));
        assert!(matches!(err, IndexError::InvalidRequest(_)), "{err}");
        assert!(
            err.to_string().contains(field) && err.to_string().contains(&value.to_string()),
            "{err}"
        );
    }
    let mut cfg = config(DIM);
    cfg.shard_number = Some(65);
    let err = EmbeddedCollection::create_or_open(dir.path(), "bad", &cfg)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("shard_number must be 1–64"),
        "{err}"
    );
    // A manifest edited by hand is refused on open, before any graph is built from it.
    let manifest = dir.path().join("widest/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"m\": 256", "\"m\": 1000")).unwrap();
    let err = EmbeddedCollection::open(dir.path(), "widest")
        .err()
        .unwrap();
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("hnsw.m must be 2–256 (got 1000)"),
        "{err}"
    );
}

#[test]
fn unknown_format_versions_and_missing_collections_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedCollection::create_or_open(dir.path(), "v", &config(4)).unwrap());
    let manifest = dir.path().join("v/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("\"format_version\": 1", "\"format_version\": 99"),
    )
    .unwrap();
    let err = EmbeddedCollection::open(dir.path(), "v").err().unwrap();
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("format version 99"), "{err}");
    let err = EmbeddedCollection::open(dir.path(), "absent")
        .err()
        .unwrap();
    assert!(
        matches!(err, IndexError::CollectionNotFound { .. }),
        "{err}"
    );
}

#[test]
fn generation_counts_committed_writes_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = random_vectors(4, DIM, 5);
    {
        let c = EmbeddedCollection::create_or_open(dir.path(), "g", &config(DIM)).unwrap();
        assert_eq!(c.info().generation, Some(0));
        fill(&c, &vectors[..2], 0);
        fill(&c, &vectors[2..], 2);
        // Deleting nothing changes nothing, so it is not a new version.
        assert_eq!(c.delete(&["absent".into()]).unwrap(), 0);
        assert_eq!(c.info().generation, Some(2));
        assert_eq!(c.delete(&["id-0".into()]).unwrap(), 1);
        assert_eq!(c.info().generation, Some(3));
    }
    let c = EmbeddedCollection::open(dir.path(), "g").unwrap();
    assert_eq!(c.info().generation, Some(3));
}
