//! The two towers in tch, over exactly the tensor names of `mirage-model` (`names.rs`), one block
//! per file as in `mirage-model`'s `towers/` (`bert`, `resnet` with `attention_pool`, `vit`,
//! `vision`, shared `layers`): the BERT
//! text tower with masked mean (or CLS) pooling, torchvision ResNet with CLIP attention pooling
//! or mean pooling, torchvision ViT, and the two projections. The arithmetic mirrors the candle
//! towers so an exported bundle embeds the same in both (a test, not a hope); in training mode
//! BatchNorm uses batch statistics and updates its running buffers, and BERT applies dropout to
//! embeddings and sublayer outputs (not to attention probabilities, where Hugging Face also does).
//!
//! The four learnable log-scales of docs/METHOD.md §2.1 live beside the bundle tensors: θ_p is the
//! bundle's `logit_scale`; θ_r, θ_o, θ_q are `log_scale.robust|ot|queue`, training-only.

mod attention_pool;
mod bert;
mod block;
mod clip_text;
mod layers;
mod resnet;
mod vision;
mod vit;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Context, Result};
use mirage_model::config::{Architecture, TextProjection, TextTower};
use mirage_model::names;
use tch::{Device, Kind, Tensor};

/// Training-only log-scale names.
pub const LOG_SCALE_ROBUST: &str = "log_scale.robust";
/// θ_o.
pub const LOG_SCALE_OT: &str = "log_scale.ot";
/// θ_q.
pub const LOG_SCALE_QUEUE: &str = "log_scale.queue";

/// Every trainable tensor and buffer by name, on one device, in f32.
#[derive(Debug)]
pub struct Params {
    tensors: BTreeMap<String, Tensor>,
    trainable: BTreeSet<String>,
}

fn is_buffer(name: &str) -> bool {
    name.rsplit('.')
        .next()
        .is_some_and(|leaf| leaf == names::RUNNING_MEAN || leaf == names::RUNNING_VAR)
}

pub use bert::text_features;
use clip_text::clip_text_features;
use layers::linear;
pub use vision::vision_features;

/// A candle tensor as a tch tensor (f32, on `device`).
pub fn from_candle(t: &candle_core::Tensor, device: Device) -> Result<Tensor> {
    let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
    let data = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(Tensor::from_slice(&data).reshape(dims).to_device(device))
}

impl Params {
    /// Takes `tensors` (every name of the architecture's scheme plus the training log-scales);
    /// BatchNorm running statistics become buffers, everything else trainable.
    pub fn new(
        arch: &Architecture,
        mut tensors: BTreeMap<String, Tensor>,
        device: Device,
    ) -> Result<Self> {
        for spec in names::model_tensors(arch) {
            let t = tensors
                .get(&spec.name)
                .with_context(|| format!("initial weights lack tensor `{}`", spec.name))?;
            let want: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
            if t.size() != want {
                bail!(
                    "tensor `{}` has shape {:?}, the architecture needs {want:?}",
                    spec.name,
                    t.size()
                );
            }
        }
        for name in [LOG_SCALE_ROBUST, LOG_SCALE_OT, LOG_SCALE_QUEUE] {
            if !tensors.contains_key(name) {
                bail!("initial weights lack the log-scale `{name}`");
            }
        }
        let mut trainable = BTreeSet::new();
        for (name, t) in tensors.iter_mut() {
            let moved = t
                .to_device(device)
                .to_kind(Kind::Float)
                .detach()
                .contiguous();
            *t = if is_buffer(name) {
                moved
            } else {
                trainable.insert(name.clone());
                moved.set_requires_grad(true)
            };
        }
        Ok(Self { tensors, trainable })
    }

