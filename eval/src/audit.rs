//! Auditing a pair corpus with a bundle (`mirage audit --out`): every (image, caption) pair is
//! scored with the matching score s against the bundle's text bank and with plain cosine
//! ([`mirage_model::matching::audit_pairs`], the computation of `POST /v1/audit`), ranked most
//! suspicious first, and written as JSONL, CSV, a summary and figures. Given the trainer's
//! `noise.jsonl`, the audit sees the corpus as the model trained on it (the logged swaps
//! applied) and measures how well s and cosine find the injected pairs.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use mirage_data::pairs::Pair;
use mirage_model::bundle::TextBank;
use mirage_model::config::MatchingOverride;
use mirage_model::image_input::{load_image, DecodeOptions};
use mirage_model::matching::{audit_pairs, default_matching};
use mirage_model::MirageModel;
use serde::{Deserialize, Serialize};

use crate::metrics::auc;
use crate::plot::{gallery, histogram, scatter, Tile};
use crate::runner::caption_bank;

/// How to audit.
#[derive(Debug, Clone, Copy)]
pub struct AuditOptions {
    /// Pairs whose s is below this are flagged.
    pub threshold: f32,
    /// Pairs per forward pass (at least 1).
    pub batch_size: usize,
    /// Frame of multi-frame DICOM images.
    pub frame: u32,
    /// Another nearest-neighbour rule for s than the model's own (hard NN, another σ_q).
    pub matching: MatchingOverride,
}

impl AuditOptions {
    /// Checks the ranges.
    ///
    /// # Errors
    ///
    /// A threshold outside [-1, 1] (s is a cosine), a zero batch size, or a σ_q that is not
    /// positive and finite.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (-1.0..=1.0).contains(&self.threshold),
            "--threshold must be in [-1, 1] (got {})",
            self.threshold
        );
        ensure!(self.batch_size >= 1, "--batch-size must be at least 1");
        self.matching.validate()?;
        Ok(())
    }
}

/// One audited pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Position in the pair file (0-based, rows without a caption not counted).
    pub index: usize,
    /// The row's id.
    pub id: String,
    /// The image reference as written in the file.
    pub image: String,
    /// The caption audited (with the trainer's swap applied when a noise log was given).
    pub caption: String,
    /// Matching score s against the bank (low: likely mismatched).
    pub s: f32,
    /// s below the threshold.
    pub flagged: bool,
    /// Plain cosine of the image and the caption.
    pub image_caption_similarity: f32,
    /// Cosine of the image and its nearest bank caption.
    pub image_nearest_similarity: f32,
    /// The image's nearest bank caption.
    pub nearest_bank_caption: String,
    /// Its softmax weight.
    pub nearest_bank_weight: f32,
    /// Whether the trainer swapped this pair's caption (only with a noise log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injected: Option<bool>,
    /// The image file, for the gallery.
    #[serde(skip)]
    pub image_path: PathBuf,
}

/// Detection of the trainer's injected pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InjectedDetection {
    /// Pairs the noise log swapped.
    pub pairs: usize,
    /// AUC of s for telling clean (high) from injected (low).
    pub auc_s: Option<f64>,
    /// AUC of plain cosine.
    pub auc_cosine: Option<f64>,
    /// Injected pairs among the flagged.
    pub flagged_injected: usize,
}

/// What the audit found, as `summary.json` and the CLI print it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditSummary {
    /// The model's id.
    pub model_id: String,
    /// Pairs audited.
    pub pairs: usize,
    /// Pairs flagged (s below the threshold).
    pub flagged: usize,
    /// The threshold.
    pub threshold: f32,
    /// Where the bank came from: `bundle` or `corpus` (the audited captions re-encoded).
    pub bank: String,
    /// Rows of the bank.
    pub bank_size: usize,
    /// σ_q of the nearest-neighbour softmax.
    pub nn_scale: f32,
    /// Whether s used the hard nearest neighbour (argmax bank row).
    #[serde(default)]
    pub nn_hard: bool,
    /// Mean s of the pairs.
    pub mean_s: f64,
    /// Mean cosine of the pairs.
    pub mean_cosine: f64,
    /// With a noise log: how well s and cosine find the swapped pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injected: Option<InjectedDetection>,
}

