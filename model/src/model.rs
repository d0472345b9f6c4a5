//! The dual encoder assembled from a bundle: text and image in, unit-norm joint embeddings out.

use candle_core::{Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::bundle::Bundle;
use crate::config::{BundleConfig, PromptTemplates};
use crate::image_input::{preprocess, DecodedImage};
use crate::names;
use crate::tokenize::TextTokenizer;
use crate::towers::text::{l2_normalize, BertEncoder};
use crate::towers::vision::VisionEncoder;
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
    text: BertEncoder,
    vision: VisionEncoder,
    text_proj: Linear,
    vision_proj: Linear,
    logit_scale: f32,
    device: Device,
}

impl std::fmt::Debug for MirageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirageModel")
            .field("model_id", &self.config.model_id)
            .field("embed_dim", &self.config.architecture.embed_dim)
            .finish_non_exhaustive()
    }
}

impl MirageModel {
    /// Loads a validated bundle onto `device`.
    pub fn load(bundle: &Bundle, device: &Device) -> Result<Self> {
        let config = bundle.config().clone();
        let tensors = bundle.load_tensors(device)?;
        let logit = tensors
            .get(names::LOGIT_SCALE)
            .expect("validated bundle has logit_scale — this is a bug")
            .to_scalar::<f32>()?
            .exp();
        if (logit - config.logit_scale).abs() > 1e-3 * config.logit_scale.max(1.0) {
            return Err(Error::InvalidConfig(format!(
                "bundle.json logit_scale {} disagrees with exp(tensor logit_scale) = {logit}",
                config.logit_scale
            )));
        }
        let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, device);
        let arch = &config.architecture;
        let text = BertEncoder::load(&vb.pp(names::TEXT), &arch.text.bert, arch.text.pooling)?;
        let vision = VisionEncoder::load(&vb.pp(names::VISION), &arch.vision)?;
        let proj = |name: &str, in_dim: usize| -> Result<Linear> {
            let p = vb.pp(name);
            Ok(Linear::new(
                p.get((arch.embed_dim, in_dim), "weight")?,
                Some(p.get(arch.embed_dim, "bias")?),
            ))
        };
        let text_proj = proj(names::TEXT_PROJ, arch.text.bert.hidden_size)?;
        let vision_proj = proj(names::VISION_PROJ, arch.vision.feature_dim())?;
        let tokenizer = TextTokenizer::from_file(&bundle.tokenizer_path(), &config.tokenizer)?;
        tracing::info!(
            model_id = %config.model_id,
            embed_dim = arch.embed_dim,
            vision = %arch.vision.describe(),
            "model loaded"
        );
        Ok(Self {
            bundle_sha256: bundle.sha256().to_owned(),
            config,
            tokenizer,
            text,
            vision,
            text_proj,
            vision_proj,
            logit_scale: logit,
            device: device.clone(),
        })
    }

    /// Opens and loads the bundle in `dir` on the CPU.
    pub fn open_cpu(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let bundle = Bundle::open(dir)?;
        Self::load(&bundle, &Device::Cpu)
    }

    /// The bundle configuration.
    pub fn config(&self) -> &BundleConfig {
        &self.config
    }

    /// Model id from the bundle.
    pub fn model_id(&self) -> &str {
        &self.config.model_id
    }

    /// sha256 of the bundle's `bundle.json`.
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

    /// The device tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
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

    /// Pooled text features before projection, [B, H].
    pub fn text_features(&self, texts: &[&str]) -> Result<Tensor> {
        let batch = self.tokenizer.encode_batch(texts, &self.device)?;
        self.text.forward(&batch.ids, &batch.type_ids, &batch.mask)
    }

    /// Unit-norm joint text embeddings, [B, D].
    pub fn embed_texts_tensor(&self, texts: &[&str]) -> Result<Tensor> {
        let f = self.text_features(texts)?;
        l2_normalize(&self.text_proj.forward(&f)?)
    }

    /// Unit-norm joint text embeddings, one `Vec` per input.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.embed_texts_tensor(texts)?.to_vec2()?)
    }

    /// Preprocesses decoded images into a [B, 3, S, S] tensor.
    pub fn image_batch(&self, images: &[DecodedImage]) -> Result<Tensor> {
        if images.is_empty() {
            return Err(Error::InvalidInput("empty image batch".into()));
        }
        let s = self.config.preprocess.image_size;
        let mut data = Vec::with_capacity(images.len() * 3 * s * s);
        for img in images {
            data.extend(preprocess(img, &self.config.preprocess)?);
        }
        Ok(Tensor::from_vec(
            data,
            (images.len(), 3, s, s),
            &self.device,
        )?)
    }

    /// Pooled vision features before projection for a preprocessed batch, [B, C].
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision.forward(pixels)
    }

    /// Unit-norm joint image embeddings for a preprocessed batch, [B, D].
    pub fn embed_pixels(&self, pixels: &Tensor) -> Result<Tensor> {
        let f = self.image_features(pixels)?;
        l2_normalize(&self.vision_proj.forward(&f)?)
    }

    /// Unit-norm joint image embeddings of images already run through
    /// [`preprocess`](crate::image_input::preprocess) (concatenated, `count` × 3 × S × S), so
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
        let t = Tensor::from_vec(pixels, (count, 3, s, s), &self.device)?;
        Ok(self.embed_pixels(&t)?.to_vec2()?)
    }

    /// Unit-norm joint image embeddings, one `Vec` per image.
    pub fn embed_images(&self, images: &[DecodedImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.embed_pixels(&self.image_batch(images)?)?.to_vec2()?)
    }
}
