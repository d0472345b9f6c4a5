//! `mirage eval-retrieval`: a BEIR benchmark through the real store and the real retrieval
//! modes — index the corpus (or use the collection as it is), run every query in every mode,
//! and report nDCG@k, Recall@depth and MRR@k per mode and per query group, paired bootstrap
//! intervals between modes, the Hellinger distance of retrieved to judged labels, query times,
//! a recall-at-rank plot, and (with `--dump-tokens`) the analyzer's terms for an outside BM25.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use mirage_eval::retrieval::{self, Benchmark, QueryScores};
use mirage_index::hybrid::{self, RetrievalMode};
use mirage_index::passages;
use mirage_index::pipeline::model_ref;
use mirage_index::rerank;
use mirage_index::{lexical, Collection, CollectionConfig, Item, VectorName};
use mirage_model::reranker::Reranker;
use mirage_server::config::EngineArgs;
use serde_json::{json, Value};

use crate::index_cmd::{runtime, FusionArg, FusionArgs, ModeArg, StoreArgs};

/// One way of retrieving: a mode, for hybrid its fusion, and whether a cross-encoder
/// reranks the candidates.
#[derive(Clone, Copy)]
struct Variant {
    mode: RetrievalMode,
    fusion: hybrid::Fusion,
    rerank: bool,
}

impl Variant {
    fn name(&self, several_fusions: bool) -> String {
        let base = match (self.mode, several_fusions) {
            (RetrievalMode::Hybrid, true) => format!(
                "hybrid-{}",
                match self.fusion.method {
                    hybrid::FusionMethod::Rrf => "rrf",
                    hybrid::FusionMethod::Weighted => "weighted",
                }
            ),
            (m, _) => m.to_string(),
        };
        if self.rerank {
            format!("{base}+rerank")
        } else {
            base
        }
    }
}

#[derive(Args)]
pub(crate) struct EvalRetrievalArgs {
    /// Bundle directory (the collection's model).
    #[arg(long, env = "MIRAGE_BUNDLE")]
    bundle: PathBuf,
    /// BEIR benchmark folder: corpus.jsonl, queries.jsonl, `qrels/SPLIT.tsv`.
    #[arg(long)]
    data: PathBuf,
    /// Judgement split (`qrels/SPLIT.tsv`).
    #[arg(long, default_value = "test")]
    split: String,
    /// The collection holding the corpus: indexed here when empty or new, used as it is when
    /// it already holds items (ids must be the corpus's `_id`s).
    #[command(flatten)]
    store: StoreArgs,
    /// Modes to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "dense,lexical,hybrid"
    )]
    modes: Vec<ModeArg>,
    /// Fusion methods hybrid runs with, comma-separated: each is a variant of its own in the
    /// report (`hybrid-rrf`, `hybrid-weighted`); the other fusion flags apply to all.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rrf")]
    fusions: Vec<FusionArg>,
    /// Cutoff of nDCG and MRR, 1–100.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Cutoff of recall (and hits fetched per query), 1–1000.
    #[arg(long, default_value_t = 100)]
    depth: usize,
    #[command(flatten)]
    fusion: FusionArgs,
    /// Query metadata key whose values group the queries in the report (e.g. `kind`).
    #[arg(long)]
    group_by: Option<String>,
    /// Document metadata key holding each document's labels (a string or a list of strings):
    /// reports the Hellinger distance between the labels of the top-k retrieved and of the
    /// judged-relevant documents, per mode.
    #[arg(long)]
    label_field: Option<String>,
    /// Seed of the bootstrap resampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the analyzer's terms of every document and query (tokens/corpus.jsonl,
    /// tokens/queries.jsonl) for a reference BM25 outside this program.
    #[arg(long)]
    dump_tokens: bool,
    /// A cross-encoder (`mirage model import-reranker`): every hybrid variant is also run with
    /// its first --rerank-candidates hits reranked (`hybrid+rerank`).
    #[arg(long)]
    reranker: Option<PathBuf>,
    /// Hits reranked per query, 1–1000.
    #[arg(long, default_value_t = mirage_index::rerank::DEFAULT_CANDIDATES, requires = "reranker")]
    rerank_candidates: usize,
    /// Passages, as `mirage index build` splits them: rankings are then of documents, each at
    /// its best passage.
    #[command(flatten)]
    chunking: crate::index_cmd::ChunkFlags,
    /// Output folder: results.json, per-query.jsonl, recall.png.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
}

