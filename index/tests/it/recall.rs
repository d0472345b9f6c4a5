//! HNSW recall at default settings against exact search, on seeded embedding-like vectors
//! (see `mirage_index::testing::embedding_like_vectors`).

use mirage_index::testing::embedding_like_vectors;
use mirage_index::{EmbeddedCollection, Filter, SearchMode, SearchRequest, VectorName};
use serde_json::json;

use crate::common::*;

fn ids(hits: &[mirage_index::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

#[test]
fn hnsw_recall_at_10_is_at_least_095_on_20000_vectors() {
    let (n, dim, queries) = (20_000, 384, 200);
    let dir = tempfile::tempdir().unwrap();
    let c = EmbeddedCollection::create_or_open(dir.path(), "r", &config(dim)).unwrap();
    let vectors = embedding_like_vectors(n, dim, 42);
    for (chunk_no, chunk) in vectors.chunks(1000).enumerate() {
        let items = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let k = chunk_no * 1000 + i;
                text_item(&format!("v{k}"), v.clone(), json!({"bucket": k % 4}))
            })
            .collect();
        c.upsert(items).unwrap();
    }
    let qs = embedding_like_vectors(queries, dim, 43);
    let mut found = 0;
    let mut found_filtered = 0;
    let three_quarters =
        Filter::from_json(r#"{"must_not": [{"key": "bucket", "match": {"value": 1}}]}"#).unwrap();
    for q in &qs {
        let mut exact = SearchRequest::new(q.clone(), VectorName::Text, 10);
        exact.mode = SearchMode::Exact;
        let truth = ids(&c.search(&exact).unwrap());
        let approx = c
            .search(&SearchRequest::new(q.clone(), VectorName::Text, 10))
            .unwrap();
        assert_eq!(approx.len(), 10);
        found += approx.iter().filter(|h| truth.contains(&h.id)).count();

        // A filter keeping 15,000 (above the exact threshold) goes through the graph too.
        exact.filter = Some(three_quarters.clone());
        let truth = ids(&c.search(&exact).unwrap());
        let mut req = SearchRequest::new(q.clone(), VectorName::Text, 10);
        req.filter = Some(three_quarters.clone());
        let approx = c.search(&req).unwrap();
        assert!(approx.iter().all(|h| h.payload["bucket"] != json!(1)));
        found_filtered += approx.iter().filter(|h| truth.contains(&h.id)).count();
    }
    let recall = found as f64 / (queries * 10) as f64;
    let recall_filtered = found_filtered as f64 / (queries * 10) as f64;
    println!("recall@10 = {recall:.4}, filtered (75 %) = {recall_filtered:.4}");
    assert!(recall >= 0.95, "recall@10 = {recall}");
    assert!(
        recall_filtered >= 0.95,
        "filtered recall@10 = {recall_filtered}"
    );
}
