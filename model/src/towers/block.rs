//! The pre-norm transformer block (`x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`) of the ViT and
//! of CLIP's text transformer, with torchvision's packed q/k/v projection.

use candle_core::Tensor;
use candle_nn::{LayerNorm, Module, VarBuilder};

use super::layers::{activate, layer_norm, linear, Dense};
use crate::config::HiddenAct;
use crate::names::block::*;
use crate::Result;

/// The shape of a stack of blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockShape {
    pub(crate) hidden: usize,
    pub(crate) mlp: usize,
    pub(crate) heads: usize,
    pub(crate) eps: f64,
    pub(crate) act: HiddenAct,
}

pub(crate) struct PreNormBlock {
    ln1: LayerNorm,
    in_proj: Dense,
    out_proj: Dense,
    ln2: LayerNorm,
    fc1: Dense,
    fc2: Dense,
    heads: usize,
    act: HiddenAct,
}

impl PreNormBlock {
    /// Loads block `i` under `vb`.
    pub(crate) fn load(vb: &VarBuilder<'_>, i: usize, c: BlockShape) -> Result<Self> {
        let vb = vb.pp(layer(i));
        let h = c.hidden;
        let a = vb.pp(SELF_ATTENTION);
        Ok(Self {
            ln1: layer_norm(&vb.pp(LN_1), h, c.eps)?,
            in_proj: Dense::new(
                &a.get((3 * h, h), IN_PROJ_WEIGHT)?,
                Some(a.get(3 * h, IN_PROJ_BIAS)?),
            )?,
            out_proj: linear(&a.pp(OUT_PROJ), h, h)?,
            ln2: layer_norm(&vb.pp(LN_2), h, c.eps)?,
            fc1: linear(&vb.pp(MLP_IN), c.mlp, h)?,
            fc2: linear(&vb.pp(MLP_OUT), h, c.mlp)?,
            heads: c.heads,
            act: c.act,
        })
    }

    /// `x` [B, S, H]; `bias` [S, S] is added to every head's attention scores (a causal mask).
    pub(crate) fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
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
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let attn = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        let x = (x + self.out_proj.forward(&ctx)?)?;
        let m = activate(self.act, &self.fc1.forward(&self.ln2.forward(&x)?)?)?;
        Ok((x + self.fc2.forward(&m)?)?)
    }
}

/// Loads blocks `0..n` under `vb`.
pub(crate) fn load_blocks(
    vb: &VarBuilder<'_>,
    n: usize,
    c: BlockShape,
) -> Result<Vec<PreNormBlock>> {
    (0..n).map(|i| PreNormBlock::load(vb, i, c)).collect()
}
