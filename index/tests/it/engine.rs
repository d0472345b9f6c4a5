//! The graph engine behind the embedded store: quantised storage, the filter inside the graph
//! walk, and collections whose dumps another engine wrote.

use mirage_index::graph::ENGINE;
use mirage_index::testing::embedding_like_vectors;
use mirage_index::{EmbeddedCollection, Filter, IndexError, Quantization, SearchMode};
use serde_json::json;

use crate::common::*;

const DIM: usize = 64;

fn build(
    dir: &std::path::Path,
    name: &str,
    vectors: &[Vec<f32>],
    q: Quantization,
) -> EmbeddedCollection {
    let mut cfg = config(DIM);
    cfg.hnsw.quantization = q;
    cfg.hnsw.exact_threshold = 0;
    let c = EmbeddedCollection::create_or_open(dir, name, &cfg).unwrap();
    let items = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| text_item(&format!("id-{i}"), v.clone(), json!({"bucket": i % 100})))
        .collect();
    c.upsert(items).unwrap();
    c
}

fn overlap(a: &[(String, f32)], b: &[(String, f32)]) -> usize {
    a.iter()
        .filter(|(id, _)| b.iter().any(|(other, _)| other == id))
        .count()
}

/// f16 and i8 graphs find (nearly) the f32 neighbours, and answer with exact f32 scores because
/// their candidates are rescored; the manifest and info report the setting, and it survives a
/// reopen from the dump.
#[test]
fn quantised_graphs_rescore_to_exact_scores() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = embedding_like_vectors(3000, DIM, 7);
    let queries = embedding_like_vectors(20, DIM, 8);
    for q in Quantization::ALL {
        let name = format!("q-{q}");
        let c = build(dir.path(), &name, &vectors, q);
        c.flush().unwrap();
        drop(c);
        let c = EmbeddedCollection::open(dir.path(), &name).unwrap();
        assert_eq!(c.manifest().hnsw.quantization, q);
        assert_eq!(c.info().hnsw.quantization, q);
        let mut found = 0;
        for query in &queries {
            let exact = search(&c, query, None, SearchMode::Exact);
            let graph = search(&c, query, None, SearchMode::Auto);
            found += overlap(&graph, &exact);
            for (id, score) in &graph {
                let i: usize = id["id-".len()..].parse().unwrap();
                let truth = dot(query, &vectors[i]);
                assert!(
                    (score - truth).abs() < 1e-5,
                    "{q}: {id} scored {score}, exact {truth}"
                );
            }
            assert!(
                graph.windows(2).all(|w| w[0].1 >= w[1].1),
                "{q}: not sorted"
            );
        }
        let recall = found as f64 / (10 * queries.len()) as f64;
        assert!(recall >= 0.95, "{q}: recall@10 {recall}");
    }
    let err = "f8".parse::<Quantization>().unwrap_err();
    assert!(err.to_string().contains("f32, f16 or i8"), "{err}");
}

/// The filter runs inside the graph walk: a filter keeping 50 % or 5 % of the points answers as
/// filtered brute force does, and one keeping almost nothing (picked for an exact scan by the
/// selectivity estimate) answers exactly.
#[test]
fn filtered_graph_search_matches_filtered_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = embedding_like_vectors(4000, DIM, 9);
    let queries = embedding_like_vectors(20, DIM, 10);
    let c = build(dir.path(), "f", &vectors, Quantization::F32);
    for (below, min_recall) in [(50, 0.95), (5, 0.95), (1, 1.0)] {
        let filter: Filter =
            serde_json::from_value(json!({"must": [{"key": "bucket", "range": {"lt": below}}]}))
                .unwrap();
        let mut found = 0;
        for q in &queries {
            let expected = brute_force(
                q,
                vectors
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % 100 < below)
                    .map(|(i, v)| (format!("id-{i}"), v))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(|(id, v)| (id.as_str(), v.as_slice())),
                10,
            );
            let got = search(&c, q, Some(&filter), SearchMode::Auto);
            assert_eq!(got.len(), 10);
            assert!(got
                .iter()
                .all(|(id, _)| { id["id-".len()..].parse::<usize>().unwrap() % 100 < below }));
            found += overlap(&got, &expected);
        }
        let recall = found as f64 / (10 * queries.len()) as f64;
        assert!(recall >= min_recall, "filter < {below}: recall@10 {recall}");
    }
    // Deletes leave tombstones in the graph; the walk steps over them.
    let gone: Vec<String> = (0..4000).step_by(2).map(|i| format!("id-{i}")).collect();
    c.delete(&gone).unwrap();
    assert_eq!(c.info().tombstones, 2000);
    for q in &queries {
        let got = search(&c, q, None, SearchMode::Auto);
        assert_eq!(got.len(), 10);
        assert!(got
            .iter()
            .all(|(id, _)| id["id-".len()..].parse::<usize>().unwrap() % 2 == 1));
    }
}

/// A collection whose manifest names another engine (or none: made before engines were
/// recorded) is refused with the command that rebuilds it; the rebuild keeps every item.
#[test]
fn a_collection_of_another_engine_is_refused_then_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = random_vectors(200, DIM, 11);
    let c = build(dir.path(), "old", &vectors, Quantization::F32);
    let expected = search(&c, &vectors[5], None, SearchMode::Exact);
    c.flush().unwrap();
    drop(c);
    let manifest = dir.path().join("old/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value.as_object_mut().unwrap().remove("engine");
    std::fs::write(&manifest, value.to_string()).unwrap();
    // What an hnsw_rs-era collection leaves beside its database.
    std::fs::write(dir.path().join("old/graph-200-1-text.hnsw.graph"), b"old").unwrap();

    let err = EmbeddedCollection::open(dir.path(), "old").err().unwrap();
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("hnsw_rs") && msg.contains(ENGINE), "{msg}");
    assert!(
        msg.contains("mirage index compact --rebuild --collection old"),
        "{msg}"
    );

    let c = EmbeddedCollection::rebuild_graphs(dir.path(), "old").unwrap();
    assert_eq!(c.manifest().engine, ENGINE);
    assert_eq!(c.info().items, 200);
    assert_eq!(search(&c, &vectors[5], None, SearchMode::Auto)[0].0, "id-5");
    assert_eq!(search(&c, &vectors[5], None, SearchMode::Exact), expected);
    assert!(!dir.path().join("old/graph-200-1-text.hnsw.graph").exists());
    drop(c);
    let c = EmbeddedCollection::open(dir.path(), "old").unwrap();
    assert_eq!(c.info().items, 200);
    let err = EmbeddedCollection::rebuild_graphs(dir.path(), "absent")
        .err()
        .unwrap();
    assert!(
        matches!(err, IndexError::CollectionNotFound { .. }),
        "{err}"
    );
    drop(c);

    // A USearch-era collection: the same way out, and its dump goes too.
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    value["engine"] = json!("usearch");
    std::fs::write(&manifest, value.to_string()).unwrap();
    let stale = dir.path().join("old/graph-200-2-text.usearch");
    std::fs::write(&stale, b"usearch").unwrap();
    let err = EmbeddedCollection::open(dir.path(), "old").err().unwrap();
    assert!(
        err.to_string().contains("built by the usearch engine"),
        "{err}"
    );
    let c = EmbeddedCollection::rebuild_graphs(dir.path(), "old").unwrap();
    assert_eq!(search(&c, &vectors[5], None, SearchMode::Exact), expected);
    assert!(!stale.exists());
}
