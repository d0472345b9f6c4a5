//! The two towers in tch, over exactly the tensor names of `mirage-model` (`names.rs`): the BERT
//! text tower with masked mean (or CLS) pooling, torchvision ResNet with CLIP attention pooling
//! or mean pooling, torchvision ViT, and the two projections. The arithmetic mirrors the candle
//! towers so an exported bundle embeds the same in both (a test, not a hope); in training mode
//! BatchNorm uses batch statistics and updates its running buffers, and BERT applies dropout.
//!
//! The four learnable log-scales of METHOD.md §2.1 live beside the bundle tensors: θ_p is the
//! bundle's `logit_scale`; θ_r, θ_o, θ_q are `log_scale.robust|ot|queue`, training-only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Context, Result};
use mirage_model::config::{
    Architecture, BertConfig, HiddenAct, ResNetConfig, TextPooling, VisionPooling, VisionTower,
    VitConfig,
};
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
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

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

fn linear(p: &Params, name: &str, x: &Tensor, mode: Mode) -> Tensor {
    let w = p.get(&format!("{name}.weight"));
    let b = p.get(&format!("{name}.bias"));
    let y = x
        .to_kind(mode.compute)
        .linear(&w.to_kind(mode.compute), Some(b.to_kind(mode.compute)));
    y.to_kind(Kind::Float)
}

fn layer_norm(p: &Params, name: &str, x: &Tensor, eps: f64) -> Tensor {
    let w = p.get(&format!("{name}.weight"));
    let dim = w.size()[0];
    x.layer_norm(
        [dim],
        Some(w),
        Some(p.get(&format!("{name}.bias"))),
        eps,
        true,
    )
}

/// Multi-head attention of `q` [B, Lq, H] over `k`, `v` [B, L, H] with an additive mask
/// broadcastable to [B, heads, Lq, L]. Softmax in f32 for stability under bf16.
fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: i64,
    mask: Option<&Tensor>,
    mode: Mode,
) -> Tensor {
    let (b, lq, h) = q.size3().expect("q is [B, L, H]");
    let l = k.size()[1];
    let hd = h / heads;
    let split = |x: &Tensor, len: i64| x.view([b, len, heads, hd]).transpose(1, 2);
    let (q, k, v) = (split(q, lq), split(k, l), split(v, l));
    let scores = q
        .to_kind(mode.compute)
        .matmul(&k.to_kind(mode.compute).transpose(-1, -2))
        .to_kind(Kind::Float)
        * (hd as f64).powf(-0.5);
    let scores = match mask {
        Some(m) => scores + m,
        None => scores,
    };
    let probs = scores.softmax(-1, Kind::Float);
    probs
        .to_kind(mode.compute)
        .matmul(&v.to_kind(mode.compute))
        .to_kind(Kind::Float)
        .transpose(1, 2)
        .contiguous()
        .view([b, lq, h])
}

