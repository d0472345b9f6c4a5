//! Protection: API key scopes, body limit, a full queue, CORS, graceful shutdown.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::http::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scopes_body_limit_queue_and_cors() {
    let crate::http::Scratch { dir, bundle, .. } = crate::http::scratch(true);
    let server = Server::start(
        &bundle,
        &dir.path().join("work"),
        &[
            "--api-keys",
            "reader-key",
            "--admin-keys",
            "admin-key",
            "--max-body-bytes",
            "200000",
            "--max-queue-items",
            "8",
            "--max-inputs-per-request",
            "8",
            "--batch-size",
            "8",
            "--cors-origins",
            "http://example.org",
        ],
    );
    let anon = &server.api;
    let reader = anon.with_key("reader-key");
    let admin = anon.with_key("admin-key");
    let (c, e) = ("/v1/collections/{name}", "/v1/embeddings");

    // Probes and metrics need no key; the API does.
    anon.get("/health", "/health").await.expect(200);
    anon.get("/ready", "/ready").await.expect(200);
    let r = anon
        .post(e, e, &json!({"input": "x"}))
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    anon.with_key("wrong")
        .post(e, e, &json!({"input": "x"}))
        .await
        .expect_problem(401, "unauthorized");
    reader.post(e, e, &json!({"input": "x"})).await.expect(200);
    // x-api-key works too.
    let res = anon
        .request(Method::POST, e)
        .header("x-api-key", "reader-key")
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // Read scope cannot write.
    reader
        .put(c, "/v1/collections/k", &json!({}))
        .await
        .expect_problem(403, "forbidden");
    admin
        .put(c, "/v1/collections/k", &json!({}))
        .await
        .expect(201);
    reader.get(c, "/v1/collections/k").await.expect(200);
    reader
        .post(
            "/v1/collections/{name}/items",
            "/v1/collections/k/items",
            &json!({"items": [{"id": "a", "text": "x"}]}),
        )
        .await
        .expect_problem(403, "forbidden");

    // Body limit: JSON and multipart.
    let huge = "x".repeat(300_000);
    let r = reader
        .post(e, e, &json!({"input": huge}))
        .await
        .expect_problem(413, "payload-too-large");
    assert!(r.detail().contains("max_body_bytes"));
    // The unread rest of the body makes the connection unusable: the client is told to drop it.
    assert_eq!(r.headers["connection"], "close");
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(vec![7u8; 300_000]).file_name("big.png"),
        )
        .text("request", r#"{"labels": ["a"]}"#);
    reader
        .post_multipart("/v1/classify", "/v1/classify", form)
        .await
        .expect_problem(413, "payload-too-large");
    // Too many inputs for one request.
    let nine: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    reader
        .post(e, e, &json!({"input": nine}))
        .await
        .expect_problem(422, "invalid-request");

    // A request that could never fit the queue is refused as too big, not "retry later".
    let labels: Vec<String> = (0..3).map(|i| format!("label {i}")).collect();
    let r = reader
        .post("/v1/classify", "/v1/classify", &json!({"image": b64(&png(1, 64)), "labels": labels, "templates": ["a {}", "b {}", "c {}"]}))
        .await
        .expect_problem(422, "invalid-request");
    assert!(r.detail().contains("max_queue_items"));

    // A full queue answers 429 with Retry-After; everything else completes.
    let images: Vec<serde_json::Value> =
        (0..8).map(|i| json!({"image": b64(&png(i, 64))})).collect();
    let body = json!({"input": images});
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let (api, body) = (reader.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            api.post("/v1/embeddings", "/v1/embeddings", &body).await
        }));
    }
    let (mut ok, mut overloaded) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            429 => {
                assert_eq!(r.problem_type(), "overloaded");
                assert_eq!(r.headers["retry-after"], "1");
                overloaded += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(
        ok >= 1 && overloaded >= 1,
        "ok {ok}, overloaded {overloaded}"
    );
    let metrics = anon.get("/metrics", "/metrics").await.expect(200);
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("mirage_overload_rejections_total"));
    assert!(text.contains(
        "mirage_requests_total{method=\"POST\",route=\"/v1/embeddings\",status=\"429\"}"
    ));
    reader
        .post(e, e, &json!({"input": "after the storm"}))
        .await
        .expect(200);

    // CORS: a listed origin gets the headers (preflight and real request); others do not.
    let pre = anon
        .request(Method::OPTIONS, "/v1/search")
        .header("origin", "http://example.org")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "http://example.org"
    );
    let other = anon
        .request(Method::GET, "/health")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight() {
    let crate::http::Scratch { dir, bundle, .. } = crate::http::scratch(true);
    let server = Server::start(&bundle, &dir.path().join("work"), &["--batch-size", "4"]);
    let api = server.api.clone();
    let images: Vec<serde_json::Value> = (0..256)
        .map(|i| json!({"image": b64(&png((i % 200) as u8, 64))}))
        .collect();
    let body = json!({"input": images});
    let request = {
        let api = api.clone();
        tokio::spawn(async move { api.post("/v1/embeddings", "/v1/embeddings", &body).await })
    };
    // Wait until the request is in the inference queue, then ask the server to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            !request.is_finished(),
            "the request finished before it was seen in flight; make it larger"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the queue"
        );
        let m = api
            .http
            .get(format!("{}/metrics", api.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let depth: usize = m
            .lines()
            .find_map(|l| l.strip_prefix("mirage_queue_depth "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if depth > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.send_term();
    let r = request.await.unwrap().expect(200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 256);
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    // Gone: new connections are refused.
    assert!(api
        .http
        .get(format!("{}/health", api.base))
        .send()
        .await
        .is_err());
}

/// `mirage serve` layers its settings: the config file over the defaults, a variable over the
/// file, a flag over both; a bad file stops it at start with a message naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_layer_defaults_file_variables_and_flags() {
    let crate::http::Scratch { dir, bundle, .. } = crate::http::scratch(true);
    let file = dir.path().join("mirage.toml");
    std::fs::write(
        &file,
        "max_inputs_per_request = 5\nbatch_size = 4\nrag_min_score = 0.3\n\
         api_keys = [\"file-key\"]\nmax_queue_items = 64\n",
    )
    .unwrap();
    let server = Server::start_with_env(
        &bundle,
        &dir.path().join("work"),
        &[
            "--config",
            file.to_str().unwrap(),
            "--max-inputs-per-request",
            "7",
        ],
        &[("MIRAGE_BATCH_SIZE", "6")],
    );
    server.api.get("/info", "/info").await.expect(401);
    let info = server
        .api
        .with_key("file-key")
        .get("/info", "/info")
        .await
        .expect(200);
    let limits = &info.body["limits"];
    assert_eq!(limits["max_inputs_per_request"], 7, "flag over file");
    assert_eq!(limits["batch_size"], 6, "variable over file");
    assert_eq!(limits["max_queue_items"], 64, "file over default");
    assert_eq!(limits["request_timeout_secs"], 60, "default");
    assert!((info.body["rag_min_score"].as_f64().unwrap() - 0.3).abs() < 1e-6);
    drop(server);

    std::fs::write(&file, "batch_size = \"many\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(["serve", "--bundle"])
        .arg(&bundle)
        .arg("--config")
        .arg(&file)
        .env_remove("MIRAGE_QDRANT_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mirage.toml") && err.contains("many"), "{err}");
}
