//! Snapshots over HTTP: taken while the collection takes writes, listed, downloaded, restored
//! under a new name, refused when damaged or of a model not loaded, and admin-only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::Digest;

use crate::http::harness::*;

const SNAP: &str = "/v1/snapshots/{snapshot}";

fn items(from: usize, to: usize) -> Value {
    let items: Vec<Value> = (from..to)
        .map(|i| json!({"id": format!("r{i}"), "text": format!("report {i}: pleural effusion"), "payload": {"n": i}}))
        .collect();
    json!({ "items": items })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_under_writes_restore_exactly_what_was_acknowledged() {
    let crate::http::Scratch {
        dir: _dir,
        bundle,
        work,
    } = crate::http::scratch(false);
    let server = Server::start(
        &bundle,
        &work,
        &["--api-keys", "reader", "--admin-keys", "admin"],
    );
    let admin = server.api.with_key("admin");
    let reader = server.api.with_key("reader");
    admin
        .put("/v1/collections/{name}", "/v1/collections/live", &json!({}))
        .await
        .expect(201);
    admin
        .post(
            "/v1/collections/{name}/items",
            "/v1/collections/live/items",
            &items(0, 40),
        )
        .await
        .expect(200);

    // A writer acknowledging batches of 4 while snapshots are taken.
    const BATCH: usize = 4;
    let acked = Arc::new(AtomicUsize::new(40));
    let writer = {
        let (api, acked) = (admin.clone(), acked.clone());
        tokio::spawn(async move {
            for b in 0..40 {
                let from = 40 + b * BATCH;
                api.post(
                    "/v1/collections/{name}/items",
                    "/v1/collections/live/items",
                    &items(from, from + BATCH),
                )
                .await
                .expect(200);
                acked.store(from + BATCH, Ordering::SeqCst);
            }
        })
    };
    let mut taken = Vec::new();
    while taken.len() < 3 {
        let before = acked.load(Ordering::SeqCst);
        let snap = admin
            .post(
                "/v1/collections/{name}/snapshots",
                "/v1/collections/live/snapshots",
                &json!({}),
            )
            .await
            .expect(201);
        let after = acked.load(Ordering::SeqCst);
        taken.push((snap.body, before, after));
    }
    writer.await.unwrap();

    for (k, (snap, before, after)) in taken.iter().enumerate() {
        let n = snap["items"].as_u64().unwrap() as usize;
        assert!(
            *before <= n && n <= after + BATCH,
            "{before} <= {n} <= {after} + {BATCH}"
        );
        assert_eq!(snap["store"], "embedded");
        assert_eq!(snap["collection"], "live");
        let name = snap["name"].as_str().unwrap();

        // The download is the archive the response describes.
        let res = admin
            .request(reqwest::Method::GET, &format!("/v1/snapshots/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/x-tar");
        let bytes = res.bytes().await.unwrap();
        assert_eq!(bytes.len() as u64, snap["size_bytes"].as_u64().unwrap());
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            snap["sha256"].as_str().unwrap()
        );

        let copy = format!("copy{k}");
        let restored = admin
            .post(
                "/v1/snapshots/{snapshot}/restore",
                &format!("/v1/snapshots/{name}/restore"),
                &json!({"as": copy}),
            )
            .await
            .expect(201);
        assert_eq!(restored.body["items"].as_u64().unwrap() as usize, n);
        // Exactly the first n writes: r0 … r{n-1}, none after.
        let found = admin
            .post(
                "/v1/search",
                "/v1/search",
                &json!({"collection": copy, "query": {"text": "pleural effusion"}, "limit": 100, "mode": "lexical"}),
            )
            .await
            .expect(200);
        let hits = found.body["hits"].as_array().unwrap();
        assert_eq!(hits.len(), n.min(100));
        assert!(hits.iter().all(|h| {
            let i: usize = h["id"].as_str().unwrap()[1..].parse().unwrap();
            i < n
        }));
    }

    // Admin only, even to read.
    reader
        .get("/v1/snapshots", "/v1/snapshots")
        .await
        .expect_problem(403, "forbidden");
    let list = admin
        .get("/v1/snapshots", "/v1/snapshots")
        .await
        .expect(200);
    assert_eq!(list.body["snapshots"].as_array().unwrap().len(), 3);

    // Never over an existing collection; bad names; unknown snapshots.
    let first = taken[0].0["name"].as_str().unwrap().to_owned();
    let restore = |name: String, body: Value| {
        let admin = admin.clone();
        async move {
            admin
                .post(
                    "/v1/snapshots/{snapshot}/restore",
                    &format!("/v1/snapshots/{name}/restore"),
                    &body,
                )
                .await
        }
    };
    restore(first.clone(), json!({"as": "copy0"}))
        .await
        .expect_problem(409, "conflict");
    restore(first.clone(), json!({}))
        .await
        .expect_problem(409, "conflict");
    restore(first.clone(), json!({"as": "../etc"}))
        .await
        .expect_problem(422, "invalid-request");
    restore("nope-1.mirage-snapshot.tar".into(), json!({}))
        .await
        .expect_problem(404, "not-found");
    restore("passwd".into(), json!({}))
        .await
        .expect_problem(422, "invalid-request");

    // A truncated archive is listed as unreadable and refused with the reason; nothing is made.
    let folder = work.join("data").join("snapshots");
    let bytes = std::fs::read(folder.join(&first)).unwrap();
    std::fs::write(
        folder.join("cut-1.mirage-snapshot.tar"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let list = admin
        .get("/v1/snapshots", "/v1/snapshots")
        .await
        .expect(200);
    assert!(list.body["unreadable"][0]
        .as_str()
        .unwrap()
        .starts_with("cut-1.mirage-snapshot.tar"));
    let refused = restore("cut-1.mirage-snapshot.tar".into(), json!({"as": "cut"}))
        .await
        .expect_problem(422, "invalid-request");
    assert!(refused.detail().contains("truncated"), "{}", refused.body);
    admin
        .get("/v1/collections/{name}", "/v1/collections/cut")
        .await
        .expect_problem(404, "not-found");

    // An archive of a model this server has not loaded is refused before anything is written.
    let other = tempfile::tempdir().unwrap();
    let model = mirage_index::ModelRef {
        model_id: "elsewhere".into(),
        sha256: "ab".repeat(32),
    };
    let c = mirage_index::EmbeddedCollection::create_or_open(
        other.path(),
        "foreign",
        &mirage_index::CollectionConfig::new(16, model),
    )
    .unwrap();
    c.snapshot(&folder.join("foreign-1.mirage-snapshot.tar"))
        .unwrap();
    let refused = restore("foreign-1.mirage-snapshot.tar".into(), json!({}))
        .await
        .expect_problem(409, "conflict");
    assert!(refused.detail().contains("elsewhere"));

    // Deleted snapshots are gone.
    admin
        .delete(SNAP, &format!("/v1/snapshots/{first}"), None)
        .await
        .expect(200);
    admin
        .delete(SNAP, &format!("/v1/snapshots/{first}"), None)
        .await
        .expect_problem(404, "not-found");
}
