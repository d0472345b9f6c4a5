//! Dense, lexical and hybrid retrieval over HTTP, in the embedded store and in Qdrant: leg ranks
//! on every hit, filters in both legs, per-collection defaults, adaptive k in RAG, and a clear
//! problem for every bad retrieval setting.

use serde_json::{json, Value};

use crate::http::harness::*;

const REPORTS: &[(&str, &str, &str)] = &[
    (
        "t1",
        "Tracheostomy tube in place. Lungs are clear.",
        "other",
    ),
    (
        "e1",
        "Small left pleural effusion. No pneumothorax.",
        "left",
    ),
    (
        "e2",
        "Large right pleural effusion with atelectasis.",
        "right",
    ),
    (
        "e3",
        "Left pleural effusion has increased, tracking into the fissure.",
        "left",
    ),
    (
        "c1",
        "Degenerative disc disease at C5-C6 with foraminal narrowing.",
        "other",
    ),
    (
        "n1",
        "Nasogastric tube courses below the diaphragm.",
        "other",
    ),
    ("k1", "Cardiomegaly with pulmonary edema.", "other"),
];

fn ids(r: &Resp) -> Vec<String> {
    r.body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_lexical_and_hybrid_search_in_the_embedded_store() {
    retrieval_path(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_lexical_and_hybrid_search_in_qdrant() {
    let Some(url) = mirage_index::testing::qdrant_test_url("the HTTP retrieval suite over Qdrant")
    else {
        return;
    };
    retrieval_path(Some(&url)).await;
}

async fn retrieval_path(qdrant: Option<&str>) {
    let suite = crate::http::Suite::new("notes", qdrant);
    let (name, store) = (suite.name.clone(), suite.store);
    let server = suite.serve(&[]);
    let api = server.api.clone();
    let c = "/v1/collections/{name}";
    let path = format!("/v1/collections/{name}");
    let created = api
        .put(c, &path, &json!({"store": store}))
        .await
        .expect(201);
    assert_eq!(
        created.body["lexical_index"],
        mirage_index::lexical::ANALYZER
    );
    assert_eq!(created.body["search_mode"], "hybrid");
    assert_eq!(created.body["fusion"]["method"], "rrf");
    let items: Vec<Value> = REPORTS
        .iter()
        .map(|(id, text, side)| json!({"id": id, "text": text, "payload": {"side": side}}))
        .collect();
    let it = "/v1/collections/{name}/items";
    api.post(it, &format!("{path}/items"), &json!({"items": items}))
        .await
        .expect(200);

    let s = "/v1/search";
    let search = |body: Value| {
        let api = api.clone();
        async move { api.post(s, s, &body).await }
    };
    // Lexical: the exact term finds its report first, with a BM25 score and only a lexical rank.
    let r = search(
        json!({"collection": name, "query": {"text": "tracheostomy tube"}, "mode": "lexical"}),
    )
    .await
    .expect(200);
    assert_eq!(r.body["mode"], "lexical");
    assert_eq!(ids(&r)[0], "t1");
    let top = &r.body["hits"][0];
    assert_eq!(top["legs"]["lexical"]["rank"], 1);
    assert!(top["legs"]["dense"].is_null());
    assert!(top["score"].as_f64().unwrap() > 0.0);
    assert_eq!(top["provenance"]["mode"], "lexical");
    // Only the reports with "tube" match; the others have no lexical hit.
    let mut found = ids(&r);
    found.sort();
    assert_eq!(found, ["n1", "t1"]);
    assert_eq!(
        ids(
            &search(json!({"collection": name, "query": {"text": "C5-C6"}, "mode": "lexical"}))
                .await
                .expect(200)
        ),
        ["c1"]
    );

    // Hybrid is the default for text: every hit says which legs found it.
    let r = search(json!({"collection": name, "query": {"text": "pleural effusion"}, "limit": 7}))
        .await
        .expect(200);
    assert_eq!(r.body["mode"], "hybrid");
    let hits = r.body["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 7);
    assert!(hits
        .iter()
        .all(|h| !h["legs"]["dense"].is_null() || !h["legs"]["lexical"].is_null()));
    let both: Vec<&Value> = hits
        .iter()
        .filter(|h| !h["legs"]["dense"].is_null() && !h["legs"]["lexical"].is_null())
        .collect();
    assert_eq!(both.len(), 3, "the three effusion reports: {hits:?}");
    // Weighted fusion with the dense leg weighed 0 ranks as lexical does.
    let weighted = search(
        json!({"collection": name, "query": {"text": "tracheostomy tube"}, "limit": 1,
        "fusion": {"method": "weighted", "dense_weight": 0}}),
    )
    .await
    .expect(200);
    assert_eq!(ids(&weighted), ["t1"]);
    assert_eq!(weighted.body["hits"][0]["score"], 1.0);
    // Filters apply to both legs.
    let r = search(
        json!({"collection": name, "query": {"text": "pleural effusion"},
        "filter": {"must": [{"key": "side", "match": {"value": "left"}}]}}),
    )
    .await
    .expect(200);
    let mut left = ids(&r);
    left.sort();
    assert_eq!(left, ["e1", "e3"]);
    // Dense: cosines, dense ranks only.
    let r = search(json!({"collection": name, "query": {"text": "pleural effusion"}, "mode": "dense", "limit": 2}))
        .await
        .expect(200);
    assert!(r.body["hits"][0]["legs"]["lexical"].is_null());
    assert_eq!(r.body["hits"][0]["legs"]["dense"]["rank"], 1);
    // A vector with text: the vector is the dense query, the text the lexical one.
    let dense_top = r.body["hits"][0]["id"].clone();
    let info = api.get("/info", "/info").await.expect(200);
    let dim = info.body["embed_dim"].as_u64().unwrap() as usize;
    let r = search(json!({"collection": name, "query": {"text": "tracheostomy", "vector": vec![0.5; dim]}, "limit": 7}))
        .await
        .expect(200);
    assert_eq!(r.body["query_modality"], "text+vector");
    assert_eq!(r.body["mode"], "hybrid");
    let t1 = r.hit("t1");
    assert_eq!(t1["legs"]["lexical"]["rank"], 1);
    assert!(!dense_top.is_null());

    // Bad retrieval settings: each a 422 naming what to fix.
    for (body, says) in [
        (
            json!({"collection": name, "query": {"text": "x"}, "mode": "bm25"}),
            "mode",
        ),
        (
            json!({"collection": name, "query": {"text": "x"}, "fusion": {"dense_weight": -1}}),
            "dense_weight",
        ),
        (
            json!({"collection": name, "query": {"text": "x"}, "fusion": {"dense_weight": 0, "lexical_weight": 0}}),
            "both 0",
        ),
        (
            json!({"collection": name, "query": {"text": "x"}, "fusion": {"rrf_k": 20000}}),
            "rrf_k",
        ),
        (
            json!({"collection": name, "query": {"text": "x"}, "fusion": {"candidates": 0}}),
            "candidates",
        ),
        (
            json!({"collection": name, "query": {"text": "x"}, "fusion": {"method": "max"}}),
            "method",
        ),
        (
            json!({"collection": name, "query": {"text": "x"}, "fusion": [null, null]}),
            "fusion: expected an object",
        ),
        (
            json!({"collection": name, "query": {"text": "x"}, "mode": "lexical", "score_threshold": 0.2}),
            "score_threshold",
        ),
        (
            json!({"collection": name, "query": {"text": "x", "vector": vec![0.5; dim]}, "mode": "lexical"}),
            "query.vector",
        ),
        (
            json!({"collection": name, "query": {"vector": vec![0.5; dim]}, "mode": "lexical"}),
            "query.vector",
        ),
        (
            json!({"collection": name, "query": {"vector": vec![0.5; dim]}, "mode": "hybrid"}),
            "needs query text",
        ),
    ] {
        let r = search(body.clone())
            .await
            .expect_problem(422, "invalid-request");
        let detail = r.detail();
        assert!(detail.contains(says), "{body}: {detail}");
    }

    // Per-collection defaults: mode and fusion set once, used by requests that name none.
    let r = api
        .put(
            c,
            &path,
            &json!({"search_mode": "lexical", "fusion": {"method": "weighted", "rrf_k": 10}}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["search_mode"], "lexical");
    assert_eq!(r.body["fusion"]["method"], "weighted");
    assert_eq!(r.body["fusion"]["rrf_k"], 10.0);
    api.put(
        c,
        &path,
        &json!({"fusion": {"dense_weight": 0, "lexical_weight": 0}}),
    )
    .await
    .expect_problem(422, "invalid-request");
    api.put(c, &path, &json!({"hnsw": [16]}))
        .await
        .expect_problem(422, "invalid-request");
    // Any positive weight is a weight (f64 throughout: the schema fuzzer's 5e-324 once became an
    // f32 0); the collection's settings are then set back for the searches below.
    api.put(
        c,
        &path,
        &json!({"fusion": {"dense_weight": 1e-12, "lexical_weight": 0.0}}),
    )
    .await
    .expect(200);
    api.put(
        c,
        &path,
        &json!({"search_mode": "lexical", "fusion": {"method": "weighted", "rrf_k": 10}}),
    )
    .await
    .expect(200);
    let r = search(json!({"collection": name, "query": {"text": "tracheostomy tube"}}))
        .await
        .expect(200);
    assert_eq!(r.body["mode"], "lexical");
    // An image-only or vector-only query stays dense whatever the collection's default.
    let r = search(json!({"collection": name, "query": {"vector": vec![0.5; dim]}}))
        .await
        .expect(200);
    assert_eq!(r.body["mode"], "dense");

    // RAG: adaptive k says what became of every candidate.
    let rag = "/v1/rag/context";
    let r = api
        .post(
            rag,
            rag,
            &json!({"collection": name, "question": "left pleural effusion", "mode": "lexical",
            "k": 5, "relative_score": 0.6}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["mode"], "lexical");
    assert_eq!(r.body["abstained"], false);
    let passages = r.body["passages"].as_array().unwrap();
    let best = passages[0]["score"].as_f64().unwrap();
    for p in passages {
        let score = p["score"].as_f64().unwrap();
        let kept = p["decision"] == "cited";
        assert_eq!(kept, score >= 0.6 * best - 1e-6, "{p}");
        if !kept {
            assert_eq!(p["decision"], "below_relative_score");
        }
    }
    let cited: Vec<&str> = r.body["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(cited[0], "e1");
    assert_eq!(
        cited.len(),
        passages.iter().filter(|p| p["decision"] == "cited").count()
    );
    let r = api
        .post(
            rag,
            rag,
            &json!({"collection": name, "question": "effusion", "mode": "hybrid", "min_score": -1.0,
            "max_score_gap": 0.0, "k": 7}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["mode"], "hybrid");
    // A gap of 0: the first drop in score ends the context.
    assert!(r.body["passages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .any(|p| p["decision"] == "after_score_gap"));
    for (body, says) in [
        (
            json!({"collection": name, "question": "x", "relative_score": 1.5}),
            "relative_score",
        ),
        (
            json!({"collection": name, "question": "x", "max_score_gap": -0.1}),
            "max_score_gap",
        ),
        (
            json!({"collection": name, "image": b64(&png(3, 16)), "mode": "lexical"}),
            "mode lexical",
        ),
    ] {
        let r = api
            .post(rag, rag, &body)
            .await
            .expect_problem(422, "invalid-request");
        let detail = r.detail();
        assert!(detail.contains(says), "{body}: {detail}");
    }
    if qdrant.is_some() {
        api.delete(c, &path, None).await.expect(200);
    }
}
