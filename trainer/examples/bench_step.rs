//! Step-time benchmark, printed as ratios measured in one run:
//!
//! - MIRAGE vs the CLIP baseline: the same towers, batch and inputs, the queue off for CLIP;
//! - tch vs PyTorch: the identical step (same weights, inputs, batch, thread count; AdamW
//!   without foreach, as ours updates tensor by tensor) in `scripts/mirage_torch.py bench`.
//!
//! A step is forward of both towers, objective, backward, AdamW update and the FIFO write; data
//! loading is excluded (synthetic pixels and token ids, shared with the Python side by file).
//!
//!   cargo run --release -p mirage-trainer --example bench_step -- \
//!     --text-init ~/.cache/mirage/assets/minilm --vision resnet18 --image-size 128 \
//!     --batch 32 --queue 4096 --threads 2 --python "$MIRAGE_TORCH_PYTHON"

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use mirage_trainer::bank::MemoryQueue;
use mirage_trainer::checkpoint::{write_json, write_tensors};
use mirage_trainer::config::TrainConfig;
use mirage_trainer::device::compute_kind;
use mirage_trainer::init::start;
use mirage_trainer::optim::AdamW;
use mirage_trainer::towers::{DualEncoder, Params, TextBatch};
use mirage_trainer::train::optimise_step;
use tch::{Kind, Tensor};

#[derive(Parser)]
struct Args {
    /// Hugging Face BERT directory for the text tower (e.g. all-MiniLM-L6-v2).
    #[arg(long)]
    text_init: Option<PathBuf>,
    /// Or a bundle to start from.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Vision tower.
    #[arg(long, default_value = "resnet18")]
    vision: String,
    #[arg(long, default_value_t = 128)]
    image_size: usize,
    #[arg(long, default_value_t = 256)]
    embed_dim: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 4096)]
    queue: usize,
    #[arg(long, default_value_t = 32)]
    seq_len: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Rounds; each runs the tch steps then the PyTorch steps.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// `auto`, `cpu`, `cuda`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// `fp32` or `bf16`.
    #[arg(long, default_value = "fp32")]
    precision: String,
    /// Python of the pip torch venv; the PyTorch comparison is skipped without it.
    #[arg(long, env = "MIRAGE_TORCH_PYTHON")]
    python: Option<String>,
}

