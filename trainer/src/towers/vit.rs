//! torchvision's `VisionTransformer` (names under `vision.`), or CLIP's with `ln_pre`, no patch
//! bias and QuickGELU, mirroring `mirage-model`'s `towers::vit`.

use mirage_model::config::VitConfig;
use mirage_model::names::vit::*;
use mirage_model::names::{path, BIAS, VISION, WEIGHT};
use tch::{Kind, Tensor};

use super::block::pre_norm_blocks;
use super::layers::layer_norm;
use super::{Mode, Params};

pub(crate) fn vit_features(p: &Params, c: &VitConfig, x: &Tensor, mode: Mode) -> Tensor {
    let patch = c.patch_size as i64;
    let bias = c.patch_bias.then(|| {
        p.get(&path(&[VISION, CONV_PROJ, BIAS]))
            .to_kind(mode.compute)
    });
    let y = x
        .to_kind(mode.compute)
        .conv2d(
            &p.get(&path(&[VISION, CONV_PROJ, WEIGHT]))
                .to_kind(mode.compute),
            bias,
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
    if c.pre_norm {
        y = layer_norm(p, &path(&[VISION, LN_PRE]), &y, c.layer_norm_eps);
    }
    let y = pre_norm_blocks(
        p,
        VISION,
        c.num_layers,
        c.num_heads,
        c.layer_norm_eps,
        c.activation,
        y,
        None,
        mode,
    );
    layer_norm(
        p,
        &path(&[VISION, FINAL_LN]),
        &y.select(1, 0),
        c.layer_norm_eps,
    )
}
