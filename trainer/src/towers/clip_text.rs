//! CLIP's text transformer (names under `text.`), mirroring `mirage-model`'s
//! `towers::clip_text`: causal pre-norm blocks, the feature at the first end-of-text token.

use mirage_model::config::ClipTextConfig;
use mirage_model::names::clip_text::*;
use mirage_model::names::{path, TEXT, WEIGHT};
use tch::{Kind, Tensor};

use super::block::pre_norm_blocks;
use super::layers::layer_norm;
use super::{Mode, Params, TextBatch};

/// Pooled (unprojected) feature [B, H].
pub(crate) fn clip_text_features(
    p: &Params,
    c: &ClipTextConfig,
    tokens: &TextBatch,
    mode: Mode,
) -> Tensor {
    let ids = &tokens.ids;
    let l = ids.size()[1];
    let x = Tensor::embedding(
        p.get(&path(&[TEXT, TOKEN_EMBEDDING, WEIGHT])),
        ids,
        -1,
        false,
        false,
    ) + p.get(&path(&[TEXT, POSITIONAL])).narrow(0, 0, l);
    let causal = Tensor::full([l, l], f64::NEG_INFINITY, (Kind::Float, ids.device())).triu(1);
    let x = pre_norm_blocks(
        p,
        TEXT,
        c.num_layers,
        c.num_heads,
        c.layer_norm_eps,
        c.activation,
        x,
        Some(&causal),
        mode,
    );
    // argmax returns the first maximum: the first end-of-text token.
    let at = ids
        .eq(i64::from(c.eos_token_id))
        .to_kind(Kind::Int64)
        .argmax(1, false);
    let rows = Tensor::arange(ids.size()[0], (Kind::Int64, ids.device()));
    let picked = x.index(&[Some(rows), Some(at)]);
    layer_norm(p, &path(&[TEXT, FINAL_LN]), &picked, c.layer_norm_eps)
}
