//! `mirage index …`, `mirage search` and `mirage rag`: build, inspect, compact and prune
//! collections, and query them from the shell.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use mirage_data::corpus::{read_corpus, CorpusFormat, CorpusOptions};
use mirage_index::hybrid::{self, Fusion, FusionMethod, RetrievalMode};
use mirage_index::passages::{self, ChunkOptions, Chunking, PassageInfo};
use mirage_index::pipeline::{
    bundle_ref, estimate_records, index_records, model_ref, PipelineOptions, ProgressMode,
};
use mirage_index::rag::{self, RagOptions};
use mirage_index::{
    create_unique, drop_collection, Collection, CollectionConfig, Filter, HnswParams, Quantization,
    SearchMode, SearchRequest, StoreSpec, VectorName,
};
use mirage_model::image_input::{load_image, DecodeOptions};
use mirage_model::reranker::Reranker;
use mirage_server::config::{EngineArgs, Secret};
use serde_json::json;

/// Which store.
#[derive(Args, Clone)]
pub(crate) struct StoreFlags {
    /// Store: `embedded:DIR` (one directory per collection under DIR) or `qdrant:URL` (gRPC,
    /// e.g. qdrant:http://localhost:6334).
    #[arg(long, env = "MIRAGE_STORE", default_value = "embedded:./indexes")]
    store: String,
    /// API key of the Qdrant store(s), if the server wants one.
    #[arg(long, env = "MIRAGE_QDRANT_API_KEY", hide_env_values = true)]
    qdrant_api_key: Option<Secret>,
    /// Qdrant's REST URL (http or https), for snapshots (default: the gRPC URL's host on port
    /// 6333 when its port is 6334).
    #[arg(long, env = "MIRAGE_QDRANT_REST_URL")]
    qdrant_rest_url: Option<String>,
}

impl StoreFlags {
    pub(crate) fn spec(&self) -> Result<StoreSpec> {
        self.parse(&self.store)
    }

    /// `store` (this command's or another one it checks) with the API key and REST URL.
    fn parse(&self, store: &str) -> Result<StoreSpec> {
        let key = self.qdrant_api_key.as_ref().map(|k| k.0.as_str());
        Ok(store
            .parse::<StoreSpec>()?
            .with_api_key(key)
            .with_rest_url(self.qdrant_rest_url.as_deref())?)
    }
}

/// Where collections live, and which one.
#[derive(Args, Clone)]
pub(crate) struct StoreArgs {
    #[command(flatten)]
    location: StoreFlags,
    /// Collection name.
    #[arg(long, env = "MIRAGE_COLLECTION")]
    pub(crate) collection: String,
}

impl StoreArgs {
    pub(crate) fn spec(&self) -> Result<StoreSpec> {
        self.location.spec()
    }

    fn parse(&self, store: &str) -> Result<StoreSpec> {
        self.location.parse(store)
    }
}

#[derive(Subcommand)]
pub(crate) enum IndexCommand {
    /// Embed a corpus and write it to a collection (resumable: re-running skips indexed ids).
    Build(Box<BuildArgs>),
    /// Print a collection's size, model and settings as JSON.
    Info(StoreArgs),
    /// Rebuild an embedded collection's graphs without deleted vectors.
    Compact(CompactArgs),
    /// Delete items by id or by filter, or the whole collection.
    Delete(DeleteArgs),
    /// Write a checksummed snapshot archive of a collection while it serves (embedded: a
    /// consistent copy of its database and graphs; Qdrant: Qdrant's own snapshot).
    Snapshot(SnapshotArgs),
    /// Restore a snapshot archive as a new collection, after checking its checksums, format
    /// and model.
    Restore(RestoreArgs),
}

#[derive(Args)]
pub(crate) struct SnapshotArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The archive to write; it must not exist (a snapshot never replaces a file).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    store: StoreFlags,
    /// The archive (written by `mirage index snapshot` or the server's snapshot route).
    archive: PathBuf,
    /// Collection name to restore as (default: the name it was taken under); an existing
    /// collection is never replaced.
    #[arg(long = "as", value_name = "NAME")]
    as_name: Option<String>,
    /// Refuse the archive unless its vectors come from this bundle.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct CompactArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Rebuild the graphs from the collection's database even when their dumps cannot be used
    /// (a collection built by another graph engine: opening it otherwise is refused).
    #[arg(long)]
    rebuild: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// PMC-OA jsonl: `image`, `caption`, other fields become payload.
    Pmcoa,
    /// ROCO: caption CSV (id, caption[, name]) or captions.txt, plus an image folder.
    Roco,
    /// MIMIC-CXR-style report CSV: id and report columns, other columns become payload.
    Mimic,
    /// Plain JSONL: `id`, `text`, `image`, `metadata`.
    Jsonl,
    /// Precomputed vectors: a 2-D float32/float64 .npy given by --vectors (rows × the bundle's
    /// dimension), with --ids, --payload and --target; nothing is embedded.
    Npy,
}

