//! docs/METHOD.md §6.5 test oracles for the objective, on small random tensors.

use mirage_trainer::config::{Balance, LossConfig, NnConfig, NnMode, OtCost};
use mirage_trainer::loss::{mirage_loss, nearest_text, Lambdas, LogScales, LossOutput};
use mirage_trainer::towers::l2n;
use tch::{Device, Kind, Tensor};

const B: i64 = 8;
const D: i64 = 16;
const K: i64 = 32;

struct Inputs {
    v: Tensor,
    t: Tensor,
    q: Tensor,
    theta: [Tensor; 4],
}

fn inputs(seed: i64) -> Inputs {
    tch::manual_seed(seed);
    let opts = (Kind::Float, Device::Cpu);
    let theta = [
        (1.0f64 / 0.07).ln(),
        (1.0f64 / 0.9).ln(),
        (1.0f64 / 0.07).ln(),
        (1.0f64 / 0.07).ln(),
    ]
    .map(|v| Tensor::from(v as f32).set_requires_grad(true));
    Inputs {
        v: Tensor::randn([B, D], opts),
        t: Tensor::randn([B, D], opts),
        q: l2n(&Tensor::randn([K, D], opts)),
        theta,
    }
}

fn eval(i: &Inputs, loss: &LossConfig, nn: &NnConfig, with_queue: bool) -> LossOutput {
    mirage_loss(
        &i.v,
        &i.t,
        with_queue.then_some((&i.q, K)),
        &LogScales {
            pair: &i.theta[0],
            robust: &i.theta[1],
            ot: &i.theta[2],
            queue: &i.theta[3],
        },
        loss,
        Lambdas::at_step(loss, u64::MAX),
        nn,
        None,
        Kind::Float,
    )
}

fn clip_config() -> LossConfig {
    LossConfig {
        lambda_robust: 0.0,
        lambda_ot: 0.0,
        balance: Balance::None,
        ..Default::default()
    }
}

/// The symmetric CLIP loss written with libtorch's own cross-entropy.
fn reference_clip(v: &Tensor, t: &Tensor, log_scale: f64) -> f64 {
    let v = v / v.norm_scalaropt_dim(2, [-1i64].as_slice(), true);
    let t = t / t.norm_scalaropt_dim(2, [-1i64].as_slice(), true);
    let logits = v.matmul(&t.tr()) * log_scale.exp();
    let target = Tensor::arange(B, (Kind::Int64, Device::Cpu));
    let a = logits.cross_entropy_for_logits(&target);
    let b = logits.tr().cross_entropy_for_logits(&target);
    ((a + b) * 0.5).double_value(&[])
}

#[test]
fn clip_equivalence_without_queue_and_with_zero_weights() {
    let i = inputs(1);
    let want = reference_clip(&i.v, &i.t, (1.0f64 / 0.07).ln());
    let no_queue = eval(&i, &clip_config(), &NnConfig::default(), false);
    assert!((no_queue.total.double_value(&[]) - want).abs() < 1e-5);
    assert_eq!(no_queue.s.abs().sum(Kind::Float).double_value(&[]), 0.0);
    // With a queue present but s ≡ 0 and λ_robust = λ_ot = 0, still exactly CLIP.
    let with_queue = eval(&i, &clip_config(), &NnConfig::default(), true);
    assert!((with_queue.total.double_value(&[]) - want).abs() < 1e-5);
    // The MIRAGE default is not CLIP.
    let mirage = eval(&i, &LossConfig::default(), &NnConfig::default(), true);
    assert!((mirage.total.double_value(&[]) - want).abs() > 1e-3);
}

#[test]
fn one_hot_cost_is_one_minus_diagonal_probability() {
    let i = inputs(2);
    let loss = LossConfig {
        ot_cost: OtCost::OneHot,
        ..Default::default()
    };
    let out = eval(&i, &loss, &NnConfig::default(), true);
    let v = l2n(&i.v);
    let t = l2n(&i.t);
    let so = i.theta[2].exp();
    let pv = (v.matmul(&t.tr()) * &so).softmax(-1, Kind::Float).diag(0);
    let pt = (t.matmul(&v.tr()) * &so).softmax(-1, Kind::Float).diag(0);
    let want = ((pv.neg() + 1.0).mean(Kind::Float) + (pt.neg() + 1.0).mean(Kind::Float)) * 0.5;
    assert!((out.ot.double_value(&[]) - want.double_value(&[])).abs() < 1e-6);
}

#[test]
fn every_cost_keeps_the_ot_term_in_minus_one_one() {
    for (seed, cost) in [
        OtCost::NnT,
        OtCost::NnTSym,
        OtCost::TT,
        OtCost::IT,
        OtCost::NnNn,
        OtCost::OneHot,
    ]
    .into_iter()
    .enumerate()
    {
        let i = inputs(10 + seed as i64);
        let loss = LossConfig {
            ot_cost: cost,
            ..Default::default()
        };
        let ot = eval(&i, &loss, &NnConfig::default(), true)
            .ot
            .double_value(&[]);
        assert!((-1.0..=1.0).contains(&ot), "{cost:?}: {ot}");
    }
}

