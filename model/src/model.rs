//! The dual encoder assembled from a bundle: text and image in, unit-norm joint embeddings out.
//! What is engine-independent lives here (bundle, configuration, tokenizer, image preprocessing,
//! prompt templates, logit scale); the two forward passes run on the engine chosen at load
//! (`engine/`).

use crate::bundle::Bundle;
use crate::config::{BundleConfig, PromptTemplates, TextTower};
use crate::embeddings::Embeddings;
use crate::engine::{self, DeviceChoice, Engine, EngineKind, EngineOptions, TextRole};
use crate::image_input::{preprocess, DecodedImage};
use crate::names;
use crate::tokenize::{TextTokenizer, TokenIds};
use crate::{Error, Result};

/// Built-in zero-shot templates (data, not code: `model/data/prompt_templates.json`).
const DEFAULT_TEMPLATES: &str = include_str!("../data/prompt_templates.json");

/// The built-in medical prompt templates.
pub fn default_templates() -> PromptTemplates {
    serde_json::from_str(DEFAULT_TEMPLATES)
        .expect("built-in prompt templates parse — this is a bug")
}

/// A loaded MIRAGE dual encoder.
pub struct MirageModel {
    config: BundleConfig,
    bundle_sha256: String,
    tokenizer: TextTokenizer,
    /// The tokenizer at the query tower's limit (asymmetric bundles only).
    query_tokenizer: Option<TextTokenizer>,
    engine: Box<dyn Engine>,
    inference_device: DeviceChoice,
    logit_scale: f32,
}

impl std::fmt::Debug for MirageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirageModel")
            .field("model_id", &self.config.model_id)
            .field("embed_dim", &self.config.architecture.embed_dim)
            .field("engine", &self.engine.describe())
            .finish_non_exhaustive()
    }
}

impl MirageModel {
    /// Loads a validated bundle on the engine `options` choose.
    pub fn load(bundle: &Bundle, options: &EngineOptions) -> Result<Self> {
        let config = bundle.config().clone();
        let tensors = bundle.load_weights()?;
        let logit = tensors
            .get(names::LOGIT_SCALE)
            .and_then(|t| t.data().first())
            .expect("validated bundle has logit_scale — this is a bug")
            .exp();
        if (logit - config.logit_scale).abs() > 1e-3 * config.logit_scale.max(1.0) {
            return Err(Error::InvalidConfig(format!(
                "bundle.json logit_scale {} disagrees with exp(tensor logit_scale) = {logit}",
                config.logit_scale
            )));
        }
        let engine = engine::load(bundle, tensors, options)?;
        let tokenizer = TextTokenizer::from_file(&bundle.tokenizer_path(), &config.tokenizer)?;
        let arch = &config.architecture;
        let query_tokenizer = match &arch.query_text {
            Some(_) => Some(
                tokenizer.with_max_length(
                    config
                        .tokenizer
                        .query_max_length
                        .unwrap_or(config.tokenizer.max_length),
                )?,
            ),
            None => None,
        };
        if let TextTower::Clip { clip } = &arch.text {
            // The pooled feature is the end-of-text token's: a tokenizer that never emits it
            // would make every text embed garbage, so it is refused here, once.
            let probe = tokenizer.encode_ids(&["a chest x-ray"])?;
            if !probe.ids.contains(&clip.eos_token_id) {
                return Err(Error::InvalidConfig(format!(
                    "the CLIP text tower pools at end-of-text token id {}, which tokenizer.json \
                     does not append to a text (ids {:?})",
                    clip.eos_token_id, probe.ids
                )));
            }
        }
        tracing::info!(
            model_id = %config.model_id,
            embed_dim = arch.embed_dim,
            vision = %arch.vision.describe(),
            engine = %engine.describe(),
            "model loaded"
        );
        Ok(Self {
            bundle_sha256: bundle.sha256().to_owned(),
            config,
            tokenizer,
            query_tokenizer,
            engine,
            inference_device: options.device,
            logit_scale: logit,
        })
    }

    /// Opens and loads the bundle in `dir` with `options`.
    pub fn open(dir: impl AsRef<std::path::Path>, options: &EngineOptions) -> Result<Self> {
        let bundle = Bundle::open(dir)?;
        Self::load(&bundle, options)
    }

    /// Opens and loads the bundle in `dir` on the CPU with the default engine choice (ONNX
    /// Runtime where its library loads, else candle).
    pub fn open_cpu(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::open(dir, &EngineOptions::default())
    }

