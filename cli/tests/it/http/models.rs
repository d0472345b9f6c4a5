//! Several models in one server: requests route by `model` and collections by the model they
//! were built with (never by another model's vectors: the two tiny models here embed in 16 and 24
//! dimensions), `GET /v1/models`, and loading and unloading models under load with nothing
//! dropped.

use std::path::Path;

use mirage_model::testing::{write_tiny_bundle, TinyVision};
use mirage_model::MirageModel;
use serde_json::{json, Value};

use crate::http::harness::*;

const A: &str = "tiny-resnetmean";
const B: &str = "tiny-clip";
const C: &str = "tiny-vit";

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn embed(api: &Api, model: Option<&str>, text: &str) -> Resp {
    let mut body = json!({"input": text});
    if let Some(m) = model {
        body["model"] = m.into();
    }
    api.post("/v1/embeddings", "/v1/embeddings", &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_route_by_name_and_by_collection_and_load_and_unload_live() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_tiny_bundle(&a, TinyVision::ResNetMean, 16, 8).unwrap();
    write_tiny_bundle(&b, TinyVision::Clip, 24, 9).unwrap();
    let models_dir = dir.path().join("models");
    write_tiny_bundle(&models_dir.join("c"), TinyVision::Vit, 12, 10).unwrap();
    let work = dir.path().join("work");
    let server = Server::start(
        &a,
        &work,
        &[
            "--bundle",
            b.to_str().unwrap(),
            "--models-dir",
            models_dir.to_str().unwrap(),
        ],
    );
    let api = server.api.clone();

    let list = api.get("/v1/models", "/v1/models").await.expect(200);
    assert_eq!(list.body["object"], "list");
    assert_eq!(ids(&list.body), [A, B]);
    assert_eq!(list.body["data"][0]["default"], true);
    assert_eq!(list.body["data"][1]["embed_dim"], 24);
    assert!(list.body["data"][1]["weight_bytes"].as_u64().unwrap() > 0);
    let info = api.get("/info", "/info").await.expect(200);
    assert_eq!(
        info.body["model_id"], A,
        "the top-level fields describe the default"
    );
    assert_eq!(info.body["models"].as_array().unwrap().len(), 2);
    assert_eq!(info.body["model_loading"], true);

    // Embeddings route by name; no name is the default; an unknown one lists the loaded ones.
    let r = embed(&api, Some(B), "pleural effusion").await.expect(200);
    assert_eq!(r.body["model"], B);
    let want = MirageModel::open_cpu(&b)
        .unwrap()
        .embed_texts(&["pleural effusion"])
        .unwrap()
        .remove(0);
    assert!(cosine(&floats(&r.body["data"][0]["embedding"]), &want) > 0.9999);
    let r = embed(&api, None, "pleural effusion").await.expect(200);
    assert_eq!(r.body["model"], A);
    assert_eq!(r.body["data"][0]["embedding"].as_array().unwrap().len(), 16);
    let r = embed(&api, Some("nope"), "x")
        .await
        .expect_problem(404, "not-found");
    let detail = r.detail();
    assert!(detail.contains(A) && detail.contains(B), "{detail}");
    let png = data_uri("image/png", &png(3, 40));
    let r = api
        .post(
            "/v1/classify",
            "/v1/classify",
            &json!({"image": png, "labels": ["edema", "normal"], "model": B}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["model_id"], B);

    // Collections are bound to their model: writes and searches go to it.
    let put = |name: &'static str, model: Option<&'static str>| {
        let api = api.clone();
        async move {
            let mut body = json!({});
            if let Some(m) = model {
                body["model"] = m.into();
            }
            let p = format!("/v1/collections/{name}");
            api.put("/v1/collections/{name}", &p, &body).await
        }
    };
    put("ca", None).await.expect(201);
    let r = put("cb", Some(B)).await.expect(201);
    assert_eq!(r.body["model_id"], B);
    assert_eq!(r.body["dim"], 24);
    put("cb", Some(B)).await.expect(200);
    let r = put("cb", Some(A)).await.expect_problem(409, "conflict");
    assert!(r.detail().contains(B));
    for name in ["ca", "cb"] {
        let p = format!("/v1/collections/{name}/items");
        api.post(
            "/v1/collections/{name}/items",
            &p,
            &json!({"items": [
                {"id": "r1", "text": "pleural effusion on the left"},
                {"id": "r2", "text": "normal chest radiograph"}
            ]}),
        )
        .await
        .expect(200);
    }
    for (name, model) in [("ca", A), ("cb", B)] {
        let r = api
            .post(
                "/v1/search",
                "/v1/search",
                &json!({"collection": name, "query": {"text": "pleural effusion on the left"}, "mode": "dense", "exact": true}),
            )
            .await
            .expect(200);
        assert_eq!(r.body["model_id"], model);
        assert_eq!(r.body["hits"][0]["id"], "r1");
        assert!((r.body["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
        assert_eq!(r.body["hits"][0]["provenance"]["model_id"], model);
    }

    // A model a collection needs stays; the last model stays.
    let r = api
        .delete("/v1/models/{id}", &format!("/v1/models/{B}"), None)
        .await
        .expect_problem(409, "conflict");
    assert!(r.detail().contains("cb"));

    // Load C at run time; bad paths are refused.
    let load = |path: &'static str| {
        let api = api.clone();
        async move {
            api.post("/v1/models", "/v1/models", &json!({ "path": path }))
                .await
        }
    };
    load("../a").await.expect_problem(422, "invalid-request");
    load("missing").await.expect_problem(404, "not-found");
    let r = load("c").await.expect(201);
    assert_eq!(r.body["id"], C);
    assert_eq!(r.body["default"], false);
    load("c").await.expect_problem(409, "conflict");

    // Unload C while requests use it and A: every request to A succeeds, every request to C
    // either succeeds or, once C is gone, gets a 404; none fails otherwise.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let api = api.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for j in 0..40 {
                let model = if (i + j) % 2 == 0 { C } else { A };
                let r = embed(&api, Some(model), "chest x-ray").await;
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                outcomes.push((model, r.status));
            }
            outcomes
        }));
    }
    // Unload once a eighth of the requests are answered: some before, many during and after.
    while sent.load(std::sync::atomic::Ordering::SeqCst) < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let r = api
        .delete("/v1/models/{id}", &format!("/v1/models/{C}"), None)
        .await
        .expect(200);
    assert_eq!(r.body["id"], C);
    let (mut served_c, mut gone_c) = (0, 0);
    for t in tasks {
        for (model, status) in t.await.unwrap() {
            match (model, status) {
                (A, s) => assert_eq!(s, 200),
                (_, 200) => served_c += 1,
                (_, 404) => gone_c += 1,
                (m, s) => panic!("{m}: {s}"),
            }
        }
    }
    assert!(
        served_c > 0 && gone_c > 0,
        "{served_c} served, {gone_c} after the unload"
    );
    embed(&api, Some(C), "x")
        .await
        .expect_problem(404, "not-found");
    let list = api.get("/v1/models", "/v1/models").await.expect(200);
    assert_eq!(ids(&list.body), [A, B]);
    let metrics = api.get("/metrics", "/metrics").await.expect(200);
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains(&format!("mirage_model_weight_bytes{{model_id=\"{B}\"")));

    // A collection whose model is not loaded answers 409 naming the model, and serves again
    // once the server has it.
    api.delete("/v1/collections/{name}", "/v1/collections/ca", None)
        .await
        .expect(200);
    assert_eq!(server.terminate().code(), Some(0));
    let server = Server::start(&a, &work, &[]);
    let api = server.api.clone();
    let r = api
        .post(
            "/v1/search",
            "/v1/search",
            &json!({"collection": "cb", "query": {"text": "effusion"}}),
        )
        .await
        .expect_problem(409, "conflict");
    assert!(r.detail().contains(B));
    api.delete("/v1/models/{id}", &format!("/v1/models/{A}"), None)
        .await
        .expect_problem(409, "conflict");
    drop(server);
    check_models_dir_is_needed(&a, &dir.path().join("work2")).await;
}

