//! The MIRAGE objective (docs/METHOD.md §2.2–2.3), single device: N = B and g_i = i.
//!
//! With v = norm(image features), t = norm(text features), Q the queue snapshot (K unit rows,
//! never differentiated), σ_• = exp(θ_•):
//!
//! - soft NN text: a_i = softmax_k(σ_q ⟨v_i, Q_k⟩), n_i = norm(Σ_k a_ik Q_k) (`hard`: the argmax
//!   row; `topk_soft`: the softmax over the k best rows only);
//! - matching score s_i = sg(⟨t_i, n_i⟩) ∈ [−1, 1];
//! - L_pair = ½[(1/B) Σ_i w⁺_i CE(σ_p v_i Tᵀ, i) + (1/B) Σ_i w⁺_i CE(σ_p t_i Vᵀ, i)], w⁺ = 1+s;
//! - L_robust = ½[(1/B) Σ_i w⁻_i CE(σ_r v_i Nᵀ, i) + (1/B) Σ_i w⁻_i CE(σ_r n_i Vᵀ, i)], w⁻ = 1−s
//!   (weighted means divide by B, not Σw: mismatch M5);
//! - L_ot = ½[(1/B) Σ_ij P^v_ij C^v_ij + (1/B) Σ_ij P^t_ij C_ij], P^v = softmax_j(σ_o v_i t_jᵀ),
//!   P^t = softmax_j(σ_o t_i v_jᵀ), C_ij = sg(−⟨t_i, n_j⟩) for the reference `nn_t` cost, where the
//!   image branch reuses C unchanged (mismatch M3; `nn_t_sym` gives it −⟨n_i, t_j⟩ instead);
//! - L = λ_pair L_pair + λ_robust L_robust + λ_ot L_ot.
//!
//! The CLIP baseline is λ_robust = λ_ot = 0 with `balance = "none"` (s ≡ 0): L = L_pair is then
//! exactly the symmetric CLIP loss, and the queue is not used at all.

use tch::{Kind, Tensor};

use crate::config::{Balance, LossConfig, NnConfig, NnMode, OtCost};
use crate::towers::l2n;

/// The four log-scales θ_p, θ_r, θ_o, θ_q (scalars; may require gradients).
#[derive(Debug)]
pub struct LogScales<'a> {
    /// Pair term.
    pub pair: &'a Tensor,
    /// Robust term.
    pub robust: &'a Tensor,
    /// OT term.
    pub ot: &'a Tensor,
    /// Soft-NN softmax over the queue.
    pub queue: &'a Tensor,
}

impl<'a> LogScales<'a> {
    /// θ_p, θ_r, θ_o, θ_q of a parameter set (θ_p is the bundle's `logit_scale`).
    pub fn of(p: &'a crate::towers::Params) -> Self {
        use crate::towers::{LOG_SCALE_OT, LOG_SCALE_QUEUE, LOG_SCALE_ROBUST};
        Self {
            pair: p.get(mirage_model::names::LOGIT_SCALE),
            robust: p.get(LOG_SCALE_ROBUST),
            ot: p.get(LOG_SCALE_OT),
            queue: p.get(LOG_SCALE_QUEUE),
        }
    }
}

/// Everything one loss evaluation produces.
#[derive(Debug)]
pub struct LossOutput {
    /// λ-weighted sum (the tensor to differentiate).
    pub total: Tensor,
    /// L_pair.
    pub pair: Tensor,
    /// L_robust (zero when λ_robust = 0 or no queue is used).
    pub robust: Tensor,
    /// L_ot.
    pub ot: Tensor,
    /// Matching scores s `[B]` (detached; zeros without a queue).
    pub s: Tensor,
    /// Normalised text embeddings t [B, D] (detached): what the FIFO enqueues.
    pub text_unit: Tensor,
    /// Cosine ⟨v, t⟩ of each pair `[B]` (detached): the plain score s is compared against.
    pub pair_cosine: Tensor,
    /// Image→text top-1 accuracy of the pair logits within the batch, in [0, 1].
    pub in_batch_accuracy: f64,
}

/// The λ's in effect at this step (the robust ramp applied).
#[derive(Debug, Clone, Copy)]
pub struct Lambdas {
    /// λ_pair.
    pub pair: f64,
    /// λ_robust.
    pub robust: f64,
    /// λ_ot.
    pub ot: f64,
}

