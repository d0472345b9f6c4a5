//! CLIP's text transformer: token + learned position embeddings, pre-norm blocks under a causal
//! mask, the final norm, and the end-of-text token's state as the feature.

use candle_core::{Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::block::{load_blocks, BlockShape, PreNormBlock};
use super::layers::layer_norm;
use crate::config::ClipTextConfig;
use crate::names::{self, clip_text::*};
use crate::{Error, Result};

/// CLIP text encoder; produces the pooled (unprojected) feature.
pub struct ClipTextEncoder {
    token: Embedding,
    positions: Tensor,
    layers: Vec<PreNormBlock>,
    ln_final: LayerNorm,
    eos: u32,
}

/// `[S, S]` additive mask: 0 on and below the diagonal, −∞ above, so a token sees only itself
/// and what precedes it.
fn causal_bias(s: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..s)
        .flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (s, s), device)?)
}

impl ClipTextEncoder {
    /// Loads from a VarBuilder rooted at `text`.
    pub fn load(vb: &VarBuilder<'_>, c: &ClipTextConfig) -> Result<Self> {
        let h = c.hidden_size;
        let shape = BlockShape {
            hidden: h,
            mlp: c.intermediate_size,
            heads: c.num_heads,
            eps: c.layer_norm_eps,
            act: c.activation,
        };
        Ok(Self {
            token: Embedding::new(
                vb.pp(TOKEN_EMBEDDING)
                    .get((c.vocab_size, h), names::WEIGHT)?,
                h,
            ),
            positions: vb.get((c.max_position_embeddings, h), POSITIONAL)?,
            layers: load_blocks(vb, c.num_layers, shape)?,
            ln_final: layer_norm(&vb.pp(FINAL_LN), h, c.layer_norm_eps)?,
            eos: c.eos_token_id,
        })
    }

    /// Pooled feature [B, H] for token ids [B, L] (u32). Padding needs no mask: under the causal
    /// mask nothing before the end-of-text token sees it.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let rows = ids.to_vec2::<u32>()?;
        let eot = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.iter()
                    .position(|&t| t == self.eos)
                    .map(|p| (i * l + p) as u32)
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "a token sequence has no end-of-text token (id {}): the tokenizer does \
                             not match this CLIP text tower",
                            self.eos
                        ))
                    })
            })
            .collect::<Result<Vec<u32>>>()?;
        let mut x = self
            .token
            .forward(ids)?
            .broadcast_add(&self.positions.narrow(0, 0, l)?)?;
        let bias = causal_bias(l, ids.device())?;
        for layer in &self.layers {
            x = layer.forward(&x, Some(&bias))?;
        }
        let h = x.dim(2)?;
        let x = x.reshape((b * l, h))?;
        let picked = x.index_select(&Tensor::from_vec(eot, b, ids.device())?, 0)?;
        // LayerNorm is per token, so normalising only the picked rows is the same arithmetic.
        Ok(self.ln_final.forward(&picked)?)
    }
}
