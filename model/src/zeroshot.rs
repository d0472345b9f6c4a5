//! Zero-shot classification with prompt-template ensembles (CLIP's recipe): each class prototype
//! is the re-normalised mean of its prompts' embeddings; probabilities are a softmax over
//! σ·cos / T. Multi-label mode scores every label against its own negation prompts.

use candle_core::{Tensor, D};
use serde::Serialize;

use crate::config::PromptTemplates;
use crate::model::MirageModel;
use crate::towers::layers::l2_normalize;
use crate::{Error, Result};

/// Single- or multi-label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassifyMode {
    /// Exactly one label applies: softmax over labels.
    #[default]
    SingleLabel,
    /// Any number apply: each label against its negation.
    MultiLabel,
}

/// One label's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    /// The label as given.
    pub label: String,
    /// Calibrated probability.
    pub probability: f32,
    /// Raw cosine similarity between the image and the label's (positive) prototype.
    pub score: f32,
}

fn fill(template: &str, label: &str) -> String {
    template.replace("{}", label)
}

/// Checks a label list: non-empty, no blank or duplicate labels.
pub fn validate_labels(labels: &[String]) -> Result<()> {
    if labels.is_empty() {
        return Err(Error::InvalidInput(
            "the label list is empty; give at least one label".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for l in labels {
        if l.trim().is_empty() {
            return Err(Error::InvalidInput("a label is empty".into()));
        }
        if !seen.insert(l.as_str()) {
            return Err(Error::InvalidInput(format!("label {l:?} appears twice")));
        }
    }
    Ok(())
}

/// Class prototypes [C, D] for `labels` from `templates` (ensemble mean, re-normalised).
pub fn prototypes(model: &MirageModel, labels: &[String], templates: &[String]) -> Result<Tensor> {
    if templates.is_empty() {
        return Err(Error::InvalidInput("no prompt templates".into()));
    }
    let prompts: Vec<String> = labels
        .iter()
        .flat_map(|l| templates.iter().map(move |t| fill(t, l)))
        .collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let emb = model.embed_texts_tensor(&refs)?; // [C*T, D]
    let d = emb.dim(1)?;
    let mean = emb.reshape((labels.len(), templates.len(), d))?.mean(1)?;
    l2_normalize(&mean)
}

/// The temperature zero-shot probabilities use when a request names none: the bundle's fitted
/// calibration, else 1.
pub fn served_temperature(model: &MirageModel) -> f32 {
    model
        .config()
        .calibration
        .as_ref()
        .map_or(1.0, |c| c.temperature)
}

/// Classifies unit image embeddings [B, D] against `labels`; one result list per image.
pub fn classify(
    model: &MirageModel,
    images: &Tensor,
    labels: &[String],
    templates: Option<&PromptTemplates>,
    mode: ClassifyMode,
    temperature: Option<f32>,
) -> Result<Vec<Vec<LabelScore>>> {
    validate_labels(labels)?;
    let owned;
    let templates = match templates {
        Some(t) => t,
        None => {
            owned = model.prompt_templates();
            &owned
        }
    };
    let problems = templates.problems();
    if !problems.is_empty() {
        return Err(Error::InvalidInput(problems.join("; ")));
    }
    let t = temperature.unwrap_or_else(|| served_temperature(model));
    if !(t.is_finite() && t > 0.0) {
        return Err(Error::InvalidInput(format!(
            "temperature {t} must be positive"
        )));
    }
    let scale = f64::from(model.logit_scale() / t);
    let pos = prototypes(model, labels, &templates.positive)?;
    let cos_pos = images.matmul(&pos.t()?)?; // [B, C]
    let probs = match mode {
        ClassifyMode::SingleLabel => candle_nn::ops::softmax(&(&cos_pos * scale)?, D::Minus1)?,
        ClassifyMode::MultiLabel => {
            let neg = prototypes(model, labels, &templates.negative)?;
            let cos_neg = images.matmul(&neg.t()?)?;
            // p = e^{σ·cos⁺} / (e^{σ·cos⁺} + e^{σ·cos⁻}) = sigmoid(σ·(cos⁺ − cos⁻))
            candle_nn::ops::sigmoid(&((&cos_pos - &cos_neg)? * scale)?)?
        }
    };
    let probs: Vec<Vec<f32>> = probs.to_vec2()?;
    let cos: Vec<Vec<f32>> = cos_pos.to_vec2()?;
    Ok(probs
        .into_iter()
        .zip(cos)
        .map(|(p, c)| {
            labels
                .iter()
                .zip(p.into_iter().zip(c))
                .map(|(label, (probability, score))| LabelScore {
                    label: label.clone(),
                    probability,
                    score,
                })
                .collect()
        })
        .collect())
}