/// Without --models-dir nothing is loaded at run time.
async fn check_models_dir_is_needed(bundle: &Path, work: &Path) {
    let server = Server::start(bundle, work, &[]);
    let r = server
        .api
        .post("/v1/models", "/v1/models", &json!({"path": "c"}))
        .await
        .expect_problem(409, "conflict");
    assert!(r.detail().contains("--models-dir"));
}

/// A bundle with a query tower (MedCPT's layout): `/v1/embeddings` embeds with the tower
/// `input_type` names, indexing uses the document tower and searches the query tower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asymmetric_model_searches_with_its_query_tower() {
    use mirage_model::config::{TextPooling, VisionTower};
    use mirage_model::import::{import_hf, ImportOptions};
    let dir = tempfile::tempdir().unwrap();
    mirage_model::testing::write_tiny_hf_dir(&dir.path().join("doc"), 3).unwrap();
    mirage_model::testing::write_tiny_hf_dir(&dir.path().join("query"), 4).unwrap();
    let bundle = dir.path().join("medcpt-like");
    import_hf(
        &ImportOptions {
            text_dir: dir.path().join("doc"),
            vision_weights: None,
            vision: VisionTower::Vit(mirage_model::testing::tiny_vit()),
            embed_dim: None,
            pooling: TextPooling::Cls,
            max_length: None,
            query_text_dir: Some(dir.path().join("query")),
            query_max_length: Some(16),
            seed: 1,
            model_id: "medcpt-like".into(),
        },
        &bundle,
    )
    .unwrap();
    let model = MirageModel::open_cpu(&bundle).unwrap();
    let server = Server::start(&bundle, &dir.path().join("work"), &[]);
    let api = server.api.clone();
    let text = "pleural effusion on the left";
    let (q, d) = (
        model.embed_queries(&[text]).unwrap().remove(0),
        model.embed_texts(&[text]).unwrap().remove(0),
    );
    for (input_type, want) in [("query", &q), ("document", &d)] {
        let r = api
            .post(
                "/v1/embeddings",
                "/v1/embeddings",
                &json!({"input": text, "input_type": input_type}),
            )
            .await
            .expect(200);
        let got = floats(&r.body["data"][0]["embedding"]);
        assert!(cosine(&got, want) > 0.9999, "{input_type}");
    }
    api.post(
        "/v1/embeddings",
        "/v1/embeddings",
        &json!({"input": text, "input_type": "passage"}),
    )
    .await
    .expect_problem(422, "invalid-request");
    api.put("/v1/collections/{name}", "/v1/collections/docs", &json!({}))
        .await
        .expect(201);
    api.post(
        "/v1/collections/{name}/items",
        "/v1/collections/docs/items",
        &json!({"items": [{"id": "r1", "text": text}]}),
    )
    .await
    .expect(200);
    let r = api
        .post(
            "/v1/search",
            "/v1/search",
            &json!({"collection": "docs", "query": {"text": text}, "mode": "dense", "exact": true}),
        )
        .await
        .expect(200);
    let score = r.body["hits"][0]["score"].as_f64().unwrap() as f32;
    let want = cosine(&q, &d);
    assert!(
        (score - want).abs() < 1e-4,
        "query tower vs document tower: {score} vs {want}"
    );
    assert!(
        want < 0.99,
        "the towers differ, so a text does not find itself at 1"
    );
}
