//! The text tower a bundle names: BERT ([`super::bert`]) or CLIP's text transformer
//! ([`super::clip_text`]).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::bert::BertEncoder;
use super::clip_text::ClipTextEncoder;
use crate::config::TextTower;
use crate::Result;

/// Either text tower.
pub enum TextEncoder {
    /// BERT with mean or `[CLS]` pooling.
    Bert(BertEncoder),
    /// CLIP text transformer.
    Clip(ClipTextEncoder),
}

impl TextEncoder {
    /// Loads the tower the configuration names, from a VarBuilder rooted at `text`.
    pub fn load(vb: &VarBuilder<'_>, c: &TextTower) -> Result<Self> {
        Ok(match c {
            TextTower::Bert { bert, pooling } => Self::Bert(BertEncoder::load(vb, bert, *pooling)?),
            TextTower::Clip { clip } => Self::Clip(ClipTextEncoder::load(vb, clip)?),
        })
    }

    /// Pooled feature [B, H] for token ids, type ids and attention mask (all [B, L], u32).
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self {
            Self::Bert(b) => b.forward(ids, type_ids, mask),
            Self::Clip(c) => c.forward(ids),
        }
    }
}
