//! Zero-shot classification with prompt-template ensembles (CLIP's recipe): each class prototype
//! is the re-normalised mean of its prompts' embeddings; probabilities are a softmax over
//! σ·cos / T. Multi-label mode scores every label against its own negation prompts.

use serde::Serialize;

use crate::config::PromptTemplates;
use crate::embeddings::{normalize, softmax, Embeddings};
use crate::model::MirageModel;
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

/// Class prototypes, one row per label: the mean of the label's template embeddings,
/// re-normalised (a prompt ensemble).
pub fn prototypes(
    model: &MirageModel,
    labels: &[String],
    templates: &[String],
) -> Result<Embeddings> {
    if templates.is_empty() {
        return Err(Error::InvalidInput("no prompt templates".into()));
    }
    let prompts: Vec<String> = labels
        .iter()
        .flat_map(|l| templates.iter().map(move |t| fill(t, l)))
        .collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let emb = model.embed_text_batch(&refs)?; // C·T rows
    let d = emb.dim();
    let mut out = Vec::with_capacity(labels.len() * d);
    for label in 0..labels.len() {
        let mut mean = vec![0f32; d];
        for t in 0..templates.len() {
            mean.iter_mut()
                .zip(emb.row(label * templates.len() + t))
                .for_each(|(m, x)| *m += x);
        }
        mean.iter_mut().for_each(|m| *m /= templates.len() as f32);
        normalize(&mut mean);
        out.extend(mean);
    }
    Embeddings::new(out, d)
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

/// Classifies unit image embeddings (one row per image) against `labels`; one result list per
/// image.
pub fn classify(
    model: &MirageModel,
    images: &Embeddings,
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
    let scale = model.logit_scale() / t;
    let pos = prototypes(model, labels, &templates.positive)?;
    let cos_pos = images.similarities(&pos)?; // images × labels
    let c = labels.len();
    let probs: Vec<f32> = match mode {
        ClassifyMode::SingleLabel => cos_pos
            .chunks_exact(c)
            .flat_map(|row| {
                let mut logits: Vec<f32> = row.iter().map(|x| x * scale).collect();
                softmax(&mut logits);
                logits
            })
            .collect(),
        ClassifyMode::MultiLabel => {
            let neg = prototypes(model, labels, &templates.negative)?;
            let cos_neg = images.similarities(&neg)?;
            // p = e^{σ·cos⁺} / (e^{σ·cos⁺} + e^{σ·cos⁻}) = sigmoid(σ·(cos⁺ − cos⁻))
            cos_pos
                .iter()
                .zip(&cos_neg)
                .map(|(p, n)| 1.0 / (1.0 + (-(p - n) * scale).exp()))
                .collect()
        }
    };
    Ok(probs
        .chunks_exact(c)
        .zip(cos_pos.chunks_exact(c))
        .map(|(p, cos)| {
            labels
                .iter()
                .zip(p.iter().zip(cos))
                .map(|(label, (&probability, &score))| LabelScore {
                    label: label.clone(),
                    probability,
                    score,
                })
                .collect()
        })
        .collect())
}
