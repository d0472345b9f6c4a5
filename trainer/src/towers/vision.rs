//! The vision tower a configuration names: a ResNet trunk or a vision transformer.

use mirage_model::config::VisionTower;
use tch::Tensor;

use super::resnet::resnet_features;
use super::vit::vit_features;
use super::{Mode, Params};

/// Pooled vision feature [B, F] of normalised images [B, 3, S, S].
pub fn vision_features(p: &Params, v: &VisionTower, x: &Tensor, mode: Mode) -> Tensor {
    match v {
        VisionTower::Resnet(c) => resnet_features(p, c, x, mode),
        VisionTower::Vit(c) => vit_features(p, c, x, mode),
    }
}
