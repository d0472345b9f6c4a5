//! torchvision's `VisionTransformer` (names under `vision.`), mirroring `mirage-model`'s
//! `towers::vit`.

use mirage_model::config::VitConfig;
use mirage_model::names::vit::*;
use mirage_model::names::{path, BIAS, VISION, WEIGHT};
use tch::{Kind, Tensor};

use super::layers::{attention, layer_norm, linear};
use super::{Mode, Params};

pub(crate) fn vit_features(p: &Params, c: &VitConfig, x: &Tensor, mode: Mode) -> Tensor {
    let patch = c.patch_size as i64;
    let y = x
        .to_kind(mode.compute)
        .conv2d(
            &p.get(&path(&[VISION, CONV_PROJ, WEIGHT]))
                .to_kind(mode.compute),
            Some(
                p.get(&path(&[VISION, CONV_PROJ, BIAS]))
                    .to_kind(mode.compute),
            ),
            [patch, patch],
            [0, 0],
            [1, 1],
            1,
        )
        .to_kind(Kind::Float);
    let b = y.size()[0];
    let h = c.hidden_size as i64;
    let y = y.flatten(2, -1).transpose(1, 2);
    let cls = p
        .get(&path(&[VISION, CLASS_TOKEN]))
        .expand([b, 1, h], false);
    let mut y = Tensor::cat(&[cls, y], 1) + p.get(&path(&[VISION, POS_EMBEDDING]));
    for i in 0..c.num_layers {
        let n = path(&[VISION, &layer(i)]);
        let z = layer_norm(p, &path(&[&n, LN_1]), &y, c.layer_norm_eps);
        let w = p.get(&path(&[&n, SELF_ATTENTION, IN_PROJ_WEIGHT]));
        let bias = p.get(&path(&[&n, SELF_ATTENTION, IN_PROJ_BIAS]));
        let qkv = z
            .to_kind(mode.compute)
            .linear(&w.to_kind(mode.compute), Some(bias.to_kind(mode.compute)))
            .to_kind(Kind::Float);
        let parts = qkv.split(h, 2);
        let ctx = attention(
            &parts[0],
            &parts[1],
            &parts[2],
            c.num_heads as i64,
            None,
            mode,
        );
        y = &y + linear(p, &path(&[&n, SELF_ATTENTION, OUT_PROJ]), &ctx, mode);
        let z = layer_norm(p, &path(&[&n, LN_2]), &y, c.layer_norm_eps);
        let z = linear(p, &path(&[&n, MLP_IN]), &z, mode).gelu("none");
        y = &y + linear(p, &path(&[&n, MLP_OUT]), &z, mode);
    }
    layer_norm(
        p,
        &path(&[VISION, FINAL_LN]),
        &y.select(1, 0),
        c.layer_norm_eps,
    )
}
