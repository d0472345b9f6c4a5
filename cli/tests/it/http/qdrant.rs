//! The served API over real Qdrant servers this test starts, kills and restarts: outages answer
//! 503 with `Retry-After` and heal without restarting `mirage`; one name is one collection across
//! the two stores; credentials are checked; a 3-node cluster serves through the loss of a node.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mirage_index::testing::{qdrant_tools, QdrantNode};
use serde_json::{json, Value};

use crate::common::{assets_dir, fail, mirage, ok, require_asset};
use crate::http::harness::*;

const C: &str = "/v1/collections/{name}";
const ITEMS: &str = "/v1/collections/{name}/items";
const S: &str = "/v1/search";

fn texts(prefix: &str, n: usize) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "text": format!("chest x-ray number {i} of {prefix}")}))
        .collect();
    json!({"items": items})
}

/// Dense: these tests compare answers across node losses and restarts, and each replica builds
/// its own HNSW graph, so the candidates deep in a hybrid search's dense leg (rank 100) may differ
/// between replicas and move fused ranks; the top 10 of a dense search does not.
fn search_body(name: &str, text: &str) -> Value {
    json!({"collection": name, "query": {"text": text}, "limit": 10, "mode": "dense"})
}

/// The ranking as (id, score) pairs.
fn ranking(r: &Resp) -> Vec<(String, f64)> {
    r.body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_owned(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The same top-k: equal scores rank by rank, and the same ids, except that hits whose scores
/// tie may come in either order, and a tie at the last rank may admit either of the tied hits
/// (the radlabels reports repeat sentences, so exact ties happen; replicas break them apart).
fn assert_same_ranking(got: &[(String, f64)], want: &[(String, f64)], what: &str) {
    const TIE: f64 = 1e-5;
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g.1 - w.1).abs() < TIE, "{what}: {got:?} vs {want:?}");
    }
    let Some(last) = want.last().map(|h| h.1) else {
        return;
    };
    let differing = |a: &[(String, f64)], b: &[(String, f64)]| -> Vec<(String, f64)> {
        a.iter()
            .filter(|h| !b.iter().any(|o| o.0 == h.0))
            .cloned()
            .collect()
    };
    for h in differing(got, want).iter().chain(&differing(want, got)) {
        assert!(
            (h.1 - last).abs() < TIE,
            "{what}: {} ({}) is in one top-k only and does not tie the last score {last}: {got:?} vs {want:?}",
            h.0,
            h.1
        );
    }
}

/// A jsonl corpus of `n` reports.
fn corpus(path: &Path, prefix: &str, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            json!({"id": format!("{prefix}-{i}"), "text": format!("report {i}: pleural effusion")})
                .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

fn build(
    bundle: &Path,
    corpus: &Path,
    store: &str,
    name: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "index",
        "build",
        "--bundle",
        bundle.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--format",
        "jsonl",
        "--store",
        store,
        "--collection",
        name,
        "--progress",
        "quiet",
    ];
    args.extend_from_slice(extra);
    mirage(&args)
}

/// Polls `f` until it returns `Some`, or fails after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn store_status<'a>(ready: &'a Resp, store: &str) -> &'a Value {
    ready.body["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["store"] == store)
        .unwrap_or_else(|| panic!("no {store} in {}", ready.body))
}

