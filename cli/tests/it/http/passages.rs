//! Passages and rerank over HTTP: split reports written through the items route (ids, spans,
//! sections, replacement), truncation reported without splitting, grouped search, RAG citing
//! document and span, `POST /v1/rerank` in the Cohere/Jina shape, the `rerank` option of search
//! and RAG, and a clear problem for each bad setting — in the embedded store and in Qdrant.

use serde_json::{json, Value};

use crate::http::harness::*;

/// Reports longer than the tiny model's 32 tokens (most of its words are spelled letter by
/// letter).
fn report(n: usize, finding: &str) -> String {
    format!(
        "INDICATION: cough {n}.\nFINDINGS: {finding} of the left lung. heart normal. no pneumothorax.\n\
         IMPRESSION: {finding} consistent with pneumonia, not cardiomegaly."
    )
}

fn chars(s: &str, start: usize, end: usize) -> String {
    s.chars().skip(start).take(end - start).collect()
}

async fn total(api: &Api, name: &str, filter: Value) -> u64 {
    let s = "/v1/search";
    api.post(
        s,
        s,
        &json!({"collection": name, "query": {"vector": vec![1.0; 16]}, "mode": "dense", "filter": filter}),
    )
    .await
    .expect(200)
    .body["total"]
        .as_u64()
        .unwrap()
}

