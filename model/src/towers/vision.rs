//! Vision towers: torchvision ResNet trunks (BatchNorm folded into the convolutions at load time)
//! with CLIP attention pooling or mean pooling, and torchvision's VisionTransformer.

use candle_core::{Module, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};

use super::dense::Dense;
use super::text::{layer_norm, linear};
use crate::config::{ResNetConfig, VisionPooling, VisionTower, VitConfig};
use crate::Result;

const BN_EPS: f64 = 1e-5;

/// A convolution with its BatchNorm folded in: `conv(x, w·γ/√(var+ε)) + (β − mean·γ/√(var+ε))`.
/// Inference only, so the fold is exact up to float rounding and saves a pass over every map.
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    fn load(
        vb: &VarBuilder<'_>,
        conv: &str,
        bn: &str,
        shape: (usize, usize, usize),
        stride: usize,
    ) -> Result<Self> {
        let (out_c, in_c, k) = shape;
        let w = vb.get((out_c, in_c, k, k), &format!("{conv}.weight"))?;
        let gamma = vb.get(out_c, &format!("{bn}.weight"))?;
        let beta = vb.get(out_c, &format!("{bn}.bias"))?;
        let mean = vb.get(out_c, &format!("{bn}.running_mean"))?;
        let var = vb.get(out_c, &format!("{bn}.running_var"))?;
        let scale = gamma.div(&(var + BN_EPS)?.sqrt()?)?;
        let weight = w.broadcast_mul(&scale.reshape((out_c, 1, 1, 1))?)?;
        let bias = (beta - mean.mul(&scale)?)?.reshape((1, out_c, 1, 1))?;
        Ok(Self {
            weight,
            bias,
            stride,
            padding: k / 2,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (o, c, k, _) = self.weight.dims4()?;
        let y = if k == 1 {
            // A 1×1 convolution is a plain (O×C)·(C×HW) product per image: skip im2col's copy.
            let x = if self.stride == 1 {
                x.clone()
            } else {
                subsample(x, self.stride)?
            };
            let (b, _, h, w) = x.dims4()?;
            let flat = x.reshape((b, c, h * w))?;
            self.weight
                .reshape((o, c))?
                .broadcast_left(b)?
                .matmul(&flat)?
                .reshape((b, o, h, w))?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
        };
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// Every `stride`-th row and column starting at 0, as a strided 1×1 convolution samples them.
fn subsample(x: &Tensor, stride: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (ph, pw) = (h.div_ceil(stride) * stride, w.div_ceil(stride) * stride);
    let x = if (ph, pw) == (h, w) {
        x.clone()
    } else {
        x.pad_with_zeros(2, 0, ph - h)?
            .pad_with_zeros(3, 0, pw - w)?
    };
    Ok(x.reshape((b, c, ph / stride, stride, pw / stride, stride))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((b, c, ph / stride, pw / stride))?)
}

struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            y = c.forward(&y)?;
            if i != last {
                y = y.relu()?;
            }
        }
        let identity = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        Ok((y + identity)?.relu()?)
    }
}

/// CLIP `AttentionPool2d`: the mean token, with learned positions, attends over the feature grid.
struct AttentionPool {
    positional: Tensor,
    q: Dense,
    k: Dense,
    v: Dense,
    c: Dense,
    heads: usize,
}

