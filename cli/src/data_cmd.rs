//! `mirage data …`: the command-line face of `mirage-data`'s dataset builders; the defaults that
//! come from the environment (the assets cache) are resolved here, not in the library.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use mirage_data::{digits, mri_atlas, radlabels};
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// The 1,000 radlabels chest-radiograph reports as a plain-JSONL report corpus (`id`, `text`,
    /// `metadata` with the 48 finding labels), for report retrieval and RAG.
    Radlabels(RadlabelsArgs),
    /// The radlabels retrieval benchmark in the BEIR layout (`corpus.jsonl`, `queries.jsonl`,
    /// `qrels/test.tsv`) for `mirage eval-retrieval`: the 1,000 reports, and two judged queries
    /// per finding label (its radiological term and a plain-words paraphrase), relevant where
    /// the finding is definitely present.
    RadlabelsBeir(RadlabelsBeirArgs),
    /// A PMC-OA-format image–caption dataset of real brain MRI slices with exact atlas captions,
    /// from Debian's mricron-data (Colin-27 T1 + AAL): `train|valid|test.jsonl`, `images/`,
    /// `labels.jsonl` (plane, hemisphere, structure presence) and `dataset.json`.
    MriAtlas(MriAtlasArgs),
    /// A PMC-OA-format image–caption dataset of 1,797 real scanned handwritten digits (UCI, as
    /// shipped in scikit-learn's wheel) captioned from the pixels: digit, stroke weight, slant;
    /// `train|valid|test.jsonl` (70/15/15 within each digit), `images/`, `labels.jsonl` and
    /// `dataset.json` (three zero-shot tasks).
    Digits(DigitsArgs),
}

#[derive(Args)]
pub(crate) struct DigitsArgs {
    /// scikit-learn's `digits.csv.gz` (scripts/fetch-assets.sh puts it in
    /// $MIRAGE_CACHE/assets/sklearn).
    #[arg(long)]
    source: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Side of the square PNGs (at least 8).
    #[arg(long, default_value_t = 32)]
    size: u32,
    /// Seed of the split shuffle.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub(crate) struct MriAtlasArgs {
    /// mricron-data's templates folder.
    #[arg(long, default_value = "/usr/share/mricron/templates")]
    templates: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Side of the square PNGs.
    #[arg(long, default_value_t = 128)]
    size: u32,
    /// Augmented copies per slice besides the plain one.
    #[arg(long, default_value_t = 2)]
    augment: usize,
    /// Slices between held-out and training slices of a plane (1 mm each).
    #[arg(long, default_value_t = 3)]
    gap: usize,
    /// Use every `step`-th slice.
    #[arg(long, default_value_t = 1)]
    step: usize,
    /// Seed of the augmentations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub(crate) struct RadlabelsArgs {
    /// The unpacked radlabels package (scripts/fetch-assets.sh puts it in $MIRAGE_CACHE/assets/radlabels).
    #[arg(long, env = "MIRAGE_RADLABELS")]
    radlabels: Option<PathBuf>,
    /// Output JSONL file (index it with `mirage index build --format jsonl`).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub(crate) struct RadlabelsBeirArgs {
    /// The unpacked radlabels package (scripts/fetch-assets.sh puts it in $MIRAGE_CACHE/assets/radlabels).
    #[arg(long, env = "MIRAGE_RADLABELS")]
    radlabels: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// `name` in the asset cache.
fn asset(name: &str) -> PathBuf {
    let assets = std::env::var_os("MIRAGE_ASSETS")
        .map(PathBuf::from)
        .or_else(mirage_server::config::default_assets_dir)
        .unwrap_or_default();
    assets.join(name)
}

pub(crate) fn run_data(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Radlabels(args) => {
            let dir = args.radlabels.unwrap_or_else(|| asset("radlabels"));
            let n = radlabels::build(&dir, &args.out)?;
            eprintln!("wrote {n} reports to {}", args.out.display());
            Ok(())
        }
        DataCommand::RadlabelsBeir(args) => {
            let dir = args.radlabels.unwrap_or_else(|| asset("radlabels"));
            let counts = radlabels::build_beir(&dir, &args.out)?;
            println!("{}", json!({"out": args.out, "counts": counts}));
            Ok(())
        }
        DataCommand::MriAtlas(a) => {
            let counts = mri_atlas::build(&mri_atlas::AtlasOptions {
                templates: a.templates,
                out: a.out.clone(),
                size: a.size,
                augment: a.augment,
                gap: a.gap,
                step: a.step,
                seed: a.seed,
            })?;
            println!("{}", json!({"out": a.out, "images": counts}));
            Ok(())
        }
        DataCommand::Digits(a) => {
            let counts = digits::build(&digits::DigitsOptions {
                source: a
                    .source
                    .unwrap_or_else(|| asset("sklearn").join("digits.csv.gz")),
                out: a.out.clone(),
                size: a.size,
                seed: a.seed,
            })?;
            println!("{}", json!({"out": a.out, "images": counts}));
            Ok(())
        }
    }
}
