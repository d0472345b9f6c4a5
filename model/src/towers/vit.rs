//! torchvision's `VisionTransformer` without its classification head; with `pre_norm`, no
//! patch bias and QuickGELU it is CLIP's vision transformer (`ln_post` is the final norm).

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::block::{load_blocks, BlockShape, PreNormBlock};
use super::layers::layer_norm;
use crate::config::VitConfig;
use crate::names::{self, vit::*};
use crate::Result;

/// A vision transformer's class-token feature.
pub struct Vit {
    conv_proj_w: Tensor,
    conv_proj_b: Option<Tensor>,
    class_token: Tensor,
    pos_embedding: Tensor,
    ln_pre: Option<LayerNorm>,
    layers: Vec<PreNormBlock>,
    ln: LayerNorm,
    patch: usize,
}

impl Vit {
    /// Loads from a VarBuilder rooted at `vision`.
    pub fn load(vb: &VarBuilder<'_>, c: &VitConfig) -> Result<Self> {
        let h = c.hidden_size;
        let shape = BlockShape {
            hidden: h,
            mlp: c.mlp_dim,
            heads: c.num_heads,
            eps: c.layer_norm_eps,
            act: c.activation,
        };
        let conv_proj_b = if c.patch_bias {
            Some(
                vb.pp(CONV_PROJ)
                    .get(h, names::BIAS)?
                    .reshape((1, h, 1, 1))?,
            )
        } else {
            None
        };
        let ln_pre = if c.pre_norm {
            Some(layer_norm(&vb.pp(LN_PRE), h, c.layer_norm_eps)?)
        } else {
            None
        };
        Ok(Self {
            conv_proj_w: vb
                .pp(CONV_PROJ)
                .get((h, 3, c.patch_size, c.patch_size), names::WEIGHT)?,
            conv_proj_b,
            class_token: vb.get((1, 1, h), CLASS_TOKEN)?,
            pos_embedding: vb.get((1, c.seq_len(), h), POS_EMBEDDING)?,
            ln_pre,
            layers: load_blocks(vb, c.num_layers, shape)?,
            ln: layer_norm(&vb.pp(FINAL_LN), h, c.layer_norm_eps)?,
            patch: c.patch_size,
        })
    }

    /// Class-token feature [B, H].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let mut y = x.conv2d(&self.conv_proj_w, 0, self.patch, 1, 1)?;
        if let Some(bias) = &self.conv_proj_b {
            y = y.broadcast_add(bias)?;
        }
        let y = y.flatten_from(2)?.transpose(1, 2)?; // [B, N, H]
        let h = y.dim(2)?;
        let cls = self.class_token.broadcast_as((b, 1, h))?;
        let mut y = Tensor::cat(&[&cls, &y], 1)?.broadcast_add(&self.pos_embedding)?;
        if let Some(ln) = &self.ln_pre {
            y = ln.forward(&y)?;
        }
        for layer in &self.layers {
            y = layer.forward(&y, None)?;
        }
        Ok(self.ln.forward(&y.narrow(1, 0, 1)?.squeeze(1)?)?)
    }
}
