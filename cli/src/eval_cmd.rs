//! `mirage eval`, `mirage calibrate` and `mirage study-report`: argument parsing and printing
//! over [`mirage_eval::runner`] and [`mirage_eval::study`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mirage_eval::runner::{calibrate, evaluate, CalibrateOptions, EvalOptions};
use mirage_model::config::{Calibration, MatchingOverride};
use mirage_model::{write_calibrated, Bundle, MirageModel};

/// The nearest-neighbour rule of the matching score s when it should not be the bundle's own:
/// the variants of docs/METHOD.md §2.2 that `mirage eval` and `mirage audit` can compare (choose
/// one on a valid split, never on the test split).
#[derive(Args, Clone, Copy)]
pub(crate) struct MatchingArgs {
    /// Nearest neighbour of s: `soft` (softmax-weighted mean of the bank) or `hard` (its
    /// argmax row). Default: the bundle's.
    #[arg(long, value_enum)]
    nn: Option<NnRule>,
    /// σ_q, the scale of the soft nearest neighbour's softmax (> 0). Default: the bundle's.
    #[arg(long)]
    nn_scale: Option<f32>,
}

#[derive(Clone, Copy, ValueEnum)]
enum NnRule {
    Soft,
    Hard,
}

impl MatchingArgs {
    pub(crate) fn to_override(self) -> MatchingOverride {
        MatchingOverride {
            hard: self.nn.map(|r| matches!(r, NnRule::Hard)),
            nn_scale: self.nn_scale,
        }
    }
}

/// The bundle and dataset `mirage eval` and `mirage calibrate` measure, and how.
#[derive(Args)]
struct Measured {
    /// Bundle directory (left as it is).
    #[arg(long, env = "MIRAGE_BUNDLE")]
    bundle: PathBuf,
    /// Dataset folder: `{split}.jsonl` (PMC-OA rows: image, caption) with images in `images/`,
    /// optional `labels.jsonl` and `dataset.json` tasks (as `mirage data mri-atlas` writes).
    #[arg(long)]
    data: PathBuf,
    /// Items per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Bins of the expected calibration error (at least 1).
    #[arg(long, default_value_t = 10)]
    ece_bins: usize,
    #[command(flatten)]
    engine: mirage_server::config::EngineArgs,
}

impl Measured {
    fn load(&self) -> Result<(Bundle, MirageModel)> {
        self.engine.open(&self.bundle)
    }
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    measured: Measured,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// Labelled split for kNN, and the text bank of bundles exported without one.
    #[arg(long, default_value = "train")]
    reference_split: String,
    /// Folder for `report.json` and the plots (default: print the report only).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Share of the split's pairs given another pair's caption for the noise-detection AUC, in
    /// [0, 1).
    #[arg(long, default_value_t = 0.4)]
    noise: f64,
    /// Seed of the injected noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Neighbours in the kNN vote (at least 1).
    #[arg(long, default_value_t = 20)]
    k: usize,
    #[command(flatten)]
    matching: MatchingArgs,
}

pub(crate) fn run_eval(a: EvalArgs) -> Result<()> {
    let (bundle, model) = a.measured.load()?;
    let m = a.measured;
    let evaluation = evaluate(
        &model,
        &bundle,
        &m.bundle,
        &EvalOptions {
            data: m.data,
            split: a.split,
            reference_split: a.reference_split,
            noise: a.noise,
            seed: a.seed,
            k: a.k,
            batch_size: m.batch_size,
            ece_bins: m.ece_bins,
            matching: a.matching.to_override(),
        },
    )?;
    if let Some(out) = &a.out {
        evaluation.save(out)?;
    }
    println!("{}", serde_json::to_string_pretty(&evaluation.report)?);
    Ok(())
}

#[derive(Args)]
pub(crate) struct CalibrateArgs {
    /// `dataset.json` needs at least one single-label task.
    #[command(flatten)]
    measured: Measured,
    /// Held-out split to fit on (never the test split you report).
    #[arg(long, default_value = "valid")]
    split: String,
    /// New bundle directory: a copy with the fitted temperature (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
}

/// Fits the temperature, writes the calibrated copy and prints the report (NLL and ECE before
/// and after, pooled and per task).
pub(crate) fn run_calibrate(a: CalibrateArgs) -> Result<()> {
    let (bundle, model) = a.measured.load()?;
    let m = a.measured;
    let report = calibrate(
        &model,
        &CalibrateOptions {
            data: m.data,
            split: a.split,
            batch_size: m.batch_size,
            ece_bins: m.ece_bins,
        },
    )?;
    let images: usize = report.tasks.values().map(|t| t.images).sum();
    let tasks: Vec<&str> = report.tasks.keys().map(String::as_str).collect();
    let calibration = Calibration {
        temperature: report.temperature as f32,
        fitted_on: format!(
            "{} split {:?}: {images} zero-shot predictions of {}; NLL {:.4} -> {:.4}",
            report.data.display(),
            report.split,
            tasks.join(", "),
            report.before.nll,
            report.after.nll
        ),
    };
    write_calibrated(&bundle, &a.out, calibration)
        .with_context(|| format!("writing the calibrated bundle to {}", a.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[derive(Args)]
pub(crate) struct StudyReportArgs {
    /// Study folder: one sub-folder per run with `run.json` ({method, eta, seed}) and
    /// `eval-test/report.json` (optionally `eval-valid/report.json`), as
    /// scripts/noise-study.sh leaves them.
    #[arg(long)]
    dir: PathBuf,
    /// Method the paired-difference table compares every other method to (the ablation
    /// uses `default`).
    #[arg(long, default_value = mirage_eval::study::DEFAULT_BASELINE)]
    baseline: String,
}

pub(crate) fn run_study_report(a: StudyReportArgs) -> Result<()> {
    print!("{}", mirage_eval::study::study_report(&a.dir, &a.baseline)?);
    Ok(())
}