/// A test's own single Qdrant node and a tiny bundle, in a fresh folder; `None` (skipped, or a
/// failure under CI) without the Qdrant tools.
fn one_node(suite: &str) -> Option<(tempfile::TempDir, QdrantNode, PathBuf)> {
    let tools = qdrant_tools(suite)?;
    let dir = tempfile::tempdir().unwrap();
    let node = QdrantNode::start(&tools, &dir.path().join("qdrant"), false, None, None).unwrap();
    let bundle = dir.path().join("bundle");
    crate::http::bundle_with_bank(&bundle);
    Some((dir, node, bundle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qdrant_outage_answers_503_and_heals_without_restarting_mirage() {
    let Some((dir, node, bundle)) = one_node("the Qdrant outage test") else {
        return;
    };
    let work = dir.path().join("work");
    let url = node.grpc_url();
    let server = Server::start(&bundle, &work, &["--qdrant-url", &url]);
    let api = server.api.clone();

    let ready = api.get("/ready", "/ready").await.expect(200);
    assert_eq!(ready.body["status"], "pass", "{}", ready.body);
    assert!(store_status(&ready, "qdrant")["detail"]
        .as_str()
        .unwrap()
        .starts_with("qdrant 1."));
    api.put(C, "/v1/collections/q", &json!({"store": "qdrant"}))
        .await
        .expect(201);
    api.put(C, "/v1/collections/e", &json!({}))
        .await
        .expect(201);
    for name in ["q", "e"] {
        api.post(
            ITEMS,
            &format!("/v1/collections/{name}/items"),
            &texts(name, 8),
        )
        .await
        .expect(200);
    }
    let before = api
        .post(S, S, &search_body("q", "chest x-ray"))
        .await
        .expect(200);
    assert_eq!(before.body["total"], 8);

    node.kill().unwrap();
    // Every Qdrant-backed route: 503 with Retry-After, the cause only in the log.
    let down = [
        api.post(S, S, &search_body("q", "chest x-ray")).await,
        api.post(ITEMS, "/v1/collections/q/items", &texts("q-more", 2))
            .await,
        api.get(C, "/v1/collections/q").await,
        api.delete(
            ITEMS,
            "/v1/collections/q/items",
            Some(&json!({"ids": ["q-1"]})),
        )
        .await,
    ];
    for r in down {
        let r = r.expect_problem(503, "store-unavailable");
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1);
        assert_eq!(r.body["retry_after"], retry);
        assert!(!r.detail().contains("127.0.0.1"));
    }
    // Ready, with a warning: the embedded collections are still served.
    let ready = api.get("/ready", "/ready").await.expect(200);
    assert_eq!(ready.body["status"], "warn");
    let q = store_status(&ready, "qdrant");
    assert_eq!(q["status"], "fail");
    assert!(q["detail"].as_str().unwrap().contains("unreachable"), "{q}");
    assert_eq!(store_status(&ready, "embedded")["status"], "pass");
    api.post(S, S, &search_body("e", "chest x-ray"))
        .await
        .expect(200);
    api.post(ITEMS, "/v1/collections/e/items", &texts("e-more", 2))
        .await
        .expect(200);
    let list = api
        .get("/v1/collections", "/v1/collections")
        .await
        .expect(200);
    assert_eq!(list.body["unavailable_stores"], json!(["qdrant"]));
    assert!(list.body["collections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "e"));

    // Qdrant comes back on the same storage; mirage reconnects by itself.
    node.launch().unwrap();
    let after = eventually(
        "search after the Qdrant restart",
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                let r = api.post(S, S, &search_body("q", "chest x-ray")).await;
                (r.status == 200).then_some(r)
            }
        },
    )
    .await;
    assert_same_ranking(&ranking(&after), &ranking(&before), "after the restart");
    api.post(ITEMS, "/v1/collections/q/items", &texts("q-more", 2))
        .await
        .expect(200);
    let info = api.get(C, "/v1/collections/q").await.expect(200);
    assert_eq!(info.body["items"], 10);
    let ready = api.get("/ready", "/ready").await.expect(200);
    assert_eq!(ready.body["status"], "pass", "{}", ready.body);
    let list = api
        .get("/v1/collections", "/v1/collections")
        .await
        .expect(200);
    assert_eq!(list.body["unavailable_stores"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_down_at_start_or_refusing_the_key_leaves_the_embedded_store_serving() {
    let Some(tools) = qdrant_tools("the Qdrant start-up and credentials test") else {
        return;
    };
    let crate::http::Scratch { dir, bundle, .. } = crate::http::scratch(true);

    // Nothing listens on the Qdrant port: the server starts, is ready with a warning, serves
    // embedded collections and answers 503 for Qdrant.
    let closed = format!(
        "http://127.0.0.1:{}",
        mirage_index::testing::free_port().unwrap()
    );
    let w1 = dir.path().join("w1");
    let reports = dir.path().join("reports.jsonl");
    corpus(&reports, "e", 5);
    let embedded = format!("embedded:{}", w1.join("indexes").display());
    ok(build(&bundle, &reports, &embedded, "e", &[]));
    let server = Server::start(&bundle, &w1, &["--qdrant-url", &closed]);
    let api = server.api.clone();
    let ready = api.get("/ready", "/ready").await.expect(200);
    assert_eq!(ready.body["status"], "warn");
    assert_eq!(store_status(&ready, "qdrant")["status"], "fail");
    api.post(ITEMS, "/v1/collections/e/items", &texts("e-more", 3))
        .await
        .expect(200);
    let r = api.post(S, S, &search_body("e", "x-ray")).await.expect(200);
    assert_eq!(r.body["total"], 8);
    api.put(C, "/v1/collections/q", &json!({"store": "qdrant"}))
        .await
        .expect_problem(503, "store-unavailable");
    // A new name cannot be checked against the store that is down, so it is not created
    // anywhere until that store answers: one name must stay one collection.
    api.put(C, "/v1/collections/new", &json!({}))
        .await
        .expect_problem(503, "store-unavailable");
    // An unknown name is looked up in both stores: with one down, that is a 503, not a 404.
    api.post(S, S, &search_body("nowhere", "x-ray"))
        .await
        .expect_problem(503, "store-unavailable");
    drop(server);

    // The default store down: not ready.
    let server = Server::start(
        &bundle,
        &dir.path().join("w2"),
        &["--store", &format!("qdrant:{closed}")],
    );
    let r = server.api.get("/ready", "/ready").await;
    let r = r.expect_problem(503, "store-unavailable");
    assert!(r.headers.contains_key("retry-after"));
    drop(server);

    // A Qdrant that wants a key: the wrong key is a 502 naming authentication, never the key.
    let node = QdrantNode::start(
        &tools,
        &dir.path().join("qdrant"),
        false,
        None,
        Some("the-right-key"),
    )
    .unwrap();
    let url = node.grpc_url();
    let server = Server::start_with_env(
        &bundle,
        &dir.path().join("w3"),
        &["--qdrant-url", &url],
        &[("MIRAGE_QDRANT_API_KEY", "a-wrong-key")],
    );
    let api = server.api.clone();
    let ready = api.get("/ready", "/ready").await.expect(200);
    let q = store_status(&ready, "qdrant");
    assert!(
        q["detail"].as_str().unwrap().contains("authentication"),
        "{q}"
    );
    let r = api
        .put(C, "/v1/collections/q", &json!({"store": "qdrant"}))
        .await
        .expect_problem(502, "store-error");
    let detail = r.detail();
    assert!(detail.contains("authentication"), "{detail}");
    assert!(!detail.contains("wrong-key") && !detail.contains("right-key"));
    drop(server);
    let server = Server::start_with_env(
        &bundle,
        &dir.path().join("w4"),
        &["--qdrant-url", &url],
        &[("MIRAGE_QDRANT_API_KEY", "the-right-key")],
    );
    let api = server.api.clone();
    api.put(C, "/v1/collections/q", &json!({"store": "qdrant"}))
        .await
        .expect(201);
    api.post(ITEMS, "/v1/collections/q/items", &texts("q", 3))
        .await
        .expect(200);
    let ready = api.get("/ready", "/ready").await.expect(200);
    assert_eq!(ready.body["status"], "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_is_one_collection_across_the_two_stores() {
    let Some((dir, node, bundle)) = one_node("the one-name-one-collection test") else {
        return;
    };
    let work = dir.path().join("work");
    let qdrant = format!("qdrant:{}", node.grpc_url());
    let embedded = format!("embedded:{}", work.join("indexes").display());
    let reports = dir.path().join("reports.jsonl");
    corpus(&reports, "r", 20);

    // Built by the CLI into Qdrant: the server (whose default store is embedded) serves it.
    ok(build(&bundle, &reports, &qdrant, "cli-built", &[]));
    // The CLI refuses a second collection of that name in a store it is told the server uses.
    let err = fail(build(
        &bundle,
        &reports,
        &embedded,
        "cli-built",
        &["--check-store", &qdrant],
    ));
    assert!(
        err.contains("it lives in qdrant:") && err.contains("one store only"),
        "{err}"
    );
    // Resuming into the store that holds it is fine.
    ok(build(
        &bundle,
        &reports,
        &qdrant,
        "cli-built",
        &["--check-store", &embedded],
    ));
    // A duplicate made without the check (or behind the server's back).
    ok(build(&bundle, &reports, &embedded, "twice", &[]));
    ok(build(&bundle, &reports, &qdrant, "twice", &[]));

    let server = Server::start(&bundle, &work, &["--qdrant-url", &node.grpc_url()]);
    let api = server.api.clone();
    let got = api.get(C, "/v1/collections/cli-built").await.expect(200);
    assert_eq!(got.body["store"], "qdrant");
    assert_eq!(got.body["items"], 20);
    let r = api
        .post(
            S,
            S,
            &search_body("cli-built", "report 3: pleural effusion"),
        )
        .await
        .expect(200);
    assert_eq!(r.body["hits"][0]["id"], "r-3");
    // Creating it again in the other store is a conflict; in its own store, a no-op.
    api.put(
        C,
        "/v1/collections/cli-built",
        &json!({"store": "embedded"}),
    )
    .await
    .expect_problem(409, "conflict");
    api.put(C, "/v1/collections/cli-built", &json!({"store": "qdrant"}))
        .await
        .expect(200);
    // A name in both stores: listed once, marked, and every route says which two.
    let list = api
        .get("/v1/collections", "/v1/collections")
        .await
        .expect(200);
    let twice: Vec<&Value> = list.body["collections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "twice")
        .collect();
    assert_eq!(twice.len(), 1, "{}", list.body);
    assert_eq!(twice[0]["conflict"], true);
    for r in [
        api.get(C, "/v1/collections/twice").await,
        api.post(S, S, &search_body("twice", "report")).await,
        api.put(C, "/v1/collections/twice", &json!({})).await,
    ] {
        let r = r.expect_problem(409, "conflict");
        let detail = r.detail();
        assert!(
            detail.contains("embedded:") && detail.contains("qdrant:"),
            "{detail}"
        );
    }
    // Deleting through the server deletes the collection it resolves, so neither goes while
    // the name is ambiguous; the CLI removes one, and the name resolves again.
    api.delete(C, "/v1/collections/twice", None)
        .await
        .expect_problem(409, "conflict");
    ok(mirage(&[
        "index",
        "delete",
        "--store",
        &embedded,
        "--collection",
        "twice",
        "--all",
    ]));
    let got = api.get(C, "/v1/collections/twice").await.expect(200);
    assert_eq!(got.body["store"], "qdrant");

    // Dropped in Qdrant behind the server's back: 404, and it can be created again.
    ok(mirage(&[
        "index",
        "delete",
        "--store",
        &qdrant,
        "--collection",
        "cli-built",
        "--all",
    ]));
    api.get(C, "/v1/collections/cli-built")
        .await
        .expect_problem(404, "not-found");
    api.post(S, S, &search_body("cli-built", "report"))
        .await
        .expect_problem(404, "not-found");
    let again = api
        .put(C, "/v1/collections/cli-built", &json!({"store": "qdrant"}))
        .await
        .expect(201);
    assert_eq!(again.body["items"], 0);
}

/// GET on a node's REST API; an error while the node is not (yet) answering.
async fn rest(http: &reqwest::Client, url: String) -> Result<Value, String> {
    let reply = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    reply.json().await.map_err(|e| format!("{url}: {e}"))
}

/// One read of every node's `/collections/{name}/cluster`: the replicas each holds
/// (shard, points, state), and each node's view of the states of all replicas (its own and its
/// peers'). An error while a node is not answering (a restarted one binds its port a moment later).
#[allow(clippy::type_complexity)]
async fn cluster_state(
    http: &reqwest::Client,
    nodes: &[&QdrantNode],
    name: &str,
) -> Result<(Vec<(u64, u64, String)>, Vec<Vec<String>>), String> {
    let (mut placed, mut views) = (Vec::new(), Vec::new());
    for n in nodes {
        let c = rest(http, format!("{}/collections/{name}/cluster", n.http_url())).await?;
        let r = &c["result"];
        for s in r["local_shards"].as_array().into_iter().flatten() {
            placed.push((
                s["shard_id"].as_u64().unwrap(),
                s["points_count"].as_u64().unwrap(),
                s["state"].as_str().unwrap().to_owned(),
            ));
        }
        views.push(
            ["local_shards", "remote_shards"]
                .iter()
                .flat_map(|k| r[k].as_array().into_iter().flatten())
                .map(|s| s["state"].as_str().unwrap_or("?").to_owned())
                .collect(),
        );
    }
    Ok((placed, views))
}

/// `POST path` until it answers 200. While the cluster marks a lost node's replicas dead, Qdrant
/// may refuse a request for a moment, which mirage answers 503 with Retry-After; this retries
/// those (as the Python client does) for up to 30 s. Any other status fails at once. Returns the
/// response and how many 503s came before it.
async fn through_failover(api: &Api, template: &str, path: &str, body: &Value) -> (Resp, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut unavailable = 0;
    loop {
        let r = api.post(template, path, body).await;
        if r.status != 503 || Instant::now() >= deadline {
            return (r.expect(200), unavailable);
        }
        unavailable += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the cluster has settled on `name`: every node's view of the consensus has all 6
/// replicas (3 shards × 2) Active, the two replicas of each shard hold the same points, and those
/// sum to `points`. Returns how many distinct states it saw; on timeout, fails listing them.
async fn settle(
    http: &reqwest::Client,
    nodes: &[&QdrantNode],
    name: &str,
    points: u64,
    limit: Duration,
) -> usize {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let state = cluster_state(http, nodes, name).await;
        if let Ok((placed, views)) = &state {
            let mut per_shard: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for (shard, count, _) in placed {
                per_shard.entry(*shard).or_default().push(*count);
            }
            let active = views
                .iter()
                .all(|v| v.len() == 6 && v.iter().all(|s| s == "Active"));
            let same =
                per_shard.len() == 3 && per_shard.values().all(|c| c.len() == 2 && c[0] == c[1]);
            let total: u64 = per_shard.values().map(|c| c[0]).sum();
            if active && same && total == points {
                return seen.len();
            }
        }
        let observed = format!("{state:?}");
        if seen.last() != Some(&observed) {
            seen.push(observed);
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle on {points} points within {limit:?}; observed, in order:\n{}",
            seen.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_serves_through_the_loss_of_a_node() {
    let Some(tools) = qdrant_tools("the Qdrant cluster test") else {
        return;
    };
    let Some(radlabels) = require_asset(assets_dir().join("radlabels")) else {
        return;
    };
    // Where a failure happened, in the test's output (the servers' logs share it).
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("[cluster {:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let n1 = QdrantNode::start(&tools, &dir.path().join("n1"), true, None, None).unwrap();
    let boot = n1.p2p_uri().unwrap();
    let n2 = QdrantNode::start(&tools, &dir.path().join("n2"), true, Some(&boot), None).unwrap();
    let n3 = QdrantNode::start(&tools, &dir.path().join("n3"), true, Some(&boot), None).unwrap();
    let http = reqwest::Client::new();
    eventually(
        "three peers in the cluster",
        Duration::from_secs(60),
        || {
            let (http, url) = (http.clone(), format!("{}/cluster", n1.http_url()));
            async move {
                let c = rest(&http, url).await.ok()?;
                (c["result"]["peers"].as_object().map_or(0, |p| p.len()) == 3).then_some(())
            }
        },
    )
    .await;
    phase("three peers");

    // The 1,000 radlabels reports, indexed through node 1 into 3 shards × 2 replicas.
    let corpus = dir.path().join("radlabels.jsonl");
    ok(mirage(&[
        "data",
        "radlabels",
        "--radlabels",
        radlabels.to_str().unwrap(),
        "--out",
        corpus.to_str().unwrap(),
    ]));
    let ids: Vec<String> = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1000);
    let bundle = dir.path().join("bundle");
    crate::http::bundle_with_bank(&bundle);
    let store = format!("qdrant:{}", n1.grpc_url());
    let out = ok(build(
        &bundle,
        &corpus,
        &store,
        "radlabels",
        &["--shards", "3", "--replicas", "2"],
    ));
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["indexed"], 1000);
    println!(
        "cluster indexing: {} items/s",
        summary["items_per_second"].as_f64().unwrap()
    );
    phase("indexed");
    let nodes = [&n1, &n2, &n3];
    // 3 shards × 2 replicas, every one Active and holding its shard's points.
    settle(&http, &nodes, "radlabels", 1000, Duration::from_secs(60)).await;
    phase("placed");

    let work = dir.path().join("work");
    let server = Server::start(&bundle, &work, &["--qdrant-url", &n1.grpc_url()]);
    let api = server.api.clone();
    let queries = [
        "pleural effusion",
        "cardiomegaly with pulmonary edema",
        "no acute cardiopulmonary process",
        "right lower lobe consolidation",
        "pneumothorax",
        "atelectasis at the lung bases",
    ];
    let mut before = Vec::new();
    for q in queries {
        let r = api
            .post(S, S, &search_body("radlabels", q))
            .await
            .expect(200);
        assert_eq!(r.body["total"], 1000);
        before.push(ranking(&r));
    }

    // Lose node 3: every search still answers, with the same top-10.
    phase("searched with every node up");
    n3.kill().unwrap();
    phase("node 3 killed");
    let mut unavailable = 0;
    for (q, want) in queries.iter().zip(&before) {
        let (r, n) = through_failover(&api, S, S, &search_body("radlabels", q)).await;
        unavailable += n;
        assert_same_ranking(&ranking(&r), want, q);
    }
    // Writes keep being acknowledged (write consistency factor 1: one live replica per shard
    // suffices, the dead one catches up on return).
    phase(&format!(
        "searched without node 3 ({unavailable} answers 503 first)"
    ));
    let mut acknowledged = ids.clone();
    for batch in 0..4 {
        let body = texts(&format!("during-outage-{batch}"), 5);
        let (_, n) = through_failover(&api, ITEMS, "/v1/collections/radlabels/items", &body).await;
        unavailable += n;
        acknowledged.extend((0..5).map(|i| format!("during-outage-{batch}-{i}")));
    }
    for (q, want) in queries.iter().zip(&before).take(2) {
        let r = api
            .post(S, S, &search_body("radlabels", q))
            .await
            .expect(200);
        assert_eq!(r.body["total"], 1020);
        assert_eq!(ranking(&r).len(), want.len(), "{q}");
    }

    // Node 3 returns and catches up: every replica active and holding the same points.
    phase(&format!(
        "wrote and counted without node 3 ({unavailable} answers 503 first, in all)"
    ));
    n3.launch().unwrap();
    phase("node 3 relaunched");
    // Caught up: a restarted node first reports the replica states it saved before it died, so
    // every node's view is checked, and the counts against the acknowledged writes.
    let states = settle(
        &http,
        &nodes,
        "radlabels",
        acknowledged.len() as u64,
        Duration::from_secs(120),
    )
    .await;
    phase(&format!("caught up, after {states} distinct states"));
    // Every acknowledged item, read with consistency `all` (present on every replica).
    let uuids: HashMap<String, &String> = acknowledged
        .iter()
        .map(|id| (mirage_index::qdrant::point_uuid(id), id))
        .collect();
    let got: Value = http
        .post(format!(
            "{}/collections/radlabels/points?consistency=all",
            n2.http_url()
        ))
        .json(&json!({"ids": uuids.keys().collect::<Vec<_>>(), "with_payload": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found = got["result"].as_array().unwrap();
    assert_eq!(found.len(), acknowledged.len(), "{}", got["status"]);
    assert!(found
        .iter()
        .all(|p| uuids.contains_key(p["id"].as_str().unwrap())));
    // And mirage, which never restarted, answers as before the loss for untouched queries.
    let r = api
        .post(S, S, &search_body("radlabels", queries[4]))
        .await
        .expect(200);
    assert_eq!(r.body["total"], 1020);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qdrant_collection_is_snapshotted_and_restored_over_http() {
    let Some((dir, node, bundle)) = one_node("the Qdrant snapshot test") else {
        return;
    };
    let work = dir.path().join("work");
    let server = Server::start(
        &bundle,
        &work,
        &[
            "--qdrant-url",
            &node.grpc_url(),
            "--qdrant-rest-url",
            &node.http_url(),
        ],
    );
    let api = server.api.clone();
    api.put(C, "/v1/collections/q", &json!({"store": "qdrant"}))
        .await
        .expect(201);
    api.post(ITEMS, "/v1/collections/q/items", &texts("q", 8))
        .await
        .expect(200);
    let snap = api
        .post(
            "/v1/collections/{name}/snapshots",
            "/v1/collections/q/snapshots",
            &json!({}),
        )
        .await
        .expect(201);
    assert_eq!(snap.body["store"], "qdrant");
    assert_eq!(snap.body["items"], 8);
    let name = snap.body["name"].as_str().unwrap();
    let restored = api
        .post(
            "/v1/snapshots/{snapshot}/restore",
            &format!("/v1/snapshots/{name}/restore"),
            &json!({"as": "q-copy"}),
        )
        .await
        .expect(201);
    assert_eq!(restored.body["store"], "qdrant");
    assert_eq!(restored.body["items"], 8);
    let want = ranking(
        &api.post(S, S, &search_body("q", "chest x-ray"))
            .await
            .expect(200),
    );
    let got = ranking(
        &api.post(S, S, &search_body("q-copy", "chest x-ray"))
            .await
            .expect(200),
    );
    assert_same_ranking(&got, &want, "the restored copy");
    drop(server);

    // Qdrant's REST port unreachable: the snapshot is a 503, and no archive is left behind.
    let closed = format!(
        "http://127.0.0.1:{}",
        mirage_index::testing::free_port().unwrap()
    );
    let server = Server::start(
        &bundle,
        &dir.path().join("work2"),
        &[
            "--qdrant-url",
            &node.grpc_url(),
            "--qdrant-rest-url",
            &closed,
        ],
    );
    server
        .api
        .post(
            "/v1/collections/{name}/snapshots",
            "/v1/collections/q/snapshots",
            &json!({}),
        )
        .await
        .expect_problem(503, "store-unavailable");
    let left = std::fs::read_dir(dir.path().join("work2/data/snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0);
}
