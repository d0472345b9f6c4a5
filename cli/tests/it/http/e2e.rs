//! The whole product path: create → upsert texts and images → search in all four directions →
//! classify → rag/context (with an abstention) → audit → delete; restart keeps the collection.

use mirage_model::matching::matching_scores;
use mirage_model::MirageModel;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use crate::http::harness::*;

/// Reports with a finding each; r5 is a near-duplicate of r1 (for RAG de-duplication).
pub const REPORTS: &[(&str, &str, &str)] = &[
    (
        "r1",
        "chest x-ray with pneumonia in the right lower lobe",
        "pneumonia",
    ),
    ("r2", "normal chest radiograph without effusion", "normal"),
    (
        "r3",
        "pleural effusion on the left with atelectasis",
        "effusion",
    ),
    ("r4", "axial brain mri with a small lesion", "lesion"),
    // A near-duplicate of r1, for RAG de-duplication.
    (
        "r5",
        "chest x-ray with pneumonia in the right lower lobe.",
        "pneumonia",
    ),
];

fn embed_text(model: &MirageModel, t: &str) -> Vec<f32> {
    model.embed_texts(&[t]).unwrap().pop().unwrap()
}

fn embed_image(model: &MirageModel, bytes: &[u8]) -> Vec<f32> {
    let img = mirage_model::image_input::decode_image(bytes, "test", Default::default()).unwrap();
    model.embed_images(&[img]).unwrap().pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_upsert_search_classify_rag_audit_delete_and_restart() {
    product_path(None).await;
}

/// The same path with the collection in Qdrant (the server's second store, chosen at creation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_product_path_over_qdrant() {
    let Some(url) = mirage_index::testing::qdrant_test_url("the HTTP suite over Qdrant") else {
        return;
    };
    product_path(Some(&url)).await;
}

