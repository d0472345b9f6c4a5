//! AdamW (decoupled weight decay, PyTorch's update rule) written out so that its moments can be
//! checkpointed and restored exactly — tch's built-in optimizers do not expose their state — and
//! the per-step linear warm-up + cosine schedule of the reference (pl_bolts
//! `LinearWarmupCosineAnnealingLR`, stepped every iteration).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::config::OptimConfig;
use crate::towers::Params;

/// Learning rate at `step` of `total` with `warmup` warm-up steps.
pub fn lr_at(c: &OptimConfig, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return c.warmup_start_lr + (c.lr - c.warmup_start_lr) * step as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Whether a tensor is exempt from weight decay under `exclude_from_decay`: every tensor of
/// fewer than two dimensions (biases, layer- and batch-norm parameters, the σ log-scales) and the
/// positional and class embeddings, named by the tensor scheme (`mirage_model::names`).
pub fn decay_exempt(name: &str, dims: usize) -> bool {
    use mirage_model::names::{resnet, vit};
    dims < 2
        || [resnet::POSITIONAL, vit::CLASS_TOKEN, vit::POS_EMBEDDING]
            .iter()
            .any(|leaf| {
                name.strip_suffix(leaf)
                    .is_some_and(|head| head.ends_with('.'))
            })
}

/// AdamW state.
#[derive(Debug)]
pub struct AdamW {
    config: OptimConfig,
    moments: BTreeMap<String, (Tensor, Tensor)>,
    /// Updates applied so far.
    pub steps: u64,
}

impl AdamW {
    /// Zero moments for every trainable tensor of `params`.
    pub fn new(params: &Params, config: &OptimConfig) -> Self {
        Self::for_tensors(params.trainable(), config)
    }

    /// Zero moments for the given named tensors.
    pub fn for_tensors<'a>(
        tensors: impl Iterator<Item = (&'a String, &'a Tensor)>,
        config: &OptimConfig,
    ) -> Self {
        let moments = tensors
            .map(|(n, t)| (n.clone(), (t.zeros_like(), t.zeros_like())))
            .collect();
        Self {
            config: config.clone(),
            moments,
            steps: 0,
        }
    }

    /// Global L2 norm of the gradients, clipped in place to `max` (PyTorch's clip_grad_norm_).
    pub fn clip_grad_norm(params: &Params, max: f64) -> f64 {
        let grads: Vec<Tensor> = params
            .trainable()
            .filter_map(|(_, t)| {
                let g = t.grad();
                g.defined().then_some(g)
            })
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total = Tensor::stack(
            &grads
                .iter()
                .map(|g| g.norm().to_kind(Kind::Float))
                .collect::<Vec<_>>(),
            0,
        )
        .norm()
        .double_value(&[]);
        let coef = max / (total + 1e-6);
        if coef < 1.0 {
            tch::no_grad(|| {
                for g in &grads {
                    let _ = g.shallow_clone().g_mul_scalar_(coef);
                }
            });
        }
        total
    }

    /// One AdamW update at learning rate `lr`, then zeroes the gradients.
    pub fn step(&mut self, params: &Params, lr: f64) {
        self.step_tensors(params.trainable(), lr);
    }

    /// [`AdamW::step`] over named tensors (those given to [`AdamW::for_tensors`]).
    pub fn step_tensors<'a>(
        &mut self,
        tensors: impl Iterator<Item = (&'a String, &'a Tensor)>,
        lr: f64,
    ) {
        self.steps += 1;
        let [b1, b2] = self.config.betas;
        let bc1 = 1.0 - b1.powi(self.steps as i32);
        let bc2 = 1.0 - b2.powi(self.steps as i32);
        let eps = self.config.eps;
        tch::no_grad(|| {
            for (name, p) in tensors {
                let mut grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let (m, v) = self
                    .moments
                    .get_mut(name)
                    .expect("moments exist for every param");
                let wd = if self.config.exclude_from_decay && decay_exempt(name, p.dim()) {
                    0.0
                } else {
                    self.config.weight_decay
                };
                let mut p = p.shallow_clone();
                if wd != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * wd);
                }
                // In place, as torch.optim.AdamW's single-tensor path: two temporaries per
                // parameter (g² and √v) instead of one per arithmetic operation.
                let _ = m.lerp_(&grad, 1.0 - b1);
                let _ = v.lerp_(&grad.square(), 1.0 - b2);
                let mut denom = v.sqrt();
                let _ = denom.g_div_scalar_(bc2.sqrt());
                let _ = denom.g_add_scalar_(eps);
                // p − (lr/bc1)·m/denom, as one fused addcdiv with the step folded into denom.
                let _ = denom.g_div_scalar_(-(lr / bc1));
                let _ = p.addcdiv_(m, &denom);
                let _ = grad.zero_();
            }
        });
    }

    /// Moments as named tensors (`adam.m.<param>`, `adam.v.<param>`) for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.moments.len() * 2);
        for (n, (m, v)) in &self.moments {
            out.push((format!("adam.m.{n}"), m.shallow_clone()));
            out.push((format!("adam.v.{n}"), v.shallow_clone()));
        }
        out
    }

    /// Restores the moments written by [`AdamW::state`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for (n, (m, v)) in self.moments.iter_mut() {
            let src_m = tensors
                .get(&format!("adam.m.{n}"))
                .with_context(|| format!("checkpoint lacks the AdamW moments of `{n}`"))?;
            let src_v = tensors
                .get(&format!("adam.v.{n}"))
                .with_context(|| format!("checkpoint lacks the AdamW moments of `{n}`"))?;
            tch::no_grad(|| {
                m.copy_(src_m);
                v.copy_(src_v);
            });
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_linearly_then_cosine_to_min() {
        let c = OptimConfig {
            lr: 1e-3,
            warmup_start_lr: 0.0,
            min_lr: 0.0,
            ..Default::default()
        };
        assert_eq!(lr_at(&c, 0, 10, 110), 0.0);
        assert!((lr_at(&c, 5, 10, 110) - 5e-4).abs() < 1e-12);
        assert!((lr_at(&c, 10, 10, 110) - 1e-3).abs() < 1e-12);
        assert!((lr_at(&c, 60, 10, 110) - 5e-4).abs() < 1e-9);
        assert!(lr_at(&c, 110, 10, 110).abs() < 1e-12);
    }

    #[test]
    fn decay_exemptions() {
        assert!(decay_exempt(
            "text.encoder.layer.0.output.LayerNorm.weight",
            1
        ));
        assert!(decay_exempt("vision.layer1.0.bn2.weight", 1));
        assert!(decay_exempt("logit_scale", 0));
        assert!(decay_exempt("text_proj.bias", 1));
        // Biases of fused projections were missed by name patterns; by shape they are not.
        assert!(decay_exempt(
            "vision.encoder.layers.encoder_layer_0.self_attention.in_proj_bias",
            1
        ));
        assert!(decay_exempt("vision.attnpool.positional_embedding", 2));
        assert!(decay_exempt("vision.encoder.pos_embedding", 3));
        assert!(decay_exempt("vision.class_token", 3));
        assert!(!decay_exempt("text_proj.weight", 2));
        assert!(!decay_exempt("vision.layer1.0.conv1.weight", 4));
        assert!(!decay_exempt(
            "text.embeddings.position_embeddings.weight",
            2
        ));
    }
}