    /// The bundle configuration.
    pub fn config(&self) -> &BundleConfig {
        &self.config
    }

    /// Model id from the bundle.
    pub fn model_id(&self) -> &str {
        &self.config.model_id
    }

    /// The model's identity (see [`Bundle::sha256`]).
    pub fn bundle_sha256(&self) -> &str {
        &self.bundle_sha256
    }

    /// Joint embedding dimension.
    pub fn dim(&self) -> usize {
        self.config.architecture.embed_dim
    }

    /// σ, the multiplicative logit scale.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// The engine running the towers.
    pub fn engine(&self) -> EngineKind {
        self.engine.kind()
    }

    /// Where the towers run.
    pub fn inference_device(&self) -> DeviceChoice {
        self.inference_device
    }

    /// The engine, its version, device and threads, in words (logs, `/info`).
    pub fn engine_description(&self) -> String {
        self.engine.describe()
    }

    /// The tokenizer with the bundle's settings.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Zero-shot templates: the bundle's, else the built-in medical set.
    pub fn prompt_templates(&self) -> PromptTemplates {
        self.config
            .prompt_templates
            .clone()
            .unwrap_or_else(default_templates)
    }

    fn rows(&self, flat: Vec<f32>) -> Result<Vec<Vec<f32>>> {
        Ok(Embeddings::new(flat, self.dim())?.to_rows())
    }

    /// Whether queries have a tower of their own (an asymmetric bundle such as MedCPT).
    pub fn has_query_tower(&self) -> bool {
        self.query_tokenizer.is_some()
    }

    /// The tokenizer of texts in `role`.
    pub fn tokenizer_for(&self, role: TextRole) -> &TextTokenizer {
        match (role, &self.query_tokenizer) {
            (TextRole::Query, Some(q)) => q,
            _ => &self.tokenizer,
        }
    }

    /// Embeds a batch in sub-batches of similar length (see [`length_groups`]) and returns the
    /// rows in input order.
    fn embed_texts_flat(&self, texts: &[&str], role: TextRole) -> Result<Vec<f32>> {
        let tokens = self.tokenizer_for(role).encode_ids(texts)?;
        let groups = length_groups(&tokens.lengths);
        if groups.len() == 1 {
            return self.engine.embed_tokens(&tokens, role);
        }
        let d = self.dim();
        let mut out = vec![0f32; tokens.batch * d];
        for group in groups {
            let len = group
                .iter()
                .map(|&i| tokens.lengths[i])
                .max()
                .unwrap_or(1)
                .max(1);
            let take = |v: &[u32]| -> Vec<u32> {
                group
                    .iter()
                    .flat_map(|&i| &v[i * tokens.seq_len..i * tokens.seq_len + len])
                    .copied()
                    .collect()
            };
            let part = TokenIds {
                ids: take(&tokens.ids),
                type_ids: take(&tokens.type_ids),
                mask: take(&tokens.mask),
                lengths: group.iter().map(|&i| tokens.lengths[i]).collect(),
                batch: group.len(),
                seq_len: len,
            };
            let emb = self.engine.embed_tokens(&part, role)?;
            for (row, &i) in emb.chunks_exact(d).zip(&group) {
                out[i * d..(i + 1) * d].copy_from_slice(row);
            }
        }
        Ok(out)
    }

    /// Unit-norm joint text embeddings of a batch (the document tower), one row per text.
    pub fn embed_text_batch(&self, texts: &[&str]) -> Result<Embeddings> {
        Embeddings::new(
            self.embed_texts_flat(texts, TextRole::Document)?,
            self.dim(),
        )
    }