impl Lambdas {
    /// The configured λ's with λ_robust and λ_ot ramped over `robust_ramp_steps`.
    pub fn at_step(c: &LossConfig, step: u64) -> Self {
        // Unset only before `resolve_for_corpus`: no ramp.
        let ramp = match c.robust_ramp_steps {
            None | Some(0) => 1.0,
            Some(r) => (step as f64 / r as f64).min(1.0),
        };
        Self {
            pair: c.lambda_pair,
            robust: c.lambda_robust * ramp,
            ot: c.lambda_ot * ramp,
        }
    }
}

/// Softmax cross-entropy of each row of `logits` against the diagonal target.
fn diagonal_ce(logits: &Tensor) -> Tensor {
    let n = logits.size()[0];
    let target = Tensor::arange(n, (Kind::Int64, logits.device())).unsqueeze(1);
    -logits
        .log_softmax(-1, Kind::Float)
        .gather(1, &target, false)
        .squeeze_dim(1)
}

fn scale(theta: &Tensor, max_scale: Option<f64>) -> Tensor {
    let s = theta.exp();
    match max_scale {
        Some(m) => s.clamp_max(m),
        None => s,
    }
}

/// n = norm(NN text) for unit image rows `v` against `queue` (only its first `valid_rows`).
pub fn nearest_text(
    v: &Tensor,
    queue: &Tensor,
    valid_rows: i64,
    sigma_q: &Tensor,
    nn: &NnConfig,
    compute: Kind,
) -> Tensor {
    let q = queue.narrow(0, 0, valid_rows).detach();
    let v = if nn.grad_to_image {
        v.shallow_clone()
    } else {
        v.detach()
    };
    let sims = v
        .to_kind(compute)
        .matmul(&q.to_kind(compute).tr())
        .to_kind(Kind::Float);
    let mixed = match nn.mode {
        NnMode::Soft => {
            let a = (sims * sigma_q).softmax(-1, Kind::Float);
            a.to_kind(compute)
                .matmul(&q.to_kind(compute))
                .to_kind(Kind::Float)
        }
        NnMode::Hard => q.index_select(0, &sims.argmax(-1, false)),
        NnMode::TopkSoft => {
            let k = (nn.topk as i64).min(valid_rows);
            let (vals, idx) = sims.topk(k, -1, true, true);
            let a = (vals * sigma_q).softmax(-1, Kind::Float); // [B, k]
            let b = idx.size()[0];
            let rows = q.index_select(0, &idx.view([-1])).view([b, k, q.size()[1]]);
            (a.unsqueeze(2) * rows).sum_dim_intlist(1, false, Kind::Float)
        }
    };
    l2n(&mixed)
}

/// The per-sample weights (w⁺, w⁻) for scores `s`.
fn balance_weights(c: &LossConfig, s: &Tensor) -> (Tensor, Tensor) {
    match c.balance {
        Balance::Adaptive => (1.0 + s, 1.0 - s),
        Balance::Convex => ((1.0 + s) * 0.5, (1.0 - s) * 0.5),
        Balance::Fixed => (
            s.ones_like() * c.fixed_pair_weight,
            s.ones_like() * c.fixed_robust_weight,
        ),
        Balance::None => (s.ones_like(), s.ones_like()),
    }
}

/// Expected cost Σ_j P_ij C_ij, averaged over rows, optionally weighted per row.
fn expected_cost(p: &Tensor, cost: &Tensor, weights: Option<&Tensor>) -> Tensor {
    let per_row = (p * cost).sum_dim_intlist(-1, false, Kind::Float);
    match weights {
        Some(w) => (per_row * w).mean(Kind::Float),
        None => per_row.mean(Kind::Float),
    }
}

