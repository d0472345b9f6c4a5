//! The vision tower a bundle names: a ResNet trunk ([`super::resnet`]) or a vision transformer
//! ([`super::vit`]).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::resnet::ResNet;
use super::vit::Vit;
use crate::config::VisionTower;
use crate::Result;

/// Either vision tower.
pub enum VisionEncoder {
    /// ResNet trunk.
    ResNet(ResNet),
    /// Vision transformer.
    Vit(Vit),
}

impl VisionEncoder {
    /// Loads the tower the configuration names, from a VarBuilder rooted at `vision`.
    pub fn load(vb: &VarBuilder<'_>, c: &VisionTower) -> Result<Self> {
        Ok(match c {
            VisionTower::Resnet(r) => Self::ResNet(ResNet::load(vb, r)?),
            VisionTower::Vit(v) => Self::Vit(Vit::load(vb, v)?),
        })
    }

    /// Pooled feature [B, C] for normalised images [B, 3, S, S].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::ResNet(r) => r.forward(x),
            Self::Vit(v) => v.forward(x),
        }
    }
}
