//! CLIP's `AttentionPool2d` on top of a ResNet trunk: the mean token, with learned positions,
//! attends over the feature grid.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::layers::{linear, Dense};
use crate::names::resnet::{C_PROJ, K_PROJ, POSITIONAL, Q_PROJ, V_PROJ};
use crate::Result;

/// CLIP `AttentionPool2d`: the mean token, with learned positions, attends over the feature grid.
pub(crate) struct AttentionPool {
    positional: Tensor,
    q: Dense,
    k: Dense,
    v: Dense,
    c: Dense,
    heads: usize,
}

impl AttentionPool {
    /// `dim`: the trunk's width; `out_dim`: the width of `c_proj`'s output.
    pub(crate) fn load(
        vb: &VarBuilder<'_>,
        dim: usize,
        out_dim: usize,
        tokens: usize,
        heads: usize,
    ) -> Result<Self> {
        let lin = |name: &str| linear(&vb.pp(name), dim, dim);
        Ok(Self {
            positional: vb.get((tokens, dim), POSITIONAL)?,
            q: lin(Q_PROJ)?,
            k: lin(K_PROJ)?,
            v: lin(V_PROJ)?,
            c: linear(&vb.pp(C_PROJ), out_dim, dim)?,
            heads,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let x = x.reshape((b, c, h * w))?.transpose(1, 2)?; // [B, HW, C]
        let mean = x.mean_keepdim(1)?;
        let x = Tensor::cat(&[&mean, &x], 1)?.broadcast_add(&self.positional)?; // [B, S, C]
        let s = h * w + 1;
        let hd = c / self.heads;
        let q = self.q.forward(&x.narrow(1, 0, 1)?)?; // [B, 1, C]
        let k = self.k.forward(&x)?;
        let v = self.v.forward(&x)?;
        let q = (q.reshape((b, 1, self.heads, hd))?.transpose(1, 2)? * (hd as f64).powf(-0.5))?;
        let k = k
            .reshape((b, s, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = v
            .reshape((b, s, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let attn = candle_nn::ops::softmax_last_dim(&q.contiguous()?.matmul(&k.t()?)?)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, c))?;
        self.c.forward(&out)
    }
}
