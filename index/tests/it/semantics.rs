//! One store-semantics suite, run against the embedded store always and against Qdrant when
//! `MIRAGE_QDRANT_URL` is set.

use mirage_index::{
    drop_collection, Collection, Filter, IndexError, Item, ModelRef, SearchMode, SearchRequest,
    StoreSpec, VectorName,
};
use serde_json::json;

use crate::common::*;

const DIM: usize = 16;

fn corpus() -> Vec<(String, Vec<f32>, serde_json::Value)> {
    let vectors = random_vectors(60, DIM, 7);
    vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let modality = ["CT", "MR", "XR"][i % 3];
            let p = json!({
                "modality": modality,
                "year": 2000 + (i as i64 % 20),
                "score": i as f64 / 10.0,
                "tags": if i % 2 == 0 { json!(["even", "any"]) } else { json!(["odd", "any"]) },
                "site": {"name": if i < 30 { "north" } else { "south" }},
            });
            (format!("item-{i:03}"), v, p)
        })
        .collect()
}

fn exact(vector: Vec<f32>, limit: usize) -> SearchRequest {
    let mut r = SearchRequest::new(vector, VectorName::Text, limit);
    r.mode = SearchMode::Exact;
    r
}

fn ids(hits: &[mirage_index::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

/// Everything a store must do the same way. `name` must be fresh.
async fn store_semantics(spec: StoreSpec, name: &str) {
    let data = corpus();
    let c = Collection::create_or_open(&spec, name, &config(DIM))
        .await
        .unwrap();
    let items: Vec<Item> = data
        .iter()
        .map(|(id, v, p)| text_item(id, v.clone(), p.clone()))
        .collect();
    c.upsert(items).await.unwrap();
    assert_eq!(c.count(None).await.unwrap(), 60);

    // get: fields round-trip, unknown ids are left out, order follows the request.
    let got = c
        .get(vec!["item-005".into(), "nope".into(), "item-001".into()])
        .await
        .unwrap();
    assert_eq!(ids_of(&got), ["item-005", "item-001"]);
    assert_eq!(got[0].text.as_deref(), Some("report item-005"));
    assert_eq!(serde_json::Value::Object(got[0].payload.clone()), data[5].2);
    assert_eq!(got[0].vectors, [VectorName::Text]);

    // Each vector finds itself first, with cosine 1.
    for (id, v, _) in data.iter().step_by(7) {
        let hits = c.search(exact(v.clone(), 3)).await.unwrap();
        assert_eq!(&hits[0].id, id);
        assert!((hits[0].score - 1.0).abs() < 1e-4, "{}", hits[0].score);
        assert_eq!(
            hits[0].text.as_deref(),
            Some(format!("report {id}").as_str())
        );
    }

    // Without content: the same hits, ids, scores and payloads, no text or image.
    let query = data[3].1.clone();
    let full = c.search(exact(query.clone(), 5)).await.unwrap();
    let mut bare = exact(query, 5);
    bare.with_content = false;
    let bare = c.search(bare).await.unwrap();
    assert_eq!(ids(&bare), ids(&full));
    assert!(full.iter().all(|h| h.text.is_some()));
    for (b, f) in bare.iter().zip(&full) {
        assert_eq!((b.text.as_ref(), b.image.as_ref()), (None, None));
        assert_eq!(b.payload, f.payload);
        assert!((b.score - f.score).abs() < 1e-6);
    }

    // Filtered search returns exactly the filtered brute-force answer.
    let query = unit(random_vectors(1, DIM, 99).remove(0));
    let filters = [
        json!({"must": [{"key": "modality", "match": {"value": "CT"}}]}),
        json!({"must": [{"key": "year", "range": {"gte": 2005, "lt": 2010}}],
               "must_not": [{"key": "modality", "match": {"value": "MR"}}]}),
        json!({"should": [{"key": "tags", "match": {"value": "odd"}},
                          {"key": "modality", "match": {"any": ["XR"]}}]}),
        json!({"must": [{"key": "site.name", "match": {"value": "south"}},
                        {"key": "score", "range": {"gt": 4.0}}]}),
        json!({"must": [{"key": "year", "match": {"any": [2001, 2019]}}]}),
    ];
    for f in &filters {
        let filter = Filter::from_json(&f.to_string()).unwrap();
        let expected = brute_force(
            &query,
            data.iter()
                .filter(|(_, _, p)| filter.matches(&payload(p.clone())))
                .map(|(id, v, _)| (id.as_str(), v.as_slice())),
            10,
        );
        let mut req = exact(query.clone(), 10);
        req.filter = Some(filter.clone());
        let hits = c.search(req).await.unwrap();
        assert_eq!(
            ids(&hits),
            expected.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
            "{f}"
        );
        for (h, e) in hits.iter().zip(&expected) {
            assert!((h.score - e.1).abs() < 1e-4);
        }
        assert_eq!(
            c.count(Some(filter)).await.unwrap(),
            data.iter()
                .filter(|(_, _, p)| Filter::from_json(&f.to_string())
                    .unwrap()
                    .matches(&payload(p.clone())))
                .count() as u64,
            "{f}"
        );
    }

    // Pagination and thresholds agree with the full ranking.
    let all = c.search(exact(query.clone(), 20)).await.unwrap();
    let mut page = exact(query.clone(), 5);
    page.offset = 5;
    assert_eq!(ids(&c.search(page).await.unwrap()), ids(&all[5..10]));
    let mut thr = exact(query.clone(), 20);
    thr.score_threshold = Some(all[3].score - 1e-6);
    assert_eq!(ids(&c.search(thr).await.unwrap()), ids(&all[..4]));

    // Items without image vectors are invisible to image search.
    let mut img = exact(query.clone(), 5);
    img.target = VectorName::Image;
    assert!(c.search(img.clone()).await.unwrap().is_empty());
    c.upsert(vec![Item {
        id: "picture".into(),
        text: None,
        image: Some("images/p.png".into()),
        payload: payload(json!({"modality": "CT"})),
        text_vector: None,
        image_vector: Some(query.clone()),
    }])
    .await
    .unwrap();
    let hits = c.search(img).await.unwrap();
    assert_eq!(ids(&hits), ["picture"]);
    assert_eq!(hits[0].image.as_deref(), Some("images/p.png"));
    assert_eq!(c.count(None).await.unwrap(), 61);

    // Replacing an item replaces its vector and payload; the old vector no longer finds it.
    let (id0, v0, _) = &data[0];
    let fresh = unit(random_vectors(1, DIM, 1234).remove(0));
    c.upsert(vec![text_item(
        id0,
        fresh.clone(),
        json!({"modality": "PET"}),
    )])
    .await
    .unwrap();
    assert_eq!(c.count(None).await.unwrap(), 61);
    let hits = c.search(exact(v0.clone(), 1)).await.unwrap();
    assert_ne!(&hits[0].id, id0);
    let hits = c.search(exact(fresh, 1)).await.unwrap();
    assert_eq!(&hits[0].id, id0);
    assert_eq!(hits[0].payload, payload(json!({"modality": "PET"})));

    // Deletes by id and by filter report how many existed and take effect.
    assert_eq!(
        c.delete(vec!["item-001".into(), "missing".into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(c.delete(vec!["item-001".into()]).await.unwrap(), 0);
    let mr =
        Filter::from_json(r#"{"must": [{"key": "modality", "match": {"value": "MR"}}]}"#).unwrap();
    let n_mr = c.count(Some(mr.clone())).await.unwrap();
    assert_eq!(n_mr, 19, "item-001 was MR and is gone");
    assert_eq!(c.delete_by_filter(mr.clone()).await.unwrap(), n_mr);
    assert_eq!(c.count(Some(mr)).await.unwrap(), 0);
    assert_eq!(c.count(None).await.unwrap(), 61 - 1 - 19);
    let remaining = c.search(exact(query.clone(), 100)).await.unwrap();
    assert!(remaining
        .iter()
        .all(|h| h.payload.get("modality") != Some(&json!("MR"))));
    assert!(remaining.iter().all(|h| h.id != "item-001"));
    let existing = c
        .existing(vec!["item-001".into(), "item-002".into(), "picture".into()])
        .await
        .unwrap();
    assert_eq!(existing.len(), 2);

    // Bad input is refused with the reason, and nothing of a refused batch is written.
    let before = c.count(None).await.unwrap();
    let err = c
        .upsert(vec![
            text_item("ok-1", unit(vec![1.0; DIM]), json!({})),
            text_item("short", vec![1.0; DIM - 1], json!({})),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, IndexError::Dimension { expected: DIM, got, .. } if got == DIM - 1),
        "{err}"
    );
    assert_eq!(c.count(None).await.unwrap(), before);
    let mut nan = vec![0.5; DIM];
    nan[3] = f32::NAN;
    let bad = [
        (text_item("", unit(vec![1.0; DIM]), json!({})), "empty"),
        (text_item("nan", nan, json!({})), "NaN"),
        (text_item("zero", vec![0.0; DIM], json!({})), "zero vector"),
        (
            text_item("reserved", unit(vec![1.0; DIM]), json!({"_mirage": 1})),
            "reserved",
        ),
        (
            Item {
                text_vector: None,
                ..text_item("novec", vec![], json!({}))
            },
            "neither a text nor an image vector",
        ),
    ];
    for (item, needle) in bad {
        let err = c.upsert(vec![item]).await.unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    let mut zero_limit = exact(query.clone(), 1);
    zero_limit.limit = 0;
    assert!(c
        .search(zero_limit)
        .await
        .unwrap_err()
        .to_string()
        .contains("limit"));
    let mut deep = exact(query.clone(), 10);
    deep.offset = 1_000;
    assert!(c
        .search(deep)
        .await
        .unwrap_err()
        .to_string()
        .contains("offset"));
    assert!(c
        .search(exact(query.clone(), 1_001))
        .await
        .unwrap_err()
        .to_string()
        .contains("limit"));
    assert!(matches!(
        c.search(exact(vec![1.0; DIM + 1], 1)).await.unwrap_err(),
        IndexError::Dimension { .. }
    ));
    assert_eq!(c.count(None).await.unwrap(), before);

    // Another model is refused by name, at open and at check.
    let other = ModelRef {
        model_id: "other".into(),
        sha256: "11".repeat(32),
    };
    let err = c.check_model(&other).unwrap_err().to_string();
    assert!(err.contains("test-model") && err.contains("other"), "{err}");
    drop(c);
    let mut other_cfg = config(DIM);
    other_cfg.model = other;
    let err = Collection::create_or_open(&spec, name, &other_cfg)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, IndexError::ModelMismatch { .. }), "{err}");
    let err = Collection::create_or_open(&spec, name, &config(DIM + 1))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("dimension"), "{err}");

    drop_collection(&spec, name).await.unwrap();
    assert!(matches!(
        Collection::open(&spec, name).await.err().unwrap(),
        IndexError::CollectionNotFound { .. }
    ));
}

fn ids_of(items: &[mirage_index::StoredItem]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

#[test]
fn embedded_store_semantics() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(store_semantics(
        StoreSpec::Embedded(dir.path().into()),
        "suite",
    ));
}

pub(crate) fn unique_qdrant_name(what: &str) -> String {
    format!(
        "mirage-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    )
}

pub(crate) fn qdrant_spec(suite: &str) -> Option<StoreSpec> {
    let url = mirage_index::testing::qdrant_test_url(suite)?;
    if !cfg!(feature = "qdrant") {
        panic!("MIRAGE_QDRANT_URL is set but mirage-index was built without the `qdrant` feature");
    }
    Some(format!("qdrant:{url}").parse().unwrap())
}

#[test]
fn qdrant_store_semantics() {
    let Some(spec) = qdrant_spec("the Qdrant store suite") else {
        return;
    };
    runtime().block_on(store_semantics(spec, &unique_qdrant_name("suite")));
}

/// Writes, lookups and deletes of 10,000 items in one call each: the store chunks them.
async fn large_batches(spec: StoreSpec, name: &str) {
    const N: usize = 10_000;
    let c = Collection::create_or_open(&spec, name, &config(DIM))
        .await
        .unwrap();
    let items: Vec<Item> = random_vectors(N, DIM, 5)
        .into_iter()
        .enumerate()
        .map(|(i, v)| text_item(&format!("big-{i:05}"), v, json!({"half": i % 2})))
        .collect();
    let all_ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    c.upsert(items).await.unwrap();
    assert_eq!(c.count(None).await.unwrap(), N as u64);
    assert_eq!(c.existing(all_ids.clone()).await.unwrap().len(), N);
    let got = c.get(all_ids.clone()).await.unwrap();
    assert_eq!(got.len(), N);
    assert!(got.iter().zip(&all_ids).all(|(g, id)| &g.id == id));
    // Ranks end at 1,000 in both stores: a page reaching past it is cut there.
    let mut deep = exact(random_vectors(1, DIM, 6).remove(0), 1_000);
    deep.offset = 990;
    assert_eq!(c.search(deep).await.unwrap().len(), 10);
    let odd = Filter::from_json(r#"{"must": [{"key": "half", "match": {"value": 1}}]}"#).unwrap();
    assert_eq!(c.delete_by_filter(odd).await.unwrap(), (N / 2) as u64);
    assert_eq!(c.delete(all_ids).await.unwrap(), (N / 2) as u64);
    assert_eq!(c.count(None).await.unwrap(), 0);
    drop(c);
    drop_collection(&spec, name).await.unwrap();
}

#[test]
fn embedded_store_takes_large_batches() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(large_batches(StoreSpec::Embedded(dir.path().into()), "big"));
}

#[test]
fn qdrant_store_takes_large_batches() {
    let Some(spec) = qdrant_spec("the Qdrant large-batch test") else {
        return;
    };
    runtime().block_on(large_batches(spec, &unique_qdrant_name("big")));
}

#[test]
fn store_specs_parse_with_clear_errors() {
    assert_eq!(
        "embedded:/tmp/x".parse::<StoreSpec>().unwrap(),
        StoreSpec::Embedded("/tmp/x".into())
    );
    assert!(matches!(
        "qdrant:http://h:6334".parse::<StoreSpec>().unwrap(),
        StoreSpec::Qdrant { .. }
    ));
    for (bad, needle) in [
        ("embedded:", "needs a directory"),
        ("qdrant:h:6334", "http"),
        ("redis:x", "embedded:DIR or qdrant:URL"),
    ] {
        let err = bad.parse::<StoreSpec>().unwrap_err().to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}

#[test]
fn bad_collection_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = StoreSpec::Embedded(dir.path().into());
    for name in ["", "../up", "a/b", ".hidden", "spaces no"] {
        let err = runtime()
            .block_on(Collection::create_or_open(&spec, name, &config(4)))
            .err()
            .unwrap();
        assert!(err.to_string().contains("collection name"), "{name}: {err}");
    }
}
