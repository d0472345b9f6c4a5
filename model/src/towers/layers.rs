//! Layers every tower shares: a linear layer that multiplies every leading dimension at once
//! (`Dense`), loaders of linear and layer-norm weights in PyTorch layout, and L2
//! normalisation.
//!
//! candle-nn's `Linear` broadcasts its weight over the batch dimension of a 3-D input, which turns
//! one large GEMM into B small ones; flattening the leading dimensions first is the same
//! arithmetic as a single (B·L × in)·(in × out) product, and several times faster on CPU.

use candle_core::{Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};

use crate::config::{HiddenAct, TextProjection};
use crate::{names, Result};

/// `y = x·Wᵀ + b` over the last dimension.
pub(crate) struct Dense {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    /// `weight` is [out, in] (PyTorch layout), `bias` is [out].
    pub(crate) fn new(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            bias,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = x.dim(D::Minus1)?;
        let rows = x.elem_count() / in_dim.max(1);
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight_t)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        *out_dims
            .last_mut()
            .expect("input has at least one dimension — this is a bug") = self.weight_t.dim(1)?;
        Ok(y.reshape(out_dims)?)
    }
}

/// A [`Dense`] from `weight` [out, in] and `bias` [out] under `vb`.
pub(crate) fn linear(vb: &VarBuilder<'_>, out_dim: usize, in_dim: usize) -> Result<Dense> {
    let w = vb.get((out_dim, in_dim), names::WEIGHT)?;
    let b = vb.get(out_dim, names::BIAS)?;
    Dense::new(&w, Some(b))
}

/// A layer norm from `weight` and `bias` [dim] under `vb`.
pub(crate) fn layer_norm(vb: &VarBuilder<'_>, dim: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(dim, names::WEIGHT)?,
        vb.get(dim, names::BIAS)?,
        eps,
    ))
}

/// L2 normalisation over the last dimension (zero vectors stay zero).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f64, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// The activation `act` applied elementwise.
pub(crate) fn activate(act: HiddenAct, x: &Tensor) -> Result<Tensor> {
    Ok(match act {
        HiddenAct::Gelu => x.gelu_erf()?,
        HiddenAct::GeluNew => x.gelu()?,
        HiddenAct::Relu => x.relu()?,
        HiddenAct::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
    })
}

/// The text projection head: one linear layer, or linear → GELU → linear.
pub(crate) enum TextHead {
    Linear(Dense),
    Mlp(Dense, Dense),
}

impl TextHead {
    /// Loads the head under `vb` (rooted at `text_proj`) from `in_dim` to `out_dim`.
    pub(crate) fn load(
        vb: &VarBuilder<'_>,
        kind: TextProjection,
        in_dim: usize,
        out_dim: usize,
    ) -> Result<Self> {
        Ok(match kind {
            TextProjection::Linear => Self::Linear(linear(vb, out_dim, in_dim)?),
            TextProjection::Mlp { hidden } => Self::Mlp(
                linear(&vb.pp(names::MLP_HEAD_IN), hidden, in_dim)?,
                linear(&vb.pp(names::MLP_HEAD_OUT), out_dim, hidden)?,
            ),
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Linear(l) => l.forward(x),
            Self::Mlp(a, b) => b.forward(&a.forward(x)?.gelu_erf()?),
        }
    }
}