    /// The tensor called `name`.
    ///
    /// # Panics
    /// When the name is not part of the scheme; `new` checked every one, so this is a bug.
    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("tensor `{name}` missing — this is a bug"))
    }

    /// Trainable tensors by name.
    pub fn trainable(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.tensors
            .iter()
            .filter(|(n, _)| self.trainable.contains(*n))
    }

    /// Every tensor (buffers too) by name.
    pub fn all(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// Marks a tensor as frozen (no gradient, no update).
    pub fn freeze(&mut self, name: &str) {
        if self.trainable.remove(name) {
            let t = self.tensors.get_mut(name).expect("frozen name exists");
            *t = t.detach();
        }
    }

    /// Copies `values` into the tensors of the same names (checkpoint resume).
    pub fn load_values(&mut self, values: &HashMap<String, Tensor>) -> Result<()> {
        for (name, t) in &self.tensors {
            let v = values
                .get(name)
                .with_context(|| format!("checkpoint lacks tensor `{name}`"))?;
            if v.size() != t.size() {
                bail!(
                    "checkpoint tensor `{name}` has shape {:?}, expected {:?}",
                    v.size(),
                    t.size()
                );
            }
            tch::no_grad(|| {
                let mut dst = t.shallow_clone();
                dst.copy_(&v.to_kind(Kind::Float));
            });
        }
        Ok(())
    }
}

/// Forward-pass settings.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Training mode: batch statistics, dropout.
    pub train: bool,
    /// Kind of matmuls and convolutions (f32 or bf16); everything else runs in f32.
    pub compute: Kind,
}

impl Mode {
    /// fp32 evaluation.
    pub fn eval() -> Self {
        Self {
            train: false,
            compute: Kind::Float,
        }
    }
}

/// Token ids on the device.
#[derive(Debug)]
pub struct TextBatch {
    /// [B, L] int64.
    pub ids: Tensor,
    /// [B, L] int64.
    pub type_ids: Tensor,
    /// [B, L] int64, 1 for tokens.
    pub mask: Tensor,
}

impl TextBatch {
    /// From the tokenizer's row-major vectors.
    pub fn from_ids(t: &mirage_model::tokenize::TokenIds, device: Device) -> Self {
        let shape = [t.batch as i64, t.seq_len as i64];
        let conv = |v: &[u32]| {
            let v: Vec<i64> = v.iter().map(|&x| i64::from(x)).collect();
            Tensor::from_slice(&v).view(shape).to_device(device)
        };
        Self {
            ids: conv(&t.ids),
            type_ids: conv(&t.type_ids),
            mask: conv(&t.mask),
        }
    }
}

/// Both towers and projections over one parameter set.
#[derive(Debug)]
pub struct DualEncoder {
    /// Weights.
    pub params: Params,
    /// Shapes.
    pub arch: Architecture,
    /// BERT dropout in training mode.
    pub text_dropout: f64,
}

impl DualEncoder {
    /// Projected, not yet normalised, text embeddings [B, D].
    pub fn text(&self, batch: &TextBatch, mode: Mode) -> Tensor {
        let f = match &self.arch.text {
            TextTower::Bert { bert, pooling } => {
                text_features(&self.params, bert, *pooling, self.text_dropout, batch, mode)
            }
            TextTower::Clip { clip } => clip_text_features(&self.params, clip, batch, mode),
        };
        match self.arch.text_projection {
            TextProjection::Linear => linear(&self.params, names::TEXT_PROJ, &f, mode),
            TextProjection::Mlp { .. } => {
                let p = |leaf: &str| names::path(&[names::TEXT_PROJ, leaf]);
                let h = linear(&self.params, &p(names::MLP_HEAD_IN), &f, mode).gelu("none");
                linear(&self.params, &p(names::MLP_HEAD_OUT), &h, mode)
            }
        }
    }

    /// Projected, not yet normalised, image embeddings [B, D].
    pub fn image(&self, pixels: &Tensor, mode: Mode) -> Tensor {
        let f = vision_features(&self.params, &self.arch.vision, pixels, mode);
        linear(&self.params, names::VISION_PROJ, &f, mode)
    }
}

/// L2 normalisation over the last dimension (zero rows stay zero).
pub fn l2n(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}
