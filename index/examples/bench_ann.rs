//! Rust half of the ANN benchmark (`scripts/bench-index.sh` runs both halves and prints the
//! table). Builds the bare graph engine and our embedded store (one per quantisation) on seeded
//! vectors (or on real embeddings read from a file), measures Recall@10, single-thread QPS over
//! an ef sweep and bytes per vector, runs filtered queries (filters keeping 50 %, 5 %, 0.5 %)
//! against filtered brute force, and writes the vectors, the exact ground truth and our figures
//! for `scripts/bench/ann_peers.py`, which measures hnswlib and faiss on the very same files.
//!
//! ```text
//! bench_ann OUT_DIR [--n 100000] [--dim 384] [--queries 1000] [--m 16] [--ef-construction 200]
//!           [--ef 16,32,64,128,256] [--threads 2] [--quantizations f32,f16,i8]
//!           [--filtered true|false] [--embeddings FILE.f32 --dim D --holdout Q]
//!           [--data-only true]   (write the vectors, queries, exact top-10 and meta.json, build
//!                                 nothing: the CLI benchmark's input)
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use mirage_index::testing::embedding_like_vectors;
use mirage_index::{
    dot, BareGraph, CollectionConfig, EmbeddedCollection, Filter, HnswParams, Item, ModelRef,
    Quantization, SearchRequest, VectorName,
};

struct Args {
    out: PathBuf,
    n: usize,
    dim: usize,
    queries: usize,
    m: usize,
    ef_construction: usize,
    ef: Vec<usize>,
    threads: usize,
    embeddings: Option<PathBuf>,
    dataset: String,
    quantizations: Vec<Quantization>,
    filtered: bool,
    data_only: bool,
}

