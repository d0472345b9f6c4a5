//! `mirage`: the command line of MIRAGE-RS: model bundles (import, info), embedding and
//! zero-shot classification, indexing corpora into collections and searching them.

mod audit_cmd;
mod data_cmd;
mod eval_cmd;
mod index_cmd;
mod input_cmd;
mod retrieval_cmd;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use mirage_model::config::{ResNetConfig, TextPooling, VisionPooling, VisionTower, VitConfig};
use mirage_model::image_input::{load_image, DecodeOptions};
use mirage_model::import::{import_hf, ImportOptions};
use mirage_model::zeroshot::{classify, ClassifyMode};
use mirage_model::Bundle;
use mirage_server::config::EngineArgs;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "mirage",
    version,
    about = "Noise-robust medical image–text retrieval: embed, classify, index, serve"
)]
struct Cli {
    /// Log filter (RUST_LOG syntax) [default: `serve` logs lifecycle events at info (ONNX Runtime's
    /// session-building chatter at warn); the other commands log warnings only].
    #[arg(long, env = "MIRAGE_LOG", global = true)]
    log: Option<String>,
    /// TrueType font for the PNG plots of `eval` and `study-report` (default: DejaVu Sans or
    /// Liberation Sans from the system).
    #[arg(long, env = "MIRAGE_PLOT_FONT", global = true)]
    plot_font: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Model bundles: import outside weights, inspect.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Print joint embeddings of texts or images, one JSON object per input.
    Embed(EmbedArgs),
    /// Zero-shot classification of an image against labels.
    Classify(ClassifyArgs),
    /// Collections: build from a corpus, inspect, compact, delete.
    #[command(subcommand)]
    Index(index_cmd::IndexCommand),
    /// Search a collection by text or image; prints one JSON object per hit.
    Search(Box<index_cmd::SearchArgs>),
    /// Build an MLLM-ready context from a collection (what `POST /v1/rag/context` returns).
    Rag(Box<index_cmd::RagArgs>),
    /// Score every (image, caption) pair of a pair file with the matching score s (what
    /// `POST /v1/audit` computes); one JSON line per pair.
    Audit(Box<audit_cmd::AuditArgs>),
    /// Build the offline demo and benchmark corpora.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Measure a bundle on a labelled image–caption dataset (retrieval, zero-shot, kNN,
    /// noise detection, calibration) through the serving code; JSON report and PNG plots.
    Eval(eval_cmd::EvalArgs),
    /// Retrieval quality on a BEIR benchmark (corpus.jsonl, queries.jsonl, qrels/test.tsv):
    /// indexes the corpus (or uses the collection), runs every mode (dense, lexical, hybrid) and
    /// reports nDCG@k, Recall@depth and MRR@k with paired bootstrap intervals between modes,
    /// per query group, as Markdown and results.json, with a recall-at-rank plot.
    EvalRetrieval(Box<retrieval_cmd::EvalRetrievalArgs>),
    /// Fit the zero-shot temperature on a held-out split (minimum NLL over the dataset's
    /// single-label tasks) and write a calibrated copy of the bundle; prints NLL and ECE before
    /// and after.
    Calibrate(Box<eval_cmd::CalibrateArgs>),
    /// Tabulate and plot a noise-robustness study (scripts/noise-study.sh) from its runs' reports.
    StudyReport(eval_cmd::StudyReportArgs),
    /// Serve the HTTP API.
    Serve(Box<mirage_server::config::Settings>),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Exit 0 when GET URL answers 200 (the container healthcheck; the image has no curl).
    Probe {
        /// e.g. http://127.0.0.1:8080/ready
        url: String,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Build a bundle from a CLIP-family checkpoint directory, its layout recognised from its
    /// files: a Hugging Face CLIPModel (config.json with model_type "clip"; model.safetensors,
    /// sharded safetensors or pytorch_model.bin; tokenizer.json; preprocessor_config.json), or an
    /// open_clip checkpoint (open_clip_config.json with open_clip_model.safetensors or
    /// open_clip_pytorch_model.bin): OpenAI/LAION CLIP ViTs, and timm ViT + Hugging Face BERT
    /// models such as BiomedCLIP; or PMC-CLIP's released checkpoint.pt (with --tokenizer and
    /// --text-config, PubMedBERT's tokenizer.json and config.json, unless they sit beside it).
    /// Every tensor is mapped or refused by name.
    Import {
        /// The checkpoint directory.
        #[arg(long)]
        from: PathBuf,
        /// tokenizer.json to use (default: the directory's own).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// CLIP's bpe_simple_vocab_16e6.txt.gz (in the open_clip_torch wheel): builds the
        /// tokenizer of a CLIP text tower when the directory has no tokenizer.json.
        #[arg(long)]
        bpe_vocab: Option<PathBuf>,
        /// config.json of the Hugging Face text model of an open_clip checkpoint (BiomedCLIP
        /// names a hub model) or of PMC-CLIP (PubMedBERT); default: inferred from the weights,
        /// with 64-wide attention heads.
        #[arg(long)]
        text_config: Option<PathBuf>,
        /// Bundle directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Model id (default: the output directory's name).
        #[arg(long)]
        model_id: Option<String>,
        /// Skip writing the ONNX graphs (the ort engine then builds them at load).
        #[arg(long)]
        no_onnx: bool,
    },
    /// Build a bundle from a Hugging Face BERT directory (and optional torchvision vision weights).
    ImportHf(ImportArgs),
    /// Import a Hugging Face BERT cross-encoder (BertForSequenceClassification: the ms-marco
    /// MiniLM cross-encoders, MedCPT-Cross-Encoder) as a reranker directory for
    /// `mirage serve --reranker` and `--reranker` of search, rag and eval-retrieval.
    ImportReranker {
        /// Hugging Face directory with config.json, model.safetensors and tokenizer.json.
        #[arg(long)]
        hf: PathBuf,
        /// Reranker directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Model id (default: the source directory's name).
        #[arg(long)]
        model_id: Option<String>,
        /// Tokens of a query–document pair read at most, 3 to the position table's size
        /// (default: tokenizer_config.json's model_max_length, else the position table).
        #[arg(long)]
        max_length: Option<usize>,
    },
    /// Validate a bundle and print its configuration.
    Info {
        /// Bundle directory.
        #[arg(long, env = "MIRAGE_BUNDLE")]
        bundle: PathBuf,
    },
    /// Write ONNX graphs of both towers (text.onnx, vision.onnx) into a bundle, built from its
    /// own weights, and record them with their sha256 in bundle.json. The model's identity (what
    /// collections record) does not change. Bundles without graphs still run on ONNX Runtime
    /// (graphs are built at load).
    ExportOnnx {
        /// Bundle directory.
        #[arg(long, env = "MIRAGE_BUNDLE")]
        bundle: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum VisionArch {
    Resnet18,
    Resnet34,
    Resnet50,
    Resnet101,
    VitB16,
}

#[derive(Clone, Copy, ValueEnum)]
enum PoolArg {
    Attention,
    Mean,
}

#[derive(Args)]
struct ImportArgs {
    /// Hugging Face directory with config.json, model.safetensors and tokenizer.json.
    #[arg(long)]
    text: PathBuf,
    /// A second BERT directory whose encoder embeds search queries, beside --text's documents
    /// (MedCPT: --text MedCPT-Article-Encoder --query-text MedCPT-Query-Encoder --cls-pooling);
    /// it must share --text's tokenizer.
    #[arg(long)]
    query_text: Option<PathBuf>,
    /// Token limit of queries, 1 to the query model's position table (default: the query
    /// directory's sentence_bert_config.json, else its position table).
    #[arg(long)]
    query_max_length: Option<usize>,
    /// torchvision-named vision weights (safetensors); the vision tower is seeded-random without.
    #[arg(long)]
    vision: Option<PathBuf>,
    /// Vision tower architecture.
    #[arg(long, value_enum, default_value = "resnet50")]
    vision_arch: VisionArch,
    /// Pooling on top of a ResNet trunk.
    #[arg(long, value_enum, default_value = "attention")]
    vision_pool: PoolArg,
    /// Input side length of the vision tower.
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Joint embedding size (default: the text hidden size, with an identity text projection).
    #[arg(long)]
    embed_dim: Option<usize>,
    /// Use the `[CLS]` token instead of mean pooling for text.
    #[arg(long)]
    cls_pooling: bool,
    /// Token limit (default: sentence_bert_config.json's max_seq_length, else the position table).
    #[arg(long)]
    max_length: Option<usize>,
    /// Seed for every tensor that is initialised rather than imported.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Model id recorded in the bundle (default: the output directory's name).
    #[arg(long)]
    model_id: Option<String>,
    /// Output bundle directory.
    #[arg(long)]
    out: PathBuf,
    /// Do not write ONNX graphs into the bundle (they are then built at each load).
    #[arg(long)]
    no_onnx: bool,
}

impl EmbedArgs {
    fn role(&self) -> mirage_model::TextRole {
        if self.query {
            mirage_model::TextRole::Query
        } else {
            mirage_model::TextRole::Document
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// One JSON object per line.
    Jsonl,
    /// One JSON array.
    Json,
}

#[derive(Args)]
struct EmbedArgs {
    /// Bundle directory.
    #[arg(long, env = "MIRAGE_BUNDLE")]
    bundle: PathBuf,
    /// Texts to embed.
    #[arg(
        long,
        num_args = 1..,
        conflicts_with_all = ["image", "input"],
        required_unless_present_any = ["image", "input", "after_dashes"]
    )]
    text: Vec<String>,
    /// Image files to embed (PNG, JPEG, DICOM).
    #[arg(long, num_args = 1.., conflicts_with = "input")]
    image: Vec<PathBuf>,
    /// Texts after `--`, taken as they are even when they start with "-"
    /// (`mirage embed --bundle B -- "-5 mm nodule"`).
    #[arg(last = true, value_name = "TEXT", conflicts_with_all = ["image", "input"])]
    after_dashes: Vec<String>,
    #[command(flatten)]
    input: input_cmd::InputArgs,
    /// Frame of multi-frame DICOM files.
    #[arg(long, default_value_t = 0)]
    frame: u32,
    /// Embed texts as search queries: a bundle with a query tower (MedCPT-style) then uses it.
    #[arg(long)]
    query: bool,
    /// Items per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: OutputFormat,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct ClassifyArgs {
    /// Bundle directory.
    #[arg(long, env = "MIRAGE_BUNDLE")]
    bundle: PathBuf,
    /// Image file (PNG, JPEG, DICOM).
    #[arg(long, conflicts_with = "input", required_unless_present = "input")]
    image: Option<PathBuf>,
    /// Images from a file or standard input: a line is an image path, or JSON `{"image": …}`.
    #[command(flatten)]
    input: input_cmd::InputArgs,
    /// Candidate labels.
    #[arg(long = "label", num_args = 1.., required = true)]
    labels: Vec<String>,
    /// Prompt templates with `{}` for the label (default: the bundle's, else the built-in set).
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Negation templates for --multi-label.
    #[arg(long = "negative-template")]
    negative_templates: Vec<String>,
    /// Score each label independently against its negation.
    #[arg(long)]
    multi_label: bool,
    /// Divide logits by this (default: the bundle's calibration, else 1).
    #[arg(long)]
    temperature: Option<f32>,
    /// Frame of multi-frame DICOM files.
    #[arg(long, default_value_t = 0)]
    frame: u32,
    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> std::process::ExitCode {
    let result = parse_cli().and_then(|cli| {
        if let Some(font) = &cli.plot_font {
            mirage_eval::plot::prefer_font(font);
        }
        match cli.command {
            Command::Serve(settings) => {
                serve(*settings, cli.log.as_deref().unwrap_or("info,ort=warn"))
            }
            command => {
                // Only the server exports traces; the commands log to stderr.
                let filter = cli.log.as_deref().unwrap_or("warn");
                mirage_server::telemetry::init(filter, Default::default(), None)?.shutdown();
                run(command)
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The command line; for `serve --config FILE`, parsed again with the file's settings under the
/// variables and flags.
fn parse_cli() -> Result<Cli> {
    let cli = Cli::parse();
    let Command::Serve(settings) = &cli.command else {
        return Ok(cli);
    };
    let Some(file) = &settings.config else {
        return Ok(cli);
    };
    let layer = mirage_server::config::FileLayer::read(file)?;
    let matches = Cli::command()
        .mut_subcommand("serve", |serve| layer.apply(serve))
        .get_matches();
    Ok(Cli::from_arg_matches(&matches)?)
}

fn serve(settings: mirage_server::config::Settings, filter: &str) -> Result<()> {
    let settings = settings.finish()?;
    let telemetry = mirage_server::telemetry::init(
        filter,
        settings.log_format,
        settings.otlp_endpoint.as_deref(),
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    let served = runtime.block_on(mirage_server::serve::run(settings, |addr| {
        // Scripts and tests read the bound address from this line.
        println!("listening on http://{addr}");
    }));
    drop(runtime);
    // After the runtime: the exporter's client blocks while it sends the last spans.
    telemetry.shutdown();
    served
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(_) => unreachable!("handled in main"),
        Command::Probe { url } => probe(&url),
        Command::Data(cmd) => data_cmd::run_data(cmd),
        Command::Eval(args) => eval_cmd::run_eval(args),
        Command::EvalRetrieval(args) => retrieval_cmd::run(*args),
        Command::Calibrate(args) => eval_cmd::run_calibrate(*args),
        Command::StudyReport(args) => eval_cmd::run_study_report(args),
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&mirage_server::app::openapi())?
            );
            Ok(())
        }
        Command::Model(ModelCommand::ImportHf(args)) => import(args),
        Command::Model(ModelCommand::Import {
            from,
            tokenizer,
            bpe_vocab,
            text_config,
            out,
            model_id,
            no_onnx,
        }) => {
            let model_id = match model_id {
                Some(id) => id,
                None => out
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .context("--out has no directory name; pass --model-id")?,
            };
            let opts = mirage_model::import_clip::ClipImportOptions {
                dir: from,
                model_id,
                tokenizer,
                bpe_vocab,
                text_config,
            };
            import_checkpoint(&opts, &out, no_onnx)
        }
        Command::Model(ModelCommand::ImportReranker {
            hf,
            out,
            model_id,
            max_length,
        }) => {
            let c = mirage_model::reranker::import_cross_encoder(&hf, &out, model_id, max_length)
                .with_context(|| format!("importing cross-encoder {}", hf.display()))?;
            eprintln!(
                "wrote reranker {} ({}; {} layers × {}, {} label(s), {} tokens)",
                out.display(),
                c.model_id,
                c.bert.num_hidden_layers,
                c.bert.hidden_size,
                c.num_labels,
                c.max_length
            );
            Ok(())
        }
        Command::Model(ModelCommand::Info { bundle }) => {
            let b = Bundle::open(&bundle)
                .with_context(|| format!("opening bundle {}", bundle.display()))?;
            let out = json!({"dir": bundle, "bundle_sha256": b.sha256(), "config": b.config()});
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Model(ModelCommand::ExportOnnx { bundle }) => {
            let b = mirage_model::add_onnx(&bundle)
                .with_context(|| format!("writing ONNX graphs into {}", bundle.display()))?;
            let onnx = b.config().onnx.as_ref().expect("graphs were just written");
            eprintln!(
                "wrote {} and {} (opset {}) into {}; model identity {} unchanged",
                onnx.text.file,
                onnx.vision.file,
                onnx.opset,
                bundle.display(),
                b.sha256()
            );
            Ok(())
        }
        Command::Embed(args) => embed(args),
        Command::Classify(args) => classify_cmd(args),
        Command::Index(cmd) => index_cmd::run_index(cmd),
        Command::Search(args) => index_cmd::search(*args),
        Command::Rag(args) => index_cmd::rag(*args),
        Command::Audit(args) => audit_cmd::audit(*args),
    }
}

fn import_checkpoint(
    opts: &mirage_model::import_clip::ClipImportOptions,
    out: &std::path::Path,
    no_onnx: bool,
) -> Result<()> {
    let mut bundle = mirage_model::import_clip::import(opts, out)
        .with_context(|| format!("importing {}", opts.dir.display()))?;
    if !no_onnx {
        bundle = mirage_model::add_onnx(out).context("writing the ONNX graphs")?;
    }
    let c = bundle.config();
    eprintln!(
        "wrote bundle {} ({}; {}; text {}, vision {}, embed dim {}, logit scale {:.2})",
        out.display(),
        c.model_id,
        c.provenance["layout"].as_str().unwrap_or("?"),
        c.architecture.text.describe(),
        c.architecture.vision.describe(),
        c.architecture.embed_dim,
        c.logit_scale
    );
    Ok(())
}

fn import(args: ImportArgs) -> Result<()> {
    let pooling = match args.vision_pool {
        PoolArg::Attention => VisionPooling::Attention,
        PoolArg::Mean => VisionPooling::Mean,
    };
    let vision = match args.vision_arch {
        VisionArch::VitB16 => VisionTower::Vit(VitConfig {
            image_size: args.image_size,
            ..VitConfig::b16()
        }),
        arch => {
            let depth = match arch {
                VisionArch::Resnet18 => 18,
                VisionArch::Resnet34 => 34,
                VisionArch::Resnet50 => 50,
                _ => 101,
            };
            VisionTower::Resnet(ResNetConfig {
                image_size: args.image_size,
                ..ResNetConfig::standard(depth, pooling)?
            })
        }
    };
    let model_id = match args.model_id {
        Some(id) => id,
        None => args
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("--out has no directory name; pass --model-id")?,
    };
    let opts = ImportOptions {
        text_dir: args.text,
        vision_weights: args.vision,
        vision,
        embed_dim: args.embed_dim,
        pooling: if args.cls_pooling {
            TextPooling::Cls
        } else {
            TextPooling::Mean
        },
        max_length: args.max_length,
        query_text_dir: args.query_text,
        query_max_length: args.query_max_length,
        seed: args.seed,
        model_id,
    };
    let mut bundle = import_hf(&opts, &args.out).context("importing")?;
    if !args.no_onnx {
        bundle = mirage_model::add_onnx(&args.out).context("writing the ONNX graphs")?;
    }
    let c = bundle.config();
    eprintln!(
        "wrote bundle {} ({}; text {}, vision {}, embed dim {})",
        args.out.display(),
        c.model_id,
        c.architecture.text.describe(),
        c.architecture.vision.describe(),
        c.architecture.embed_dim
    );
    Ok(())
}

fn embed(args: EmbedArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let model = args.engine.load(&args.bundle)?;
    if let Some(spec) = &args.input.input {
        return embed_lines(&model, spec, &args);
    }
    let texts: Vec<String> = args
        .text
        .iter()
        .chain(&args.after_dashes)
        .cloned()
        .collect();
    let mut rows = Vec::new();
    if !texts.is_empty() {
        for chunk in texts.chunks(args.batch_size) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for (t, e) in chunk.iter().zip(model.embed_texts_as(&refs, args.role())?) {
                rows.push(json!({"input": t, "embedding": e}));
            }
        }
    } else {
        let opts = DecodeOptions { frame: args.frame };
        for chunk in args.image.chunks(args.batch_size) {
            let images = chunk
                .iter()
                .map(|p| load_image(p, opts))
                .collect::<Result<Vec<_>, _>>()?;
            for (p, e) in chunk.iter().zip(model.embed_images(&images)?) {
                rows.push(json!({"input": p, "embedding": e}));
            }
        }
    }
    print_rows(&rows, args.format)
}

/// `mirage embed --input`: lines are embedded a batch at a time, each batch written (JSONL) as
/// soon as it is done, in input order.
fn embed_lines(model: &mirage_model::MirageModel, spec: &str, args: &EmbedArgs) -> Result<()> {
    let mut bad = input_cmd::BadLines::default();
    let (mut total, mut batch, mut collected) = (0, Vec::new(), Vec::new());
    let mut emit = |rows: Vec<serde_json::Value>| -> Result<()> {
        match args.format {
            OutputFormat::Jsonl => {
                let mut out = std::io::stdout().lock();
                for r in rows {
                    writeln!(out, "{r}")?;
                }
                out.flush()?;
            }
            OutputFormat::Json => collected.extend(rows),
        }
        Ok(())
    };
    for item in input_cmd::read(spec, args.input.input_format)? {
        total += 1;
        match item? {
            Ok(line) => batch.push(line),
            Err((line, why)) => bad.report(line, why),
        }
        if batch.len() == args.batch_size {
            emit(embed_batch(
                model,
                std::mem::take(&mut batch),
                args,
                &mut bad,
            )?)?;
        }
    }
    if !batch.is_empty() {
        emit(embed_batch(model, batch, args, &mut bad)?)?;
    }
    if args.format == OutputFormat::Json {
        print_rows(&collected, OutputFormat::Json)?;
    }
    bad.finish(total)
}

/// One batch of input lines as output rows (`line`, `input`, `embedding`), in input order; a line
/// whose image does not decode is reported and left out.
fn embed_batch(
    model: &mirage_model::MirageModel,
    batch: Vec<input_cmd::InputLine>,
    args: &EmbedArgs,
    bad: &mut input_cmd::BadLines,
) -> Result<Vec<serde_json::Value>> {
    let frame = args.frame;
    let (mut texts, mut images, mut order) = (Vec::new(), Vec::new(), Vec::new());
    for l in batch {
        match (l.text, l.image) {
            (Some(t), None) => {
                order.push((l.line, json!(t), true, texts.len()));
                texts.push(t);
            }
            (None, Some(p)) => match load_image(&p, DecodeOptions { frame }) {
                Ok(img) => {
                    order.push((l.line, json!(p), false, images.len()));
                    images.push(img);
                }
                Err(e) => bad.report(l.line, format!("{}: {e}", p.display())),
            },
            _ => bad.report(
                l.line,
                "give \"text\" or \"image\", not both: embed makes one vector a line",
            ),
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let text_vectors = if refs.is_empty() {
        Vec::new()
    } else {
        model.embed_texts_as(&refs, args.role())?
    };
    let image_vectors = if images.is_empty() {
        Vec::new()
    } else {
        model.embed_images(&images)?
    };
    Ok(order
        .into_iter()
        .map(|(line, input, is_text, i)| {
            let v = if is_text {
                &text_vectors[i]
            } else {
                &image_vectors[i]
            };
            json!({"line": line, "input": input, "embedding": v})
        })
        .collect())
}

fn print_rows(rows: &[serde_json::Value], format: OutputFormat) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Jsonl => {
            for r in rows {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(rows)?)?,
    }
    Ok(())
}

fn classify_cmd(args: ClassifyArgs) -> Result<()> {
    let model = args.engine.load(&args.bundle)?;
    let given = |t: &[String]| (!t.is_empty()).then(|| t.to_vec());
    let templates = model
        .prompt_templates()
        .with_overrides(given(&args.templates), given(&args.negative_templates));
    let mode = if args.multi_label {
        ClassifyMode::MultiLabel
    } else {
        ClassifyMode::SingleLabel
    };
    let one = |path: &std::path::Path| -> Result<serde_json::Value> {
        let image = load_image(path, DecodeOptions { frame: args.frame })?;
        let pixels = model.preprocess_images(std::slice::from_ref(&image))?;
        let emb = model.embed_pixel_batch(&pixels, 1)?;
        let mut scores = classify(
            &model,
            &emb,
            &args.labels,
            Some(&templates),
            mode,
            args.temperature,
        )?
        .pop()
        .expect("one image in, one result out — this is a bug");
        scores.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        Ok(json!({
            "image": path,
            "model_id": model.model_id(),
            "multi_label": args.multi_label,
            "labels": scores,
        }))
    };
    let Some(spec) = &args.input.input else {
        let path = args.image.as_deref().context("give --image or --input")?;
        println!("{}", serde_json::to_string(&one(path)?)?);
        return Ok(());
    };
    // A line is an image path, or JSON with "image"; answered one by one, in order.
    input_cmd::for_each_line(spec, args.input.input_format, |line| {
        let path = line
            .image
            .clone()
            .or_else(|| line.text.as_deref().map(PathBuf::from))
            .context("give an image path")?;
        Ok(vec![one(&path)?])
    })
}

/// GET `url`; anything but 200 within the timeout is a failure (the container healthcheck).
fn probe(url: &str) -> Result<()> {
    // Straight to the URL: a container's proxy variables or a redirect must not decide health.
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let response = client
        .get(url)
        .send()
        .with_context(|| format!("probe {url}"))?;
    let status = response.status();
    if status == reqwest::StatusCode::OK {
        Ok(())
    } else {
        bail!("{url}: {status}")
    }
}