#[test]
fn soft_nn_tends_to_hard_nn_as_temperature_goes_to_zero() {
    let i = inputs(3);
    let v = l2n(&i.v);
    let hard = nearest_text(
        &v,
        &i.q,
        K,
        &Tensor::from(1.0f32),
        &NnConfig {
            mode: NnMode::Hard,
            ..Default::default()
        },
        Kind::Float,
    );
    let soft_at = |scale: f32| {
        nearest_text(
            &v,
            &i.q,
            K,
            &Tensor::from(scale),
            &NnConfig::default(),
            Kind::Float,
        )
    };
    let gap = |t: &Tensor| (t - &hard).abs().max().double_value(&[]);
    assert!(
        gap(&soft_at(1e4)) < 1e-4,
        "σ_q = 1e4: {}",
        gap(&soft_at(1e4))
    );
    assert!(gap(&soft_at(10.0)) > gap(&soft_at(1e4)));
    // top-k soft with k = 1 is hard NN at any temperature.
    let top1 = nearest_text(
        &v,
        &i.q,
        K,
        &Tensor::from(1.0f32),
        &NnConfig {
            mode: NnMode::TopkSoft,
            topk: 1,
            ..Default::default()
        },
        Kind::Float,
    );
    assert!(gap(&top1) < 1e-6);
}

#[test]
fn queue_gets_no_gradient_and_theta_q_does() {
    let i = inputs(4);
    let q = i.q.detach().set_requires_grad(true);
    let v = i.v.set_requires_grad(true);
    let out = mirage_loss(
        &v,
        &i.t,
        Some((&q, K)),
        &LogScales {
            pair: &i.theta[0],
            robust: &i.theta[1],
            ot: &i.theta[2],
            queue: &i.theta[3],
        },
        &LossConfig::default(),
        Lambdas::at_step(&LossConfig::default(), u64::MAX),
        &NnConfig::default(),
        None,
        Kind::Float,
    );
    assert!(!out.s.requires_grad(), "s is detached");
    out.total.backward();
    let qg = q.grad();
    assert!(!qg.defined() || qg.abs().sum(Kind::Float).double_value(&[]) == 0.0);
    let gq = i.theta[3].grad().double_value(&[]);
    assert!(
        gq.abs() > 1e-8,
        "θ_q gets a gradient through L_robust: {gq}"
    );
    for th in &i.theta[..3] {
        assert!(th.grad().double_value(&[]).abs() > 0.0);
    }
    // With a frozen NN temperature nothing flows into θ_q's place either.
}

/// Central finite difference of `f` at `x` along coordinate `idx`.
fn finite_difference(f: &dyn Fn(&Tensor) -> f64, x: &Tensor, idx: (i64, i64), eps: f64) -> f64 {
    let bump = |delta: f64| {
        let y = x.detach().copy();
        let _ = y.get(idx.0).get(idx.1).g_add_scalar_(delta);
        f(&y)
    };
    (bump(eps) - bump(-eps)) / (2.0 * eps)
}