impl AttentionPool {
    fn load(vb: &VarBuilder<'_>, dim: usize, tokens: usize, heads: usize) -> Result<Self> {
        let lin = |name: &str| linear(&vb.pp(name), dim, dim);
        Ok(Self {
            positional: vb.get((tokens, dim), "positional_embedding")?,
            q: lin("q_proj")?,
            k: lin("k_proj")?,
            v: lin("v_proj")?,
            c: lin("c_proj")?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let x = x.reshape((b, c, h * w))?.transpose(1, 2)?; // [B, HW, C]
        let mean = x.mean_keepdim(1)?;
        let x = Tensor::cat(&[&mean, &x], 1)?.broadcast_add(&self.positional)?; // [B, S, C]
        let s = h * w + 1;
        let hd = c / self.heads;
        let q = self.q.forward(&x.narrow(1, 0, 1)?)?; // [B, 1, C]
        let k = self.k.forward(&x)?;
        let v = self.v.forward(&x)?;
        let q = (q.reshape((b, 1, self.heads, hd))?.transpose(1, 2)? * (hd as f64).powf(-0.5))?;
        let k = k
            .reshape((b, s, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = v
            .reshape((b, s, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let attn = candle_nn::ops::softmax_last_dim(&q.contiguous()?.matmul(&k.t()?)?)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, c))?;
        self.c.forward(&out)
    }
}

/// torchvision ResNet trunk with pooling.
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    pool: Option<AttentionPool>,
}

impl ResNet {
    /// Loads from a VarBuilder rooted at `vision`.
    pub fn load(vb: &VarBuilder<'_>, c: &ResNetConfig) -> Result<Self> {
        let expansion = if c.bottleneck { 4 } else { 1 };
        let stem = ConvBn::load(vb, "conv1", "bn1", (c.width, 3, 7), 2)?;
        let mut blocks = Vec::new();
        let mut in_c = c.width;
        for (stage, &n) in c.layers.iter().enumerate() {
            let planes = c.width << stage;
            let stage_stride = if stage == 0 { 1 } else { 2 };
            for b in 0..n {
                let p = vb.pp(format!("layer{}.{b}", stage + 1));
                let stride = if b == 0 { stage_stride } else { 1 };
                // torchvision (v1.5) puts the stride on the 3×3 convolution of a bottleneck.
                let convs = if c.bottleneck {
                    vec![
                        ConvBn::load(&p, "conv1", "bn1", (planes, in_c, 1), 1)?,
                        ConvBn::load(&p, "conv2", "bn2", (planes, planes, 3), stride)?,
                        ConvBn::load(&p, "conv3", "bn3", (planes * expansion, planes, 1), 1)?,
                    ]
                } else {
                    vec![
                        ConvBn::load(&p, "conv1", "bn1", (planes, in_c, 3), stride)?,
                        ConvBn::load(&p, "conv2", "bn2", (planes, planes, 3), 1)?,
                    ]
                };
                let downsample = if b == 0 && (stride != 1 || in_c != planes * expansion) {
                    Some(ConvBn::load(
                        &p,
                        "downsample.0",
                        "downsample.1",
                        (planes * expansion, in_c, 1),
                        stride,
                    )?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                in_c = planes * expansion;
            }
        }
        let pool = match c.pooling {
            VisionPooling::Attention => Some(AttentionPool::load(
                &vb.pp("attnpool"),
                c.feature_dim(),
                c.grid() * c.grid() + 1,
                c.attention_heads,
            )?),
            VisionPooling::Mean => None,
        };
        Ok(Self { stem, blocks, pool })
    }

    /// Pooled feature [B, C] for normalised images [B, 3, S, S].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.stem.forward(x)?.relu()?;
        // Max-pool 3×3/2 with padding 1. After a ReLU every value is ≥ 0, so zero padding gives
        // the same maxima as torch's −∞ padding.
        let mut x = x
            .pad_with_zeros(2, 1, 1)?
            .pad_with_zeros(3, 1, 1)?
            .max_pool2d_with_stride(3, 2)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        match &self.pool {
            Some(pool) => pool.forward(&x),
            None => Ok(x.flatten_from(2)?.mean(D::Minus1)?),
        }
    }
}

struct VitLayer {
    ln1: LayerNorm,
    in_proj: Dense,
    out_proj: Dense,
    ln2: LayerNorm,
    fc1: Dense,
    fc2: Dense,
    heads: usize,
}

impl VitLayer {
    fn load(vb: &VarBuilder<'_>, c: &VitConfig) -> Result<Self> {
        let h = c.hidden_size;
        let a = vb.pp("self_attention");
        Ok(Self {
            ln1: layer_norm(&vb.pp("ln_1"), h, c.layer_norm_eps)?,
            in_proj: Dense::new(
                &a.get((3 * h, h), "in_proj_weight")?,
                Some(a.get(3 * h, "in_proj_bias")?),
            )?,
            out_proj: linear(&a.pp("out_proj"), h, h)?,
            ln2: layer_norm(&vb.pp("ln_2"), h, c.layer_norm_eps)?,
            fc1: linear(&vb.pp("mlp.0"), c.mlp_dim, h)?,
            fc2: linear(&vb.pp("mlp.3"), h, c.mlp_dim)?,
            heads: c.num_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let hd = h / self.heads;
        let y = self.ln1.forward(x)?;
        let qkv = self.in_proj.forward(&y)?;
        let split = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i * h, h)?
                .reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = (split(0)? * (hd as f64).powf(-0.5))?;
        let (k, v) = (split(1)?, split(2)?);
        let attn = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let ctx = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        let x = (x + self.out_proj.forward(&ctx)?)?;
        let y = self
            .fc2
            .forward(&self.fc1.forward(&self.ln2.forward(&x)?)?.gelu_erf()?)?;
        Ok((x + y)?)
    }
}

/// torchvision `VisionTransformer` without its classification head.
pub struct Vit {
    conv_proj_w: Tensor,
    conv_proj_b: Tensor,
    class_token: Tensor,
    pos_embedding: Tensor,
    layers: Vec<VitLayer>,
    ln: LayerNorm,
    patch: usize,
}

impl Vit {
    /// Loads from a VarBuilder rooted at `vision`.
    pub fn load(vb: &VarBuilder<'_>, c: &VitConfig) -> Result<Self> {
        let h = c.hidden_size;
        let layers = (0..c.num_layers)
            .map(|i| VitLayer::load(&vb.pp(format!("encoder.layers.encoder_layer_{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv_proj_w: vb.get((h, 3, c.patch_size, c.patch_size), "conv_proj.weight")?,
            conv_proj_b: vb.get(h, "conv_proj.bias")?.reshape((1, h, 1, 1))?,
            class_token: vb.get((1, 1, h), "class_token")?,
            pos_embedding: vb.get((1, c.seq_len(), h), "encoder.pos_embedding")?,
            layers,
            ln: layer_norm(&vb.pp("encoder.ln"), h, c.layer_norm_eps)?,
            patch: c.patch_size,
        })
    }

    /// Class-token feature [B, H].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let y = x
            .conv2d(&self.conv_proj_w, 0, self.patch, 1, 1)?
            .broadcast_add(&self.conv_proj_b)?;
        let y = y.flatten_from(2)?.transpose(1, 2)?; // [B, N, H]
        let h = y.dim(2)?;
        let cls = self.class_token.broadcast_as((b, 1, h))?;
        let mut y = Tensor::cat(&[&cls, &y], 1)?.broadcast_add(&self.pos_embedding)?;
        for layer in &self.layers {
            y = layer.forward(&y)?;
        }
        Ok(self.ln.forward(&y.narrow(1, 0, 1)?.squeeze(1)?)?)
    }
}

/// Either vision tower.
pub enum VisionEncoder {
    /// ResNet trunk.
    ResNet(ResNet),
    /// Vision transformer.
    Vit(Vit),
}

impl VisionEncoder {
    /// Loads the tower the configuration names, from a VarBuilder rooted at `vision`.
    pub fn load(vb: &VarBuilder<'_>, c: &VisionTower) -> Result<Self> {
        Ok(match c {
            VisionTower::Resnet(r) => Self::ResNet(ResNet::load(vb, r)?),
            VisionTower::Vit(v) => Self::Vit(Vit::load(vb, v)?),
        })
    }

    /// Pooled feature [B, C] for normalised images [B, 3, S, S].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::ResNet(r) => r.forward(x),
            Self::Vit(v) => v.forward(x),
        }
    }
}