    /// Unit-norm joint text embeddings, one `Vec` per input (the document tower).
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_texts_as(texts, TextRole::Document)
    }

    /// Unit-norm joint embeddings of search queries: by the query tower where the bundle has
    /// one, else as [`Self::embed_texts`].
    pub fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_texts_as(texts, TextRole::Query)
    }

    /// Unit-norm joint embeddings of texts in `role`.
    pub fn embed_texts_as(&self, texts: &[&str], role: TextRole) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.rows(self.embed_texts_flat(texts, role)?)
    }

    /// Preprocesses decoded images for this model: `images.len()` × 3 × S × S values.
    pub fn preprocess_images(&self, images: &[DecodedImage]) -> Result<Vec<f32>> {
        if images.is_empty() {
            return Err(Error::InvalidInput("empty image batch".into()));
        }
        let s = self.config.preprocess.image_size;
        let mut data = Vec::with_capacity(images.len() * 3 * s * s);
        for img in images {
            data.extend(preprocess(img, &self.config.preprocess)?);
        }
        Ok(data)
    }

    /// Unit-norm joint image embeddings of `count` preprocessed images (`count` × 3 × S × S
    /// values, as [`Self::preprocess_images`] gives them), one row per image.
    pub fn embed_pixel_batch(&self, pixels: &[f32], count: usize) -> Result<Embeddings> {
        let s = self.config.preprocess.image_size;
        if count == 0 || pixels.len() != count * 3 * s * s {
            return Err(Error::InvalidInput(format!(
                "{} preprocessed values for {count} images of 3x{s}x{s}",
                pixels.len()
            )));
        }
        Embeddings::new(self.engine.embed_pixels(pixels, count)?, self.dim())
    }

    /// Unit-norm joint image embeddings of images already run through
    /// [`crate::image_input::preprocess`] (concatenated, `count` × 3 × S × S), so
    /// callers can preprocess on worker threads and keep this thread on the model.
    pub fn embed_preprocessed(&self, pixels: Vec<f32>, count: usize) -> Result<Vec<Vec<f32>>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let s = self.config.preprocess.image_size;
        if pixels.len() != count * 3 * s * s {
            return Err(Error::InvalidInput(format!(
                "{} preprocessed values for {count} images of 3x{s}x{s}",
                pixels.len()
            )));
        }
        self.rows(self.engine.embed_pixels(&pixels, count)?)
    }

    /// Unit-norm joint image embeddings, one `Vec` per image.
    pub fn embed_images(&self, images: &[DecodedImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .embed_pixel_batch(&self.preprocess_images(images)?, images.len())?
            .to_rows())
    }
}

/// Splits a batch into sub-batches of similar token length, so short texts are not padded to the
/// longest one. Padding is masked, so the split never changes a vector; it only removes work.
///
/// The split minimises `Σ (CALL_COST + rows × longest)` over the groups — padded token rows
/// computed, plus a fixed cost per forward pass — exactly, by dynamic programming over the texts
/// sorted by length (an optimal group is a run of that order). `CALL_COST` ≈ 16 token rows is what
/// one extra pass costs next to one token row of MiniLM on a CPU (≈ 1.5 ms against ≈ 0.1 ms).
pub(crate) fn length_groups(lengths: &[usize]) -> Vec<Vec<usize>> {
    const CALL_COST: usize = 16;
    let n = lengths.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| lengths[i]);
    let len = |k: usize| lengths[order[k]].max(1);
    // best[j]: cheapest split of the first j sorted texts; cut[j]: where its last group starts.
    let mut best = vec![0usize; n + 1];
    let mut cut = vec![0usize; n + 1];
    for j in 1..=n {
        let (start, cost) = (0..j)
            .map(|i| (i, best[i] + CALL_COST + (j - i) * len(j - 1)))
            .min_by_key(|&(_, c)| c)
            .expect("j >= 1 gives a candidate");
        best[j] = cost;
        cut[j] = start;
    }
    let mut groups = Vec::new();
    let mut j = n;
    while j > 0 {
        groups.push(order[cut[j]..j].to_vec());
        j = cut[j];
    }
    groups.reverse();
    groups
}

#[cfg(test)]
mod tests {
    use super::length_groups;

    #[test]
    fn length_groups_cover_every_item_once_and_cut_padding() {
        let lengths: Vec<usize> = (0..64).map(|i| 5 + (i * 37) % 250).collect();
        let groups = length_groups(&lengths);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..64).collect::<Vec<_>>());
        let padded = |g: &[usize]| g.len() * g.iter().map(|&i| lengths[i]).max().unwrap();
        let grouped: usize = groups.iter().map(|g| padded(g)).sum();
        let all: usize = padded(&(0..64).collect::<Vec<_>>());
        assert!(
            groups.len() > 1 && grouped < all * 3 / 4,
            "{grouped} vs {all}"
        );
        // Similar lengths: one group, one call.
        assert_eq!(length_groups(&[30, 32, 31, 29]).len(), 1);
        // Very different lengths: the long one alone.
        assert_eq!(length_groups(&[3, 5, 4, 200]), vec![vec![0, 2, 1], vec![3]]);
        assert!(length_groups(&[]).is_empty());
    }
}
