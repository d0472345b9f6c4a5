//! CLIP attention pooling over a ResNet feature map, mirroring `mirage-model`'s
//! `towers::attention_pool`.

use mirage_model::config::ResNetConfig;
use mirage_model::names::resnet::{ATTNPOOL, C_PROJ, K_PROJ, POSITIONAL, Q_PROJ, V_PROJ};
use mirage_model::names::{path, VISION};
use tch::{Kind, Tensor};

use super::layers::{attention, linear};
use super::{Mode, Params};

/// The pooled feature `[B, C]` of a feature map `[B, C, H, W]`.
pub(crate) fn attention_pool(p: &Params, c: &ResNetConfig, x: &Tensor, mode: Mode) -> Tensor {
    let (b, ch, h, w) = x.size4().expect("feature map is 4-D");
    let tokens = x.view([b, ch, h * w]).transpose(1, 2); // [B, HW, C]
    let mean = tokens.mean_dim([1i64].as_slice(), true, Kind::Float);
    let name = |leaf: &str| path(&[VISION, ATTNPOOL, leaf]);
    let seq = Tensor::cat(&[mean, tokens], 1) + p.get(&name(POSITIONAL));
    let q = linear(p, &name(Q_PROJ), &seq.narrow(1, 0, 1), mode);
    let k = linear(p, &name(K_PROJ), &seq, mode);
    let v = linear(p, &name(V_PROJ), &seq, mode);
    let out = attention(&q, &k, &v, c.attention_heads as i64, None, mode);
    linear(p, &name(C_PROJ), &out.squeeze_dim(1), mode)
}
