//! Rust half of the lexical/hybrid speed benchmark (`scripts/bench-lexical.sh` runs both halves
//! and prints the table). Builds an embedded collection of N report passages (three to five
//! sentences of the radlabels reports, recombined with a seed) with embedding-like 384-d vectors,
//! then measures, single-threaded over the same queries, BM25 latency (p50, p99, mean) and the
//! queries per second of dense, lexical and hybrid (RRF, 100 candidates per leg) search, top 10
//! with texts. Writes the passages' and queries' analyzer terms for `scripts/bench/bm25_speed.py`
//! (rank_bm25 over the very same terms) and our figures as JSON.
//!
//! ```text
//! bench_lexical RADLABELS_DIR OUT_DIR [--n 100000] [--queries 400]
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use mirage_index::hybrid::{self, Query, RetrievalMode};
use mirage_index::testing::embedding_like_vectors;
use mirage_index::{lexical, Collection, CollectionConfig, Item, ModelRef, StoreSpec, VectorName};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const DIM: usize = 384;

fn sentences(radlabels: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(radlabels.join("synthetic_reports"))
        .expect("RADLABELS_DIR/synthetic_reports (scripts/fetch-assets.sh unpacks it)")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for s in text.split(['.', '\n']) {
            let s = s.trim();
            if s.split_whitespace().count() >= 3 {
                out.push(format!("{s}."));
            }
        }
    }
    out
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let mut it = std::env::args().skip(1);
    let radlabels = PathBuf::from(
        it.next()
            .expect("usage: bench_lexical RADLABELS_DIR OUT_DIR [--n N] [--queries Q]"),
    );
    let out = PathBuf::from(
        it.next()
            .expect("usage: bench_lexical RADLABELS_DIR OUT_DIR [--n N] [--queries Q]"),
    );
    let (mut n, mut n_queries) = (100_000usize, 400usize);
    while let Some(flag) = it.next() {
        let v: usize = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--n" => n = v,
            "--queries" => n_queries = v,
            _ => panic!("unknown flag {flag}"),
        }
    }
    std::fs::create_dir_all(&out).unwrap();
    let pool = sentences(&radlabels);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let passages: Vec<String> = (0..n)
        .map(|_| {
            let k = rng.random_range(3..=5);
            (0..k)
                .map(|_| pool.choose(&mut rng).unwrap().as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    // Queries: the benchmark's finding terms and paraphrases, then report phrases (3 words).
    let mut queries: Vec<String> = Vec::new();
    while queries.len() < n_queries {
        let s = pool.choose(&mut rng).unwrap();
        let words: Vec<&str> = s.split_whitespace().collect();
        let start = rng.random_range(0..words.len().saturating_sub(2).max(1));
        queries.push(words[start..(start + 3).min(words.len())].join(" "));
    }
    let vectors = embedding_like_vectors(n + n_queries, DIM, 11);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let model = ModelRef {
        model_id: "bench".into(),
        sha256: "00".repeat(32),
    };
    let c = rt
        .block_on(Collection::create_or_open(
            &StoreSpec::Embedded(dir.path().into()),
            "passages",
            &CollectionConfig::new(DIM, model),
        ))
        .unwrap();
    let started = Instant::now();
    for (chunk, (texts, vs)) in passages.chunks(1000).zip(vectors.chunks(1000)).enumerate() {
        let items = texts
            .iter()
            .zip(vs)
            .enumerate()
            .map(|(i, (t, v))| Item {
                id: format!("p{}", chunk * 1000 + i),
                text: Some(t.clone()),
                image: None,
                payload: Default::default(),
                text_vector: Some(v.clone()),
                image_vector: None,
            })
            .collect();
        rt.block_on(c.upsert(items)).unwrap();
    }
    rt.block_on(c.flush()).unwrap();
    let build_seconds = started.elapsed().as_secs_f64();
    eprintln!("built {n} passages in {build_seconds:.1} s");

    let mut figures = serde_json::Map::new();
    for mode in RetrievalMode::ALL {
        let mut latencies = Vec::with_capacity(queries.len());
        let mut hits = 0usize;
        let started = Instant::now();
        for (q, v) in queries.iter().zip(&vectors[n..]) {
            let vectors = if mode == RetrievalMode::Lexical {
                vec![]
            } else {
                vec![v.clone()]
            };
            let query = Query::new(vectors, Some(q.clone()), VectorName::Text, mode, 10);
            let t = Instant::now();
            hits += rt.block_on(hybrid::search(&c, &query)).unwrap().len();
            latencies.push(t.elapsed().as_secs_f64());
        }
        let seconds = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        figures.insert(
            mode.to_string(),
            json!({
                "qps": queries.len() as f64 / seconds,
                "p50_ms": percentile(&latencies, 0.5) * 1e3,
                "p99_ms": percentile(&latencies, 0.99) * 1e3,
                "mean_ms": seconds / queries.len() as f64 * 1e3,
                "hits_per_query": hits as f64 / queries.len() as f64,
            }),
        );
    }
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(out.join("corpus-tokens.jsonl")).unwrap());
    for p in &passages {
        writeln!(f, "{}", json!(lexical::analyze(p))).unwrap();
    }
    f.flush().unwrap();
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(out.join("query-tokens.jsonl")).unwrap());
    for q in &queries {
        writeln!(f, "{}", json!(lexical::query_terms(q))).unwrap();
    }
    f.flush().unwrap();
    let report = json!({"passages": n, "queries": queries.len(), "build_seconds": build_seconds,
                        "threads": 1, "modes": figures});
    std::fs::write(
        out.join("ours.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("{report}");
}
