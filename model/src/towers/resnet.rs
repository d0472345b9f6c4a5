//! torchvision ResNet trunks (BatchNorm folded into the convolutions at load time), or CLIP's
//! ModifiedResNet (three-convolution stem, anti-aliased downsampling), with CLIP attention
//! pooling (`attention_pool`) or mean pooling.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;

use super::attention_pool::AttentionPool;
use crate::config::{ResNetConfig, VisionPooling};
use crate::names::{self, resnet::*};
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
        let w = vb.pp(conv).get((out_c, in_c, k, k), names::WEIGHT)?;
        let bn = vb.pp(bn);
        let gamma = bn.get(out_c, names::WEIGHT)?;
        let beta = bn.get(out_c, names::BIAS)?;
        let mean = bn.get(out_c, names::RUNNING_MEAN)?;
        let var = bn.get(out_c, names::RUNNING_VAR)?;
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
    /// Anti-aliased downsampling: average-pool this much before the last convolution and in
    /// the shortcut (1: none).
    pool: usize,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            if i == last && self.pool > 1 {
                y = y.avg_pool2d(self.pool)?;
            }
            y = c.forward(&y)?;
            if i != last {
                y = y.relu()?;
            }
        }
        let identity = match &self.downsample {
            Some(d) if self.pool > 1 => d.forward(&x.avg_pool2d(self.pool)?)?,
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        Ok((y + identity)?.relu()?)
    }
}

/// A ResNet trunk with pooling.
pub struct ResNet {
    stem: Vec<ConvBn>,
    modified: bool,
    blocks: Vec<Block>,
    pool: Option<AttentionPool>,
}

impl ResNet {
    /// Loads from a VarBuilder rooted at `vision`.
    pub fn load(vb: &VarBuilder<'_>, c: &ResNetConfig) -> Result<Self> {
        let expansion = if c.bottleneck { 4 } else { 1 };
        let stem = if c.modified {
            let half = c.width / 2;
            [(half, 3, 2), (half, half, 1), (c.width, half, 1)]
                .into_iter()
                .enumerate()
                .map(|(j, (o, i, s))| ConvBn::load(vb, &conv(j + 1), &bn(j + 1), (o, i, 3), s))
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![ConvBn::load(vb, STEM_CONV, STEM_BN, (c.width, 3, 7), 2)?]
        };
        let mut blocks = Vec::new();
        let mut in_c = c.width;
        for (stage, &n) in c.layers.iter().enumerate() {
            let planes = c.width << stage;
            let stage_stride = if stage == 0 { 1 } else { 2 };
            for b in 0..n {
                let p = vb.pp(block(stage, b));
                let stride = if b == 0 { stage_stride } else { 1 };
                // torchvision (v1.5) puts the stride on the 3×3 convolution of a bottleneck; the
                // modified ResNet average-pools instead (`Block::pool`).
                // (shape, stride) of each convolution in order.
                let conv_stride = if c.modified { 1 } else { stride };
                let specs = if c.bottleneck {
                    vec![
                        ((planes, in_c, 1), 1),
                        ((planes, planes, 3), conv_stride),
                        ((planes * expansion, planes, 1), 1),
                    ]
                } else {
                    vec![((planes, in_c, 3), stride), ((planes, planes, 3), 1)]
                };
                let convs = specs
                    .into_iter()
                    .enumerate()
                    .map(|(j, (shape, s))| ConvBn::load(&p, &conv(j + 1), &bn(j + 1), shape, s))
                    .collect::<Result<Vec<_>>>()?;
                let downsample = if b == 0 && (stride != 1 || in_c != planes * expansion) {
                    Some(ConvBn::load(
                        &p,
                        DOWNSAMPLE_CONV,
                        DOWNSAMPLE_BN,
                        (planes * expansion, in_c, 1),
                        conv_stride,
                    )?)
                } else {
                    None
                };
                let pool = if c.modified { stride } else { 1 };
                blocks.push(Block {
                    convs,
                    downsample,
                    pool,
                });
                in_c = planes * expansion;
            }
        }
        let pool = match c.pooling {
            VisionPooling::Attention => Some(AttentionPool::load(
                &vb.pp(ATTNPOOL),
                c.trunk_dim(),
                c.feature_dim(),
                c.grid() * c.grid() + 1,
                c.attention_heads,
            )?),
            VisionPooling::Mean => None,
        };
        Ok(Self {
            stem,
            modified: c.modified,
            blocks,
            pool,
        })
    }

    /// Pooled feature [B, C] for normalised images [B, 3, S, S].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for conv in &self.stem {
            x = conv.forward(&x)?.relu()?;
        }
        let mut x = if self.modified {
            x.avg_pool2d(2)?
        } else {
            // Max-pool 3×3/2 with padding 1. After a ReLU every value is ≥ 0, so zero padding
            // gives the same maxima as torch's −∞ padding.
            x.pad_with_zeros(2, 1, 1)?
                .pad_with_zeros(3, 1, 1)?
                .max_pool2d_with_stride(3, 2)?
        };
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        match &self.pool {
            Some(pool) => pool.forward(&x),
            None => Ok(x.flatten_from(2)?.mean(D::Minus1)?),
        }
    }
}