/// Evaluates the objective. `queue` is `None` for the CLIP baseline (no NN, s ≡ 0); otherwise
/// it is the snapshot *before* this batch is enqueued with `valid_rows` usable rows.
#[allow(clippy::too_many_arguments)]
pub fn mirage_loss(
    image_features: &Tensor,
    text_features: &Tensor,
    queue: Option<(&Tensor, i64)>,
    scales: &LogScales<'_>,
    loss: &LossConfig,
    lambdas: Lambdas,
    nn: &NnConfig,
    max_scale: Option<f64>,
    compute: Kind,
) -> LossOutput {
    let v = l2n(&image_features.to_kind(Kind::Float));
    let t = l2n(&text_features.to_kind(Kind::Float));
    let sigma_p = scale(scales.pair, max_scale);

    let logits_vt = v.matmul(&t.tr()) * &sigma_p;
    let logits_tv = logits_vt.tr();
    let ce_vt = diagonal_ce(&logits_vt);
    let ce_tv = diagonal_ce(&logits_tv);
    let n_rows = v.size()[0];
    let in_batch_accuracy = logits_vt
        .argmax(-1, false)
        .eq_tensor(&Tensor::arange(n_rows, (Kind::Int64, v.device())))
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);

    let nn_text = queue
        .map(|(q, rows)| nearest_text(&v, q, rows, &scale(scales.queue, max_scale), nn, compute));
    let s = match (&nn_text, loss.balance) {
        (Some(n), b) if b != Balance::None => {
            (&t * n).sum_dim_intlist(-1, false, Kind::Float).detach()
        }
        (Some(n), Balance::None) => {
            // s ≡ 0 in the weights, but the real score is still reported for monitoring.
            (&t * n).sum_dim_intlist(-1, false, Kind::Float).detach()
        }
        _ => Tensor::zeros([n_rows], (Kind::Float, v.device())),
    };
    let weight_source = if loss.balance == Balance::None {
        s.zeros_like()
    } else {
        s.shallow_clone()
    };
    let (w_pos, w_neg) = balance_weights(loss, &weight_source);

    let pair = ((&w_pos * &ce_vt).mean(Kind::Float) + (&w_pos * &ce_tv).mean(Kind::Float)) * 0.5;
    let zero = || Tensor::zeros([], (Kind::Float, v.device()));

    let robust = match &nn_text {
        Some(n) if lambdas.robust != 0.0 => {
            let sigma_r = scale(scales.robust, max_scale);
            let logits_vn = v.matmul(&n.tr()) * &sigma_r;
            let logits_nv = n.matmul(&v.tr()) * &sigma_r;
            ((&w_neg * diagonal_ce(&logits_vn)).mean(Kind::Float)
                + (&w_neg * diagonal_ce(&logits_nv)).mean(Kind::Float))
                * 0.5
        }
        _ => zero(),
    };

    let ot = if lambdas.ot != 0.0 {
        let sigma_o = scale(scales.ot, max_scale);
        let p_v = (v.matmul(&t.tr()) * &sigma_o).softmax(-1, Kind::Float);
        let p_t = (t.matmul(&v.tr()) * &sigma_o).softmax(-1, Kind::Float);
        let td = t.detach();
        let nd = nn_text.as_ref().map(Tensor::detach);
        let need_nn = || {
            nd.as_ref()
                .expect("NN-based OT costs need the queue; config validation ensures it")
        };
        let (cost_image, cost_text) = match loss.ot_cost {
            OtCost::NnT => {
                let c = -td.matmul(&need_nn().tr());
                (c.shallow_clone(), c)
            }
            OtCost::NnTSym => (-need_nn().matmul(&td.tr()), -td.matmul(&need_nn().tr())),
            OtCost::TT => {
                let c = -td.matmul(&td.tr());
                (c.shallow_clone(), c)
            }
            OtCost::IT => {
                let c = -v.detach().matmul(&td.tr());
                (c.shallow_clone(), c)
            }
            OtCost::NnNn => {
                let c = -need_nn().matmul(&need_nn().tr());
                (c.shallow_clone(), c)
            }
            OtCost::OneHot => {
                let c: Tensor = 1.0 - Tensor::eye(n_rows, (Kind::Float, v.device()));
                (c.shallow_clone(), c)
            }
        };
        let image_weights = loss.ot_weighted.then_some(&w_pos);
        (expected_cost(&p_v, &cost_image, image_weights) + expected_cost(&p_t, &cost_text, None))
            * 0.5
    } else {
        zero()
    };

    let total = &pair * lambdas.pair + &robust * lambdas.robust + &ot * lambdas.ot;
    LossOutput {
        total,
        pair,
        robust,
        ot,
        s,
        pair_cosine: (&v * &t).sum_dim_intlist(-1, false, Kind::Float).detach(),
        text_unit: t.detach(),
        in_batch_accuracy,
    }
}
