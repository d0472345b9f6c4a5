//! `mirage index` and `mirage search` end to end, including SIGKILL in the middle of indexing.

use crate::common::{fail, json_lines, mirage, ok, on_collection};

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mirage_index::{EmbeddedCollection, LexicalRequest, SearchMode, SearchRequest, VectorName};
use mirage_model::testing::{write_tiny_bundle, TinyVision};
use mirage_model::MirageModel;
use rand::{Rng, SeedableRng};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bundle: String,
    corpus: String,
    images: String,
    ids: Vec<String>,
}

/// A tiny bundle and a plain-JSONL corpus of `n` reports, every third with a PNG.
fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let bundle = root.join("bundle");
    write_tiny_bundle(&bundle, TinyVision::ResNetMean, 16, 11).unwrap();
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut lines = Vec::new();
    let mut ids = Vec::new();
    let findings = [
        "effusion",
        "edema",
        "pneumothorax",
        "cardiomegaly",
        "no acute findings",
    ];
    for i in 0..n {
        let id = format!("report-{i:04}");
        let mut row = serde_json::json!({
            "id": id,
            "text": format!("chest radiograph {i}: {}", findings[i % findings.len()]),
            "metadata": {"finding": findings[i % findings.len()], "year": 2010 + (i % 10)},
        });
        if i % 3 == 0 {
            let name = format!("cxr{i}.png");
            image::RgbImage::from_fn(24, 24, |x, y| {
                image::Rgb([(x * 9 + i as u32) as u8, (y * 5) as u8, (i * 17) as u8])
            })
            .save(images.join(&name))
            .unwrap();
            row["image"] = serde_json::json!(name);
        }
        lines.push(row.to_string());
        ids.push(id);
    }
    let corpus = root.join("reports.jsonl");
    std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();
    Fixture {
        root,
        bundle: bundle.display().to_string(),
        corpus: corpus.display().to_string(),
        images: images.display().to_string(),
        ids,
        _dir: dir,
    }
}

impl Fixture {
    /// `mirage search` with the fixture's bundle over `collection` in `store`, then `rest`.
    fn search(&self, store: &str, collection: &str, rest: &[&str]) -> std::process::Output {
        mirage(&on_collection(
            "search",
            &self.bundle,
            store,
            collection,
            rest,
        ))
    }

    fn store(&self) -> String {
        format!("embedded:{}", self.root.join("indexes").display())
    }

    fn build_args<'a>(&'a self, collection: &'a str, store: &'a str) -> Vec<&'a str> {
        vec![
            "index",
            "build",
            "--bundle",
            &self.bundle,
            "--corpus",
            &self.corpus,
            "--format",
            "jsonl",
            "--image-root",
            &self.images,
            "--collection",
            collection,
            "--store",
            store,
            "--batch-size",
            "8",
            "--flush-every",
            "40",
            "--decode-threads",
            "2",
        ]
    }
}

/// `mirage index info` of `collection` in `store`.
fn info_of(store: &str, collection: &str) -> std::process::Output {
    mirage(&[
        "index",
        "info",
        "--store",
        store,
        "--collection",
        collection,
    ])
}

fn info_json(store: &str, collection: &str) -> serde_json::Value {
    serde_json::from_str(&ok(info_of(store, collection))).unwrap()
}

