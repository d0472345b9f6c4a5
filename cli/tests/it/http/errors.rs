//! Every bad input gets a clear problem+json 4xx, and the server stays up through all of them.

use mirage_index::{CollectionConfig, EmbeddedCollection, ModelRef};
use serde_json::json;

use crate::http::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_problem_and_the_server_stays_up() {
    let crate::http::Scratch { dir, bundle, work } = crate::http::scratch(true);
    // A collection built with another model, placed before the server starts.
    let other = ModelRef {
        model_id: "other-model".into(),
        sha256: "0".repeat(64),
    };
    EmbeddedCollection::create_or_open(
        &work.join("indexes"),
        "foreign",
        &CollectionConfig::new(16, other),
    )
    .unwrap();
    let server = Server::start(&bundle, &work, &[]);
    let api = &server.api;
    let (s, e, cl, a) = ("/v1/search", "/v1/embeddings", "/v1/classify", "/v1/audit");
    let c = "/v1/collections/{name}";
    api.put(c, "/v1/collections/docs", &json!({}))
        .await
        .expect(201);

    // Malformed JSON → 400; wrong types and missing fields → 422, naming the field.
    let r = api
        .post_raw(s, s, "application/json", b"{\"collection\": ".to_vec())
        .await
        .expect_problem(400, "invalid-json");
    assert!(r.detail().contains("not valid JSON"));
    let r = api
        .post(
            s,
            s,
            &json!({"collection": "docs", "query": {"text": "x"}, "limit": "ten"}),
        )
        .await
        .expect_problem(422, "invalid-request");
    assert!(r.detail().contains("invalid type"), "{}", r.body);
    api.post(s, s, &json!({"query": {"text": "x"}}))
        .await
        .expect_problem(422, "invalid-request");
    let r = api
        .post(
            s,
            s,
            &json!({"collection": "docs", "query": {"text": "x"}, "limt": 3}),
        )
        .await
        .expect_problem(422, "invalid-request");
    assert!(r.detail().contains("limt"));
    api.post(e, e, &json!({"input": 42}))
        .await
        .expect_problem(422, "invalid-request");
    api.post(e, e, &json!({"input": [{"text": "a", "image": "b"}]}))
        .await
        .expect_problem(422, "invalid-request");
    api.post(e, e, &json!({"input": "x", "dimensions": 8}))
        .await
        .expect_problem(422, "invalid-request");
    api.post(e, e, &json!({"input": "x", "model": "gpt-4"}))
        .await
        .expect_problem(404, "not-found");
    api.post(e, e, &json!({"input": []}))
        .await
        .expect_problem(422, "invalid-request");
    // Content types.
    api.post_raw(s, s, "text/plain", b"hello".to_vec())
        .await
        .expect_problem(415, "unsupported-media-type");

    // Unknown collection, unknown route, wrong method, bad collection name.
    let r = api
        .post(s, s, &json!({"collection": "nope", "query": {"text": "x"}}))
        .await
        .expect_problem(404, "not-found");
    assert!(r.detail().contains("nope"));
    assert_eq!(r.body["instance"], "/v1/search");
    assert!(r.body["request_id"].as_str().is_some());
    let res = api
        .request(reqwest::Method::GET, "/v1/nothing")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = api
        .request(reqwest::Method::GET, "/v1/search")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    api.put(c, "/v1/collections/bad%20name", &json!({}))
        .await
        .expect_problem(422, "invalid-request");

    // Images: bad base64, a corrupt PNG, not an image, an unsupported DICOM transfer syntax.
    let r = api
        .post(
            cl,
            cl,
            &json!({"image": "data:image/png;base64,!!!", "labels": ["a"]}),
        )
        .await
        .expect_problem(422, "invalid-image");
    assert!(r.detail().contains("base64"));
    let mut corrupt = png(3, 64);
    corrupt.truncate(60);
    let r = api
        .post(cl, cl, &json!({"image": b64(&corrupt), "labels": ["a"]}))
        .await
        .expect_problem(422, "invalid-image");
    assert!(r.detail().contains("image"));
    api.post(
        cl,
        cl,
        &json!({"image": b64(b"GIF89a not supported"), "labels": ["a"]}),
    )
    .await
    .expect_problem(415, "unsupported-image");
    if let Some(jls) = pydicom_file("JPEGLSNearLossless_08.dcm") {
        let r = api
            .post(cl, cl, &json!({"image": b64(&jls), "labels": ["a"]}))
            .await
            .expect_problem(415, "unsupported-image");
        assert!(r.detail().contains("transfer syntax"), "{}", r.body);
    }
    if let Some(sr) = pydicom_file("test-SR.dcm") {
        api.post(cl, cl, &json!({"image": b64(&sr), "labels": ["a"]}))
            .await
            .expect_problem(422, "invalid-image");
    }

    // Labels and templates.
    let img = b64(&png(2, 64));
    api.post(cl, cl, &json!({"image": img, "labels": []}))
        .await
        .expect_problem(422, "invalid-request");
    api.post(cl, cl, &json!({"image": img, "labels": ["a", "a"]}))
        .await
        .expect_problem(422, "invalid-request");
    api.post(
        cl,
        cl,
        &json!({"image": img, "labels": ["a"], "templates": ["no placeholder"]}),
    )
    .await
    .expect_problem(422, "invalid-request");
    api.post(
        cl,
        cl,
        &json!({"image": img, "labels": ["a"], "temperature": -1.0}),
    )
    .await
    .expect_problem(422, "invalid-request");

    // Vectors: wrong dimension, NaN (not JSON: 400), all zeros.
    let q = |v: serde_json::Value| json!({"collection": "docs", "query": {"vector": v}});
    let r = api
        .post(s, s, &q(json!([0.1, 0.2])))
        .await
        .expect_problem(422, "invalid-request");
    assert!(r.detail().contains("16"));
    api.post_raw(
        s,
        s,
        "application/json",
        br#"{"collection":"docs","query":{"vector":[NaN]}}"#.to_vec(),
    )
    .await
    .expect_problem(400, "invalid-json");
    // Any finite numbers not all zero are a direction, however large or small (scaled in f64;
    // they used to overflow f32 to infinity or underflow to zero).
    let mut big = vec![json!(0.1); 16];
    big[3] = json!(1e39);
    api.post(s, s, &q(json!(big))).await.expect(200);
    api.post(s, s, &q(json!(vec![1e-300; 16])))
        .await
        .expect(200);
    api.post(s, s, &q(json!(vec![0.0; 16])))
        .await
        .expect_problem(422, "invalid-request");
    api.post(
        s,
        s,
        &json!({"collection": "docs", "query": {"image": b64(&png(1, 8)), "vector": vec![0.1; 16]}}),
    )
    .await
    .expect_problem(422, "invalid-request");
    api.post(
        s,
        s,
        &json!({"collection": "docs", "query": {"text": "a"}, "limit": 0}),
    )
    .await
    .expect_problem(422, "invalid-request");
    api.post(s, s, &json!({"collection": "docs", "query": {"text": "a"}, "filter": {"must": [{"key": "x", "match": {"value": 1.5}}]}})).await.expect_problem(422, "invalid-request");

    // Upserts.
    let it = "/v1/collections/{name}/items";
    api.post(
        it,
        "/v1/collections/docs/items",
        &json!({"items": [{"id": "", "text": "x"}]}),
    )
    .await
    .expect_problem(422, "invalid-request");
    api.post(
        it,
        "/v1/collections/docs/items",
        &json!({"items": [{"id": "a", "text": "x", "payload": {"_mirage": 1}}]}),
    )
    .await
    .expect_problem(422, "invalid-request");
    api.delete(it, "/v1/collections/docs/items", Some(&json!({})))
        .await
        .expect_problem(422, "invalid-request");
    // Nothing of the refused writes landed.
    let info = api.get(c, "/v1/collections/docs").await.expect(200);
    assert_eq!(info.body["items"], 0);

    // RAG.
    let rag = "/v1/rag/context";
    api.post(rag, rag, &json!({"collection": "docs"}))
        .await
        .expect_problem(422, "invalid-request");
    api.post(
        rag,
        rag,
        &json!({"collection": "docs", "question": "x", "max_chars": 5}),
    )
    .await
    .expect_problem(422, "invalid-request");

    // Model mismatch: the collection built with another model is refused with both ids named.
    let r = api
        .post(
            s,
            s,
            &json!({"collection": "foreign", "query": {"text": "x"}}),
        )
        .await
        .expect_problem(409, "conflict");
    assert!(r.detail().contains("other-model"));

    // Audit input.
    api.post(a, a, &json!({"pairs": []}))
        .await
        .expect_problem(422, "invalid-request");
    api.post(a, a, &json!({"pairs": [{"image": img, "caption": " "}]}))
        .await
        .expect_problem(422, "invalid-request");

    // Settings that reach a library with its own limits: the largest accepted value works, one
    // more is a 422 naming the field, its range and the value.
    let r = api
        .put(c, "/v1/collections/widest", &json!({"hnsw": {"m": 256}}))
        .await
        .expect(201);
    assert_eq!(r.body["hnsw"]["m"], 256);
    for (body, says) in [
        (
            json!({"hnsw": {"m": 1000}}),
            "hnsw.m must be 2–256 (got 1000)",
        ),
        (
            json!({"hnsw": {"m": 257}}),
            "hnsw.m must be 2–256 (got 257)",
        ),
        (
            json!({"hnsw": {"ef_construction": 3}}),
            "hnsw.ef_construction must be 4–4096 (got 3)",
        ),
        (
            json!({"hnsw": {"ef_search": 4097}}),
            "hnsw.ef_search must be 1–4096 (got 4097)",
        ),
        (
            json!({"shard_number": 65}),
            "shard_number must be 1–64 (got 65)",
        ),
        (
            json!({"replication_factor": 0}),
            "replication_factor must be 1–16 (got 0)",
        ),
    ] {
        // The same for a new name and for one that exists: a request is valid by itself.
        for name in ["fresh", "widest"] {
            let r = api
                .put(c, &format!("/v1/collections/{name}"), &body)
                .await
                .expect_problem(422, "invalid-request");
            assert!(r.detail().contains(says), "{}", r.body);
        }
    }
    let r = api
        .post(
            s,
            s,
            &json!({"collection": "widest", "query": {"text": "a"}, "ef": 4097}),
        )
        .await
        .expect_problem(422, "invalid-request");
    assert!(r.detail().contains("ef must be 1–4096 (got 4097)"));

    // Rules the OpenAPI document states: a body is an object; integers may be written 6.0; a
    // page reaching past rank 1000 is cut there; a multipart body is `request` plus files.
    api.put(c, "/v1/collections/widest", &json!([null, null]))
        .await
        .expect_problem(422, "invalid-request");
    api.post(
        s,
        s,
        &json!({"collection": "widest", "query": {"text": "a"}, "limit": 6.0, "offset": 999}),
    )
    .await
    .expect(200);
    api.post(
        s,
        s,
        &json!({"collection": "widest", "query": {"text": "a"}, "offset": 1000}),
    )
    .await
    .expect_problem(422, "invalid-request");
    let form = reqwest::multipart::Form::new().text("labels", "[\"a\"]");
    let r = api
        .post_multipart(cl, cl, form)
        .await
        .expect_problem(422, "invalid-request");
    assert!(r.detail().contains("\"request\""));

    // Still up, still right.
    api.get("/health", "/health").await.expect(200);
    let ok = api
        .post(e, e, &json!({"input": "still here"}))
        .await
        .expect(200);
    assert_eq!(ok.body["data"].as_array().unwrap().len(), 1);
    drop(server);

    // Audit needs a text bank: a bundle without one says so.
    let plain = dir.path().join("plain");
    crate::http::bundle_without_bank(&plain);
    let server = Server::start(&plain, &dir.path().join("work2"), &[]);
    server
        .api
        .post(a, a, &json!({"pairs": [{"image": img, "caption": "x"}]}))
        .await
        .expect_problem(409, "not-supported-by-model");
}
