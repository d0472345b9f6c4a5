//! BERT-family text encoder (Hugging Face `BertModel` weights) with masked pooling.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::layers::{activate, layer_norm, linear, Dense};

use crate::config::{BertConfig, HiddenAct, TextPooling};
use crate::names::{self, bert::*};
use crate::Result;

struct SelfAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    output: Dense,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn load(vb: &VarBuilder<'_>, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let s = vb.pp(SELF);
        let out = vb.pp(OUTPUT);
        Ok(Self {
            query: linear(&s.pp(QUERY), h, h)?,
            key: linear(&s.pp(KEY), h, h)?,
            value: linear(&s.pp(VALUE), h, h)?,
            output: linear(&out.pp(DENSE), h, h)?,
            norm: layer_norm(&out.pp(LAYER_NORM), h, c.layer_norm_eps)?,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        })
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        Ok(x.reshape((b, l, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// `mask_bias` is [B, 1, 1, L]: 0 for real tokens, a large negative number for padding.
    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        let q = self.split_heads(&self.query.forward(x)?)?;
        let k = self.split_heads(&self.key.forward(x)?)?;
        let v = self.split_heads(&self.value.forward(x)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask_bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))?;
        let out = self.output.forward(&ctx)?;
        Ok(self.norm.forward(&(out + x)?)?)
    }
}

struct Layer {
    attention: SelfAttention,
    intermediate: Dense,
    output: Dense,
    norm: LayerNorm,
    act: HiddenAct,
}

impl Layer {
    fn load(vb: &VarBuilder<'_>, c: &BertConfig) -> Result<Self> {
        Ok(Self {
            attention: SelfAttention::load(&vb.pp(ATTENTION), c)?,
            intermediate: linear(
                &vb.pp(INTERMEDIATE).pp(DENSE),
                c.intermediate_size,
                c.hidden_size,
            )?,
            output: linear(&vb.pp(OUTPUT).pp(DENSE), c.hidden_size, c.intermediate_size)?,
            norm: layer_norm(
                &vb.pp(OUTPUT).pp(LAYER_NORM),
                c.hidden_size,
                c.layer_norm_eps,
            )?,
            act: c.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let a = self.attention.forward(x, mask_bias)?;
        let i = self.intermediate.forward(&a)?;
        let i = activate(self.act, &i)?;
        let o = self.output.forward(&i)?;
        Ok(self.norm.forward(&(o + a)?)?)
    }
}

/// BERT encoder plus pooling; produces the pooled (unprojected) text feature.
pub struct BertEncoder {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
    pooling: TextPooling,
    hidden: usize,
}

impl BertEncoder {
    /// Loads from a VarBuilder rooted at the tower's prefix (`text`).
    pub fn load(vb: &VarBuilder<'_>, c: &BertConfig, pooling: TextPooling) -> Result<Self> {
        let h = c.hidden_size;
        let e = vb.pp(EMBEDDINGS);
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(&vb.pp(layer(i)), c))
            .collect::<Result<Vec<_>>>()?;
        let table = |name: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(e.pp(name).get((rows, h), names::WEIGHT)?, h))
        };
        Ok(Self {
            word: table(WORD, c.vocab_size)?,
            position: table(POSITION, c.max_position_embeddings)?,
            token_type: table(TOKEN_TYPE, c.type_vocab_size)?,
            norm: layer_norm(&e.pp(LAYER_NORM), h, c.layer_norm_eps)?,
            layers,
            pooling,
            hidden: h,
        })
    }

    /// Width of the pooled feature.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Last hidden states [B, L, H] for token ids, type ids and attention mask (all [B, L], u32).
    pub fn hidden_states(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, l) = ids.dims2()?;
        let positions = Tensor::arange(0u32, l as u32, ids.device())?;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(type_ids)?)?;
        let mut x = self.norm.forward(&x)?;
        // Padding gets a large negative bias so it receives exactly zero attention weight.
        let mask_f = mask.to_dtype(DType::F32)?;
        let mask_bias = ((mask_f.ones_like()? - &mask_f)? * -1e9f64)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias)?;
        }
        Ok(x)
    }

    /// Pooled feature [B, H].
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = self.hidden_states(ids, type_ids, mask)?;
        match self.pooling {
            TextPooling::Cls => Ok(x.narrow(1, 0, 1)?.squeeze(1)?),
            TextPooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = x.broadcast_mul(&m)?.sum(1)?;
                let count = m.sum(1)?.clamp(1e-9f64, f64::MAX)?;
                Ok(summed.broadcast_div(&count)?)
            }
        }
    }
}
