//! `mirage audit`: the caption audit of `POST /v1/audit` over a whole pair file, from the shell.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use mirage_data::corpus::CorpusFormat;
use mirage_data::pairs::read_pairs;
use mirage_model::image_input::{load_image, DecodeOptions};
use mirage_model::matching::{audit_pairs, DEFAULT_AUDIT_THRESHOLD};
use mirage_model::Bundle;
use mirage_server::config::EngineArgs;
use serde_json::json;

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
    /// Flag pairs whose matching score s is below this (the server's default bound).
    #[arg(long, default_value_t = DEFAULT_AUDIT_THRESHOLD, allow_hyphen_values = true)]
    threshold: f32,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Frame of multi-frame DICOM images.
    #[arg(long, default_value_t = 0)]
    frame: u32,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Prints one JSON line per pair in file order (the fields of `POST /v1/audit`'s results, with
/// the row's id) and a summary line on stderr.
pub(crate) fn audit(a: AuditArgs) -> Result<()> {
    ensure!(
        (-1.0..=1.0).contains(&a.threshold),
        "--threshold must be in [-1, 1] (got {})",
        a.threshold
    );
    ensure!(a.batch_size >= 1, "--batch-size must be at least 1");
    let (pairs, report) = read_pairs(&a.corpus, a.format, a.image_root.as_deref())?;
    let model = a.engine.load(&a.bundle)?;
    let Some(bank) = Bundle::open(&a.bundle)?.text_bank(model.device())? else {
        bail!(
            "{} has no text bank (text_bank.safetensors), so s cannot be computed; use a bundle exported by mirage-train",
            a.bundle.display()
        );
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut flagged = 0;
    for (b, chunk) in pairs.chunks(a.batch_size).enumerate() {
        let images = chunk
            .iter()
            .map(|p| {
                load_image(&p.image, DecodeOptions { frame: a.frame })
                    .with_context(|| format!("pair {}: {}", p.id, p.image.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let pixels = model.image_batch(&images)?;
        let captions: Vec<&str> = chunk.iter().map(|p| p.caption.as_str()).collect();
        for (i, (p, r)) in chunk
            .iter()
            .zip(audit_pairs(&model, &bank, &pixels, &captions)?)
            .enumerate()
        {
            flagged += usize::from(r.s < a.threshold);
            let row = json!({
                "index": b * a.batch_size + i,
                "id": p.id,
                "image": p.image_ref,
                "caption": p.caption,
                "s": r.s,
                "flagged": r.s < a.threshold,
                "image_caption_similarity": r.image_caption_similarity,
                "nearest_bank_caption": bank.captions[r.nearest],
                "nearest_bank_weight": r.nearest_weight,
            });
            writeln!(out, "{row}")?;
        }
    }
    out.flush()?;
    eprintln!(
        "{}",
        json!({"model_id": model.model_id(), "pairs": pairs.len(), "flagged": flagged,
               "threshold": a.threshold, "bank_size": bank.captions.len(),
               "rows": report.rows, "empty_captions": report.empty_captions})
    );
    Ok(())
}
