//! The BERT text tower (Hugging Face `BertModel` names under `text.`) with masked mean or CLS
//! pooling, mirroring `mirage-model`'s `towers::bert`.

use mirage_model::config::{BertConfig, TextPooling};
use mirage_model::names::bert::*;
use mirage_model::names::{path, TEXT, WEIGHT};
use tch::{Kind, Tensor};

use super::block::activate;
use super::layers::{attention, layer_norm, linear};
use super::{Mode, Params, TextBatch};

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
    let e = |n: &str| p.get(&path(&[TEXT, EMBEDDINGS, n, WEIGHT]));
    let x = Tensor::embedding(e(WORD), ids, -1, false, false)
        + Tensor::embedding(e(POSITION), &positions, -1, false, false)
        + Tensor::embedding(e(TOKEN_TYPE), type_ids, -1, false, false);
    let mut x = layer_norm(
        p,
        &path(&[TEXT, EMBEDDINGS, LAYER_NORM]),
        &x,
        c.layer_norm_eps,
    )
    .dropout(dropout, mode.train);
    let mask_f = mask.to_kind(Kind::Float);
    // Padding gets a large negative bias so it receives exactly zero attention weight.
    let bias = ((mask_f.ones_like() - &mask_f) * -1e9)
        .unsqueeze(1)
        .unsqueeze(1);
    let heads = c.num_attention_heads as i64;
    for i in 0..c.num_hidden_layers {
        let n = path(&[TEXT, &layer(i)]);
        let qkv = |part: &str| linear(p, &path(&[&n, ATTENTION, SELF, part]), &x, mode);
        let (q, k, v) = (qkv(QUERY), qkv(KEY), qkv(VALUE));
        let ctx = attention(&q, &k, &v, heads, Some(&bias), mode);
        let a = linear(p, &path(&[&n, ATTENTION, OUTPUT, DENSE]), &ctx, mode)
            .dropout(dropout, mode.train);
        let a = layer_norm(
            p,
            &path(&[&n, ATTENTION, OUTPUT, LAYER_NORM]),
            &(a + &x),
            c.layer_norm_eps,
        );
        let i = linear(p, &path(&[&n, INTERMEDIATE, DENSE]), &a, mode);
        let i = activate(c.hidden_act, &i);
        let o = linear(p, &path(&[&n, OUTPUT, DENSE]), &i, mode).dropout(dropout, mode.train);
        x = layer_norm(
            p,
            &path(&[&n, OUTPUT, LAYER_NORM]),
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
