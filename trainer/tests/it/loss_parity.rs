//! `mirage-train loss` against the independent PyTorch transcription of docs/METHOD.md §2.5
//! (`scripts/mirage_torch.py`), over the knobs of §6.3. Needs the pip torch venv
//! (`MIRAGE_TORCH_PYTHON`, set by `scripts/torch-env.sh`, which `scripts/test.sh` sources).

use std::path::Path;

use tch::{Device, Kind, Tensor};

fn python() -> Option<String> {
    match std::env::var("MIRAGE_TORCH_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!("skipped: set MIRAGE_TORCH_PYTHON (source scripts/torch-env.sh) to compare with PyTorch");
            None
        }
    }
}

fn write_inputs(path: &Path, seed: i64) {
    tch::manual_seed(seed);
    let opts = (Kind::Float, Device::Cpu);
    let q = Tensor::randn([64, 16], opts);
    let q = &q / q.norm_scalaropt_dim(2, [-1i64].as_slice(), true);
    let scales = Tensor::from_slice(&[
        (1.0f32 / 0.07).ln(),
        (1.0f32 / 0.9).ln(),
        (1.0f32 / 0.07).ln(),
        (1.0f32 / 0.05).ln(),
    ]);
    // Correlated pairs so that s spreads over [-1, 1] instead of sitting near 0.
    let v = Tensor::randn([8, 16], opts);
    let t = &v * 0.7 + Tensor::randn([8, 16], opts) * 0.5;
    Tensor::write_safetensors(
        &[
            ("image_features", v),
            ("text_features", t),
            ("queue", q),
            ("log_scales", scales),
        ],
        path,
    )
    .unwrap();
}

fn parse(s: &str) -> serde_json::Value {
    serde_json::from_str(s.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn loss_probe_matches_pytorch_for_every_variant() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in.safetensors");
    write_inputs(&inputs, 3);
    let script = mirage_model::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/mirage_torch.py");
    let variants: &[&[&str]] = &[
        &[],
        &[
            "loss.lambda_robust=0",
            "loss.lambda_ot=0",
            "loss.balance=none",
        ],
        &["loss.balance=convex"],
        &["loss.balance=fixed", "loss.fixed_robust_weight=0.5"],
        &["loss.ot_cost=nn_t_sym"],
        &["loss.ot_cost=t_t", "loss.ot_weighted=true"],
        &["loss.ot_cost=i_t"],
        &["loss.ot_cost=nn_nn"],
        &["loss.ot_cost=one_hot", "loss.lambda_ot=1.0"],
        &["nn.mode=hard"],
        &["nn.mode=topk_soft", "nn.topk=5"],
        &["nn.grad_to_image=false", "temps.max_scale=10.0"],
    ];
    for sets in variants {
        let mut args = vec![
            "loss".to_owned(),
            "--inputs".into(),
            inputs.display().to_string(),
        ];
        let mut py_args = vec![
            script.display().to_string(),
            "loss".into(),
            "--inputs".into(),
            inputs.display().to_string(),
        ];
        for s in *sets {
            args.extend(["--set".to_owned(), (*s).to_owned()]);
            py_args.extend(["--set".to_owned(), (*s).to_owned()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, ours, err) = crate::common::run(&refs);
        assert_eq!(code, 0, "{sets:?}: {err}");
        let out = std::process::Command::new(&py)
            .args(&py_args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sets:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (a, b) = (parse(&ours), parse(&String::from_utf8_lossy(&out.stdout)));
        for key in ["pair", "robust", "ot", "total"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(
                (x - y).abs() < 1e-5 * (1.0 + y.abs()),
                "{sets:?} {key}: tch {x} vs torch {y}"
            );
        }
        let (sa, sb) = (a["s"].as_array().unwrap(), b["s"].as_array().unwrap());
        assert_eq!(sa.len(), 8);
        for (x, y) in sa.iter().zip(sb) {
            assert!(
                (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5,
                "{sets:?} s"
            );
        }
    }
}

#[test]
fn loss_probe_rejects_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    Tensor::write_safetensors(
        &[(
            "image_features",
            Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)),
        )],
        &bad,
    )
    .unwrap();
    let (code, _, err) = crate::common::run(&["loss", "--inputs", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("text_features"), "{err}");
    let (code, _, err) = crate::common::run(&["loss", "--inputs", "/nonexistent.safetensors"]);
    assert_eq!(code, 2);
    assert!(err.contains("nonexistent"), "{err}");
    let good = dir.path().join("in.safetensors");
    write_inputs(&good, 1);
    let (code, _, err) = crate::common::run(&[
        "loss",
        "--inputs",
        good.to_str().unwrap(),
        "--set",
        "loss.ot_cost=sinkhorn",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("sinkhorn"), "{err}");
}

#[test]
fn adamw_matches_torch_optim_adamw() {
    use mirage_trainer::config::OptimConfig;
    use mirage_trainer::optim::AdamW;
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(9);
    let opts = (Kind::Float, Device::Cpu);
    let start = Tensor::randn([5, 3], opts);
    let grads = Tensor::randn([6, 5, 3], opts);
    let inputs = dir.path().join("adamw.safetensors");
    Tensor::write_safetensors(&[("param", start.copy()), ("grads", grads.copy())], &inputs)
        .unwrap();
    let (lr, wd) = (1e-2, 0.1);
    let name = "w".to_owned();
    let p = start.copy().set_requires_grad(true);
    let config = OptimConfig {
        weight_decay: wd,
        ..Default::default()
    };
    let mut opt = AdamW::for_tensors(std::iter::once((&name, &p)), &config);
    for s in 0..6 {
        // d/dp Σ p·g = g; AdamW zeroes the gradient after each step.
        (&p * grads.get(s)).sum(Kind::Float).backward();
        opt.step_tensors(std::iter::once((&name, &p)), lr);
    }
    let script = mirage_model::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/mirage_torch.py");
    let out = std::process::Command::new(&py)
        .arg(&script)
        .args([
            "adamw",
            "--inputs",
            inputs.to_str().unwrap(),
            "--lr",
            "0.01",
            "--wd",
            "0.1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = parse(&String::from_utf8_lossy(&out.stdout));
    let ours = Vec::<f64>::try_from(p.detach().to_kind(Kind::Double).view(-1)).unwrap();
    for (a, b) in ours.iter().zip(theirs["param"].as_array().unwrap()) {
        let b = b.as_f64().unwrap();
        assert!((a - b).abs() < 1e-5, "ours {a} vs torch {b}");
    }
    assert!(
        (ours[0] - f64::from(start.double_value(&[0, 0]) as f32)).abs() > 1e-3,
        "the update moved"
    );
}
