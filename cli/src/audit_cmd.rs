//! `mirage audit`: the caption audit of `POST /v1/audit` over a whole pair file, from the shell
//! ([`mirage_eval::audit`]): JSON lines on stdout, or a ranked report with figures in `--out`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use mirage_data::corpus::CorpusFormat;
use mirage_data::pairs::read_pairs;
use mirage_eval::audit::{audit_corpus, read_noise_log, AuditOptions};
use mirage_model::matching::DEFAULT_AUDIT_THRESHOLD;
use mirage_server::config::EngineArgs;
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BankChoice {
    Bundle,
    Corpus,
}

#[derive(Args)]
pub(crate) struct AuditArgs {
    /// Bundle directory; it needs a text bank (bundles exported by mirage-train have one).
    #[arg(long, env = "MIRAGE_BUNDLE")]
    bundle: PathBuf,
    /// Pair file: every row needs an image and a caption.
    #[arg(long)]
    corpus: PathBuf,
    /// Its format (as `mirage index build --format`): pmcoa, roco or jsonl.
    #[arg(long, default_value = "pmcoa")]
    format: CorpusFormat,
    /// Folder image references are relative to (default: the pair file's folder).
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Flag pairs whose matching score s is below this, in [-1, 1] (the server's default bound).
    #[arg(long, default_value_t = DEFAULT_AUDIT_THRESHOLD, allow_hyphen_values = true)]
    threshold: f32,
    /// Folder for the ranked report (audit.jsonl, audit.csv, most suspicious first),
    /// summary.json and figures (hist-s.png, hist-cosine.png, scatter.png, gallery.png);
    /// without it, one JSON line per pair in file order on stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The trainer's noise.jsonl for this corpus: audit the captions the model trained with
    /// (its swaps applied) and report how well s and cosine find the swapped pairs.
    #[arg(long)]
    noise_log: Option<PathBuf>,
    /// Text bank s is computed against: `bundle` (its exported memory bank, as `POST
    /// /v1/audit`) or `corpus` (the audited captions themselves, re-encoded by the final model:
    /// works for bundles without a bank, such as the CLIP baseline).
    #[arg(long, value_enum, default_value_t = BankChoice::Bundle)]
    bank: BankChoice,
    /// Pairs per forward pass (at least 1).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Frame of multi-frame DICOM images.
    #[arg(long, default_value_t = 0)]
    frame: u32,
    #[command(flatten)]
    matching: crate::eval_cmd::MatchingArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Audits the pair file; prints the summary (stderr without `--out`, stdout with it).
pub(crate) fn audit(a: AuditArgs) -> Result<()> {
    let options = AuditOptions {
        threshold: a.threshold,
        batch_size: a.batch_size,
        frame: a.frame,
        matching: a.matching.to_override(),
    };
    // Options first: a bad flag should not wait for a model to load.
    options.validate()?;
    let (pairs, report) = read_pairs(&a.corpus, a.format, a.image_root.as_deref())?;
    let swaps = a
        .noise_log
        .as_deref()
        .map(|p| read_noise_log(p, pairs.len()))
        .transpose()?;
    let (bundle, model) = a.engine.open(&a.bundle)?;
    let bank = match a.bank {
        BankChoice::Bundle => {
            let Some(bank) = bundle.text_bank()? else {
                bail!(
                    "{} has no text bank (text_bank.safetensors), so s cannot be computed against it; use a bundle exported by mirage-train, or --bank corpus",
                    a.bundle.display()
                );
            };
            Some(bank)
        }
        BankChoice::Corpus => None,
    };
    let audit = audit_corpus(&model, bank.as_ref(), &pairs, swaps.as_deref(), options)?;
    let mut summary = serde_json::to_value(&audit.summary)?;
    summary["rows"] = report.rows.into();
    summary["empty_captions"] = report.empty_captions.into();
    if let Some(out) = &a.out {
        audit.save(out)?;
        summary["out"] = json!(out);
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        for row in &audit.rows {
            writeln!(stdout, "{}", serde_json::to_string(row)?)?;
        }
        stdout.flush()?;
        eprintln!("{summary}");
    }
    Ok(())
}