fn labels_of(metadata: &serde_json::Map<String, Value>, key: &str) -> Vec<String> {
    match metadata.get(key) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn run(args: EvalRetrievalArgs) -> Result<()> {
    if !(1..=100).contains(&args.k)
        || !(1..=mirage_index::types::MAX_SEARCH_DEPTH).contains(&args.depth)
    {
        bail!(
            "--k must be 1–100 and --depth 1–1000 (got {} and {})",
            args.k,
            args.depth
        );
    }
    if args.modes.is_empty() || args.fusions.is_empty() {
        bail!("--modes and --fusions must each name at least one");
    }
    let fusion = args.fusion.fusion()?;
    let several = args.fusions.len() > 1;
    let mut variants = Vec::new();
    for m in &args.modes {
        let mode: RetrievalMode = (*m).into();
        if mode == RetrievalMode::Hybrid {
            for f in &args.fusions {
                variants.push(Variant {
                    mode,
                    fusion: hybrid::Fusion {
                        method: (*f).into(),
                        ..fusion
                    },
                    rerank: false,
                });
            }
        } else if !variants.iter().any(|v: &Variant| v.mode == mode) {
            variants.push(Variant {
                mode,
                fusion,
                rerank: false,
            });
        }
    }
    let reranker = match &args.reranker {
        Some(dir) => {
            mirage_index::rerank::check_candidates(args.rerank_candidates)?;
            let reranked: Vec<Variant> = variants
                .iter()
                .filter(|v| v.mode == RetrievalMode::Hybrid)
                .map(|v| Variant { rerank: true, ..*v })
                .collect();
            if reranked.is_empty() {
                bail!("--reranker reranks the hybrid variants: add hybrid to --modes");
            }
            variants.extend(reranked);
            let r = Reranker::open(dir, &args.engine.options())
                .map_err(|e| anyhow::anyhow!("loading reranker {}: {e}", dir.display()))?;
            Some(std::sync::Arc::new(r))
        }
        None => None,
    };
    let names: Vec<String> = variants.iter().map(|v| v.name(several)).collect();
    let bench = Benchmark::read(&args.data, &args.split)?;
    fs_err::create_dir_all(&args.out)?;
    let model = args.engine.load(&args.bundle)?;
    let chunking = args.chunking.options(&model)?;
    let rt = runtime()?;
    let config = CollectionConfig::new(model.dim(), model_ref(&model));
    let c = rt.block_on(Collection::create_or_open(
        &args.store.spec()?,
        &args.store.collection,
        &config,
    ))?;
    let held = rt.block_on(c.count(None))?;
    let started = Instant::now();
    let (mut truncated, mut items) = (0u64, 0usize);
    let indexed = if held == 0 {
        // One upsert of the whole corpus: the Qdrant store normalises BM25 lengths by the
        // average of the first upsert (docs/RETRIEVAL.md), here the corpus's, as FTS5 does.
        let mut all = Vec::with_capacity(bench.corpus.len());
        let limit = model.tokenizer().max_length();
        for chunk in bench.corpus.chunks(64) {
            // Each document as one item, or as its passages.
            let (mut docs, mut texts) = (Vec::new(), Vec::new());
            for d in chunk {
                let spans = match &chunking {
                    None => {
                        // Reported as `mirage index build` does: never cut without a word.
                        truncated += u64::from(model.tokenizer().full_length(&d.text)? > limit);
                        texts.push(d.text.clone());
                        None
                    }
                    Some(o) => {
                        let spans =
                            passages::plan(model.tokenizer(), &d.id, &d.text, &d.metadata, o)?;
                        let chars: Vec<char> = d.text.chars().collect();
                        texts.extend(spans.iter().map(|s| s.text(&chars)));
                        Some(spans)
                    }
                };
                let doc = Item {
                    id: d.id.clone(),
                    text: Some(d.text.clone()),
                    image: None,
                    payload: d.metadata.clone(),
                    text_vector: None,
                    image_vector: None,
                };
                docs.push((doc, spans));
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let mut vectors = model.embed_texts(&refs)?.into_iter();
            for (mut doc, spans) in docs {
                match spans {
                    None => {
                        doc.text_vector = vectors.next();
                        all.push(doc);
                    }
                    Some(spans) => {
                        let v: Vec<Vec<f32>> = vectors.by_ref().take(spans.len()).collect();
                        all.extend(passages::expand(doc, &spans, v)?);
                    }
                }
            }
        }
        items = all.len();
        rt.block_on(c.upsert(all))?;
        rt.block_on(c.flush())?;
        true
    } else if chunking.is_none() && held != bench.corpus.len() as u64 {
        bail!(
            "collection {:?} holds {held} items but the corpus has {} documents: use an empty or new collection",
            args.store.collection,
            bench.corpus.len()
        );
    } else {
        false
    };
    let index_seconds = started.elapsed().as_secs_f64();
    if indexed {
        eprintln!(
            "indexed {} documents as {items} items in {index_seconds:.1} s",
            bench.corpus.len()
        );
    } else {
        eprintln!("using the {} documents held", bench.corpus.len());
    }
    if truncated > 0 {
        eprintln!(
            "warning: {truncated} documents are longer than the model's {} tokens: the dense leg read them up to it (--chunk splits them into passages)",
            model.tokenizer().max_length()
        );
    }

    let group_of = |q: &retrieval::BenchQuery| -> String {
        args.group_by
            .as_ref()
            .and_then(|k| q.metadata.get(k))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_else(|| "all".to_owned())
    };
    // Query vectors once: every dense-using mode shares them.
    let texts: Vec<&str> = bench.queries.iter().map(|q| q.text.as_str()).collect();
    let embed_started = Instant::now();
    let vectors = if variants.iter().any(|v| v.mode != RetrievalMode::Lexical) {
        model.embed_queries(&texts)?
    } else {
        vec![Vec::new(); texts.len()]
    };
    let embed_seconds = embed_started.elapsed().as_secs_f64();
    let labels: BTreeMap<&str, Vec<String>> = bench
        .corpus
        .iter()
        .map(|d| {
            let l = args
                .label_field
                .as_deref()
                .map(|k| labels_of(&d.metadata, k))
                .unwrap_or_default();
            (d.id.as_str(), l)
        })
        .collect();
    let mut per_query =
        std::io::BufWriter::new(fs_err::File::create(args.out.join("per-query.jsonl"))?);
    let mut scores: BTreeMap<&str, Vec<QueryScores>> = BTreeMap::new();
    let mut curves: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut seconds: BTreeMap<&str, f64> = BTreeMap::new();
    let mut retrieved_labels: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
    let mut truth_labels: BTreeMap<String, f64> = BTreeMap::new();
    for q in &bench.queries {
        let rel = &bench.qrels[&q.id];
        let mut ideal: Vec<&String> = rel.keys().collect();
        ideal.sort_by(|a, b| rel[*b].cmp(&rel[*a]).then_with(|| a.cmp(b)));
        for d in ideal.into_iter().take(args.k) {
            for l in &labels[d.as_str()] {
                *truth_labels.entry(l.clone()).or_default() += 1.0;
            }
        }
    }
    for (variant, name) in variants.iter().zip(&names) {
        let (mode, name) = (&variant.mode, name.as_str());
        let curve = curves.entry(name).or_insert_with(|| vec![0.0; args.depth]);
        let started = Instant::now();
        for (q, v) in bench.queries.iter().zip(&vectors) {
            let dense = if *mode == RetrievalMode::Lexical {
                Vec::new()
            } else {
                vec![v.clone()]
            };
            let mut query = hybrid::Query::new(
                dense,
                Some(q.text.clone()),
                VectorName::Text,
                *mode,
                args.depth,
            );
            query.fusion = variant.fusion;
            // The cross-encoder reads the hits' texts.
            query.with_content = variant.rerank;
            let hits = match (&reranker, variant.rerank) {
                (Some(r), true) => rt.block_on(rerank::search_reranked(
                    &c,
                    &query,
                    r.clone(),
                    args.rerank_candidates,
                ))?,
                _ if chunking.is_some() => {
                    // Passages: documents at their best passage.
                    rt.block_on(hybrid::search_groups(&c, &query, 1))?
                        .into_iter()
                        .flat_map(|g| g.hits)
                        .collect()
                }
                _ => rt.block_on(hybrid::search(&c, &query))?,
            };
            let ranking: Vec<String> = passages::group(hits, 1)
                .into_iter()
                .map(|g| g.parent)
                .take(args.depth)
                .collect();
            let rel = &bench.qrels[&q.id];
            let s = QueryScores::of(&ranking, rel, args.k, args.depth);
            for (i, point) in curve.iter_mut().enumerate() {
                *point += retrieval::recall_at(&ranking, rel, i + 1) / bench.queries.len() as f64;
            }
            let counts = retrieved_labels.entry(name).or_default();
            for d in ranking.iter().take(args.k) {
                for l in labels.get(d.as_str()).into_iter().flatten() {
                    *counts.entry(l.clone()).or_default() += 1.0;
                }
            }
            writeln!(
                per_query,
                "{}",
                json!({"query": q.id, "group": group_of(q), "mode": name, "ndcg": s.ndcg,
                       "recall": s.recall, "mrr": s.mrr, "top": ranking.iter().take(args.k).collect::<Vec<_>>()})
            )?;
            scores.entry(name).or_default().push(s);
        }
        seconds.insert(name, started.elapsed().as_secs_f64());
    }
    per_query.flush()?;

    // Means per mode and group; paired intervals between every two modes, per group.
    let mut groups: Vec<String> = vec!["all".to_owned()];
    for q in &bench.queries {
        let g = group_of(q);
        if g != "all" && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let in_group = |g: &str| -> Vec<usize> {
        (0..bench.queries.len())
            .filter(|&i| g == "all" || group_of(&bench.queries[i]) == g)
            .collect()
    };
    let pick = |v: &[QueryScores], idx: &[usize]| -> Vec<QueryScores> {
        idx.iter().map(|&i| v[i]).collect()
    };
    let mut table = Vec::new();
    let mut paired = Vec::new();
    for g in &groups {
        let idx = in_group(g);
        for name in &names {
            let m = retrieval::means(&pick(&scores[name.as_str()], &idx));
            table.push(json!({"group": g, "mode": name, "means": m}));
        }
        for (i, a) in names.iter().enumerate() {
            for b in &names[..i] {
                let delta = retrieval::paired_delta(
                    &pick(&scores[a.as_str()], &idx),
                    &pick(&scores[b.as_str()], &idx),
                    args.seed,
                )?;
                paired.push(json!({"group": g, "a": a, "b": b, "delta": delta}));
            }
        }
    }
    let hellinger: BTreeMap<String, f64> = if args.label_field.is_some() {
        retrieved_labels
            .iter()
            .map(|(m, counts)| ((*m).to_owned(), retrieval::hellinger(counts, &truth_labels)))
            .collect()
    } else {
        BTreeMap::new()
    };
    let results = json!({
        "benchmark": args.data,
        "split": args.split,
        "collection": args.store.collection,
        "store": c.kind(),
        "model_id": model.model_id(),
        "documents": bench.corpus.len(),
        "queries": bench.queries.len(),
        "k": args.k,
        "depth": args.depth,
        "fusion": fusion,
        "chunking": chunking,
        "reranker": reranker.as_ref().map(|r| json!({
            "model_id": r.model_id(),
            "engine": r.engine().as_str(),
            "candidates": args.rerank_candidates,
        })),
        "variants": names,
        "analyzer": lexical::ANALYZER,
        "index_seconds": if indexed { Some(index_seconds) } else { None },
        "indexed_items": if indexed { Some(items) } else { None },
        "truncated_documents": if indexed { Some(truncated) } else { None },
        "query_embed_seconds": embed_seconds,
        "search_seconds": seconds,
        "means": table,
        "paired": paired,
        "hellinger": hellinger,
    });
    fs_err::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    let series: Vec<mirage_eval::plot::Series> = curves
        .iter()
        .map(|(m, curve)| mirage_eval::plot::Series {
            name: m.to_string(),
            points: curve
                .iter()
                .enumerate()
                .map(|(i, r)| ((i + 1) as f64, *r))
                .collect(),
        })
        .collect();
    mirage_eval::plot::line_chart(
        &args.out.join("recall.png"),
        &format!("Recall at rank, {} queries", bench.queries.len()),
        "rank",
        "mean recall",
        &series,
    )?;
    if args.dump_tokens {
        let dir = args.out.join("tokens");
        fs_err::create_dir_all(&dir)?;
        let mut f = std::io::BufWriter::new(fs_err::File::create(dir.join("corpus.jsonl"))?);
        for d in &bench.corpus {
            writeln!(
                f,
                "{}",
                json!({"_id": d.id, "tokens": lexical::analyze(&d.text)})
            )?;
        }
        f.flush()?;
        let mut f = std::io::BufWriter::new(fs_err::File::create(dir.join("queries.jsonl"))?);
        for q in &bench.queries {
            writeln!(
                f,
                "{}",
                json!({"_id": q.id, "tokens": lexical::query_terms(&q.text)})
            )?;
        }
        f.flush()?;
    }
    print_table(&results, names.len(), &groups, args.k, args.depth);
    Ok(())
}

/// The report as Markdown on stdout: means per group and mode, then the paired intervals.
fn print_table(results: &Value, variants: usize, groups: &[String], k: usize, depth: usize) {
    println!("| group | mode | queries | nDCG@{k} | Recall@{depth} | MRR@{k} |");
    println!("|---|---|---|---|---|---|");
    for row in results["means"].as_array().into_iter().flatten() {
        let m = &row["means"];
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} |",
            row["group"].as_str().unwrap_or(""),
            row["mode"].as_str().unwrap_or(""),
            m["queries"],
            m["ndcg"].as_f64().unwrap_or(f64::NAN),
            m["recall"].as_f64().unwrap_or(f64::NAN),
            m["mrr"].as_f64().unwrap_or(f64::NAN),
        );
    }
    if variants > 1 {
        println!();
        println!("| group | a − b | nDCG@{k} | Recall@{depth} | MRR@{k} |");
        println!("|---|---|---|---|---|");
        let show = |d: &Value| {
            let (e, lo, hi) = (
                d["estimate"].as_f64().unwrap_or(f64::NAN),
                d["low"].as_f64().unwrap_or(f64::NAN),
                d["high"].as_f64().unwrap_or(f64::NAN),
            );
            let s = format!("{e:+.3} [{lo:+.3}, {hi:+.3}]");
            if lo > 0.0 || hi < 0.0 {
                format!("**{s}**")
            } else {
                s
            }
        };
        for g in groups {
            for row in results["paired"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["group"] == g.as_str())
            {
                let d = &row["delta"];
                println!(
                    "| {g} | {} − {} | {} | {} | {} |",
                    row["a"].as_str().unwrap_or(""),
                    row["b"].as_str().unwrap_or(""),
                    show(&d["ndcg"]),
                    show(&d["recall"]),
                    show(&d["mrr"]),
                );
            }
        }
    }
    if let Some(h) = results["hellinger"].as_object().filter(|h| !h.is_empty()) {
        println!();
        for (mode, v) in h {
            println!(
                "Hellinger distance of retrieved to judged labels, {mode}: {:.3}",
                v.as_f64().unwrap_or(f64::NAN)
            );
        }
    }
}
