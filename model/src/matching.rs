//! The matching score s of an (image, caption) pair against a text bank (docs/METHOD.md §2.2), as the
//! trainer computes it: the image's soft nearest-neighbour caption embedding
//! n = norm(Σ_k softmax_k(σ_q·⟨v, Q_k⟩)·Q_k), then s = ⟨t, n⟩ ∈ [−1, 1]. A caption that says what
//! the image's nearest bank captions say scores high; a caption that belongs to another image
//! scores low, which is how the noise audit flags likely mismatched pairs.

use candle_core::{Tensor, D};

use crate::bundle::TextBank;
use crate::config::Matching;
use crate::towers::layers::l2_normalize;
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

/// Scores pairs of unit image embeddings `images` [B, D] and unit caption embeddings `texts`
/// [B, D] against `bank`.
pub fn matching_scores(
    bank: &TextBank,
    matching: Matching,
    images: &Tensor,
    texts: &Tensor,
) -> Result<Vec<MatchScore>> {
    if images.dims() != texts.dims() {
        return Err(Error::InvalidInput(format!(
            "{:?} image embeddings for {:?} caption embeddings",
            images.dims(),
            texts.dims()
        )));
    }
    if bank.captions.is_empty() {
        return Err(Error::InvalidInput("the text bank is empty".into()));
    }
    let sims = images.matmul(&bank.embeddings.t()?)?; // [B, K]
    let weights = candle_nn::ops::softmax(&(&sims * f64::from(matching.nn_scale))?, D::Minus1)?;
    let nearest: Vec<u32> = weights.argmax(D::Minus1)?.to_vec1()?;
    let nn = if matching.hard {
        bank.embeddings
            .index_select(&Tensor::new(nearest.as_slice(), images.device())?, 0)?
    } else {
        l2_normalize(&weights.matmul(&bank.embeddings)?)?
    };
    let s: Vec<f32> = (texts * nn)?.sum(D::Minus1)?.to_vec1()?;
    let w: Vec<Vec<f32>> = weights.to_vec2()?;
    let sims: Vec<Vec<f32>> = sims.to_vec2()?;
    Ok(s.into_iter()
        .zip(nearest)
        .zip(w.into_iter().zip(sims))
        .map(|((s, k), (w, sim))| MatchScore {
            s,
            nearest: k as usize,
            nearest_weight: w[k as usize],
            nearest_similarity: sim[k as usize],
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
/// preprocessed images `pixels` [B, 3, S, S] and the `captions` with `model`, and scores each pair
/// against `bank` with `matching` (the bundle's settings, [`default_matching`], for its own bank).
///
/// # Errors
///
/// [`Error::InvalidInput`] when the batch sizes differ or the bank is empty; model failures.
pub fn audit_pairs(
    model: &MirageModel,
    bank: &TextBank,
    pixels: &Tensor,
    captions: &[&str],
    matching: Matching,
) -> Result<Vec<PairAudit>> {
    let images = model.embed_pixels(pixels)?;
    let texts = model.embed_texts_tensor(captions)?;
    let scores = matching_scores(bank, matching, &images, &texts)?;
    let direct: Vec<f32> = (images * texts)?.sum(D::Minus1)?.to_vec1()?;
    Ok(scores
        .into_iter()
        .zip(direct)
        .map(|(m, direct)| PairAudit {
            s: m.s,
            image_caption_similarity: direct,
            nearest: m.nearest,
            nearest_weight: m.nearest_weight,
            nearest_similarity: m.nearest_similarity,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn unit(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                let n = (r[0] * r[0] + r[1] * r[1]).sqrt();
                [r[0] / n, r[1] / n]
            })
            .collect();
        Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap()
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
        assert!(
            (scores[0].nearest_similarity - images.to_vec2::<f32>().unwrap()[0][0]).abs() < 1e-6
        );
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
