//! Layers the towers share: linear (compute kind for the product, f32 around it), layer norm and
//! multi-head attention with an f32 softmax.

use mirage_model::names::{path, BIAS, WEIGHT};
use tch::{Kind, Tensor};

use super::{Mode, Params};

pub(crate) fn linear(p: &Params, name: &str, x: &Tensor, mode: Mode) -> Tensor {
    let w = p.get(&path(&[name, WEIGHT]));
    let b = p.get(&path(&[name, BIAS]));
    let y = x
        .to_kind(mode.compute)
        .linear(&w.to_kind(mode.compute), Some(b.to_kind(mode.compute)));
    y.to_kind(Kind::Float)
}

pub(crate) fn layer_norm(p: &Params, name: &str, x: &Tensor, eps: f64) -> Tensor {
    let w = p.get(&path(&[name, WEIGHT]));
    let dim = w.size()[0];
    x.layer_norm([dim], Some(w), Some(p.get(&path(&[name, BIAS]))), eps, true)
}

/// Multi-head attention of `q` [B, Lq, H] over `k`, `v` [B, L, H] with an additive mask
/// broadcastable to [B, heads, Lq, L]. Softmax in f32 for stability under bf16.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: i64,
    mask: Option<&Tensor>,
    mode: Mode,
) -> Tensor {
    let (b, lq, h) = q.size3().expect("q is [B, L, H]");
    let l = k.size()[1];
    let hd = h / heads;
    let split = |x: &Tensor, len: i64| x.view([b, len, heads, hd]).transpose(1, 2);
    let (q, k, v) = (split(q, lq), split(k, l), split(v, l));
    let scores = q
        .to_kind(mode.compute)
        .matmul(&k.to_kind(mode.compute).transpose(-1, -2))
        .to_kind(Kind::Float)
        * (hd as f64).powf(-0.5);
    let scores = match mask {
        Some(m) => scores + m,
        None => scores,
    };
    let probs = scores.softmax(-1, Kind::Float);
    probs
        .to_kind(mode.compute)
        .matmul(&v.to_kind(mode.compute))
        .to_kind(Kind::Float)
        .transpose(1, 2)
        .contiguous()
        .view([b, lq, h])
}