/// A whole corpus's audit.
#[derive(Debug, Clone)]
pub struct CorpusAudit {
    /// Rows in file order.
    pub rows: Vec<AuditRow>,
    /// The summary.
    pub summary: AuditSummary,
}

/// One row of the trainer's `noise.jsonl`.
#[derive(Deserialize)]
struct NoisyPair {
    index: usize,
    caption_from: usize,
}

/// Reads the trainer's `noise.jsonl` (fixed-mode swaps: `index` carries `caption_from`'s
/// caption) for a corpus of `pairs` pairs.
///
/// # Errors
///
/// Unreadable file, a row that is not a swap, or an index outside the corpus (the log belongs
/// to another corpus).
pub fn read_noise_log(path: &Path, pairs: usize) -> Result<Vec<(usize, usize)>> {
    let text = fs_err::read_to_string(path)?;
    let mut swaps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: NoisyPair = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not a noise row ({{\"index\", \"caption_from\"}})",
                path.display(),
                n + 1
            )
        })?;
        ensure!(
            row.index < pairs && row.caption_from < pairs,
            "{}:{}: pair {} or {} is outside the corpus of {pairs} pairs (a log of another corpus?)",
            path.display(),
            n + 1,
            row.index,
            row.caption_from
        );
        swaps.push((row.index, row.caption_from));
    }
    Ok(swaps)
}