fn parent_filter(parent: &str) -> Value {
    json!({"must": [{"key": "passage.parent", "match": {"value": parent}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passages_grouping_and_rerank_in_the_embedded_store() {
    passages_path(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passages_grouping_and_rerank_in_qdrant() {
    let Some(url) = mirage_index::testing::qdrant_test_url("the HTTP passages suite over Qdrant")
    else {
        return;
    };
    passages_path(Some(&url)).await;
}

async fn passages_path(qdrant: Option<&str>) {
    let suite = crate::http::Suite::new("reports", qdrant);
    let (name, store) = (suite.name.clone(), suite.store);
    let reranker = crate::http::tiny_reranker(suite.dir.path());
    let server = suite.serve(&["--reranker", reranker.to_str().unwrap()]);
    let api = server.api.clone();
    let c = "/v1/collections/{name}";
    let path = format!("/v1/collections/{name}");
    api.put(c, &path, &json!({"store": store}))
        .await
        .expect(201);
    let info = api.get("/info", "/info").await.expect(200);
    assert_eq!(info.body["reranker"]["model_id"], "tiny-ce");
    let it = "/v1/collections/{name}/items";
    let items_path = format!("{path}/items");

    // Split by sections into windows of 12 tokens.
    let texts: Vec<String> = ["pleural effusion", "edema", "pneumonia"]
        .iter()
        .enumerate()
        .map(|(i, f)| report(i, f))
        .collect();
    let items: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("r{i}"), "text": t, "payload": {"n": i}}))
        .collect();
    let r = api
        .post(
            it,
            &items_path,
            &json!({"items": items, "chunking": {"mode": "sections", "tokens": 12, "overlap": 2}}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["upserted"], 3);
    assert_eq!(r.body["truncated"], 0);
    let counts: Vec<u64> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["passages"].as_u64().unwrap())
        .collect();
    assert!(counts.iter().all(|&n| n >= 3), "{counts:?}");
    assert_eq!(
        r.body["items_written"].as_u64().unwrap(),
        counts.iter().sum::<u64>()
    );
    assert_eq!(total(&api, &name, parent_filter("r0")).await, counts[0]);
    // Sections are filterable.
    let impressions =
        json!({"must": [{"key": "passage.section", "match": {"value": "IMPRESSION"}}]});
    assert!(total(&api, &name, impressions).await >= 3);

    // A grouped search: one hit per document, its passages listed, spans pointing into it.
    let s = "/v1/search";
    let grouped = api
        .post(
            s,
            s,
            &json!({"collection": name, "query": {"text": "edema of the left lung"},
                    "group_by": "parent", "group_size": 2, "limit": 3}),
        )
        .await
        .expect(200);
    let hits = grouped.body["hits"].as_array().unwrap();
    let parents: Vec<&str> = hits.iter().map(|h| h["parent"].as_str().unwrap()).collect();
    let mut sorted = parents.clone();
    sorted.sort();
    assert_eq!(sorted, ["r0", "r1", "r2"], "one hit per document");
    for h in hits {
        let passages = h["passages"].as_array().unwrap();
        assert!(!passages.is_empty() && passages.len() <= 2);
        assert_eq!(passages[0]["id"], h["id"]);
        let p = &h["passage"];
        let doc = &texts[p["parent"].as_str().unwrap()[1..].parse::<usize>().unwrap()];
        let (start, end) = (p["start"].as_u64().unwrap(), p["end"].as_u64().unwrap());
        assert_eq!(
            h["text"].as_str().unwrap(),
            chars(doc, start as usize, end as usize)
        );
    }
    api.post(
        s,
        s,
        &json!({"collection": name, "query": {"text": "edema"}, "group_size": 2}),
    )
    .await
    .expect_problem(422, "invalid-request");

    // RAG cites a passage by its document and span.
    let rag = api
        .post(
            "/v1/rag/context",
            "/v1/rag/context",
            &json!({"collection": name, "question": "pneumonia", "mode": "lexical", "k": 2}),
        )
        .await
        .expect(200);
    let first = &rag.body["citations"][0];
    assert!(first["passage"]["parent"].is_string(), "{first}");
    let context = rag.body["context"].as_str().unwrap();
    assert!(context.contains("characters "), "{context}");
    assert!(
        context.contains(&format!(
            "{name}/{}",
            first["passage"]["parent"].as_str().unwrap()
        )),
        "{context}"
    );

    // A shorter new version of r1 leaves none of its old passages; stored whole, none at all.
    let r = api
        .post(
            it,
            &items_path,
            &json!({"items": [{"id": "r1", "text": "edema."}], "chunking": {"mode": "tokens"}}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["items"][0]["passages"], 1);
    assert_eq!(total(&api, &name, parent_filter("r1")).await, 1);
    let long = report(9, "pleural effusion");
    let r = api
        .post(
            it,
            &items_path,
            &json!({"items": [{"id": "r1", "text": long}, {"id": "s", "text": "edema."}]}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["truncated"], 1);
    assert_eq!(r.body["items"][0]["truncated"], true);
    assert_eq!(r.body["items"][1]["truncated"], false);
    assert!(r.body["items"][0]["passages"].is_null());
    assert_eq!(total(&api, &name, parent_filter("r1")).await, 0);

    // Bad splitting settings, each named.
    for (body, says) in [
        (
            json!({"items": [{"id": "x", "text": "edema", "vectors": {"text": vec![1.0; 16]}}],
                   "chunking": {"mode": "tokens"}}),
            "vectors.text",
        ),
        (
            json!({"items": [{"id": "x", "text": "edema"}], "chunking": {"mode": "tokens", "tokens": 31}}),
            "1–30",
        ),
        (
            json!({"items": [{"id": "x", "text": "edema"}], "chunking": {"mode": "tokens", "tokens": 8, "overlap": 8}}),
            "overlap",
        ),
        (
            json!({"items": [{"id": "x", "text": "edema", "payload": {"passage": 1}}],
                   "chunking": {"mode": "sections"}}),
            "passage",
        ),
        (
            json!({"items": [{"id": "x", "text": "edema"}], "chunking": {"mode": "words"}}),
            "chunking",
        ),
    ] {
        let r = api
            .post(it, &items_path, &body)
            .await
            .expect_problem(422, "invalid-request");
        let detail = r.detail();
        assert!(detail.contains(says), "{says}: {detail}");
    }

    // POST /v1/rerank: every document, best first, in the Cohere/Jina shape.
    let rr = "/v1/rerank";
    let docs = [
        "left pleural effusion",
        "heart normal",
        "a photo of a cat",
        "edema",
    ];
    let r = api
        .post(
            rr,
            rr,
            &json!({"query": "pleural effusion", "documents": docs, "return_documents": true}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["model"], "tiny-ce");
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let scores: Vec<f64> = results
        .iter()
        .map(|x| x["relevance_score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert!(
        scores[0] > scores[3],
        "a random model still separates them: {scores:?}"
    );
    for x in results {
        let i = x["index"].as_u64().unwrap() as usize;
        assert_eq!(x["document"]["text"], docs[i]);
    }
    assert!(r.body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let objects: Vec<Value> = docs.iter().map(|d| json!({"text": d})).collect();
    let top = api
        .post(
            rr,
            rr,
            &json!({"model": "tiny-ce", "query": "pleural effusion", "documents": objects, "top_n": 2}),
        )
        .await
        .expect(200);
    let top = top.body["results"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["index"], results[0]["index"]);
    assert!(top[0]["document"].is_null());
    let r = api
        .post(
            rr,
            rr,
            &json!({"model": "other", "query": "q", "documents": ["a"]}),
        )
        .await
        .expect_problem(404, "not-found");
    assert!(r.detail().contains("tiny-ce"));
    for (body, says) in [
        (json!({"query": " ", "documents": ["a"]}), "query"),
        (json!({"query": "q", "documents": []}), "documents"),
        (
            json!({"query": "q", "documents": ["a", ""]}),
            "documents[1]",
        ),
        (
            json!({"query": "q", "documents": ["a"], "top_n": 0}),
            "top_n",
        ),
    ] {
        let r = api
            .post(rr, rr, &body)
            .await
            .expect_problem(422, "invalid-request");
        let detail = r.detail();
        assert!(detail.contains(says), "{says}: {detail}");
    }

    // Search with rerank: candidates reordered by the cross-encoder, the same relevance as
    // /v1/rerank gives each hit's text, retrieval ranks kept in the other legs.
    let r = api
        .post(
            s,
            s,
            &json!({"collection": name, "query": {"text": "pleural effusion"}, "mode": "lexical",
                    "rerank": {"candidates": 6}, "limit": 4}),
        )
        .await
        .expect(200);
    let hits = r.body["hits"].as_array().unwrap();
    assert!(!hits.is_empty());
    let texts: Vec<&str> = hits.iter().map(|h| h["text"].as_str().unwrap()).collect();
    let direct = api
        .post(
            rr,
            rr,
            &json!({"query": "pleural effusion", "documents": texts}),
        )
        .await
        .expect(200);
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h["legs"]["rerank"]["rank"], i + 1);
        assert!(h["legs"]["lexical"]["rank"].is_u64());
        let same = direct.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["index"] == i)
            .unwrap();
        let (a, b) = (
            h["score"].as_f64().unwrap(),
            same["relevance_score"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let rag = api
        .post(
            "/v1/rag/context",
            "/v1/rag/context",
            &json!({"collection": name, "question": "pleural effusion", "mode": "lexical",
                    "rerank": {}, "k": 2}),
        )
        .await
        .expect(200);
    assert_eq!(rag.body["citations"][0]["legs"]["rerank"]["rank"], 1);
    for body in [
        json!({"collection": name, "query": {"vector": vec![1.0; 16]}, "rerank": {}}),
        json!({"collection": name, "query": {"text": "edema"}, "rerank": {"candidates": 0}}),
        json!({"collection": name, "query": {"text": "edema"}, "rerank": [5]}),
    ] {
        api.post(s, s, &body)
            .await
            .expect_problem(422, "invalid-request");
    }
    if qdrant.is_some() {
        api.delete(c, &path, None).await.expect(200);
    }
    drop(server);

    // Without --reranker, asking for one (route, search or RAG option) names the flag.
    let plain = Server::start(&suite.bundle, &suite.dir.path().join("work2"), &[]);
    for (route, body) in [
        (rr, json!({"query": "q", "documents": ["a"]})),
        (
            s,
            json!({"collection": name, "query": {"text": "edema"}, "rerank": {}}),
        ),
        (
            "/v1/rag/context",
            json!({"collection": name, "question": "edema", "rerank": {}}),
        ),
    ] {
        let r = plain
            .api
            .post(route, route, &body)
            .await
            .expect_problem(409, "not-supported-by-model");
        assert!(r.detail().contains("--reranker"), "{route}: {}", r.body);
    }
}