/// A model with its optimiser and queue, the config it trains under and its step times.
type Run<'a> = (
    (DualEncoder, AdamW, Option<MemoryQueue>),
    &'a TrainConfig,
    Vec<f64>,
);

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<()> {
    let a = Args::parse();
    tch::set_num_threads(a.threads as i32);
    let mut sets = vec![
        format!("model.vision={:?}", a.vision),
        format!("model.image_size={}", a.image_size),
        format!("model.embed_dim={}", a.embed_dim),
        format!("optim.batch_size={}", a.batch),
        format!("queue.size={}", a.queue),
        format!("runtime.device={:?}", a.device),
        format!("runtime.precision={:?}", a.precision),
        "model.max_length=512".into(),
    ];
    match (&a.text_init, &a.bundle) {
        (Some(t), None) => sets.push(format!("model.text_init={:?}", t.display().to_string())),
        (None, Some(b)) => sets.push(format!("model.bundle={:?}", b.display().to_string())),
        _ => bail!("give exactly one of --text-init and --bundle"),
    }
    let mirage = TrainConfig::load(None, &sets, None)?;
    let mut clip_sets = sets.clone();
    clip_sets.extend([
        "loss.lambda_robust=0".to_owned(),
        "loss.lambda_ot=0".into(),
        "loss.balance=\"none\"".into(),
    ]);
    let clip = TrainConfig::load(None, &clip_sets, None)?;
    let device = mirage.runtime.device.resolve();
    let compute = compute_kind(mirage.runtime.precision, device);
    let work = tempfile::tempdir()?;
    let init = start(&mirage, work.path(), device)?;
    let arch = init.bundle_config.architecture.clone();
    let size = init.bundle_config.preprocess.image_size as i64;
    let vocab = arch.text.vocab_size() as i64;

    // Inputs shared with the PyTorch side through a file.
    tch::manual_seed(1);
    let b = a.batch as i64;
    let pixels = Tensor::randn([b, 3, size, size], (Kind::Float, tch::Device::Cpu));
    let ids = Tensor::randint_low(
        5.min(vocab - 1),
        vocab.min(2000),
        [b, a.seq_len as i64],
        (Kind::Int64, tch::Device::Cpu),
    );
    let weights: Vec<(String, Tensor)> = init
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    let weights_path = work.path().join("weights.safetensors");
    write_tensors(&weights_path, &weights)?;
    write_tensors(
        &work.path().join("inputs.safetensors"),
        &[
            ("pixels".into(), pixels.shallow_clone()),
            ("ids".into(), ids.shallow_clone()),
        ],
    )?;
    let arch_path = work.path().join("bundle-base.json");
    write_json(&arch_path, &init.bundle_config)?;

    let tokens = TextBatch {
        ids: ids.to_device(device),
        type_ids: ids.zeros_like().to_device(device),
        mask: ids.ones_like().to_device(device),
    };
    let pixels_dev = pixels.to_device(device);
    let captions = vec![String::new(); a.batch];
    // MIRAGE and CLIP steps alternate, so drift in a shared machine's speed hits both alike.
    let build = |cfg: &TrainConfig| -> Result<(DualEncoder, AdamW, Option<MemoryQueue>)> {
        let tensors = init
            .tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.copy()))
            .collect();
        let model = DualEncoder {
            params: Params::new(&arch, tensors, device)?,
            arch: arch.clone(),
            text_dropout: cfg.model.text_dropout,
        };
        let opt = AdamW::new(&model.params, &cfg.optim);
        let queue = (!cfg.loss.is_clip())
            .then(|| MemoryQueue::random(a.queue, arch.embed_dim, device, false));
        Ok((model, opt, queue))
    };
    let mut runs = [
        (build(&mirage)?, &mirage, Vec::new()),
        (build(&clip)?, &clip, Vec::new()),
    ];
    let tch_round = |runs: &mut [Run<'_>; 2], round: usize| -> Result<()> {
        for step in 0..(a.warmup + a.steps) {
            for ((model, opt, queue), cfg, times) in runs.iter_mut() {
                let t0 = Instant::now();
                let global = (round * (a.warmup + a.steps) + step) as u64;
                optimise_step(
                    model,
                    opt,
                    queue.as_mut(),
                    &pixels_dev,
                    &tokens,
                    &captions,
                    cfg,
                    global,
                    1e-4,
                    compute,
                )?;
                if let tch::Device::Cuda(_) = device {
                    tch::Cuda::synchronize(0);
                }
                if step >= a.warmup {
                    times.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        Ok(())
    };
    let script = mirage_model::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/mirage_torch.py");
    let python = a
        .python
        .clone()
        .filter(|p| !p.is_empty() && a.device == "cpu");
    let mut torch_times = (Vec::new(), Vec::new());
    let torch_round = |times: &mut (Vec<f64>, Vec<f64>)| -> Result<()> {
        let Some(py) = &python else { return Ok(()) };
        let out = std::process::Command::new(py)
            .arg(&script)
            .args(["bench", "--mode", "both"])
            .arg("--weights")
            .arg(&weights_path)
            .arg("--arch")
            .arg(&arch_path)
            .arg("--inputs")
            .arg(work.path().join("inputs.safetensors"))
            .args(["--queue", &a.queue.to_string()])
            .args([
                "--steps",
                &a.steps.to_string(),
                "--warmup",
                &a.warmup.to_string(),
            ])
            .args(["--threads", &a.threads.to_string()])
            .output()
            .context("running the PyTorch benchmark")?;
        if !out.status.success() {
            bail!(
                "PyTorch benchmark failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let list = |k: &str| -> Vec<f64> {
            v[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_f64)
                .collect()
        };
        times.0.extend(list("mirage_ms"));
        times.1.extend(list("clip_ms"));
        Ok(())
    };
    // Rounds alternate the two programs so a slow spell of the machine is shared between them.
    for round in 0..a.rounds {
        tch_round(&mut runs, round)?;
        torch_round(&mut torch_times)?;
    }
    let ms_mirage = median(runs[0].2.clone());
    let ms_clip = median(runs[1].2.clone());
    println!(
        "model: text {}, vision {}, embed {}, batch {}, queue {}, seq {}, threads {}, device {:?}, compute {:?}; median of {} steps × {} rounds",
        arch.text.describe(),
        arch.vision.describe(),
        arch.embed_dim,
        a.batch,
        a.queue,
        a.seq_len,
        a.threads,
        device,
        compute,
        a.steps,
        a.rounds
    );
    println!(
        "tch MIRAGE step   {ms_mirage:9.1} ms  ({:.1} samples/s)",
        a.batch as f64 / ms_mirage * 1000.0
    );
    println!(
        "tch CLIP step     {ms_clip:9.1} ms  ({:.1} samples/s)",
        a.batch as f64 / ms_clip * 1000.0
    );
    println!("ratio MIRAGE / CLIP (tch): {:.3}", ms_mirage / ms_clip);
    if python.is_none() {
        println!("PyTorch comparison skipped: it needs MIRAGE_TORCH_PYTHON (source scripts/torch-env.sh) and --device cpu");
        return Ok(());
    }
    let py_mirage = median(torch_times.0);
    let py_clip = median(torch_times.1);
    println!("PyTorch MIRAGE    {py_mirage:9.1} ms");
    println!("PyTorch CLIP      {py_clip:9.1} ms");
    println!("ratio MIRAGE / CLIP (PyTorch): {:.3}", py_mirage / py_clip);
    println!(
        "ratio tch / PyTorch, MIRAGE step: {:.3}",
        ms_mirage / py_mirage
    );
    println!("ratio tch / PyTorch, CLIP step:   {:.3}", ms_clip / py_clip);
    Ok(())
}