#[test]
fn s_and_ot_cost_are_constants_of_the_gradient() {
    let i = inputs(5);
    let to64 = |t: &Tensor| t.to_kind(Kind::Float);
    let (v0, t0, q) = (to64(&i.v), to64(&i.t), to64(&i.q));
    let scales: Vec<Tensor> = i.theta.iter().map(|t| to64(&t.detach())).collect();
    let loss_cfg = LossConfig {
        lambda_pair: 1.0,
        lambda_robust: 0.0,
        lambda_ot: 1.0,
        ..Default::default()
    };
    let nn = NnConfig::default();
    let full = |t: &Tensor| -> Tensor {
        mirage_loss(
            &v0,
            t,
            Some((&q, K)),
            &LogScales {
                pair: &scales[0],
                robust: &scales[1],
                ot: &scales[2],
                queue: &scales[3],
            },
            &loss_cfg,
            Lambdas::at_step(&loss_cfg, u64::MAX),
            &nn,
            None,
            Kind::Float,
        )
        .total
    };
    // s and C at the base point, then held fixed: the function whose gradient autograd must give.
    let v = l2n(&v0.to_kind(Kind::Float));
    let n0 = nearest_text(
        &v,
        &q.to_kind(Kind::Float),
        K,
        &scales[3].exp().to_kind(Kind::Float),
        &nn,
        Kind::Float,
    );
    let t_unit0 = l2n(&t0.to_kind(Kind::Float));
    let s0 = (&t_unit0 * &n0).sum_dim_intlist(-1, false, Kind::Float);
    let c0 = -t_unit0.matmul(&n0.tr());
    let (sp, so) = (
        scales[0].exp().to_kind(Kind::Float),
        scales[2].exp().to_kind(Kind::Float),
    );
    let frozen = |t: &Tensor| -> f64 {
        let t = l2n(&t.to_kind(Kind::Float));
        let target = Tensor::arange(B, (Kind::Int64, Device::Cpu)).unsqueeze(1);
        let ce = |l: &Tensor| {
            -l.log_softmax(-1, Kind::Float)
                .gather(1, &target, false)
                .squeeze_dim(1)
        };
        let w = 1.0 + &s0;
        let lp = ((&w * ce(&(v.matmul(&t.tr()) * &sp))).mean(Kind::Float)
            + (&w * ce(&(t.matmul(&v.tr()) * &sp))).mean(Kind::Float))
            * 0.5;
        let pv = (v.matmul(&t.tr()) * &so).softmax(-1, Kind::Float);
        let pt = (t.matmul(&v.tr()) * &so).softmax(-1, Kind::Float);
        let lo = ((&pv * &c0)
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float)
            + (&pt * &c0)
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float))
            * 0.5;
        (lp + lo).double_value(&[])
    };
    let t_var = t0.to_kind(Kind::Float).set_requires_grad(true);
    full(&t_var).backward();
    let grad = t_var.grad();
    let full_value = |t: &Tensor| full(&t.to_kind(Kind::Float)).double_value(&[]);
    let mut differs = 0;
    for idx in [(0, 0), (1, 3), (2, 7), (5, 11), (7, 15)] {
        let autograd = grad.get(idx.0).get(idx.1).double_value(&[]);
        let fd_frozen = finite_difference(&frozen, &t0.to_kind(Kind::Float), idx, 1e-2);
        assert!(
            (autograd - fd_frozen).abs() < 2e-3 + 2e-2 * fd_frozen.abs(),
            "at {idx:?}: autograd {autograd} vs finite difference with s, C fixed {fd_frozen}"
        );
        let fd_full = finite_difference(&full_value, &t0, idx, 1e-2);
        if (fd_full - fd_frozen).abs() > 5e-3 {
            differs += 1;
        }
    }
    // The check has teeth: letting s and C vary changes the derivative.
    assert!(
        differs >= 2,
        "only {differs} coordinates tell frozen from live s and C"
    );
}

#[test]
fn robust_term_reaches_the_image_through_n_unless_disabled() {
    let i = inputs(6);
    let loss = LossConfig {
        lambda_pair: 0.0,
        lambda_robust: 1.0,
        lambda_ot: 0.0,
        ..Default::default()
    };
    let grad_for = |grad_to_image: bool| {
        let v = i.v.detach().set_requires_grad(true);
        let nn = NnConfig {
            grad_to_image,
            ..Default::default()
        };
        mirage_loss(
            &v,
            &i.t,
            Some((&i.q, K)),
            &LogScales {
                pair: &i.theta[0],
                robust: &i.theta[1],
                ot: &i.theta[2],
                queue: &i.theta[3],
            },
            &loss,
            Lambdas::at_step(&loss, u64::MAX),
            &nn,
            None,
            Kind::Float,
        )
        .total
        .backward();
        v.grad()
    };
    let with = grad_for(true);
    let without = grad_for(false);
    assert!((with - without).abs().max().double_value(&[]) > 1e-6);
}

#[test]
fn balance_modes_scale_the_pair_term() {
    let i = inputs(7);
    let nn = NnConfig::default();
    let pair = |balance| {
        let loss = LossConfig {
            balance,
            ..Default::default()
        };
        eval(&i, &loss, &nn, true).pair.double_value(&[])
    };
    // convex = adaptive / 2 exactly (M1).
    assert!((pair(Balance::Convex) * 2.0 - pair(Balance::Adaptive)).abs() < 1e-6);
    let fixed = LossConfig {
        balance: Balance::Fixed,
        fixed_pair_weight: 3.0,
        ..Default::default()
    };
    assert!(
        (eval(&i, &fixed, &nn, true).pair.double_value(&[]) - 3.0 * pair(Balance::None)).abs()
            < 1e-5
    );
}

#[test]
fn robust_ramp_grows_linearly() {
    let c = LossConfig {
        robust_ramp_steps: Some(100),
        ..Default::default()
    };
    assert_eq!(Lambdas::at_step(&c, 0).robust, 0.0);
    assert!((Lambdas::at_step(&c, 50).robust - 0.1).abs() < 1e-12);
    assert!((Lambdas::at_step(&c, 500).ot - 0.05).abs() < 1e-12);
    assert_eq!(Lambdas::at_step(&c, 0).pair, 1.0);
}
