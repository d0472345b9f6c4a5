//! torchvision's `VisionTransformer` without its classification head.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::layers::{layer_norm, linear, Dense};
use crate::config::VitConfig;
use crate::names::{self, vit::*};
use crate::Result;

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
        let a = vb.pp(SELF_ATTENTION);
        Ok(Self {
            ln1: layer_norm(&vb.pp(LN_1), h, c.layer_norm_eps)?,
            in_proj: Dense::new(
                &a.get((3 * h, h), IN_PROJ_WEIGHT)?,
                Some(a.get(3 * h, IN_PROJ_BIAS)?),
            )?,
            out_proj: linear(&a.pp(OUT_PROJ), h, h)?,
            ln2: layer_norm(&vb.pp(LN_2), h, c.layer_norm_eps)?,
            fc1: linear(&vb.pp(MLP_IN), c.mlp_dim, h)?,
            fc2: linear(&vb.pp(MLP_OUT), h, c.mlp_dim)?,
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
            .map(|i| VitLayer::load(&vb.pp(layer(i)), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv_proj_w: vb
                .pp(CONV_PROJ)
                .get((h, 3, c.patch_size, c.patch_size), names::WEIGHT)?,
            conv_proj_b: vb
                .pp(CONV_PROJ)
                .get(h, names::BIAS)?
                .reshape((1, h, 1, 1))?,
            class_token: vb.get((1, 1, h), CLASS_TOKEN)?,
            pos_embedding: vb.get((1, c.seq_len(), h), POS_EMBEDDING)?,
            layers,
            ln: layer_norm(&vb.pp(FINAL_LN), h, c.layer_norm_eps)?,
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