/// Passage splitting flags of `mirage index build` and `mirage eval-retrieval`.
#[derive(Args)]
pub(crate) struct ChunkFlags {
    /// Split texts into passages (items `ID#0`, `ID#1`, … recording their document, section and
    /// character span under the payload key `passage`): `tokens` (windows with overlap) or
    /// `sections` (report headings such as FINDINGS: and IMPRESSION:, then windows). Without it,
    /// texts longer than the model's limit are embedded up to it and counted as truncated.
    #[arg(long, value_enum)]
    chunk: Option<ChunkArg>,
    /// Content tokens per passage, from 1 to the model's limit less its special tokens (the
    /// default).
    #[arg(long, requires = "chunk")]
    chunk_tokens: Option<usize>,
    /// Tokens consecutive passages share, below --chunk-tokens (default: an eighth of it).
    #[arg(long, requires = "chunk")]
    chunk_overlap: Option<usize>,
}

impl ChunkFlags {
    /// The splitting asked for, checked against `model`'s token limit.
    pub(crate) fn options(
        &self,
        model: &mirage_model::MirageModel,
    ) -> Result<Option<ChunkOptions>> {
        let Some(mode) = self.chunk else {
            return Ok(None);
        };
        let o = ChunkOptions::new(
            mode.into(),
            self.chunk_tokens,
            self.chunk_overlap,
            model.tokenizer(),
        )
        .map_err(|e| anyhow::anyhow!("{e} (set by --chunk-tokens, --chunk-overlap)"))?;
        Ok(Some(o))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ChunkArg {
    Tokens,
    Sections,
}

impl From<ChunkArg> for Chunking {
    fn from(c: ChunkArg) -> Self {
        match c {
            ChunkArg::Tokens => Chunking::Tokens,
            ChunkArg::Sections => Chunking::Sections,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProgressArg {
    Bar,
    Jsonl,
    Quiet,
}

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// Bundle directory.
    #[arg(long, env = "MIRAGE_BUNDLE")]
    bundle: PathBuf,
    /// Corpus file (every format but npy).
    #[arg(long, required_unless_present = "vectors")]
    corpus: Option<PathBuf>,
    /// Corpus format.
    #[arg(long, value_enum)]
    format: FormatArg,
    /// npy: the vectors, one row per item; any finite non-zero row is scaled to unit length.
    #[arg(long, conflicts_with = "corpus")]
    vectors: Option<PathBuf>,
    /// npy: item ids, one per line, as many as rows (default: the row numbers 0, 1, …).
    #[arg(long, requires = "vectors")]
    ids: Option<PathBuf>,
    /// npy: payloads, one JSON object per line, as many as rows.
    #[arg(long, requires = "vectors")]
    payload: Option<PathBuf>,
    /// npy: the space the vectors belong to.
    #[arg(long, value_enum, default_value = "text")]
    target: TargetArg,
    /// Folder that image paths in the corpus are relative to; paths may not leave it.
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Id column (mimic: default study_id; roco: default id).
    #[arg(long)]
    id_column: Option<String>,
    /// Text column (mimic: default report; roco: default caption).
    #[arg(long)]
    text_column: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Items per embedding batch and write (default 32); for --format npy, items per write
    /// (one SQLite transaction and one parallel graph insert; default 4096).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Image decoding threads (default: available cores, at most 8).
    #[arg(long)]
    decode_threads: Option<usize>,
    /// Stop at the first bad corpus row instead of reporting and skipping it.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    chunking: ChunkFlags,
    /// Frame of multi-frame DICOM files.
    #[arg(long, default_value_t = 0)]
    frame: u32,
    /// Progress: a bar on stderr, JSON lines on stdout (one per committed batch, with its ids),
    /// or nothing.
    #[arg(long, value_enum, default_value = "bar")]
    progress: ProgressArg,
    /// Write the graph to disk after this many new items, so a restart after a crash re-inserts
    /// at most this many (every acknowledged item is durable regardless).
    #[arg(long, default_value_t = PipelineOptions::default().flush_every)]
    flush_every: usize,
    /// HNSW links per node (new collections), 2–256.
    #[arg(long, default_value_t = HnswParams::default().m)]
    m: usize,
    /// HNSW build beam width (new collections), 4–4096.
    #[arg(long, default_value_t = HnswParams::default().ef_construction)]
    ef_construction: usize,
    /// HNSW default search beam width (new collections), 1–4096.
    #[arg(long, default_value_t = HnswParams::default().ef_search)]
    ef_search: usize,
    /// Below this many candidates, search is exact (new collections), 0–100000000.
    #[arg(long, default_value_t = HnswParams::default().exact_threshold)]
    exact_threshold: usize,
    /// How the graph stores vectors (new collections): f32, f16 (half the bytes) or i8 (a
    /// quarter); the embedded store rescores quantised candidates in f32.
    #[arg(long, default_value_t = HnswParams::default().quantization)]
    quantization: Quantization,
    /// Qdrant: shard number (new collections), 1–64.
    #[arg(long)]
    shards: Option<u32>,
    /// Qdrant: replication factor (new collections), 1–16.
    #[arg(long)]
    replicas: Option<u32>,
    /// Other stores a server offers beside --store (e.g. `embedded:./indexes` when building into
    /// Qdrant): a name one of them holds is refused, so a name always means one collection.
    #[arg(long = "check-store", value_name = "STORE", value_delimiter = ',')]
    check_stores: Vec<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Item ids to delete.
    #[arg(long = "id", num_args = 1.., conflicts_with_all = ["filter", "all"])]
    ids: Vec<String>,
    /// Delete the items whose payload passes this filter (JSON, see README).
    #[arg(long, conflicts_with = "all")]
    filter: Option<String>,
    /// Delete the whole collection.
    #[arg(long)]
    all: bool,
}

/// Retrieval mode and fusion flags of `mirage search` and `mirage rag`.
#[derive(Args)]
pub(crate) struct RetrievalArgs {
    /// dense, lexical (BM25 over the texts) or hybrid (both, fused). Default: hybrid for text
    /// queries on collections with a lexical index, else dense.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    #[command(flatten)]
    fusion: FusionArgs,
    /// Rerank the first --rerank-candidates hits with this cross-encoder (a directory written by
    /// `mirage model import-reranker`); needs query text.
    #[arg(long)]
    reranker: Option<PathBuf>,
    /// Hits reranked, 1–1000.
    #[arg(long, default_value_t = mirage_index::rerank::DEFAULT_CANDIDATES, requires = "reranker")]
    rerank_candidates: usize,
}

/// Fusion flags of hybrid search.
#[derive(Args)]
pub(crate) struct FusionArgs {
    /// How hybrid merges its legs: rrf (reciprocal rank fusion) or weighted (min-max normalised
    /// scores).
    #[arg(long, value_enum, default_value = "rrf")]
    fusion: FusionArg,
    /// RRF's k, 0–10000.
    #[arg(long, default_value_t = Fusion::default().rrf_k)]
    rrf_k: f64,
    /// Weight of the dense leg, 0–1000 (not both weights 0).
    #[arg(long, default_value_t = 1.0)]
    dense_weight: f64,
    /// Weight of the lexical leg, 0–1000.
    #[arg(long, default_value_t = 1.0)]
    lexical_weight: f64,
    /// Candidates each leg of hybrid search fetches, 1–1000.
    #[arg(long, default_value_t = Fusion::default().candidates)]
    candidates: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ModeArg {
    Dense,
    Lexical,
    Hybrid,
}

impl From<ModeArg> for RetrievalMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Dense => Self::Dense,
            ModeArg::Lexical => Self::Lexical,
            ModeArg::Hybrid => Self::Hybrid,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FusionArg {
    Rrf,
    Weighted,
}

impl From<FusionArg> for FusionMethod {
    fn from(f: FusionArg) -> Self {
        match f {
            FusionArg::Rrf => Self::Rrf,
            FusionArg::Weighted => Self::Weighted,
        }
    }
}

impl FusionArgs {
    /// The fusion these flags ask for, checked.
    pub(crate) fn fusion(&self) -> Result<Fusion> {
        let fusion = Fusion {
            method: self.fusion.into(),
            rrf_k: self.rrf_k,
            dense_weight: self.dense_weight,
            lexical_weight: self.lexical_weight,
            candidates: self.candidates,
        };
        fusion.validate().map_err(|e| {
            anyhow::anyhow!("{e} (--rrf-k, --dense-weight, --lexical-weight, --candidates)")
        })?;
        Ok(fusion)
    }
}

impl RetrievalArgs {
    /// The mode (the default for a query with or without text on `c`) and the checked fusion.
    fn resolve(&self, has_text: bool, c: &Collection) -> Result<(RetrievalMode, Fusion)> {
        let mode = self.mode.map_or_else(
            || RetrievalMode::default_for(has_text, c.has_lexical()),
            Into::into,
        );
        Ok((mode, self.fusion.fusion()?))
    }

    /// The cross-encoder of --reranker, loaded on the engine `engine` chooses, with the
    /// candidate count.
    fn reranker(&self, engine: &EngineArgs) -> Result<Option<(std::sync::Arc<Reranker>, usize)>> {
        let Some(dir) = &self.reranker else {
            return Ok(None);
        };
        mirage_index::rerank::check_candidates(self.rerank_candidates)?;
        let r = Reranker::open(dir, &engine.options())
            .map_err(|e| anyhow::anyhow!("loading reranker {}: {e}", dir.display()))?;
        Ok(Some((std::sync::Arc::new(r), self.rerank_candidates)))
    }

    /// Refuses a rerank of a query without text (`has_text` false): the cross-encoder reads the
    /// query text beside each hit's text.
    fn check_rerank_text(has_text: bool) -> Result<()> {
        if !has_text {
            bail!("--reranker reads the query text beside each hit's text: give the text");
        }
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct SearchArgs {
    /// Bundle directory (must be the one the collection was built with).
    #[arg(long, env = "MIRAGE_BUNDLE")]
    bundle: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Query text (it may start with "-": `--text "-5 mm nodule"`).
    #[arg(long, allow_hyphen_values = true, conflicts_with_all = ["image", "vectors", "input"], required_unless_present_any = ["image", "vectors", "input"])]
    text: Option<String>,
    /// Query image (PNG, JPEG, DICOM).
    #[arg(long, conflicts_with_all = ["vectors", "input"])]
    image: Option<PathBuf>,
    /// Queries from a file or standard input, one a line (a text, or JSON `{"text"}` or
    /// `{"image": "path"}`): every hit row carries its query's `line`.
    #[command(flatten)]
    input: crate::input_cmd::InputArgs,
    /// A batch of query vectors (2-D float32/float64 .npy, one row per query): prints one JSON
    /// line per query (`query`, `ids`, `scores`) and a summary line (`queries`, `seconds`,
    /// `qps`) on stderr; the model is not loaded.
    #[arg(long, conflicts_with = "input")]
    vectors: Option<PathBuf>,
    /// Which item vectors to search: text (reports, captions) or image.
    #[arg(long, value_enum, default_value = "text")]
    target: TargetArg,
    /// Number of hits, 1–1000 (ranks end at 1000: a page past it is cut there).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Hits to skip (pagination), 0–999.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Payload filter (JSON).
    #[arg(long)]
    filter: Option<String>,
    /// Drop hits scoring below this cosine.
    #[arg(long)]
    score_threshold: Option<f32>,
    /// HNSW beam width for this query, 1–4096.
    #[arg(long)]
    ef: Option<usize>,
    /// Brute-force search: exact, slower on large collections.
    #[arg(long)]
    exact: bool,
    /// One hit per document: passages of a split text are grouped under their document, ranked
    /// by the best; --k and --offset then count documents.
    #[arg(long, conflicts_with = "vectors")]
    group_by_parent: bool,
    /// With --group-by-parent: passages listed per document, 1–100.
    #[arg(long, default_value_t = 3, requires = "group_by_parent")]
    group_size: usize,
    /// Frame of multi-frame DICOM query images.
    #[arg(long, default_value_t = 0)]
    frame: u32,
    #[command(flatten)]
    retrieval: RetrievalArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

impl SearchArgs {
    /// The search these flags ask for, with `vector` as the query.
    fn request(&self, vector: Vec<f32>, filter: Option<Filter>) -> SearchRequest {
        SearchRequest {
            vector,
            target: self.target.vector_name(),
            limit: self.k,
            offset: self.offset,
            score_threshold: self.score_threshold,
            filter,
            ef: self.ef,
            mode: if self.exact {
                SearchMode::Exact
            } else {
                SearchMode::Auto
            },
            // `--vectors` prints ids and scores only.
            with_content: self.vectors.is_none(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Text,
    Image,
}

impl TargetArg {
    fn vector_name(self) -> VectorName {
        match self {
            TargetArg::Text => VectorName::Text,
            TargetArg::Image => VectorName::Image,
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub(crate) fn run_index(command: IndexCommand) -> Result<()> {
    let rt = runtime()?;
    match command {
        IndexCommand::Build(args) => build(*args, &rt),
        IndexCommand::Info(store) => {
            let c = rt.block_on(Collection::open(&store.spec()?, &store.collection))?;
            let info = rt.block_on(c.info())?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(())
        }
        IndexCommand::Compact(CompactArgs { store, rebuild }) => {
            let spec = store.spec()?;
            if rebuild {
                let StoreSpec::Embedded(root) = &spec else {
                    bail!(
                        "--rebuild applies to embedded collections (Qdrant keeps its own graphs)"
                    );
                };
                let c = mirage_index::EmbeddedCollection::rebuild_graphs(root, &store.collection)?;
                eprintln!(
                    "rebuilt the graphs of {} from its database ({} items, engine {})",
                    store.collection,
                    c.info().items,
                    c.manifest().engine
                );
                return Ok(());
            }
            let c = rt.block_on(Collection::open(&spec, &store.collection))?;
            let before = rt.block_on(c.info())?.tombstones;
            rt.block_on(c.compact())?;
            eprintln!(
                "compacted {}: {before} tombstones removed",
                store.collection
            );
            Ok(())
        }
        IndexCommand::Delete(args) => delete(args, &rt),
        IndexCommand::Snapshot(SnapshotArgs { store, out }) => {
            let spec = store.spec()?;
            let c = rt.block_on(Collection::open(&spec, &store.collection))?;
            let started = std::time::Instant::now();
            let info = rt.block_on(c.snapshot(&spec, out))?;
            eprintln!(
                "wrote {} ({} items, {:.1} MB) in {:.2} s",
                info.path.display(),
                info.manifest.items,
                info.size_bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(())
        }
        IndexCommand::Restore(args) => restore(args, &rt),
    }
}

fn restore(args: RestoreArgs, rt: &tokio::runtime::Runtime) -> Result<()> {
    let spec = args.store.spec()?;
    if let Some(bundle) = &args.bundle {
        // Checked before anything is written: the manifest alone says which model it holds.
        let (wanted, _) = bundle_ref(&mirage_model::bundle::Bundle::open(bundle)?);
        let held = mirage_index::snapshot::describe(&args.archive)?;
        held.model
            .ensure_matches(&held.collection, &wanted)
            .context("the archive holds another model's vectors")?;
    }
    let started = std::time::Instant::now();
    let c = rt.block_on(mirage_index::restore(
        &spec,
        args.archive.clone(),
        args.as_name.clone(),
    ))?;
    let info = rt.block_on(c.info())?;
    eprintln!(
        "restored {} as {} ({} items) in {:.2} s",
        args.archive.display(),
        info.name,
        info.items,
        started.elapsed().as_secs_f64()
    );
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

fn build(args: BuildArgs, rt: &tokio::runtime::Runtime) -> Result<()> {
    if args.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    let spec = args.store.spec()?;
    let format = match args.format {
        FormatArg::Pmcoa => CorpusFormat::PmcOa,
        FormatArg::Roco => CorpusFormat::Roco,
        FormatArg::Mimic => CorpusFormat::Mimic,
        FormatArg::Jsonl => CorpusFormat::Jsonl,
        FormatArg::Npy => return import_vectors(args, rt),
    };
    let Some(corpus) = args.corpus.clone() else {
        bail!("--corpus is required for --format other than npy");
    };
    if args.vectors.is_some() {
        bail!("--vectors goes with --format npy");
    }
    let model = args.engine.load(&args.bundle)?;
    let chunking = args.chunking.options(&model)?;
    let options = CorpusOptions {
        format,
        image_root: args.image_root.clone(),
        id_column: args.id_column.clone(),
        text_column: args.text_column.clone(),
    };
    let records = read_corpus(&corpus, &options)?;
    let collection = open_for_build(&args, &spec, model.dim(), model_ref(&model), rt)?;
    let progress = match args.progress {
        ProgressArg::Bar => ProgressMode::Bar,
        ProgressArg::Jsonl => ProgressMode::Jsonl,
        ProgressArg::Quiet => ProgressMode::Quiet,
    };
    let pipeline = PipelineOptions {
        batch_size: args.batch_size.unwrap_or(EMBED_BATCH),
        decode_threads: args
            .decode_threads
            .unwrap_or(PipelineOptions::default().decode_threads),
        strict: args.strict,
        decode: DecodeOptions { frame: args.frame },
        progress,
        expected_records: estimate_records(&corpus),
        flush_every: args.flush_every.max(1),
        chunking,
    };
    let summary = index_records(&model, &collection, rt.handle(), records, &pipeline)?;
    let info = rt.block_on(collection.info())?;
    let passages = if chunking.is_some() {
        format!(" as {} items", summary.items_written)
    } else {
        String::new()
    };
    if summary.truncated > 0 {
        eprintln!(
            "warning: {} texts were longer than the model's {} tokens and were embedded only up to them (listed in the summary's truncated_items); --chunk tokens or --chunk sections splits them into passages instead",
            summary.truncated,
            model.tokenizer().max_length()
        );
    }
    eprintln!(
        "indexed {} new records{passages} into {} ({} already present, {} bad rows, {} failed) in {:.1} s, {:.1} items/s; collection now holds {} items",
        summary.indexed,
        args.store.collection,
        summary.already_present,
        summary.bad_rows.len(),
        summary.failed.len(),
        summary.seconds,
        summary.items_per_second,
        info.items
    );
    let mut out = serde_json::to_value(&summary)?;
    if let Some(o) = out.as_object_mut() {
        o.insert("event".into(), json!("summary"));
        o.insert("collection".into(), json!(args.store.collection));
        o.insert("items".into(), json!(info.items));
    }
    println!("{out}");
    Ok(())
}

/// Creates or opens the collection a build writes into, after the settings and the one-name-one-
/// collection rule across `--check-store` are checked.
fn open_for_build(
    args: &BuildArgs,
    spec: &StoreSpec,
    dim: usize,
    model: mirage_index::ModelRef,
    rt: &tokio::runtime::Runtime,
) -> Result<Collection> {
    let config = CollectionConfig {
        dim,
        model,
        hnsw: HnswParams {
            m: args.m,
            ef_construction: args.ef_construction,
            ef_search: args.ef_search,
            exact_threshold: args.exact_threshold,
            quantization: args.quantization,
        },
        shard_number: args.shards,
        replication_factor: args.replicas,
    };
    config.validate().map_err(|e| {
        anyhow::anyhow!("{e} (set by --m, --ef-construction, --ef-search, --exact-threshold, --shards, --replicas)")
    })?;
    let mut stores = vec![spec.clone()];
    for other in &args.check_stores {
        let other = args.store.parse(other)?;
        if !stores.contains(&other) {
            stores.push(other);
        }
    }
    let name = &args.store.collection;
    Ok(rt.block_on(create_unique(&stores, spec, name, &config))?)
}

/// `mirage index build --format npy`: upserts precomputed vectors in batches, without loading
/// the model (the bundle names the collection's model and dimension).
/// Items per embedding batch of a corpus build.
const EMBED_BATCH: usize = 32;
/// Items per write of a vector import: nothing waits on an encoder, so each SQLite transaction
/// (one fsync) and each graph insert (linked on every core) takes many.
const IMPORT_BATCH: usize = 4096;

fn import_vectors(args: BuildArgs, rt: &tokio::runtime::Runtime) -> Result<()> {
    let Some(path) = args.vectors.clone() else {
        bail!("--format npy needs --vectors FILE.npy");
    };
    let spec = args.store.spec()?;
    let (model, dim) = bundle_ref(&mirage_model::bundle::Bundle::open(&args.bundle)?);
    let vectors = mirage_index::npy::read_matrix(&path)?;
    if vectors.cols != dim {
        bail!(
            "{}: {} columns, but the bundle's model embeds in {dim} dimensions",
            path.display(),
            vectors.cols
        );
    }
    let ids = args
        .ids
        .as_deref()
        .map(mirage_index::npy::read_ids)
        .transpose()?;
    let payloads = args
        .payload
        .as_deref()
        .map(mirage_index::npy::read_payloads)
        .transpose()?;
    let target = args.target.vector_name();
    let items = mirage_index::npy::vector_items(&vectors, ids, payloads, target)?;
    let collection = open_for_build(&args, &spec, dim, model, rt)?;
    let started = std::time::Instant::now();
    let total = items.len();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let batch: Vec<_> = items
            .by_ref()
            .take(args.batch_size.unwrap_or(IMPORT_BATCH))
            .collect();
        rt.block_on(collection.upsert(batch))?;
    }
    rt.block_on(collection.flush())?;
    let seconds = started.elapsed().as_secs_f64();
    let info = rt.block_on(collection.info())?;
    eprintln!(
        "imported {total} {target} vectors into {} in {seconds:.1} s; collection now holds {} items",
        args.store.collection, info.items
    );
    println!(
        "{}",
        json!({"event": "summary", "collection": args.store.collection, "imported": total,
               "seconds": seconds, "items": info.items})
    );
    Ok(())
}

fn delete(args: DeleteArgs, rt: &tokio::runtime::Runtime) -> Result<()> {
    let spec = args.store.spec()?;
    let name = &args.store.collection;
    if args.all {
        rt.block_on(drop_collection(&spec, name))?;
        eprintln!("deleted collection {name}");
        return Ok(());
    }
    let c = rt.block_on(Collection::open(&spec, name))?;
    let deleted = match (&args.filter, args.ids.is_empty()) {
        (Some(f), _) => rt.block_on(c.delete_by_filter(Filter::from_json(f)?))?,
        (None, false) => rt.block_on(c.delete(args.ids.clone()))?,
        (None, true) => bail!("say what to delete: --id ID…, --filter JSON or --all"),
    };
    rt.block_on(c.flush())?;
    println!("{}", json!({"deleted": deleted, "collection": name}));
    Ok(())
}

pub(crate) fn search(args: SearchArgs) -> Result<()> {
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    let rt = runtime()?;
    let c = rt.block_on(Collection::open(
        &args.store.spec()?,
        &args.store.collection,
    ))?;
    if let Some(path) = &args.vectors {
        return search_vectors(&args, path, &c, &rt);
    }
    let filter = args.filter.as_deref().map(Filter::from_json).transpose()?;
    // Lexical search embeds nothing: the bundle is only checked against the collection.
    let lexical_only = match &args.input.input {
        None => args.retrieval.resolve(args.text.is_some(), &c)?.0 == RetrievalMode::Lexical,
        Some(_) => args.retrieval.mode.map(RetrievalMode::from) == Some(RetrievalMode::Lexical),
    };
    let (model, model_id) = if lexical_only {
        let (model, _) = bundle_ref(&mirage_model::bundle::Bundle::open(&args.bundle)?);
        c.check_model(&model)?;
        (None, model.model_id)
    } else {
        let model = args.engine.load(&args.bundle)?;
        c.check_model(&model_ref(&model))?;
        let id = model.model_id().to_owned();
        (Some(model), id)
    };
    let reranker = args.retrieval.reranker(&args.engine)?;
    // One query's result rows: hits, or documents with their passages.
    let run = |text: Option<&str>, image: Option<&Path>| -> Result<Vec<serde_json::Value>> {
        let (mode, fusion) = args.retrieval.resolve(text.is_some(), &c)?;
        let mut vectors = Vec::new();
        if mode != RetrievalMode::Lexical {
            let model = model
                .as_ref()
                .context("--mode lexical matches words only: give a text")?;
            vectors.push(match (text, image) {
                (Some(t), _) => model.embed_queries(&[t])?.remove(0),
                (None, Some(p)) => {
                    let img = load_image(p, DecodeOptions { frame: args.frame })?;
                    model.embed_images(&[img])?.remove(0)
                }
                (None, None) => bail!("give --text or --image"),
            });
        }
        let base = args.request(Vec::new(), filter.clone());
        let mut query = hybrid::Query::new(
            vectors,
            text.map(str::to_owned),
            base.target,
            mode,
            base.limit,
        );
        query.fusion = fusion;
        query.offset = base.offset;
        query.filter = base.filter;
        query.score_threshold = base.score_threshold;
        query.ef = base.ef;
        query.search_mode = base.mode;
        let reranked = match &reranker {
            Some((r, candidates)) => {
                RetrievalArgs::check_rerank_text(text.is_some())?;
                Some(rt.block_on(mirage_index::rerank::search_reranked(
                    &c,
                    &query,
                    r.clone(),
                    *candidates,
                ))?)
            }
            None => None,
        };
        if args.group_by_parent {
            let groups = match reranked {
                Some(hits) => passages::group(hits, args.group_size)
                    .into_iter()
                    .skip(args.offset)
                    .take(args.k)
                    .collect(),
                None => rt.block_on(hybrid::search_groups(&c, &query, args.group_size))?,
            };
            return Ok(groups
                .into_iter()
                .enumerate()
                .map(|(rank, g)| {
                    let best = &g.hits[0];
                    let passages: Vec<serde_json::Value> = g
                        .hits
                        .iter()
                        .map(|h| {
                            json!({
                                "id": h.id,
                                "score": h.score,
                                "passage": PassageInfo::of(&h.payload),
                                "text": h.text,
                            })
                        })
                        .collect();
                    json!({
                        "rank": rank + 1 + args.offset,
                        "parent": g.parent,
                        "id": best.id,
                        "score": best.score,
                        "legs": best.legs,
                        "image": best.image,
                        "payload": best.payload,
                        "passages": passages,
                        "collection": args.store.collection,
                        "model_id": model_id,
                        "mode": mode,
                    })
                })
                .collect());
        }
        let hits = match reranked {
            Some(hits) => hits.into_iter().skip(args.offset).take(args.k).collect(),
            None => rt.block_on(hybrid::search(&c, &query))?,
        };
        Ok(hits
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                json!({
                    "rank": rank + 1 + args.offset,
                    "id": h.id,
                    "score": h.score,
                    "legs": h.legs,
                    "text": h.text,
                    "image": h.image,
                    // As on the HTTP API: a passage's document and span beside its payload.
                    "passage": PassageInfo::of(&h.payload),
                    "payload": h.payload,
                    "collection": args.store.collection,
                    "model_id": model_id,
                    "mode": mode,
                })
            })
            .collect())
    };
    let Some(spec) = &args.input.input else {
        let mut out = std::io::stdout().lock();
        for row in run(args.text.as_deref(), args.image.as_deref())? {
            writeln!(out, "{row}")?;
        }
        return Ok(());
    };
    // One query a line; its hits carry the line's number.
    crate::input_cmd::for_each_line(spec, args.input.input_format, |line| {
        if line.text.is_some() && line.image.is_some() {
            bail!("give \"text\" or \"image\", not both");
        }
        run(line.text.as_deref(), line.image.as_deref())
    })
}

/// Queries of `mirage search --vectors` per task on the store's blocking pool.
const QUERY_CHUNK: usize = 256;

/// `mirage search --vectors`: one query per row, one at a time (as a client would send them),
/// handed to the store in chunks.
fn search_vectors(
    args: &SearchArgs,
    path: &std::path::Path,
    c: &Collection,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let (model, dim) = bundle_ref(&mirage_model::bundle::Bundle::open(&args.bundle)?);
    c.check_model(&model)?;
    let queries = mirage_index::npy::read_matrix(path)?;
    if queries.cols != dim {
        bail!(
            "{}: {} columns, but the collection holds {dim}-dimensional vectors",
            path.display(),
            queries.cols
        );
    }
    let filter = args.filter.as_deref().map(Filter::from_json).transpose()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let started = std::time::Instant::now();
    #[derive(serde::Serialize)]
    struct Row<'a> {
        query: usize,
        ids: Vec<&'a str>,
        scores: Vec<f32>,
    }
    let rows: Vec<&[f32]> = queries.iter_rows().collect();
    for (chunk, group) in rows.chunks(QUERY_CHUNK).enumerate() {
        let first = chunk * QUERY_CHUNK;
        let reqs = group
            .iter()
            .map(|q| args.request(q.to_vec(), filter.clone()))
            .collect();
        let answers = rt.block_on(c.search_many(reqs))?;
        for (i, hits) in answers.into_iter().enumerate() {
            let query = first + i;
            let hits = hits.map_err(|e| {
                anyhow::anyhow!("query {query} (row {query} of {}): {e}", path.display())
            })?;
            let row = Row {
                query,
                ids: hits.iter().map(|h| h.id.as_str()).collect(),
                scores: hits.iter().map(|h| h.score).collect(),
            };
            serde_json::to_writer(&mut out, &row)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{}",
        json!({"queries": queries.rows, "seconds": seconds,
               "qps": queries.rows as f64 / seconds.max(1e-9)})
    );
    Ok(())
}

#[derive(Args)]
pub(crate) struct RagArgs {
    /// Bundle directory (must be the one the collection was built with).
    #[arg(long, env = "MIRAGE_BUNDLE")]
    bundle: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// A question (embedded as text; it may start with "-").
    #[arg(long, allow_hyphen_values = true, conflicts_with = "input", required_unless_present_any = ["image", "input"])]
    question: Option<String>,
    /// An image (PNG, JPEG, DICOM; embedded as image); with a question, the two result lists
    /// are merged.
    #[arg(long, conflicts_with = "input")]
    image: Option<PathBuf>,
    /// Questions from a file or standard input, one a line (a question, or JSON with `text`
    /// and/or `image`): one compact JSON context a line, with the line's number (`line`).
    #[command(flatten)]
    input: crate::input_cmd::InputArgs,
    /// Which item vectors to search: text (reports, captions) or image.
    #[arg(long, value_enum, default_value = "text")]
    target: TargetArg,
    /// Passages to cite at most, 1–100.
    #[arg(long, default_value_t = RagOptions::default().k)]
    k: usize,
    /// Payload filter (JSON).
    #[arg(long)]
    filter: Option<String>,
    /// Abstain when the best dense cosine is below this, and drop passages whose cosine is
    /// below it (the server's default bound); lexical mode has no cosine.
    #[arg(long, default_value_t = RagOptions::default().min_score, allow_hyphen_values = true)]
    min_score: f32,
    /// Adaptive k: drop passages scoring below this fraction of the best score, 0–1.
    #[arg(long)]
    relative_score: Option<f32>,
    /// Adaptive k: stop at the first drop between consecutive scores larger than this fraction
    /// of the best score, 0–1.
    #[arg(long)]
    max_score_gap: Option<f32>,
    /// Character budget of the context, 100–1,000,000.
    #[arg(long, default_value_t = RagOptions::default().max_chars)]
    max_chars: usize,
    /// Passages whose word overlap (Jaccard) with a better one is at least this are dropped.
    #[arg(long, default_value_t = RagOptions::default().dedup_threshold)]
    dedup_threshold: f32,
    /// Frame of a multi-frame DICOM image.
    #[arg(long, default_value_t = 0)]
    frame: u32,
    #[command(flatten)]
    retrieval: RetrievalArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// `mirage rag`: the context `POST /v1/rag/context` would return, as one JSON object.
pub(crate) fn rag(args: RagArgs) -> Result<()> {
    let options = RagOptions {
        k: args.k,
        max_chars: args.max_chars,
        dedup_threshold: args.dedup_threshold,
        min_score: args.min_score,
        relative_score: args.relative_score,
        max_score_gap: args.max_score_gap,
    };
    options.validate()?;
    let filter = args.filter.as_deref().map(Filter::from_json).transpose()?;
    let rt = runtime()?;
    let c = rt.block_on(Collection::open(
        &args.store.spec()?,
        &args.store.collection,
    ))?;
    let model = args.engine.load(&args.bundle)?;
    let served = model_ref(&model);
    c.check_model(&served)?;
    let reranker = args.retrieval.reranker(&args.engine)?;
    let name = &args.store.collection;
    // One question's context: the HTTP response type, as `POST /v1/rag/context` returns it.
    let run = |question: Option<&str>, image: Option<&Path>| -> Result<serde_json::Value> {
        if question.is_some_and(|q| q.trim().is_empty()) {
            bail!("--question is empty");
        }
        let (mode, fusion) = args.retrieval.resolve(question.is_some(), &c)?;
        if mode == RetrievalMode::Lexical && image.is_some() {
            bail!(
                "--mode lexical matches the question's words only: drop --image, or use --mode hybrid"
            );
        }
        let mut queries = Vec::new();
        if mode != RetrievalMode::Lexical {
            if let Some(q) = question {
                queries.push(model.embed_queries(&[q])?.remove(0));
            }
            if let Some(p) = image {
                let img = load_image(p, DecodeOptions { frame: args.frame })?;
                queries.push(model.embed_images(&[img])?.remove(0));
            }
        }
        let mut query = hybrid::Query::new(
            queries,
            question.map(str::to_owned),
            args.target.vector_name(),
            mode,
            options.k,
        );
        query.fusion = fusion;
        query.filter = filter.clone();
        if reranker.is_some() {
            RetrievalArgs::check_rerank_text(question.is_some())?;
        }
        let r = rt.block_on(rag::rag_context(
            &c,
            name,
            query,
            &options,
            reranker.clone(),
        ))?;
        let served = served.clone();
        let response = mirage_server::routes::search::rag_response(name, &c, served, mode, r);
        Ok(serde_json::to_value(response)?)
    };
    let Some(spec) = &args.input.input else {
        let out = run(args.question.as_deref(), args.image.as_deref())?;
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    };
    // One context a line (a question, or JSON with "text" and/or "image"), one JSON line each.
    crate::input_cmd::for_each_line(spec, args.input.input_format, |line| {
        Ok(vec![run(line.text.as_deref(), line.image.as_deref())?])
    })
}
