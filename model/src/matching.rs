//! The matching score s of an (image, caption) pair against a text bank (docs/METHOD.md §2.2), as the
//! trainer computes it: the image's soft nearest-neighbour caption embedding
//! n = norm(Σ_k softmax_k(σ_q·⟨v, Q_k⟩)·Q_k), then s = ⟨t, n⟩ ∈ [−1, 1]. A caption that says what
//! the image's nearest bank captions say scores high; a caption that belongs to another image
//! scores low, which is how the noise audit flags likely mismatched pairs.

use crate::bundle::TextBank;
use crate::config::Matching;
use crate::embeddings::{normalize, softmax, Embeddings};
use crate::kernels::dot;
use crate::{Error, MirageModel, Result};

/// One pair's score.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchScore {
    /// s = ⟨t, n⟩.
    pub s: f32,
    /// Bank row with the largest softmax weight (the hard nearest neighbour).
    pub nearest: usize,
    /// Its softmax weight.
    pub nearest_weight: f32,
    /// Cosine of the image and that bank row.
    pub nearest_similarity: f32,
}

/// Scores pairs of unit image embeddings `images` and unit caption embeddings `texts` (row i of
/// each is pair i) against `bank`.
pub fn matching_scores(
    bank: &TextBank,
    matching: Matching,
    images: &Embeddings,
    texts: &Embeddings,
) -> Result<Vec<MatchScore>> {
    if images.len() != texts.len() || images.dim() != texts.dim() {
        return Err(Error::InvalidInput(format!(
            "{} image embeddings of {} values for {} caption embeddings of {}",
            images.len(),
            images.dim(),
            texts.len(),
            texts.dim()
        )));
    }
    if bank.captions.is_empty() {
        return Err(Error::InvalidInput("the text bank is empty".into()));
    }
    let k = bank.embeddings.len();
    let sims = images.similarities(&bank.embeddings)?; // images × bank rows
    Ok(sims
        .chunks_exact(k)
        .zip(texts.rows())
        .map(|(sim, t)| {
            let mut w: Vec<f32> = sim.iter().map(|x| x * matching.nn_scale).collect();
            softmax(&mut w);
            // The first of equal weights, as an argmax does.
            let nearest = w
                .iter()
                .enumerate()
                .fold(0, |best, (i, x)| if *x > w[best] { i } else { best });
            let s = if matching.hard {
                dot(t, bank.embeddings.row(nearest))
            } else {
                let mut n = vec![0f32; bank.embeddings.dim()];
                for (wk, q) in w.iter().zip(bank.embeddings.rows()) {
                    n.iter_mut().zip(q).for_each(|(a, b)| *a += wk * b);
                }
                normalize(&mut n);
                dot(t, &n)
            };
            MatchScore {
                s,
                nearest,
                nearest_weight: w[nearest],
                nearest_similarity: sim[nearest],
            }
        })
        .collect())
}

/// How `model` scores against its bundle's text bank: `bundle.json`'s `matching`, else the
/// training initial value (σ_q = 1/0.07, soft NN).
pub fn default_matching(model: &MirageModel) -> Matching {
    model.config().matching.unwrap_or_default()
}

/// Default flag bound of an audit: pairs whose s is below it are flagged.
pub const DEFAULT_AUDIT_THRESHOLD: f32 = 0.5;

/// One pair's audit: its matching score, its direct cosine and the image's nearest bank caption.
#[derive(Debug, Clone, PartialEq)]
pub struct PairAudit {
    /// Matching score s against the bank (low: likely a mismatched pair).
    pub s: f32,
    /// Plain cosine of the image and caption embeddings.
    pub image_caption_similarity: f32,
    /// Bank row nearest to the image.
    pub nearest: usize,
    /// Its softmax weight.
    pub nearest_weight: f32,
    /// Cosine of the image and that bank row (what the caption is compared against).
    pub nearest_similarity: f32,
}

/// Audits (image, caption) pairs, as `POST /v1/audit` and `mirage audit` do: embeds the
/// `count` preprocessed images `pixels` ([`MirageModel::preprocess_images`]) and the `captions`
/// with `model`, and scores each pair against `bank` with `matching` (the bundle's settings,
/// [`default_matching`], for its own bank).
///
/// # Errors
///
/// [`Error::InvalidInput`] when the batch sizes differ or the bank is empty; model failures.
pub fn audit_pairs(
    model: &MirageModel,
    bank: &TextBank,
    pixels: &[f32],
    count: usize,
    captions: &[&str],
    matching: Matching,
) -> Result<Vec<PairAudit>> {
    let images = model.embed_pixel_batch(pixels, count)?;
    let texts = model.embed_text_batch(captions)?;
    let scores = matching_scores(bank, matching, &images, &texts)?;
    Ok(scores
        .into_iter()
        .zip(images.rows().zip(texts.rows()))
        .map(|(m, (i, t))| PairAudit {
            s: m.s,
            image_caption_similarity: dot(i, t),
            nearest: m.nearest,
            nearest_weight: m.nearest_weight,
            nearest_similarity: m.nearest_similarity,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(rows: &[[f32; 2]]) -> Embeddings {
        let flat: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                let n = (r[0] * r[0] + r[1] * r[1]).sqrt();
                [r[0] / n, r[1] / n]
            })
            .collect();
        Embeddings::new(flat, 2).unwrap()
    }

    #[test]
    fn caption_agreeing_with_the_nearest_bank_text_scores_high() {
        let bank = TextBank {
            embeddings: unit(&[[1.0, 0.0], [0.0, 1.0]]),
            captions: vec!["axial".into(), "coronal".into()],
        };
        let images = unit(&[[1.0, 0.1], [1.0, 0.1]]);
        let texts = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let m = Matching {
            nn_scale: 100.0,
            hard: false,
        };
        let scores = matching_scores(&bank, m, &images, &texts).unwrap();
        assert_eq!(scores[0].nearest, 0);
        assert!((scores[0].nearest_similarity - images.row(0)[0]).abs() < 1e-6);
        assert!(scores[0].s > 0.99, "{scores:?}");
        assert!(scores[1].s < 0.01, "{scores:?}");
        // Hard NN is the limit of soft NN as σ_q grows.
        let hard = matching_scores(&bank, Matching { hard: true, ..m }, &images, &texts).unwrap();
        assert!((hard[0].s - 1.0).abs() < 1e-6 && hard[1].s.abs() < 1e-6);
        assert!((hard[0].s - scores[0].s).abs() < 1e-3);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let bank = TextBank {
            embeddings: unit(&[[1.0, 0.0]]),
            captions: vec!["a".into()],
        };
        let e = matching_scores(
            &bank,
            Matching::default(),
            &unit(&[[1.0, 0.0]]),
            &unit(&[[1.0, 0.0], [0.0, 1.0]]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("caption embeddings"), "{e}");
    }
}