fn parse() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        out: PathBuf::from(it.next().expect("usage: bench_ann OUT_DIR [options]")),
        n: 100_000,
        dim: 384,
        queries: 1000,
        m: 16,
        ef_construction: 200,
        ef: vec![16, 32, 64, 128, 256],
        threads: 2,
        embeddings: None,
        dataset: String::new(),
        quantizations: Quantization::ALL.to_vec(),
        filtered: true,
        data_only: false,
    };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--n" => a.n = num(),
            "--dim" => a.dim = num(),
            "--queries" | "--holdout" => a.queries = num(),
            "--m" => a.m = num(),
            "--ef-construction" => a.ef_construction = num(),
            "--threads" => a.threads = num(),
            "--ef" => {
                a.ef = value
                    .split(',')
                    .map(|v| v.parse().expect("--ef: numbers"))
                    .collect()
            }
            "--filtered" => a.filtered = value.parse().expect("--filtered: true or false"),
            "--data-only" => a.data_only = value.parse().expect("--data-only: true or false"),
            "--embeddings" => a.embeddings = Some(PathBuf::from(&value)),
            "--dataset" => a.dataset = value,
            "--quantizations" => {
                a.quantizations = value
                    .split(',')
                    .map(|q| q.parse().expect("--quantizations: f32, f16, i8"))
                    .collect()
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn write_f32(path: &std::path::Path, rows: &[Vec<f32>]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for r in rows {
        for x in r {
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
}

/// Exact top-k by inner product over the rows `keep` admits, on `threads` threads.
fn ground_truth(
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    k: usize,
    threads: usize,
    keep: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<Vec<u32>> {
    let per = queries.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|q| {
                            let mut scored: Vec<(f32, u32)> = base
                                .iter()
                                .enumerate()
                                .filter(|&(i, _)| keep(i))
                                .map(|(i, v)| (dot(q, v), i as u32))
                                .collect();
                            if scored.len() > k {
                                scored.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
                                scored.truncate(k);
                            }
                            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                            scored.into_iter().map(|(_, i)| i).collect::<Vec<u32>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn recall(found: &[Vec<u32>], truth: &[Vec<u32>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|id| t.contains(id)).count())
        .sum();
    let wanted: usize = truth.iter().map(Vec::len).sum();
    hits as f64 / wanted.max(1) as f64
}

/// One query at a time on this thread, after an untimed warm-up pass (as the Python side does).
fn sweep(
    efs: &[usize],
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
    search: impl Fn(&[f32], usize) -> Vec<u32>,
) -> Vec<serde_json::Value> {
    for q in queries.iter().take(100) {
        search(q, efs[0]);
    }
    efs.iter()
        .map(|&ef| {
            let t = Instant::now();
            let found: Vec<Vec<u32>> = queries.iter().map(|q| search(q, ef)).collect();
            let secs = t.elapsed().as_secs_f64();
            let r = recall(&found, truth);
            let qps = queries.len() as f64 / secs;
            eprintln!("  ef {ef:4}: recall@10 {r:.4}, {qps:.0} QPS");
            serde_json::json!({"ef": ef, "recall": r, "qps": qps})
        })
        .collect()
}

fn main() {
    let a = parse();
    std::fs::create_dir_all(&a.out).unwrap();
    let k = 10;
    let (base, queries, dataset) = match &a.embeddings {
        Some(path) => {
            let bytes = std::fs::read(path).unwrap();
            let all: Vec<Vec<f32>> = bytes
                .chunks_exact(4 * a.dim)
                .map(|row| {
                    row.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                })
                .collect();
            // The first `queries` rows are held out as queries; the rest is the base.
            let (q, b) = all.split_at(a.queries.min(all.len() / 2));
            (
                b.to_vec(),
                q.to_vec(),
                if a.dataset.is_empty() {
                    path.display().to_string()
                } else {
                    a.dataset.clone()
                },
            )
        }
        None => (
            embedding_like_vectors(a.n, a.dim, 1),
            embedding_like_vectors(a.queries, a.dim, 2),
            format!(
                "seeded embedding-like ({} latent dims)",
                mirage_index::testing::LATENT_DIM
            ),
        ),
    };
    let n = base.len();
    eprintln!("{dataset}: {n} × {} base, {} queries", a.dim, queries.len());
    write_f32(&a.out.join("base.f32"), &base);
    write_f32(&a.out.join("queries.f32"), &queries);
    eprintln!("exact ground truth…");
    let truth = ground_truth(&base, &queries, k, a.threads, &|_| true);
    let mut gt = std::io::BufWriter::new(std::fs::File::create(a.out.join("gt.u32")).unwrap());
    for row in &truth {
        for id in row {
            gt.write_all(&id.to_le_bytes()).unwrap();
        }
    }
    drop(gt);
    let meta = |extra: serde_json::Value| {
        let mut meta = serde_json::json!({
            "n": n, "dim": a.dim, "queries": queries.len(), "k": k, "m": a.m,
            "ef_construction": a.ef_construction, "ef_search": a.ef, "threads": a.threads,
            "dataset": dataset,
        });
        meta.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        std::fs::write(
            a.out.join("meta.json"),
            serde_json::to_string_pretty(&meta).unwrap(),
        )
        .unwrap();
    };
    if a.data_only {
        meta(serde_json::json!({}));
        return;
    }

    let params = HnswParams {
        m: a.m,
        ef_construction: a.ef_construction,
        ef_search: a.ef[0],
        exact_threshold: 0,
        quantization: Quantization::F32,
    };

    eprintln!("graph alone (f32)…");
    let t = Instant::now();
    let graph = BareGraph::build(&base, &params, Quantization::F32).unwrap();
    let graph_build_s = t.elapsed().as_secs_f64();
    let graph_bytes = graph.memory_bytes() as f64 / n as f64;
    eprintln!(
        "  built in {graph_build_s:.1} s, {graph_bytes:.0} bytes/vector, kernels: {}",
        graph.isa()
    );
    let graph_points = sweep(&a.ef, &queries, &truth, |q, ef| {
        graph
            .search(&base, q, k, ef)
            .into_iter()
            .map(|i| i as u32)
            .collect()
    });
    drop(graph);

    let mut stores = Vec::new();
    let mut filtered = Vec::new();
    let mut with_content = Vec::new();
    for &quantization in &a.quantizations {
        eprintln!("embedded store, {quantization} (graph + SQLite, durable upserts of 1000)…");
        let dir = tempfile::tempdir_in(&a.out).unwrap();
        let config = CollectionConfig {
            hnsw: HnswParams {
                quantization,
                ..params
            },
            ..CollectionConfig::new(
                a.dim,
                ModelRef {
                    model_id: "bench".into(),
                    sha256: "0".repeat(64),
                },
            )
        };
        let store = EmbeddedCollection::create_or_open(dir.path(), "bench", &config).unwrap();
        let t = Instant::now();
        for (c, chunk) in base.chunks(1000).enumerate() {
            let items = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let id = c * 1000 + i;
                    Item {
                        id: id.to_string(),
                        text: None,
                        image: None,
                        payload: serde_json::json!({"bucket": bucket(id)})
                            .as_object()
                            .unwrap()
                            .clone(),
                        text_vector: Some(v.clone()),
                        image_vector: None,
                    }
                })
                .collect();
            store.upsert(items).unwrap();
        }
        store.flush().unwrap();
        let build_s = t.elapsed().as_secs_f64();
        let bytes = store.memory_bytes() as f64 / n as f64;
        eprintln!("  built in {build_s:.1} s, {bytes:.0} bytes/vector of state in memory");
        // Ids, scores and payloads: what an ANN library answers (plus the payload).
        let points = sweep(&a.ef, &queries, &truth, |q, ef| {
            top_ids(&store, q, k, ef, None, false)
        });
        stores.push(serde_json::json!({
            "name": format!("mirage embedded store ({quantization} + SQLite)"),
            "quantization": quantization.as_str(),
            "build_s": build_s, "graph_build_s": graph_build_s, "bytes_per_vector": bytes,
            "points": points,
        }));
        if quantization == Quantization::F32 {
            // The same store answering as its search API does: each hit's text and image
            // read from SQLite.
            eprintln!("  with each hit's text from SQLite:");
            let points = sweep(&a.ef, &queries, &truth, |q, ef| {
                top_ids(&store, q, k, ef, None, true)
            });
            with_content.push(serde_json::json!({
                "name": "mirage embedded store (f32 + SQLite), hits with their texts",
                "quantization": "f32",
                "build_s": build_s, "graph_build_s": graph_build_s, "bytes_per_vector": bytes,
                "points": points,
            }));
        }
        if quantization == Quantization::F32 && a.filtered {
            filtered = filtered_queries(&store, &base, &queries, k, a.threads, &a.ef);
        }
    }

    let mut extra = serde_json::json!({
        "ours_graph": {"name": "mirage: graph alone (f32)", "build_s": graph_build_s,
                       "bytes_per_vector": graph_bytes, "points": graph_points},
        "ours_quantized": stores.get(1..).unwrap_or_default(),
        "ours_with_content": with_content,
        "filtered": filtered,
    });
    if let Some(first) = stores.first() {
        extra["ours"] = first.clone();
    }
    meta(extra);
}

/// Ids (the row numbers) of the store's top `k` for `q` at beam `ef`, with or without each
/// hit's text read from SQLite.
fn top_ids(
    store: &EmbeddedCollection,
    q: &[f32],
    k: usize,
    ef: usize,
    filter: Option<&Filter>,
    with_content: bool,
) -> Vec<u32> {
    let mut req = SearchRequest::new(q.to_vec(), VectorName::Text, k);
    req.ef = Some(ef);
    req.filter = filter.cloned();
    req.with_content = with_content;
    store
        .search(&req)
        .unwrap()
        .into_iter()
        .map(|h| h.id.parse().unwrap())
        .collect()
}

/// Payload field the filtered queries test: 200 buckets, item `i` in bucket `i % 200`.
fn bucket(id: usize) -> usize {
    id % 200
}

/// Filters keeping 50 %, 5 % and 0.5 % of the points: recall against filtered brute force and
/// QPS at the store's default search path (its selectivity estimate picks graph or scan).
fn filtered_queries(
    store: &EmbeddedCollection,
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    k: usize,
    threads: usize,
    efs: &[usize],
) -> Vec<serde_json::Value> {
    [(100, "50 %"), (10, "5 %"), (1, "0.5 %")]
        .into_iter()
        .map(|(below, share)| {
            let filter: Filter = serde_json::from_value(
                serde_json::json!({"must": [{"key": "bucket", "range": {"lt": below}}]}),
            )
            .unwrap();
            let truth = ground_truth(base, queries, k, threads, &|i| bucket(i) < below);
            eprintln!("filter keeping {share}:");
            let points = sweep(efs, queries, &truth, |q, ef| {
                top_ids(store, q, k, ef, Some(&filter), false)
            });
            serde_json::json!({"keeps": share, "points": points})
        })
        .collect()
}