/// Everything a user does with one collection, in the default embedded store or, given its
/// gRPC URL, in Qdrant.
async fn product_path(qdrant: Option<&str>) {
    let suite = crate::http::Suite::new("reports", qdrant);
    let bundle = &suite.bundle;
    let model = MirageModel::open_cpu(bundle).unwrap();
    let name = suite.name.as_str();
    let path = format!("/v1/collections/{name}");
    let items_path = format!("{path}/items");
    let embedded = qdrant.is_none();
    let server = suite.serve(&[]);
    let api = server.api.clone();

    // Operations.
    let h = api.get("/health", "/health").await.expect(200);
    assert_eq!(h.body["status"], "pass");
    api.get("/ready", "/ready").await.expect(200);
    // The container healthcheck.
    let probe = |path: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mirage"))
            .args(["probe", &format!("{}{path}", api.base)])
            .output()
            .unwrap()
    };
    assert!(probe("/ready").status.success());
    let missing = probe("/nothing");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    let info = api.get("/info", "/info").await.expect(200);
    assert_eq!(info.body["model_id"], model.model_id());
    assert_eq!(info.body["embed_dim"], 16);
    assert_eq!(info.body["text_bank_size"], crate::http::BANK.len());
    // The default engine: ONNX Runtime wherever its library was fetched (always under CI).
    let engine = info.body["engine"].as_str().unwrap();
    assert!(
        engine == "ort" || (engine == "candle" && std::env::var_os("CI").is_none()),
        "{}",
        info.body
    );
    assert!(info.body["engine_detail"]
        .as_str()
        .unwrap()
        .starts_with(engine));

    // Create, idempotently.
    let c = "/v1/collections/{name}";
    let created = api
        .put(
            c,
            &path,
            &json!({"rag_min_score": 0.1, "store": if embedded { "embedded" } else { "qdrant" }}),
        )
        .await
        .expect(201);
    assert_eq!(created.body["items"], 0);
    assert_eq!(created.body["model_id"], model.model_id());
    api.put(c, &path, &json!({})).await.expect(200);

    // Upsert texts (with payload) and images: PNG and JPEG as data URIs, one PNG by multipart.
    let items: Vec<Value> = REPORTS
        .iter()
        .map(|(id, text, finding)| json!({"id": id, "text": text, "payload": {"finding": finding, "year": 2020}}))
        .collect();
    let it = "/v1/collections/{name}/items";
    let up = api
        .post(it, &items_path, &json!({"items": items}))
        .await
        .expect(200);
    assert_eq!(up.body["upserted"], REPORTS.len());
    let (png_a, png_b, jpg) = (png(1, 96), png(9, 80), jpeg(4, 120));
    let images = json!({"items": [
        {"id": "img-a", "image": data_uri("image/png", &png_a), "image_uri": "a.png", "payload": {"finding": "pneumonia", "year": 2021}},
        {"id": "img-c", "image": data_uri("image/jpeg", &jpg), "image_uri": "c.jpg", "text": "ct of the abdomen", "payload": {"year": 2022}},
    ]});
    api.post(it, &items_path, &images).await.expect(200);
    // Multipart: the JSON in `request`, the file under the dotted path of its field.
    let form = Form::new()
        .text(
            "request",
            json!({"items": [{"id": "img-b", "image_uri": "b.png", "payload": {"year": 2023}}]})
                .to_string(),
        )
        .part(
            "items.0.image",
            Part::bytes(png_b.clone()).file_name("b.png"),
        );
    api.post_multipart(it, &items_path, form).await.expect(200);
    // An item with neither text nor image is refused, and says so.
    api.post(it, &items_path, &json!({"items": [{"id": "empty"}]}))
        .await
        .expect_problem(422, "invalid-request");
    let dicom = pydicom_file("CT_small.dcm");
    if let Some(bytes) = &dicom {
        let item = json!({"items": [{"id": "dcm", "image": data_uri("application/dicom", bytes), "image_uri": "CT_small.dcm"}]});
        api.post(it, &items_path, &item).await.expect(200);
    }
    let info = api.get(c, &path).await.expect(200);
    let n_items = REPORTS.len() + 3 + usize::from(dicom.is_some());
    assert_eq!(info.body["items"], n_items);
    assert_eq!(info.body["image_vectors"], 3 + usize::from(dicom.is_some()));
    assert_eq!(
        info.body["store"],
        if embedded { "embedded" } else { "qdrant" }
    );
    // Qdrant keeps no write counter.
    assert_eq!(
        info.body["index_version"].as_u64().is_some_and(|v| v >= 4),
        embedded
    );

    // Search in all four directions (dense: text queries default to hybrid); each query is an
    // item's own content, so it ranks first at cosine 1.
    let s = "/v1/search";
    let text_q = REPORTS[2].1;
    let r = api
        .post(
            s,
            s,
            &json!({"collection": name, "query": {"text": text_q}, "limit": 3, "exact": true, "mode": "dense"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["hits"][0]["id"], "r3");
    assert!((r.body["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    let p = &r.body["hits"][0]["provenance"];
    assert_eq!(p["collection"], name);
    assert_eq!(p["model_id"], model.model_id());
    assert_eq!(p["bundle_sha256"], model.bundle_sha256());
    assert_eq!(p["index_version"].as_u64().is_some(), embedded);
    assert_eq!(r.body["total"], n_items);

    // text → image: scores equal the model's cosine between the text and each image.
    let r = api.post(s, s, &json!({"collection": name, "query": {"text": "pneumonia"}, "target": "image", "limit": 10, "mode": "dense"})).await.expect(200);
    let t = embed_text(&model, "pneumonia");
    let want_a = cosine(&t, &embed_image(&model, &png_a));
    let hit_a = r.hit("img-a");
    assert!((hit_a["score"].as_f64().unwrap() as f32 - want_a).abs() < 1e-4);
    assert_eq!(r.body["query_modality"], "text");

    // image → image (multipart upload of the query image).
    let form = Form::new()
        .text(
            "request",
            json!({"collection": name, "target": "image", "query": {}}).to_string(),
        )
        .part("query.image", Part::bytes(png_b.clone()).file_name("q.png"));
    let r = api.post_multipart(s, s, form).await.expect(200);
    assert_eq!(r.body["hits"][0]["id"], "img-b");
    assert!((r.body["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    assert_eq!(r.body["hits"][0]["image"], "b.png");
    assert_eq!(r.body["query_modality"], "image");

    // image → text with a filter; the filter is honoured.
    let r = api
        .post(
            s,
            s,
            &json!({"collection": name, "query": {"image": b64(&jpg)}, "target": "text",
            "filter": {"must": [{"key": "finding", "match": {"value": "pneumonia"}}]}}),
        )
        .await
        .expect(200);
    let ids: Vec<&str> = r.body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|i| *i == "r1" || *i == "r5"),
        "{ids:?}"
    );
    let v = embed_image(&model, &jpg);
    let want = cosine(&v, &embed_text(&model, REPORTS[0].1));
    let got = r.hit("r1")["score"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");

    // Vector query and pagination.
    let qv = embed_text(&model, REPORTS[3].1);
    let r = api
        .post(
            s,
            s,
            &json!({"collection": name, "query": {"vector": qv}, "limit": 2, "offset": 0}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["hits"][0]["id"], "r4");
    let page2 = api
        .post(
            s,
            s,
            &json!({"collection": name, "query": {"vector": qv}, "limit": 2, "offset": 2}),
        )
        .await
        .expect(200);
    assert_eq!(page2.body["hits"][0]["rank"], 3);

    // Embeddings: texts and images in one request agree with the model; base64 decodes to the
    // same floats.
    let e = "/v1/embeddings";
    let r = api.post(e, e, &json!({"input": ["chest x-ray", {"image": data_uri("image/png", &png_a)}, {"text": "brain mri"}]})).await.expect(200);
    assert_eq!(r.body["object"], "list");
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert!(
        cosine(
            &floats(&data[0]["embedding"]),
            &embed_text(&model, "chest x-ray")
        ) > 0.9999
    );
    assert!(cosine(&floats(&data[1]["embedding"]), &embed_image(&model, &png_a)) > 0.9999);
    assert!(r.body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let r64 = api
        .post(
            e,
            e,
            &json!({"input": "chest x-ray", "encoding_format": "base64"}),
        )
        .await
        .expect(200);
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        r64.body["data"][0]["embedding"].as_str().unwrap(),
    )
    .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(cosine(&decoded, &floats(&data[0]["embedding"])) > 0.9999);

    // Classify: JSON with a data URI, and a multipart upload; same answer.
    let cl = "/v1/classify";
    let labels = json!(["pneumonia", "effusion", "normal"]);
    let r = api
        .post(
            cl,
            cl,
            &json!({"image": data_uri("image/png", &png_a), "labels": labels}),
        )
        .await
        .expect(200);
    let probs: f64 = r.body["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["probability"].as_f64().unwrap())
        .sum();
    assert!((probs - 1.0).abs() < 1e-4);
    let form = Form::new()
        .text("request", json!({"labels": labels}).to_string())
        .part(
            "image",
            Part::bytes(png_a.clone())
                .file_name("a.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let m = api.post_multipart(cl, cl, form).await.expect(200);
    assert_eq!(m.body["labels"][0]["label"], r.body["labels"][0]["label"]);
    assert!(
        (m.body["labels"][0]["probability"].as_f64().unwrap()
            - r.body["labels"][0]["probability"].as_f64().unwrap())
        .abs()
            < 1e-5
    );
    let ml = api
        .post(
            cl,
            cl,
            &json!({"image": b64(&png_a), "labels": labels, "multi_label": true}),
        )
        .await
        .expect(200);
    assert_eq!(ml.body["multi_label"], true);
    if let Some(bytes) = &dicom {
        let form = Form::new()
            .text("request", json!({"labels": labels}).to_string())
            .part("image", Part::bytes(bytes.clone()).file_name("ct.dcm"));
        api.post_multipart(cl, cl, form).await.expect(200);
    }

    // RAG: a question that is a stored report gets it as citation [1]; its near-duplicate is
    // dropped; the context fits the budget.
    let rag = "/v1/rag/context";
    let r = api
        .post(
            rag,
            rag,
            &json!({"collection": name, "question": REPORTS[0].1, "k": 3, "max_chars": 400}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["abstained"], false);
    assert_eq!(r.body["citations"][0]["id"], "r1");
    assert!(r.body["context"]
        .as_str()
        .unwrap()
        .starts_with("[1] chest x-ray with pneumonia"));
    assert!(r.body["context"].as_str().unwrap().chars().count() <= 400);
    assert!(r.body["duplicates_removed"].as_u64().unwrap() >= 1);
    let cited: Vec<&str> = r.body["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert!(!cited.contains(&"r5"), "{cited:?}");
    assert_eq!(r.body["content_parts"][0]["type"], "text");
    assert!(r.body["content_parts"][0]["text"]
        .as_str()
        .unwrap()
        .contains("[1]"));
    // Image and question together.
    let r = api.post(rag, rag, &json!({"collection": name, "question": "effusion", "image": b64(&png_a), "min_score": -1.0})).await.expect(200);
    assert_eq!(r.body["abstained"], false);
    // Abstention: nothing reaches the bound.
    let r = api
        .post(
            rag,
            rag,
            &json!({"collection": name, "question": "knee", "min_score": 0.9999}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["abstained"], true);
    assert!(r.body["reason"]
        .as_str()
        .unwrap()
        .contains("below the abstention bound"));
    assert_eq!(r.body["context"], "");
    assert!(r.body["citations"].as_array().unwrap().is_empty());

    // Audit: s for each pair equals the library's matching score on the same bundle.
    let a = "/v1/audit";
    let pairs = json!({"pairs": [
        {"id": "p1", "image": b64(&png_a), "caption": "chest x-ray with pneumonia"},
        {"id": "p2", "image": b64(&jpg), "caption": "axial brain mri"},
    ], "threshold": 0.3});
    let r = api.post(a, a, &pairs).await.expect(200);
    let bundle_obj = mirage_model::Bundle::open(bundle).unwrap();
    let bank = bundle_obj.text_bank().unwrap().unwrap();
    let imgs = mirage_model::Embeddings::from_rows(
        &[embed_image(&model, &png_a), embed_image(&model, &jpg)],
        model.dim(),
    )
    .unwrap();
    let caps = model
        .embed_text_batch(&["chest x-ray with pneumonia", "axial brain mri"])
        .unwrap();
    let want = matching_scores(&bank, Default::default(), &imgs, &caps).unwrap();
    for (res, w) in r.body["results"].as_array().unwrap().iter().zip(&want) {
        assert!(
            (res["s"].as_f64().unwrap() as f32 - w.s).abs() < 1e-4,
            "{res} vs {w:?}"
        );
        assert_eq!(res["flagged"], w.s < 0.3);
        assert_eq!(res["nearest_bank_caption"], crate::http::BANK[w.nearest]);
    }
    assert_eq!(r.body["results"][0]["id"], "p1");

    // Deletes: by id and by filter.
    let d = api
        .delete(it, &items_path, Some(&json!({"ids": ["r2", "absent"]})))
        .await
        .expect(200);
    assert_eq!(d.body["deleted"], 1);
    let d = api
        .delete(
            it,
            &items_path,
            Some(&json!({"filter": {"must": [{"key": "year", "range": {"gte": 2022}}]}})),
        )
        .await
        .expect(200);
    assert_eq!(d.body["deleted"], 2);
    let after = api.get(c, &path).await.expect(200);
    let remaining = n_items - 3;
    assert_eq!(after.body["items"], remaining);
    let before_restart = api.post(s, s, &json!({"collection": name, "query": {"text": "pleural effusion"}, "limit": 5, "exact": true})).await.expect(200);

    // Restart: graceful stop, start again on the same directories; everything is still there.
    assert!(server.terminate().success());
    let server = suite.serve(&[]);
    let api = server.api.clone();
    let again = api.get(c, &path).await.expect(200);
    assert_eq!(again.body["items"], remaining);
    assert_eq!(again.body["rag_min_score"].as_f64().unwrap() as f32, 0.1);
    let after_restart = api.post(s, s, &json!({"collection": name, "query": {"text": "pleural effusion"}, "limit": 5, "exact": true})).await.expect(200);
    let ids = |r: &Resp| -> Vec<(String, String)> {
        r.body["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["id"].as_str().unwrap().to_owned(),
                    format!("{:.5}", h["score"].as_f64().unwrap()),
                )
            })
            .collect()
    };
    assert_eq!(ids(&before_restart), ids(&after_restart));

    // Delete the collection.
    let d = api.delete(c, &path, None).await.expect(200);
    assert_eq!(d.body["deleted"], remaining);
    api.get(c, &path).await.expect_problem(404, "not-found");
    api.get("/health", "/health").await.expect(200);
}

/// Items may carry vectors embedded elsewhere instead of content to embed: stored as given
/// (normalised), searchable at cosine 1 by the same vector, beside embedded items; a quantised
/// collection answers exact scores; every bad vector is a 422 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precomputed_item_vectors_are_indexed_as_given() {
    let suite = crate::http::Suite::new("byo", None);
    let dim = MirageModel::open_cpu(&suite.bundle).unwrap().dim();
    let server = suite.serve(&[]);
    let api = &server.api;
    let c = "/v1/collections/{name}";
    let items = "/v1/collections/{name}/items";
    let r = api
        .put(
            c,
            "/v1/collections/byo",
            &json!({"hnsw": {"quantization": "i8"}}),
        )
        .await
        .expect(201);
    assert_eq!(r.body["hnsw"]["quantization"], "i8");
    let vector = |seed: usize| -> Vec<f64> {
        (0..dim)
            .map(|i| ((i * 7 + seed * 13) % 11) as f64 - 5.0)
            .collect()
    };
    let body = json!({"items": [
        {"id": "v1", "text": "stored, not embedded", "vectors": {"text": vector(1)}},
        {"id": "v2", "image_uri": "scans/2.png", "vectors": {"image": vector(2)},
         "payload": {"site": "b"}},
        {"id": "v3", "vectors": {"text": vector(3), "image": vector(4)}},
        {"id": "e1", "text": "chest x-ray with pneumonia"},
    ]});
    api.post(items, "/v1/collections/byo/items", &body)
        .await
        .expect(200);
    let s = "/v1/search";
    for (target, seed, id) in [
        ("text", 1, "v1"),
        ("image", 2, "v2"),
        ("text", 3, "v3"),
        ("image", 4, "v3"),
    ] {
        let r = api
            .post(
                s,
                s,
                &json!({"collection": "byo", "query": {"vector": vector(seed)}, "target": target, "limit": 2}),
            )
            .await
            .expect(200);
        assert_eq!(r.body["hits"][0]["id"], id, "{target} {seed}: {}", r.body);
        assert!((r.body["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    }
    // The stored text is returned, and the embedded item's text vector is the model's.
    let r = api
        .post(s, s, &json!({"collection": "byo", "query": {"text": "chest x-ray with pneumonia"}, "limit": 4}))
        .await
        .expect(200);
    assert_eq!(r.body["hits"][0]["id"], "e1");
    let v1 = r.hit("v1");
    assert_eq!(v1["text"], "stored, not embedded");

    let bad = |item: Value| json!({"items": [item]});
    let mut wide = vector(1);
    wide.push(1.0);
    let zeros = vec![0.0; dim];
    for (item, says) in [
        (
            json!({"id": "x", "vectors": {"text": wide}}),
            format!("items[0].vectors.text has {} dimensions", dim + 1),
        ),
        (
            json!({"id": "x", "vectors": {"image": zeros}}),
            "items[0].vectors.image is all zeros".to_string(),
        ),
        (
            json!({"id": "x", "vectors": {}}),
            "items[0].vectors has neither text nor image".to_string(),
        ),
        (
            json!({"id": "x", "image": b64(&png(1, 8)), "vectors": {"image": vector(1)}}),
            "gives both image and vectors.image".to_string(),
        ),
        (
            json!({"id": "x", "vectors": {"text": vector(1), "audio": vector(1)}}),
            "unknown field `audio`".to_string(),
        ),
    ] {
        let r = api
            .post(items, "/v1/collections/byo/items", &bad(item))
            .await
            .expect_problem(422, "invalid-request");
        let detail = r.detail();
        assert!(detail.contains(&says), "{detail}");
    }
    let r = api
        .put(
            c,
            "/v1/collections/other",
            &json!({"hnsw": {"quantization": "f8"}}),
        )
        .await
        .expect_problem(422, "invalid-request");
    assert!(
        r.detail()
            .contains("unknown variant `f8`, expected one of `f32`, `f16`, `i8`"),
        "{}",
        r.body
    );
    let r = api.get(c, "/v1/collections/byo").await.expect(200);
    assert_eq!(r.body["items"], 4);
}