/// BERT encoder + pooling: the unprojected text feature [B, H].
pub fn text_features(
    p: &Params,
    c: &BertConfig,
    pooling: TextPooling,
    dropout: f64,
    tokens: &TextBatch,
    mode: Mode,
) -> Tensor {
    let (ids, type_ids, mask) = (&tokens.ids, &tokens.type_ids, &tokens.mask);
    let l = ids.size()[1];
    let positions = Tensor::arange(l, (Kind::Int64, ids.device()));
    let e = |n: &str| p.get(&format!("text.embeddings.{n}.weight"));
    let x = Tensor::embedding(e("word_embeddings"), ids, -1, false, false)
        + Tensor::embedding(e("position_embeddings"), &positions, -1, false, false)
        + Tensor::embedding(e("token_type_embeddings"), type_ids, -1, false, false);
    let mut x = layer_norm(p, "text.embeddings.LayerNorm", &x, c.layer_norm_eps)
        .dropout(dropout, mode.train);
    let mask_f = mask.to_kind(Kind::Float);
    // Padding gets a large negative bias so it receives exactly zero attention weight.
    let bias = ((mask_f.ones_like() - &mask_f) * -1e9)
        .unsqueeze(1)
        .unsqueeze(1);
    let heads = c.num_attention_heads as i64;
    for i in 0..c.num_hidden_layers {
        let n = format!("text.encoder.layer.{i}");
        let q = linear(p, &format!("{n}.attention.self.query"), &x, mode);
        let k = linear(p, &format!("{n}.attention.self.key"), &x, mode);
        let v = linear(p, &format!("{n}.attention.self.value"), &x, mode);
        let ctx = attention(&q, &k, &v, heads, Some(&bias), mode);
        let a = linear(p, &format!("{n}.attention.output.dense"), &ctx, mode)
            .dropout(dropout, mode.train);
        let a = layer_norm(
            p,
            &format!("{n}.attention.output.LayerNorm"),
            &(a + &x),
            c.layer_norm_eps,
        );
        let i = linear(p, &format!("{n}.intermediate.dense"), &a, mode);
        let i = match c.hidden_act {
            HiddenAct::Gelu => i.gelu("none"),
            HiddenAct::GeluNew => i.gelu("tanh"),
            HiddenAct::Relu => i.relu(),
        };
        let o = linear(p, &format!("{n}.output.dense"), &i, mode).dropout(dropout, mode.train);
        x = layer_norm(
            p,
            &format!("{n}.output.LayerNorm"),
            &(o + a),
            c.layer_norm_eps,
        );
    }
    match pooling {
        TextPooling::Cls => x.select(1, 0),
        TextPooling::Mean => {
            let m = mask_f.unsqueeze(2);
            let summed = (x * &m).sum_dim_intlist(1, false, Kind::Float);
            summed / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9)
        }
    }
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

fn conv_bn(
    p: &Params,
    prefix: &str,
    conv: &str,
    bn: &str,
    x: &Tensor,
    stride: i64,
    mode: Mode,
) -> Tensor {
    let w = p.get(&format!("{prefix}.{conv}.weight"));
    let k = w.size()[2];
    let y = x
        .to_kind(mode.compute)
        .conv2d(
            &w.to_kind(mode.compute),
            None::<Tensor>,
            [stride, stride],
            [k / 2, k / 2],
            [1, 1],
            1,
        )
        .to_kind(Kind::Float);
    let g = |n: &str| p.get(&format!("{prefix}.{bn}.{n}"));
    y.batch_norm(
        Some(g("weight")),
        Some(g("bias")),
        Some(g("running_mean")),
        Some(g("running_var")),
        mode.train,
        BN_MOMENTUM,
        BN_EPS,
        true,
    )
}