/// Audits `pairs` with `model` against `bank` (the bundle's, scored with its matching settings)
/// or, without one, against the audited captions themselves re-encoded ([`caption_bank`]);
/// `swaps` (from [`read_noise_log`]) first gives each listed pair the caption it trained with.
///
/// # Errors
///
/// An option out of range, an unreadable image, or a model failure.
pub fn audit_corpus(
    model: &MirageModel,
    bank: Option<&TextBank>,
    pairs: &[Pair],
    swaps: Option<&[(usize, usize)]>,
    o: AuditOptions,
) -> Result<CorpusAudit> {
    o.validate()?;
    let mut captions: Vec<&str> = pairs.iter().map(|p| p.caption.as_str()).collect();
    let mut injected = swaps.map(|_| vec![false; pairs.len()]);
    for &(i, from) in swaps.unwrap_or_default() {
        captions[i] = &pairs[from].caption;
        if let Some(flags) = injected.as_mut() {
            // A swap between two identical captions changes nothing the model could see.
            flags[i] = pairs[i].caption != pairs[from].caption;
        }
    }
    let corpus_bank;
    let corpus_bank_used = bank.is_none();
    let (bank, matching) = match bank {
        Some(b) => (b, default_matching(model)),
        None => {
            let owned: Vec<String> = captions.iter().map(|c| (*c).to_owned()).collect();
            corpus_bank = caption_bank(model, &owned, o.batch_size)?;
            (&corpus_bank.0, corpus_bank.1)
        }
    };
    let matching = o.matching.apply(matching);
    let mut rows = Vec::with_capacity(pairs.len());
    for (b, chunk) in pairs.chunks(o.batch_size).enumerate() {
        let start = b * o.batch_size;
        let images = chunk
            .iter()
            .map(|p| {
                load_image(&p.image, DecodeOptions { frame: o.frame })
                    .with_context(|| format!("pair {}: {}", p.id, p.image.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let pixels = model.preprocess_images(&images)?;
        let texts = &captions[start..start + chunk.len()];
        for (i, (p, r)) in chunk
            .iter()
            .zip(audit_pairs(
                model,
                bank,
                &pixels,
                images.len(),
                texts,
                matching,
            )?)
            .enumerate()
        {
            let index = start + i;
            rows.push(AuditRow {
                index,
                id: p.id.clone(),
                image: p.image_ref.clone(),
                caption: captions[index].to_owned(),
                s: r.s,
                flagged: r.s < o.threshold,
                image_caption_similarity: r.image_caption_similarity,
                image_nearest_similarity: r.nearest_similarity,
                nearest_bank_caption: bank.captions[r.nearest].clone(),
                nearest_bank_weight: r.nearest_weight,
                injected: injected.as_ref().map(|f| f[index]),
                image_path: p.image.clone(),
            });
        }
    }
    let n = rows.len().max(1) as f64;
    let summary = AuditSummary {
        model_id: model.model_id().to_owned(),
        pairs: rows.len(),
        flagged: rows.iter().filter(|r| r.flagged).count(),
        threshold: o.threshold,
        bank: if corpus_bank_used { "corpus" } else { "bundle" }.to_owned(),
        bank_size: bank.captions.len(),
        nn_scale: matching.nn_scale,
        nn_hard: matching.hard,
        mean_s: rows.iter().map(|r| f64::from(r.s)).sum::<f64>() / n,
        mean_cosine: rows
            .iter()
            .map(|r| f64::from(r.image_caption_similarity))
            .sum::<f64>()
            / n,
        injected: injected.map(|flags| {
            let clean: Vec<bool> = flags.iter().map(|f| !f).collect();
            let s: Vec<f64> = rows.iter().map(|r| f64::from(r.s)).collect();
            let cos: Vec<f64> = rows
                .iter()
                .map(|r| f64::from(r.image_caption_similarity))
                .collect();
            InjectedDetection {
                pairs: flags.iter().filter(|&&f| f).count(),
                auc_s: auc(&s, &clean),
                auc_cosine: auc(&cos, &clean),
                flagged_injected: rows
                    .iter()
                    .zip(&flags)
                    .filter(|(r, &f)| r.flagged && f)
                    .count(),
            }
        }),
    };
    Ok(CorpusAudit { rows, summary })
}

/// Pairs shown in the gallery.
pub const GALLERY_SIZE: usize = 24;

fn csv_error(path: &Path) -> impl FnOnce(csv::Error) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("writing {}: {e}", path.display())
}

impl CorpusAudit {
    /// Rows most suspicious first: ascending s, ties by file order.
    pub fn ranked(&self) -> Vec<&AuditRow> {
        let mut rows: Vec<&AuditRow> = self.rows.iter().collect();
        rows.sort_by(|a, b| a.s.total_cmp(&b.s).then(a.index.cmp(&b.index)));
        rows
    }

    /// Writes into `out` (created): `audit.jsonl` and `audit.csv` (ranked, with a `rank`
    /// column), `summary.json`, `hist-s.png` and `hist-cosine.png` (flagged vs kept, and
    /// injected vs clean with a noise log), `scatter.png` (image–caption vs image–nearest-bank
    /// cosine) and `gallery.png` (the [`GALLERY_SIZE`] most suspicious pairs).
    ///
    /// # Errors
    ///
    /// A file cannot be written or a gallery image cannot be read again.
    pub fn save(&self, out: &Path) -> Result<()> {
        fs_err::create_dir_all(out)?;
        let ranked = self.ranked();
        let mut jsonl = String::new();
        #[derive(Serialize)]
        struct Ranked<'a> {
            rank: usize,
            #[serde(flatten)]
            row: &'a AuditRow,
        }
        for (rank, row) in ranked.iter().enumerate() {
            let rank = rank + 1;
            jsonl.push_str(&serde_json::to_string(&Ranked { rank, row })?);
            jsonl.push('\n');
        }
        fs_err::write(out.join("audit.jsonl"), jsonl)?;
        let csv_path = out.join("audit.csv");
        let mut w = csv::Writer::from_path(&csv_path).map_err(csv_error(&csv_path))?;
        w.write_record([
            "rank",
            "index",
            "id",
            "image",
            "s",
            "flagged",
            "image_caption_similarity",
            "image_nearest_similarity",
            "injected",
            "caption",
            "nearest_bank_caption",
            "nearest_bank_weight",
        ])
        .map_err(csv_error(&csv_path))?;
        for (rank, r) in ranked.iter().enumerate() {
            w.write_record([
                (rank + 1).to_string(),
                r.index.to_string(),
                r.id.clone(),
                r.image.clone(),
                r.s.to_string(),
                r.flagged.to_string(),
                r.image_caption_similarity.to_string(),
                r.image_nearest_similarity.to_string(),
                r.injected.map(|b| b.to_string()).unwrap_or_default(),
                r.caption.clone(),
                r.nearest_bank_caption.clone(),
                r.nearest_bank_weight.to_string(),
            ])
            .map_err(csv_error(&csv_path))?;
        }
        w.flush()?;
        fs_err::write(
            out.join("summary.json"),
            serde_json::to_vec_pretty(&self.summary)?,
        )?;
        self.figures(out, &ranked)
    }

    fn figures(&self, out: &Path, ranked: &[&AuditRow]) -> Result<()> {
        let split = |keep: &dyn Fn(&AuditRow) -> bool, value: &dyn Fn(&AuditRow) -> f32| {
            self.rows
                .iter()
                .filter(|r| keep(r))
                .map(|r| f64::from(value(r)))
                .collect::<Vec<_>>()
        };
        let groups = |value: &dyn Fn(&AuditRow) -> f32| {
            let mut g = vec![
                ("flagged".to_owned(), split(&|r| r.flagged, value)),
                ("kept".to_owned(), split(&|r| !r.flagged, value)),
            ];
            if self.summary.injected.is_some() {
                g.push((
                    "injected (noise log)".to_owned(),
                    split(&|r| r.injected == Some(true), value),
                ));
                g.push((
                    "clean (noise log)".to_owned(),
                    split(&|r| r.injected == Some(false), value),
                ));
            }
            g
        };
        histogram(
            &out.join("hist-s.png"),
            "Matching score s",
            "s",
            &groups(&|r| r.s),
            30,
        )?;
        histogram(
            &out.join("hist-cosine.png"),
            "Image–caption cosine",
            "cosine",
            &groups(&|r| r.image_caption_similarity),
            30,
        )?;
        let point = |r: &AuditRow| {
            (
                f64::from(r.image_caption_similarity),
                f64::from(r.image_nearest_similarity),
            )
        };
        let points = |keep: &dyn Fn(&AuditRow) -> bool| -> Vec<(f64, f64)> {
            self.rows.iter().filter(|r| keep(r)).map(point).collect()
        };
        let scatter_groups = if self.summary.injected.is_some() {
            vec![
                ("clean".to_owned(), points(&|r| r.injected == Some(false))),
                ("injected".to_owned(), points(&|r| r.injected == Some(true))),
            ]
        } else {
            vec![
                ("kept".to_owned(), points(&|r| !r.flagged)),
                ("flagged".to_owned(), points(&|r| r.flagged)),
            ]
        };
        scatter(
            &out.join("scatter.png"),
            "Caption vs nearest bank caption",
            "cos(image, caption)",
            "cos(image, nearest bank caption)",
            &scatter_groups,
        )?;
        let tiles = ranked
            .iter()
            .take(GALLERY_SIZE)
            .enumerate()
            .map(|(rank, r)| {
                let decoded = load_image(&r.image_path, DecodeOptions::default())
                    .with_context(|| format!("gallery: {}", r.image_path.display()))?;
                let rgb = image::DynamicImage::ImageRgb32F(decoded.rgb).to_rgb8();
                let mut lines = vec![
                    format!(
                        "#{} {} s={:.3} cos={:.3}",
                        rank + 1,
                        r.id,
                        r.s,
                        r.image_caption_similarity
                    ),
                    format!("caption: {}", r.caption),
                    format!("nearest: {}", r.nearest_bank_caption),
                ];
                if let Some(injected) = r.injected {
                    lines.push(if injected { "injected" } else { "clean" }.to_owned());
                }
                Ok(Tile { image: rgb, lines })
            })
            .collect::<Result<Vec<_>>>()?;
        gallery(&out.join("gallery.png"), &tiles, 4)
    }
}