#[test]
fn build_search_info_delete_from_the_shell() {
    let f = fixture(30);
    let store = f.store();
    let mut args = f.build_args("reports", &store);
    args.extend(["--progress", "quiet"]);
    let out = ok(mirage(&args));
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["indexed"], 30);
    assert_eq!(summary["items"], 30);

    let out = ok(f.search(
        &store,
        "reports",
        &[
            "--text",
            "chest radiograph 7: pneumothorax",
            "--k",
            "3",
            "--mode",
            "dense",
        ],
    ));
    let hits = json_lines(&out);
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["id"], "report-0007");
    assert!(hits[0]["score"].as_f64().unwrap() > 0.9999, "{}", hits[0]);
    assert_eq!(hits[0]["rank"], 1);
    assert_eq!(hits[0]["payload"]["finding"], "pneumothorax");

    // Image query against image vectors, with a filter.
    let out = ok(f.search(
        &store,
        "reports",
        &[
            "--image",
            &format!("{}/cxr9.png", f.images),
            "--target",
            "image",
            "--k",
            "2",
            "--filter",
            r#"{"must": [{"key": "year", "range": {"gte": 2019}}]}"#,
        ],
    ));
    let hits = json_lines(&out);
    assert_eq!(hits[0]["id"], "report-0009");
    assert_eq!(hits[0]["image"], "cxr9.png");
    assert!(hits
        .iter()
        .all(|h| h["payload"]["year"].as_i64().unwrap() >= 2019));

    let info = info_json(&store, "reports");
    assert_eq!(info["items"], 30);
    assert_eq!(info["image_vectors"], 10);

    let out = ok(mirage(&[
        "index",
        "delete",
        "--store",
        &store,
        "--collection",
        "reports",
        "--filter",
        r#"{"must": [{"key": "finding", "match": {"value": "edema"}}]}"#,
    ]));
    assert!(out.contains(r#""deleted":6"#), "{out}");
    ok(mirage(&[
        "index",
        "compact",
        "--store",
        &store,
        "--collection",
        "reports",
    ]));
    let info = info_json(&store, "reports");
    assert_eq!(info["items"], 24);
    assert_eq!(info["tombstones"], 0);

    // Errors a user meets.
    let err = fail(f.search(&store, "nope", &["--text", "x"]));
    assert!(err.contains("does not exist"), "{err}");
    let err = fail(f.search(
        &store,
        "reports",
        &["--text", "x", "--filter", r#"{"must": [{"key": "year"}]}"#],
    ));
    assert!(err.contains("needs match or range"), "{err}");
    let other = f.root.join("other-bundle");
    write_tiny_bundle(&other, TinyVision::ResNetMean, 16, 12).unwrap();
    let err = fail(mirage(&on_collection(
        "search",
        &other.display().to_string(),
        &store,
        "reports",
        &["--text", "x"],
    )));
    assert!(err.contains("was built with model"), "{err}");
    let err = fail(info_of("mongodb:x", "reports"));
    assert!(err.contains("embedded:DIR or qdrant:URL"), "{err}");
    let err = fail(mirage(&[
        "index",
        "build",
        "--bundle",
        &f.bundle,
        "--corpus",
        "/nonexistent.jsonl",
        "--format",
        "jsonl",
        "--collection",
        "x",
        "--store",
        &store,
    ]));
    assert!(err.contains("/nonexistent.jsonl"), "{err}");
    if !cfg!(feature = "qdrant") {
        let err = fail(info_of("qdrant:http://127.0.0.1:1", "reports"));
        assert!(err.contains("features"), "{err}");
    }
    ok(mirage(&[
        "index",
        "delete",
        "--store",
        &store,
        "--collection",
        "reports",
        "--all",
    ]));
    let err = fail(info_of(&store, "reports"));
    assert!(err.contains("does not exist"), "{err}");
}

/// Runs `mirage index build` with JSON progress and SIGKILLs it after `commits` acknowledged
/// batches (or lets it finish when `None`). Returns the acknowledged ids and whether it finished.
fn run_until(f: &Fixture, collection: &str, commits: Option<usize>) -> (Vec<String>, bool) {
    let store = f.store();
    let mut args = f.build_args(collection, &store);
    args.extend(["--progress", "jsonl"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "committed" {
            acked.extend(
                v["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_string()),
            );
            seen += 1;
            if Some(seen) == commits {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                return (acked, false);
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "indexer failed: {status}");
    (acked, true)
}

fn open(f: &Fixture, name: &str) -> EmbeddedCollection {
    EmbeddedCollection::open(&f.root.join("indexes"), name).unwrap()
}

#[test]
fn sigkill_mid_indexing_loses_nothing_acknowledged_and_resumes_to_a_clean_result() {
    let f = fixture(240);
    let (_, finished) = run_until(&f, "clean", None);
    assert!(finished);

    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut all_acked: HashSet<String> = HashSet::new();
    let mut kills = 0;
    loop {
        let commits = rng.random_range(1..=6);
        let (acked, finished) = run_until(&f, "crashy", Some(commits));
        all_acked.extend(acked);
        if finished {
            break;
        }
        kills += 1;
        // Whatever was acknowledged before the kill is there, and the index opens.
        let c = open(&f, "crashy");
        let present = c.existing(&all_acked.iter().cloned().collect::<Vec<_>>());
        assert_eq!(
            present.len(),
            all_acked.len(),
            "acknowledged items lost after kill {kills}"
        );
        // The lexical index holds exactly the items the kill left (every text has "radiograph").
        let words = lexical_ids(&c, "radiograph");
        assert_eq!(
            words.len() as u64,
            c.info().items,
            "lexical index out of step after kill {kills}"
        );
        assert!(
            all_acked.iter().all(|id| words.contains(id)),
            "kill {kills}"
        );
        drop(c);
        assert!(kills < 60, "indexing never finished");
    }
    assert!(
        kills >= 3,
        "only {kills} kills: the test did not exercise crashes"
    );

    let clean = open(&f, "clean");
    let crashy = open(&f, "crashy");
    assert_eq!(clean.info().items, 240);
    assert_eq!(crashy.info().items, 240);
    assert_eq!(crashy.get(&f.ids).unwrap(), clean.get(&f.ids).unwrap());
    let model = MirageModel::open_cpu(Path::new(&f.bundle)).unwrap();
    for q in ["pneumothorax", "chest radiograph 17", "no acute findings"] {
        let v = model.embed_texts(&[q]).unwrap().remove(0);
        for mode in [SearchMode::Exact, SearchMode::Auto] {
            let mut req = SearchRequest::new(v.clone(), VectorName::Text, 10);
            req.mode = mode;
            let a: Vec<_> = clean
                .search(&req)
                .unwrap()
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect();
            let b: Vec<_> = crashy
                .search(&req)
                .unwrap()
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect();
            assert_eq!(a, b, "{q}");
        }
        let lexical = |c: &EmbeddedCollection| -> Vec<(String, f32)> {
            c.lexical_search(&LexicalRequest::new(q, 20))
                .unwrap()
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect()
        };
        assert_eq!(lexical(&clean), lexical(&crashy), "lexical {q}");
    }
}

fn lexical_ids(c: &EmbeddedCollection, q: &str) -> HashSet<String> {
    c.lexical_search(&LexicalRequest::new(q, 1000))
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect()
}

/// Vectors embedded elsewhere go in through `index build --format npy` (ids, payloads, target
/// space, quantisation) and batches of query vectors through `search --vectors`; every bad file
/// is refused by name.
#[test]
fn precomputed_vectors_in_and_query_vectors_out_through_npy() {
    use mirage_index::npy::{write_matrix, Matrix};
    let f = fixture(0);
    let store = f.store();
    let dim = 16;
    let rows = 60;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let data: Vec<f32> = (0..rows * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let vectors = Matrix {
        rows,
        cols: dim,
        data,
    };
    let file = |name: &str| f.root.join(name).display().to_string();
    write_matrix(Path::new(&file("vectors.npy")), &vectors).unwrap();
    let ids: Vec<String> = (0..rows).map(|i| format!("img-{i}")).collect();
    std::fs::write(file("ids.txt"), ids.join("\n") + "\n").unwrap();
    let payloads: Vec<String> = (0..rows)
        .map(|i| serde_json::json!({"site": if i % 2 == 0 { "a" } else { "b" }}).to_string())
        .collect();
    std::fs::write(file("payload.jsonl"), payloads.join("\n") + "\n").unwrap();
    let (vectors_npy, ids_txt, payload_jsonl) =
        (file("vectors.npy"), file("ids.txt"), file("payload.jsonl"));
    let build = |vectors: &str, ids: &str, payload: &str, extra: &[&str]| {
        let mut args = vec![
            "index",
            "build",
            "--bundle",
            &f.bundle,
            "--format",
            "npy",
            "--vectors",
            vectors,
            "--ids",
            ids,
            "--payload",
            payload,
            "--target",
            "image",
            "--store",
            &store,
            "--collection",
            "scans",
            "--quantization",
            "f16",
            "--batch-size",
            "25",
        ];
        args.extend_from_slice(extra);
        mirage(&args)
    };
    let summary = ok(build(&vectors_npy, &ids_txt, &payload_jsonl, &[]));
    assert!(summary.contains("\"imported\":60"), "{summary}");
    let info: serde_json::Value = info_json(&store, "scans");
    assert_eq!(info["items"], 60);
    assert_eq!(info["image_vectors"], 60);
    assert_eq!(info["text_vectors"], 0);
    assert_eq!(info["hnsw"]["quantization"], "f16");

    // Rows 3 and 8 as queries: each finds itself first with cosine 1.
    let queries = Matrix {
        rows: 2,
        cols: dim,
        data: [vectors.row(3), vectors.row(8)].concat(),
    };
    write_matrix(Path::new(&file("queries.npy")), &queries).unwrap();
    let search = |queries: &str, extra: &[&str]| {
        let mut args = vec![
            "search",
            "--bundle",
            &f.bundle,
            "--store",
            &store,
            "--collection",
            "scans",
            "--target",
            "image",
            "--vectors",
            queries,
            "--k",
            "5",
        ];
        args.extend_from_slice(extra);
        mirage(&args)
    };
    let out = search(&file("queries.npy"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines = json_lines(&ok(out));
    assert_eq!(lines.len(), 2);
    for (line, row) in lines.iter().zip([3, 8]) {
        assert_eq!(line["ids"][0], format!("img-{row}"));
        assert_eq!(line["ids"].as_array().unwrap().len(), 5);
        assert!(
            (line["scores"][0].as_f64().unwrap() - 1.0).abs() < 1e-4,
            "{line}"
        );
    }
    let summary: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(summary["queries"], 2);
    assert!(summary["qps"].as_f64().unwrap() > 0.0);
    let filtered = ok(search(
        &file("queries.npy"),
        &[
            "--filter",
            r#"{"must": [{"key": "site", "match": {"value": "b"}}]}"#,
        ],
    ));
    let first: serde_json::Value = serde_json::from_str(filtered.lines().next().unwrap()).unwrap();
    assert!(first["ids"]
        .as_array()
        .unwrap()
        .iter()
        .all(|id| id.as_str().unwrap()["img-".len()..]
            .parse::<usize>()
            .unwrap()
            % 2
            == 1));

    // Bad files and mismatched counts are refused before anything is written.
    let wide = Matrix {
        rows: 2,
        cols: 17,
        data: vec![0.5; 34],
    };
    write_matrix(Path::new(&file("wide.npy")), &wide).unwrap();
    let err = fail(build(&file("wide.npy"), &ids_txt, &payload_jsonl, &[]));
    assert!(
        err.contains("17 columns") && err.contains("16 dimensions"),
        "{err}"
    );
    let err = fail(search(&file("wide.npy"), &[]));
    assert!(err.contains("17 columns"), "{err}");
    std::fs::write(file("not.npy"), b"id,vector\n").unwrap();
    let err = fail(build(&file("not.npy"), &ids_txt, &payload_jsonl, &[]));
    assert!(err.contains("not a usable .npy matrix"), "{err}");
    let err = fail(search(&file("not.npy"), &[]));
    assert!(err.contains("not a usable .npy matrix"), "{err}");
    std::fs::write(file("short-ids.txt"), "a\nb\n").unwrap();
    let err = fail(build(
        &vectors_npy,
        &file("short-ids.txt"),
        &payload_jsonl,
        &[],
    ));
    assert!(err.contains("2 ids for 60 vectors"), "{err}");
    let mut bad_payload = payloads.clone();
    bad_payload[4] = "[1, 2]".into();
    std::fs::write(file("bad.jsonl"), bad_payload.join("\n")).unwrap();
    let err = fail(build(&vectors_npy, &ids_txt, &file("bad.jsonl"), &[]));
    assert!(err.contains("line 5: not a JSON object"), "{err}");
    let mut zero = vectors.clone();
    zero.data[dim * 7..dim * 8].fill(0.0);
    write_matrix(Path::new(&file("zero.npy")), &zero).unwrap();
    let err = fail(build(&file("zero.npy"), &ids_txt, &payload_jsonl, &[]));
    assert!(err.contains("zero vector"), "{err}");
    let err = fail(mirage(&[
        "index",
        "build",
        "--bundle",
        &f.bundle,
        "--format",
        "npy",
        "--vectors",
        &vectors_npy,
        "--store",
        &store,
        "--collection",
        "x",
        "--quantization",
        "f8",
    ]));
    assert!(err.contains("f32, f16 or i8"), "{err}");
    let err = fail(mirage(&[
        "index",
        "build",
        "--bundle",
        &f.bundle,
        "--format",
        "jsonl",
        "--vectors",
        &vectors_npy,
        "--store",
        &store,
        "--collection",
        "x",
    ]));
    assert!(err.contains("--corpus is required"), "{err}");
    let info: serde_json::Value = info_json(&store, "scans");
    assert_eq!(info["items"], 60);

    // A rebuild from the database keeps every item and answer.
    ok(mirage(&[
        "index",
        "compact",
        "--rebuild",
        "--store",
        &store,
        "--collection",
        "scans",
    ]));
    let again = ok(search(&file("queries.npy"), &[]));
    let again: serde_json::Value = serde_json::from_str(again.lines().next().unwrap()).unwrap();
    assert_eq!(again["ids"][0], "img-3");
}

/// A collection "big" of `n` items with long texts, made through the library with the
/// fixture's bundle identity, so a snapshot of it takes long enough to be interrupted.
fn big_collection(f: &Fixture, n: usize) {
    let bundle = mirage_model::bundle::Bundle::open(Path::new(&f.bundle)).unwrap();
    let (model, dim) = mirage_index::pipeline::bundle_ref(&bundle);
    let c = EmbeddedCollection::create_or_open(
        &f.root.join("indexes"),
        "big",
        &mirage_index::CollectionConfig::new(dim, model),
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let filler = "consolidation in the right lower lobe with a small effusion. ".repeat(64);
    for start in (0..n).step_by(500) {
        let batch = (start..(start + 500).min(n))
            .map(|i| {
                let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                mirage_index::Item {
                    id: format!("doc-{i}"),
                    text: Some(format!("report {i}: {filler}")),
                    image: None,
                    payload: serde_json::Map::new(),
                    text_vector: Some(v),
                    image_vector: None,
                }
            })
            .collect();
        c.upsert(batch).unwrap();
    }
    c.flush().unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn snapshot_and_restore_from_the_shell_and_sigkill_mid_snapshot_leaves_no_half_archive() {
    let f = fixture(0);
    let store = f.store();
    big_collection(&f, 6000);
    let snaps = f.root.join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    let path = |name: &str| snaps.join(name).display().to_string();
    let args = |out: &str| {
        [
            "index",
            "snapshot",
            "--store",
            &store,
            "--collection",
            "big",
            "--out",
            out,
        ]
        .map(str::to_owned)
    };
    let snapshot = |out: &str| mirage(&args(out).each_ref().map(String::as_str));
    let info: serde_json::Value = serde_json::from_str(&ok(snapshot(&path("a.tar")))).unwrap();
    assert_eq!(info["manifest"]["items"], 6000);
    assert_eq!(info["manifest"]["kind"], "embedded");
    let size = info["size_bytes"].as_u64().unwrap();
    assert!(
        size > 20_000_000,
        "{size} bytes: too small to be interrupted"
    );

    // SIGKILL at moments inside the snapshot: the staging folder's appearance says it began.
    let collection_dir = f.root.join("indexes").join("big");
    let mut interrupted = 0;
    for (k, delay_ms) in [0u64, 10, 40, 120].into_iter().enumerate() {
        let out = path(&format!("k{k}.tar"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_mirage"))
            .args(args(&out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let staging = || {
            listing(&collection_dir)
                .iter()
                .any(|n| n.starts_with(".snapshot-"))
        };
        while !staging() && started.elapsed().as_secs() < 60 {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !finished && staging() {
            interrupted += 1;
            // No half archive under any name: the archive is whole or absent.
            assert!(!Path::new(&out).exists(), "a half archive at {out}");
        }
        assert_eq!(
            listing(&snaps)
                .iter()
                .filter(|n| n.starts_with('.'))
                .count(),
            0
        );
        if Path::new(&out).exists() {
            mirage_index::snapshot::verify(Path::new(&out), None).unwrap();
        }
        // The collection opens whole (and sweeps the staging folder), and the name is free to
        // use again.
        let info = info_json(&store, "big");
        assert_eq!(info["items"], 6000);
        assert!(listing(&collection_dir)
            .iter()
            .all(|n| !n.starts_with(".snapshot-")));
        if !Path::new(&out).exists() {
            ok(snapshot(&out));
        }
    }
    assert!(
        interrupted >= 2,
        "only {interrupted} kills landed inside a snapshot"
    );

    // Restore under a new name; the bundle check; never over an existing collection.
    let restored: serde_json::Value = serde_json::from_str(&ok(mirage(&[
        "index",
        "restore",
        &path("a.tar"),
        "--as",
        "big-copy",
        "--store",
        &store,
        "--bundle",
        &f.bundle,
    ])))
    .unwrap();
    assert_eq!(restored["name"], "big-copy");
    assert_eq!(restored["items"], 6000);
    let err = fail(mirage(&[
        "index",
        "restore",
        &path("a.tar"),
        "--store",
        &store,
    ]));
    assert!(err.contains("already exists"), "{err}");
    let other = f.root.join("other-bundle");
    write_tiny_bundle(&other, TinyVision::ResNetMean, 16, 12).unwrap();
    let err = fail(mirage(&[
        "index",
        "restore",
        &path("a.tar"),
        "--as",
        "wrong",
        "--store",
        &store,
        "--bundle",
        &other.display().to_string(),
    ]));
    assert!(err.contains("another model"), "{err}");

    // A truncated archive is refused with the reason, and leaves nothing behind.
    let bytes = std::fs::read(path("a.tar")).unwrap();
    std::fs::write(path("cut.tar"), &bytes[..bytes.len() / 3]).unwrap();
    let err = fail(mirage(&[
        "index",
        "restore",
        &path("cut.tar"),
        "--as",
        "cut",
        "--store",
        &store,
    ]));
    assert!(
        err.contains("refused") && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(
        mirage_index::embedded::list_collections(&f.root.join("indexes")).unwrap(),
        ["big", "big-copy"]
    );
    assert!(listing(&f.root.join("indexes"))
        .iter()
        .all(|n| !n.starts_with('.')));
}