fn resnet_features(p: &Params, c: &ResNetConfig, x: &Tensor, mode: Mode) -> Tensor {
    let expansion = if c.bottleneck { 4 } else { 1 };
    let mut x = conv_bn(p, "vision", "conv1", "bn1", x, 2, mode)
        .relu()
        .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
    let mut in_c = c.width;
    for (stage, &blocks) in c.layers.iter().enumerate() {
        let planes = c.width << stage;
        for b in 0..blocks {
            let pre = format!("vision.layer{}.{b}", stage + 1);
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let y = if c.bottleneck {
                let y = conv_bn(p, &pre, "conv1", "bn1", &x, 1, mode).relu();
                let y = conv_bn(p, &pre, "conv2", "bn2", &y, stride, mode).relu();
                conv_bn(p, &pre, "conv3", "bn3", &y, 1, mode)
            } else {
                let y = conv_bn(p, &pre, "conv1", "bn1", &x, stride, mode).relu();
                conv_bn(p, &pre, "conv2", "bn2", &y, 1, mode)
            };
            let identity = if b == 0 && (stride != 1 || in_c != planes * expansion) {
                conv_bn(p, &pre, "downsample.0", "downsample.1", &x, stride, mode)
            } else {
                x.shallow_clone()
            };
            x = (y + identity).relu();
            in_c = planes * expansion;
        }
    }
    match c.pooling {
        VisionPooling::Mean => x.mean_dim([2i64, 3].as_slice(), false, Kind::Float),
        VisionPooling::Attention => {
            let (b, ch, h, w) = x.size4().expect("feature map is 4-D");
            let tokens = x.view([b, ch, h * w]).transpose(1, 2); // [B, HW, C]
            let mean = tokens.mean_dim([1i64].as_slice(), true, Kind::Float);
            let seq =
                Tensor::cat(&[mean, tokens], 1) + p.get("vision.attnpool.positional_embedding");
            let q = linear(p, "vision.attnpool.q_proj", &seq.narrow(1, 0, 1), mode);
            let k = linear(p, "vision.attnpool.k_proj", &seq, mode);
            let v = linear(p, "vision.attnpool.v_proj", &seq, mode);
            let out = attention(&q, &k, &v, c.attention_heads as i64, None, mode);
            linear(p, "vision.attnpool.c_proj", &out.squeeze_dim(1), mode)
        }
    }
}

fn vit_features(p: &Params, c: &VitConfig, x: &Tensor, mode: Mode) -> Tensor {
    let patch = c.patch_size as i64;
    let y = x
        .to_kind(mode.compute)
        .conv2d(
            &p.get("vision.conv_proj.weight").to_kind(mode.compute),
            Some(p.get("vision.conv_proj.bias").to_kind(mode.compute)),
            [patch, patch],
            [0, 0],
            [1, 1],
            1,
        )
        .to_kind(Kind::Float);
    let b = y.size()[0];
    let h = c.hidden_size as i64;
    let y = y.flatten(2, -1).transpose(1, 2);
    let cls = p.get("vision.class_token").expand([b, 1, h], false);
    let mut y = Tensor::cat(&[cls, y], 1) + p.get("vision.encoder.pos_embedding");
    for i in 0..c.num_layers {
        let n = format!("vision.encoder.layers.encoder_layer_{i}");
        let z = layer_norm(p, &format!("{n}.ln_1"), &y, c.layer_norm_eps);
        let w = p.get(&format!("{n}.self_attention.in_proj_weight"));
        let bias = p.get(&format!("{n}.self_attention.in_proj_bias"));
        let qkv = z
            .to_kind(mode.compute)
            .linear(&w.to_kind(mode.compute), Some(bias.to_kind(mode.compute)))
            .to_kind(Kind::Float);
        let parts = qkv.split(h, 2);
        let ctx = attention(
            &parts[0],
            &parts[1],
            &parts[2],
            c.num_heads as i64,
            None,
            mode,
        );
        y = &y + linear(p, &format!("{n}.self_attention.out_proj"), &ctx, mode);
        let z = layer_norm(p, &format!("{n}.ln_2"), &y, c.layer_norm_eps);
        let z = linear(p, &format!("{n}.mlp.0"), &z, mode).gelu("none");
        y = &y + linear(p, &format!("{n}.mlp.3"), &z, mode);
    }
    layer_norm(p, "vision.encoder.ln", &y.select(1, 0), c.layer_norm_eps)
}

/// Pooled vision feature [B, F] of normalised images [B, 3, S, S].
pub fn vision_features(p: &Params, v: &VisionTower, x: &Tensor, mode: Mode) -> Tensor {
    match v {
        VisionTower::Resnet(c) => resnet_features(p, c, x, mode),
        VisionTower::Vit(c) => vit_features(p, c, x, mode),
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
        let f = text_features(
            &self.params,
            &self.arch.text.bert,
            self.arch.text.pooling,
            self.text_dropout,
            batch,
            mode,
        );
        linear(&self.params, names::TEXT_PROJ, &f, mode)
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
