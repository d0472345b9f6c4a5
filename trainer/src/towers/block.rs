//! The pre-norm transformer blocks of the ViT and of CLIP's text transformer, mirroring
//! `mirage-model`'s `towers::block` (names: `mirage_model::names::block`).

use mirage_model::config::HiddenAct;
use mirage_model::names::block::*;
use mirage_model::names::path;
use tch::{Kind, Tensor};

use super::layers::{attention, layer_norm, linear};
use super::{Mode, Params};

/// The activation `act` applied elementwise.
pub(crate) fn activate(act: HiddenAct, x: &Tensor) -> Tensor {
    match act {
        HiddenAct::Gelu => x.gelu("none"),
        HiddenAct::GeluNew => x.gelu("tanh"),
        HiddenAct::Relu => x.relu(),
        HiddenAct::QuickGelu => x * (x * 1.702).sigmoid(),
    }
}

/// Blocks `0..n` under `prefix` over `x` [B, S, H]; `bias` (broadcastable to the attention
/// scores) masks attention, e.g. causally.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pre_norm_blocks(
    p: &Params,
    prefix: &str,
    n: usize,
    heads: usize,
    eps: f64,
    act: HiddenAct,
    x: Tensor,
    bias: Option<&Tensor>,
    mode: Mode,
) -> Tensor {
    let h = x.size()[2];
    let mut y = x;
    for i in 0..n {
        let l = path(&[prefix, &layer(i)]);
        let z = layer_norm(p, &path(&[&l, LN_1]), &y, eps);
        let w = p.get(&path(&[&l, SELF_ATTENTION, IN_PROJ_WEIGHT]));
        let b = p.get(&path(&[&l, SELF_ATTENTION, IN_PROJ_BIAS]));
        let qkv = z
            .to_kind(mode.compute)
            .linear(&w.to_kind(mode.compute), Some(b.to_kind(mode.compute)))
            .to_kind(Kind::Float);
        let parts = qkv.split(h, 2);
        let ctx = attention(&parts[0], &parts[1], &parts[2], heads as i64, bias, mode);
        y = &y + linear(p, &path(&[&l, SELF_ATTENTION, OUT_PROJ]), &ctx, mode);
        let z = layer_norm(p, &path(&[&l, LN_2]), &y, eps);
        let z = activate(act, &linear(p, &path(&[&l, MLP_IN]), &z, mode));
        y = &y + linear(p, &path(&[&l, MLP_OUT]), &z, mode);
    }
    y
}
