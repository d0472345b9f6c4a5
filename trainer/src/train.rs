//! The training loop: queue fill, steps, metrics, validation, checkpoints, resume, plots.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mirage_data::pairs::read_pairs;
use mirage_eval::metrics::{auc, caption_columns, grouped_ranks, recall_from_ranks};
use mirage_eval::plot::{line_chart, Series};
use mirage_model::config::BundleConfig;
use mirage_model::names;
use mirage_model::tokenize::TextTokenizer;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::bank::MemoryQueue;
use crate::checkpoint::{self, QueueMeta, RunState};
use crate::config::{NoiseConfig, NoiseMode, QueueFill, TrainConfig};
use crate::data::{epoch_batches, Batch, Dataset, Loader, NoisePlan};
use crate::device::{check_available, compute_kind};
use crate::loss::{mirage_loss, nearest_text, Lambdas, LogScales};
use crate::optim::{lr_at, AdamW};
use crate::towers::{
    l2n, DualEncoder, Mode, Params, TextBatch, LOG_SCALE_OT, LOG_SCALE_QUEUE, LOG_SCALE_ROBUST,
};

/// What one optimisation step did.
#[derive(Debug)]
pub struct StepOutcome {
    /// The loss terms and scores.
    pub output: crate::loss::LossOutput,
    /// λ's in effect.
    pub lambdas: Lambdas,
    /// Gradient norm before clipping, when clipping is on.
    pub grad_norm: Option<f64>,
    /// The total loss as a number.
    pub loss: f64,
}

/// Forward both towers in training mode, evaluate the objective against the queue snapshot,
/// backward, clip, AdamW update, then the FIFO write — everything of a step but data loading
/// (shared by the loop and the step benchmark).
#[allow(clippy::too_many_arguments)]
pub fn optimise_step(
    model: &DualEncoder,
    optimizer: &mut AdamW,
    queue: Option<&mut MemoryQueue>,
    pixels: &Tensor,
    tokens: &TextBatch,
    captions: &[String],
    config: &TrainConfig,
    step: u64,
    lr: f64,
    compute: Kind,
) -> Result<StepOutcome> {
    let mode = Mode {
        train: true,
        compute,
    };
    let v = model.image(pixels, mode);
    let t = model.text(tokens, mode);
    let lambdas = Lambdas::at_step(&config.loss, step);
    let queue_view = queue
        .as_ref()
        .filter(|q| q.filled > 0)
        .map(|q| (&q.rows, q.filled));
    // An empty queue (`warm` fill, first step) has no NN text: the robust terms wait.
    let lambdas = if queue_view.is_none() && queue.is_some() {
        Lambdas {
            robust: 0.0,
            ot: 0.0,
            ..lambdas
        }
    } else {
        lambdas
    };
    let p = &model.params;
    let out = mirage_loss(
        &v,
        &t,
        queue_view,
        &LogScales::of(p),
        &config.loss,
        lambdas,
        &config.nn,
        config.temps.max_scale,
        compute,
    );
    let loss = out.total.double_value(&[]);
    if !loss.is_finite() {
        bail!(
            "loss became {loss} at step {step}: lower optim.lr, set optim.grad_clip or \
             temps.max_scale"
        );
    }
    out.total.backward();
    let grad_norm = config.optim.grad_clip.map(|m| AdamW::clip_grad_norm(p, m));
    optimizer.step(p, lr);
    // FIFO write after backward: the graph never sees a modified queue (docs/METHOD.md §2.5).
    if let Some(q) = queue {
        q.enqueue(&out.text_unit, captions, step as i64 + 1)?;
    }
    Ok(StepOutcome {
        output: out,
        lambdas,
        grad_norm,
        loss,
    })
}

/// One training pair's scores in the current epoch, for the epoch's injected-noise AUCs.
#[derive(Debug, Clone, Copy)]
struct EpochScore {
    s: f64,
    cosine: f64,
    noisy: bool,
}

/// A run in progress.
pub struct Trainer {
    config: TrainConfig,
    run_dir: PathBuf,
    device: Device,
    compute: Kind,
    model: DualEncoder,
    optimizer: AdamW,
    queue: Option<MemoryQueue>,
    train: Arc<Dataset>,
    valid: Option<Arc<Dataset>>,
    bundle_base: BundleConfig,
    tokenizer_json: Vec<u8>,
    state: RunState,
    quiet: bool,
    /// (s, injected-noise flag) of every sample of the epoch in progress.
    epoch_scores: Vec<EpochScore>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("run_dir", &self.run_dir)
            .field("step", &self.state.step)
            .finish_non_exhaustive()
    }
}

fn pixels_tensor(b: &Batch, size: usize, device: Device) -> Tensor {
    let n = b.indices.len() as i64;
    let s = size as i64;
    Tensor::from_slice(&b.pixels)
        .view([n, 3, s, s])
        .to_device(device)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn vec_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        t.detach()
            .to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .view(-1),
    )
    .expect("a float tensor converts to Vec<f64>")
}

/// The device and compute kind of the run, with libtorch's threads and generator set up. It comes
/// first: the seed must be in place before anything draws from libtorch's generator (the queue's
/// random rows).
fn start_runtime(config: &TrainConfig) -> Result<(Device, Kind)> {
    let device = config.runtime.device.resolve();
    check_available(device)?;
    if let Some(n) = config.runtime.threads {
        tch::set_num_threads(n as i32);
    }
    tch::manual_seed(config.runtime.seed as i64);
    Ok((device, compute_kind(config.runtime.precision, device)))
}

/// Creates `run_dir` and resolves the checkpoint to resume, if any. A fresh run into a directory
/// that already has checkpoints is refused: its checkpoints would mix with the earlier run's.
fn prepare_run_dir(run_dir: &Path, resume: Option<&Path>) -> Result<Option<PathBuf>> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))?;
    let resume_dir = resume.map(checkpoint::resolve).transpose()?;
    if resume_dir.is_none() && checkpoint::checkpoints_dir(run_dir).join("LATEST").exists() {
        bail!(
            "{} already has checkpoints: pass --resume {} to continue it, or choose a new \
             --out",
            run_dir.display(),
            run_dir.display()
        );
    }
    Ok(resume_dir)
}

/// The bundle description, tokenizer and weights the run starts from: the checkpoint's when
/// resuming, else those the config's initialisation builds.
fn first_weights(
    config: &TrainConfig,
    run_dir: &Path,
    resume_dir: Option<&Path>,
    device: Device,
) -> Result<(BundleConfig, Vec<u8>, BTreeMap<String, Tensor>)> {
    Ok(match resume_dir {
        Some(ck) => {
            let base: BundleConfig = checkpoint::read_json(&ck.join(checkpoint::BUNDLE_BASE))?;
            let tok = std::fs::read(ck.join(checkpoint::TOKENIZER))?;
            let tensors = checkpoint::read_tensors(&ck.join(checkpoint::WEIGHTS), device)?;
            (base, tok, tensors.into_iter().collect())
        }
        None => {
            let s = crate::init::start(config, run_dir, device)?;
            (s.bundle_config, s.tokenizer_json, s.tensors)
        }
    })
}

/// Both towers over `tensors`, with the log-scales the config does not train frozen.
fn build_model(
    config: &TrainConfig,
    bundle_base: &BundleConfig,
    tensors: BTreeMap<String, Tensor>,
    device: Device,
) -> Result<DualEncoder> {
    let arch = bundle_base.architecture.clone();
    let mut params = Params::new(&arch, tensors, device)?;
    if !config.temps.learnable {
        for n in [names::LOGIT_SCALE, LOG_SCALE_ROBUST, LOG_SCALE_OT] {
            params.freeze(n);
        }
    }
    if !config.nn.learnable || config.loss.is_clip() {
        params.freeze(LOG_SCALE_QUEUE);
    }
    if config.loss.is_clip() {
        params.freeze(LOG_SCALE_ROBUST);
        params.freeze(LOG_SCALE_OT);
    }
    Ok(DualEncoder {
        params,
        arch,
        text_dropout: config.model.text_dropout,
    })
}

/// The training pairs (the configured prefix share, with their noise plan), checked against the
/// batch size and the tolerated share of empty captions; returns them with their file.
fn training_set(
    config: &TrainConfig,
    run_dir: &Path,
    bundle_base: &BundleConfig,
    tokenizer: TextTokenizer,
) -> Result<(Arc<Dataset>, PathBuf)> {
    let train_path = config
        .data
        .train
        .clone()
        .context("data.train is required")?;
    let (mut pairs, report) = read_pairs(
        &train_path,
        config.data.format,
        config.data.image_root.as_deref(),
    )?;
    let keep = ((pairs.len() as f64) * config.data.rate).floor() as usize;
    pairs.truncate(keep.max(1));
    let n = config.optim.batch_size;
    if pairs.len() < n {
        bail!(
            "{} has {} usable pairs, fewer than one batch of {n}",
            train_path.display(),
            pairs.len()
        );
    }
    if report.empty_captions > 0 {
        eprintln!(
            "data: {} of {} training rows skipped for an empty caption",
            report.empty_captions, report.rows
        );
    }
    let empty_share = report.empty_captions as f64 / report.rows.max(1) as f64;
    if empty_share > config.data.max_bad_share {
        bail!(
            "{:.1}% of the training rows have empty captions, above data.max_bad_share \
             {:.1}%",
            empty_share * 100.0,
            config.data.max_bad_share * 100.0
        );
    }
    let noise = NoisePlan::new(&config.noise, pairs.len(), config.runtime.seed);
    if config.noise.mode == NoiseMode::Fixed && config.noise.fp_rate > 0.0 {
        let mut f = std::fs::File::create(run_dir.join("noise.jsonl"))?;
        for p in noise.fixed_pairs() {
            writeln!(f, "{}", serde_json::to_string(&p)?)?;
        }
    }
    let train = Arc::new(Dataset {
        pairs,
        preprocess: bundle_base.preprocess.clone(),
        tokenizer,
        noise,
        augment: config.data.augment,
        seed: config.runtime.seed,
    });
    Ok((train, train_path))
}

/// The validation pairs, when the config names a file.
fn validation_set(
    config: &TrainConfig,
    bundle_base: &BundleConfig,
    tokenizer: TextTokenizer,
) -> Result<Option<Arc<Dataset>>> {
    let Some(p) = &config.data.valid else {
        return Ok(None);
    };
    let (mut pairs, _) = read_pairs(p, config.data.format, config.data.image_root.as_deref())?;
    if let Some(l) = config.data.valid_limit {
        pairs.truncate(l);
    }
    // Validation injects noise as a fixed seeded set at the training rate, so the same pairs
    // are corrupted every epoch and the AUC is comparable across epochs.
    let noise = NoisePlan::new(
        &NoiseConfig {
            fp_rate: config.noise.fp_rate,
            mode: NoiseMode::Fixed,
        },
        pairs.len(),
        config.runtime.seed ^ 0x7A11D,
    );
    Ok(Some(Arc::new(Dataset {
        pairs,
        preprocess: bundle_base.preprocess.clone(),
        tokenizer,
        noise,
        augment: false,
        seed: config.runtime.seed,
    })))
}

/// The memory queue of random rows (None for the CLIP baseline); `config` must already be
/// resolved for the corpus, which fixes the queue's size.
fn new_queue(config: &TrainConfig, dim: usize, device: Device) -> Option<MemoryQueue> {
    (!config.loss.is_clip()).then(|| {
        MemoryQueue::random(
            config.queue.size.unwrap_or(config.optim.batch_size),
            dim,
            device,
            config.queue.init_fill == QueueFill::Warm,
        )
    })
}

/// Progress of a run that starts at step 0, with the schedule's lengths from the resolved
/// `config` and the training set's size.
fn fresh_state(config: &TrainConfig, train_len: usize) -> RunState {
    let steps_per_epoch = (train_len / config.optim.batch_size) as u64;
    let total_steps = steps_per_epoch * config.optim.epochs as u64;
    let warmup_epochs = config.optim.warmup_epochs.unwrap_or_default();
    let warmup_steps = (warmup_epochs * steps_per_epoch as f64).round() as u64;
    RunState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        steps_per_epoch,
        total_steps,
        warmup_steps,
        train_pairs: train_len,
        unreadable_images: 0,
        samples_read: 0,
        last_validation: None,
        finished: false,
    }
}

/// Loads the optimizer moments and the queue of checkpoint `ck` into `optimizer` and `queue`
/// and returns its progress. A different training set is refused: the saved epoch order and
/// position would point at other pairs.
fn restore_checkpoint(
    ck: &Path,
    train_path: &Path,
    train_len: usize,
    optimizer: &mut AdamW,
    queue: Option<&mut MemoryQueue>,
    device: Device,
) -> Result<RunState> {
    let st: RunState = checkpoint::read_json(&ck.join(checkpoint::STATE))?;
    if st.train_pairs != train_len {
        bail!(
            "the checkpoint was trained on {} pairs, {} has {train_len}: resume with the same \
             data",
            st.train_pairs,
            train_path.display()
        );
    }
    let opt = checkpoint::read_tensors(&ck.join(checkpoint::OPTIMIZER), device)?;
    optimizer.load_state(&opt, st.step)?;
    if let Some(q) = queue {
        let rows = checkpoint::read_tensors(&ck.join(checkpoint::QUEUE), device)?;
        let meta: QueueMeta = checkpoint::read_json(&ck.join(checkpoint::QUEUE_META))?;
        let r = rows.get("rows").context("queue checkpoint lacks `rows`")?;
        if r.size() != q.rows.size() {
            bail!(
                "checkpoint queue has shape {:?}, the config asks for {:?}",
                r.size(),
                q.rows.size()
            );
        }
        q.rows = r.to_kind(Kind::Float);
        q.ptr = meta.ptr;
        q.filled = meta.filled;
        q.written_at = meta.written_at;
        q.captions = meta.captions;
    }
    eprintln!(
        "resuming {} at step {} (epoch {})",
        ck.display(),
        st.step,
        st.epoch
    );
    Ok(st)
}

impl Trainer {
    /// Prepares a fresh run in `run_dir` (which must not hold checkpoints yet) or resumes the
    /// checkpoint `resume`.
    pub fn new(
        mut config: TrainConfig,
        run_dir: &Path,
        resume: Option<&Path>,
        quiet: bool,
    ) -> Result<Self> {
        let (device, compute) = start_runtime(&config)?;
        let resume_dir = prepare_run_dir(run_dir, resume)?;
        let (bundle_base, tokenizer_json, tensors) =
            first_weights(&config, run_dir, resume_dir.as_deref(), device)?;
        let model = build_model(&config, &bundle_base, tensors, device)?;
        let tokenizer = TextTokenizer::from_bytes(&tokenizer_json, &bundle_base.tokenizer)?;
        let (train, train_path) = training_set(&config, run_dir, &bundle_base, tokenizer.clone())?;
        let valid = validation_set(&config, &bundle_base, tokenizer)?;
        let train_len = train.pairs.len();
        for line in config.resolve_for_corpus(train_len)? {
            if !quiet {
                eprintln!("derived from the corpus: {line}");
            }
        }
        let mut optimizer = AdamW::new(&model.params, &config.optim);
        let mut queue = new_queue(&config, model.arch.embed_dim, device);
        let state = match &resume_dir {
            Some(ck) => restore_checkpoint(
                ck,
                &train_path,
                train_len,
                &mut optimizer,
                queue.as_mut(),
                device,
            )?,
            None => fresh_state(&config, train_len),
        };
        std::fs::write(run_dir.join("config.toml"), toml::to_string(&config)?)?;
        Ok(Self {
            config,
            run_dir: run_dir.to_path_buf(),
            device,
            compute,
            model,
            optimizer,
            queue,
            train,
            valid,
            bundle_base,
            tokenizer_json,
            state,
            quiet,
            epoch_scores: Vec::new(),
        })
    }

    fn mode(&self, train: bool) -> Mode {
        Mode {
            train,
            compute: self.compute,
        }
    }

    fn scales(&self) -> LogScales<'_> {
        LogScales::of(&self.model.params)
    }

    /// Fills the queue before step 0 with a gradient-free pass over shuffled training texts
    /// (docs/METHOD.md §2.4): exactly K/N batches, wrapping the pointer to 0.
    fn fill_queue(&mut self) -> Result<()> {
        let (model, mode, device) = (&self.model, self.mode(false), self.device);
        let Some(queue) = self.queue.as_mut() else {
            return Ok(());
        };
        if self.config.queue.init_fill != QueueFill::FullPass {
            return Ok(());
        }
        let n = self.config.optim.batch_size;
        let needed = queue.size() as usize / n;
        let mut written = 0;
        let mut pass = 0u64;
        let started = Instant::now();
        while written < needed {
            // Its own seed stream (epoch numbers far above any real epoch) so the fill does not
            // reuse the order of epoch 0.
            let fill_epoch = u64::MAX - pass;
            for idx in epoch_batches(
                self.train.pairs.len(),
                n,
                self.config.runtime.seed,
                fill_epoch,
            ) {
                if written == needed {
                    break;
                }
                let (captions, tokens) = self.train.load_texts(&idx, 0)?;
                let t = tch::no_grad(|| {
                    let batch = TextBatch::from_ids(&tokens, device);
                    l2n(&model.text(&batch, mode))
                });
                queue.enqueue(&t, &captions, -1)?;
                written += 1;
            }
            pass += 1;
        }
        // Rows from the fill count as written "before step 0".
        for w in &mut queue.written_at {
            *w = (*w).max(0);
        }
        if !self.quiet {
            eprintln!(
                "queue: filled {} rows from {written} batches in {:.1}s (pointer {})",
                queue.size(),
                started.elapsed().as_secs_f64(),
                queue.ptr
            );
        }
        Ok(())
    }

    /// Runs until the configured epochs (or `optim.max_steps`) are done. Returns the path of the
    /// final checkpoint.
    pub fn run(&mut self) -> Result<PathBuf> {
        if self.state.step == 0 && self.state.batch_in_epoch == 0 {
            self.fill_queue()?;
        }
        let metrics_path = self.run_dir.join("metrics.jsonl");
        truncate_metrics(&metrics_path, self.state.step)?;
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)?;
        let max_steps = self
            .config
            .optim
            .max_steps
            .unwrap_or(u64::MAX)
            .min(self.state.total_steps);
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::new(max_steps);
            b.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b
        };
        bar.set_position(self.state.step);
        let n = self.config.optim.batch_size;
        let workers = match self.config.data.workers {
            0 => std::thread::available_parallelism().map_or(1, |p| p.get()),
            w => w,
        };
        let mut loader = Loader::new(Arc::clone(&self.train), workers, self.config.data.prefetch);
        let mut last = Instant::now();
        while self.state.step < max_steps {
            let epoch = self.state.epoch;
            let batches = epoch_batches(self.train.pairs.len(), n, self.config.runtime.seed, epoch);
            let skip = self.state.batch_in_epoch as usize;
            let remaining = (max_steps - self.state.step) as usize;
            let todo: Vec<Vec<usize>> = batches.into_iter().skip(skip).take(remaining).collect();
            loader.enqueue_epoch(epoch, todo);
            while let Some(batch) = loader.next_batch() {
                let batch = batch?;
                self.account_unreadable(&batch)?;
                let line = self.step(&batch)?;
                let elapsed = last.elapsed().as_secs_f64();
                last = Instant::now();
                let samples_per_sec = n as f64 / elapsed.max(1e-9);
                bar.set_position(self.state.step);
                bar.set_message(format!(
                    "epoch {epoch} | {samples_per_sec:.1} samples/s | loss {:.4} | lr {:.2e}",
                    line["loss"].as_f64().unwrap_or(f64::NAN),
                    line["lr"].as_f64().unwrap_or(f64::NAN)
                ));
                if self
                    .state
                    .step
                    .is_multiple_of(self.config.checkpoint.log_every_steps)
                {
                    let mut line = line;
                    line["samples_per_sec"] = json!(samples_per_sec);
                    writeln!(metrics, "{line}")?;
                }
                if self
                    .state
                    .step
                    .is_multiple_of(self.config.checkpoint.every_steps)
                {
                    self.save()?;
                }
            }
            if self.state.batch_in_epoch >= self.state.steps_per_epoch {
                // The epoch is complete: how well s told injected noise apart in training (from
                // the epoch's own steps; after a resume, from the steps since), then validate.
                if let Some(line) = self.epoch_noise_line() {
                    writeln!(metrics, "{line}")?;
                }
                let v = self.validate()?;
                if let Some(v) = v {
                    let mut line = v.clone();
                    line["kind"] = json!("valid");
                    writeln!(metrics, "{line}")?;
                    if !self.quiet {
                        bar.println(format!("epoch {epoch} validation: {v}"));
                    }
                    self.state.last_validation = Some(v);
                }
                self.state.epoch += 1;
                self.state.batch_in_epoch = 0;
            }
        }
        bar.finish_and_clear();
        // A run stopped by optim.max_steps mid-epoch still ends with a validation of its weights.
        let validated_now = self
            .state
            .last_validation
            .as_ref()
            .and_then(|v| v["step"].as_u64())
            == Some(self.state.step);
        if !validated_now {
            if let Some(v) = self.validate()? {
                let mut line = v.clone();
                line["kind"] = json!("valid");
                writeln!(metrics, "{line}")?;
                self.state.last_validation = Some(v);
            }
        }
        self.state.finished = true;
        // Written even when a periodic checkpoint has this step: this one records `finished`.
        let final_ckpt = self.save()?;
        drop(metrics);
        if let Err(e) = plot_metrics(&metrics_path, &self.run_dir) {
            eprintln!("warning: plotting the curves failed: {e:#}");
        }
        Ok(final_ckpt)
    }

    /// The epoch's detection of its injected pairs by s (with a queue) and by plain cosine (for
    /// every method, so MIRAGE's s and CLIP's cosine compare on the pairs they trained on).
    fn epoch_noise_line(&mut self) -> Option<serde_json::Value> {
        let scores = std::mem::take(&mut self.epoch_scores);
        if !scores.iter().any(|e| e.noisy) {
            return None;
        }
        let noisy: Vec<bool> = scores.iter().map(|e| e.noisy).collect();
        let negated_cos: Vec<f64> = scores.iter().map(|e| -e.cosine).collect();
        if self.queue.is_none() {
            return Some(json!({
                "kind": "epoch",
                "epoch": self.state.epoch,
                "step": self.state.step,
                "train_noise_auc_cos": auc(&negated_cos, &noisy),
                "samples": scores.len(),
            }));
        }
        let s: Vec<f64> = scores.iter().map(|e| e.s).collect();
        let negated: Vec<f64> = s.iter().map(|x| -x).collect();
        let mean_where = |want: bool| {
            let xs: Vec<f64> = s
                .iter()
                .zip(&noisy)
                .filter(|(_, &n)| n == want)
                .map(|(x, _)| *x)
                .collect();
            xs.iter().sum::<f64>() / xs.len().max(1) as f64
        };
        Some(json!({
            "kind": "epoch",
            "epoch": self.state.epoch,
            "step": self.state.step,
            "train_noise_auc_s": auc(&negated, &noisy),
            "train_noise_auc_cos": auc(&negated_cos, &noisy),
            "train_s_mean_noisy": mean_where(true),
            "train_s_mean_clean": mean_where(false),
            "samples": s.len(),
        }))
    }

    fn account_unreadable(&mut self, batch: &Batch) -> Result<()> {
        self.state.samples_read += batch.indices.len() as u64;
        for (path, why) in &batch.unreadable {
            self.state.unreadable_images += 1;
            eprintln!("data: unreadable image {}: {why}", path.display());
        }
        let share = self.state.unreadable_images as f64 / self.state.samples_read.max(1) as f64;
        // A few early failures should not stop a run: judge the share after a full batch.
        if self.state.unreadable_images > 0 && share > self.config.data.max_bad_share {
            bail!(
                "{} of {} images read so far were unreadable ({:.1}%), above data.max_bad_share \
                 {:.1}%",
                self.state.unreadable_images,
                self.state.samples_read,
                share * 100.0,
                self.config.data.max_bad_share * 100.0
            );
        }
        Ok(())
    }

    /// One optimisation step on `batch`; returns its metrics line.
    fn step(&mut self, batch: &Batch) -> Result<serde_json::Value> {
        let step = self.state.step;
        tch::manual_seed((self.config.runtime.seed ^ step.wrapping_mul(0x9E37_79B9)) as i64);
        let size = self.bundle_base.preprocess.image_size;
        let pixels = pixels_tensor(batch, size, self.device);
        let tokens = TextBatch::from_ids(&batch.tokens, self.device);
        let lr = lr_at(
            &self.config.optim,
            step,
            self.state.warmup_steps,
            self.state.total_steps,
        );
        let outcome = optimise_step(
            &self.model,
            &mut self.optimizer,
            self.queue.as_mut(),
            &pixels,
            &tokens,
            &batch.captions,
            &self.config,
            step,
            lr,
            self.compute,
        )?;
        let (out, lambdas, grad_norm, loss_value) = (
            outcome.output,
            outcome.lambdas,
            outcome.grad_norm,
            outcome.loss,
        );
        self.state.step += 1;
        self.state.batch_in_epoch += 1;

        let s = vec_f64(&out.s);
        self.epoch_scores.extend(
            s.iter()
                .zip(vec_f64(&out.pair_cosine))
                .zip(&batch.noisy)
                .map(|((&s, cosine), &noisy)| EpochScore { s, cosine, noisy }),
        );
        let mut sorted = s.clone();
        sorted.sort_by(f64::total_cmp);
        let mean = |xs: &[f64]| {
            if xs.is_empty() {
                f64::NAN
            } else {
                xs.iter().sum::<f64>() / xs.len() as f64
            }
        };
        let s_noisy: Vec<f64> = s
            .iter()
            .zip(&batch.noisy)
            .filter(|(_, &n)| n)
            .map(|(v, _)| *v)
            .collect();
        let s_clean: Vec<f64> = s
            .iter()
            .zip(&batch.noisy)
            .filter(|(_, &n)| !n)
            .map(|(v, _)| *v)
            .collect();
        let sc = self.scales();
        let sigma = |t: &Tensor| t.exp().double_value(&[]);
        Ok(json!({
            "kind": "step",
            "step": self.state.step,
            "epoch": self.state.epoch,
            "lr": lr,
            "loss": loss_value,
            "pair": out.pair.double_value(&[]),
            "robust": out.robust.double_value(&[]),
            "ot": out.ot.double_value(&[]),
            "lambda_robust": lambdas.robust,
            "lambda_ot": lambdas.ot,
            "in_batch_acc": out.in_batch_accuracy,
            "s_mean": mean(&s),
            "s_p10": percentile(&sorted, 0.1),
            "s_p50": percentile(&sorted, 0.5),
            "s_p90": percentile(&sorted, 0.9),
            "s_mean_noisy": mean(&s_noisy),
            "s_mean_clean": mean(&s_clean),
            "noisy_in_batch": s_noisy.len(),
            "sigma_pair": sigma(sc.pair),
            "sigma_robust": sigma(sc.robust),
            "sigma_ot": sigma(sc.ot),
            "sigma_queue": sigma(sc.queue),
            "queue_staleness": self.queue.as_ref().map(|q| q.staleness(self.state.step as i64)),
            "grad_norm": grad_norm,
        }))
    }

    /// Embeds the validation pairs and measures Recall@1/5/10 both ways on the clean pairs and,
    /// when noise is configured, how well s (and the plain cosine) separate injected mismatches.
    pub fn validate(&self) -> Result<Option<serde_json::Value>> {
        let Some(valid) = &self.valid else {
            return Ok(None);
        };
        let m = valid.pairs.len();
        if m < 2 {
            return Ok(None);
        }
        let chunk = self.config.optim.batch_size.max(1);
        let mode = self.mode(false);
        let size = self.bundle_base.preprocess.image_size;
        let mut images = Vec::new();
        let mut texts = Vec::new();
        let mut noisy_texts = Vec::new();
        let mut noisy_flags = Vec::new();
        for start in (0..m).step_by(chunk) {
            let idx: Vec<usize> = (start..(start + chunk).min(m)).collect();
            let batch = valid.load_batch(&idx, 0)?;
            let clean: Vec<&str> = idx
                .iter()
                .map(|&i| valid.pairs[i].caption.as_str())
                .collect();
            let clean_tokens = valid.tokenizer.encode_ids(&clean)?;
            tch::no_grad(|| {
                images.push(l2n(&self
                    .model
                    .image(&pixels_tensor(&batch, size, self.device), mode)));
                texts.push(l2n(&self
                    .model
                    .text(&TextBatch::from_ids(&clean_tokens, self.device), mode)));
                noisy_texts.push(l2n(&self
                    .model
                    .text(&TextBatch::from_ids(&batch.tokens, self.device), mode)));
            });
            noisy_flags.extend(batch.noisy.iter().copied());
        }
        let v = Tensor::cat(&images, 0);
        let t = Tensor::cat(&texts, 0);
        let all: Vec<f32> =
            Vec::<f32>::try_from(v.matmul(&t.tr()).to_device(Device::Cpu).view(-1))?;
        // Pairs that share a caption count as one answer, as in `mirage eval`.
        let captions: Vec<&str> = valid.pairs.iter().map(|p| p.caption.as_str()).collect();
        let (columns, text_of) = caption_columns(&captions);
        let sims: Vec<f32> = (0..m)
            .flat_map(|i| columns.iter().map(move |&j| (i, j)))
            .map(|(i, j)| all[i * m + j])
            .collect();
        let (i2t_ranks, t2i_ranks) = grouped_ranks(&sims, columns.len(), &text_of);
        let (i2t, t2i) = (recall_from_ranks(&i2t_ranks), recall_from_ranks(&t2i_ranks));
        let mut out = json!({
            "step": self.state.step,
            "epoch": self.state.epoch,
            "pairs": m,
            "distinct_captions": columns.len(),
            "i2t_r1": i2t.r1, "i2t_r5": i2t.r5, "i2t_r10": i2t.r10,
            "t2i_r1": t2i.r1, "t2i_r5": t2i.r5, "t2i_r10": t2i.r10,
        });
        if noisy_flags.iter().any(|&f| f) {
            let tn = Tensor::cat(&noisy_texts, 0);
            let cos = vec_f64(&(&v * &tn).sum_dim_intlist(-1, false, Kind::Float));
            let neg = |xs: &[f64]| xs.iter().map(|x| -x).collect::<Vec<_>>();
            out["noise_auc_cos"] = json!(auc(&neg(&cos), &noisy_flags));
            if let Some(q) = self.queue.as_ref().filter(|q| q.filled > 0) {
                let s = tch::no_grad(|| {
                    let n = nearest_text(
                        &v,
                        &q.rows,
                        q.filled,
                        &self.scales().queue.exp(),
                        &self.config.nn,
                        self.compute,
                    );
                    (&tn * n).sum_dim_intlist(-1, false, Kind::Float)
                });
                out["noise_auc_s"] = json!(auc(&neg(&vec_f64(&s)), &noisy_flags));
            }
        }
        Ok(Some(out))
    }

    /// Writes a checkpoint of the current state.
    pub fn save(&self) -> Result<PathBuf> {
        checkpoint::commit(
            &self.run_dir,
            self.state.step,
            self.config.checkpoint.keep,
            |dir| {
                let weights: Vec<(String, Tensor)> = self
                    .model
                    .params
                    .all()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.shallow_clone()))
                    .collect();
                checkpoint::write_tensors(&dir.join(checkpoint::WEIGHTS), &weights)?;
                checkpoint::write_tensors(
                    &dir.join(checkpoint::OPTIMIZER),
                    &self.optimizer.state(),
                )?;
                if let Some(q) = &self.queue {
                    checkpoint::write_tensors(
                        &dir.join(checkpoint::QUEUE),
                        &[("rows".to_owned(), q.rows.shallow_clone())],
                    )?;
                    checkpoint::write_json(
                        &dir.join(checkpoint::QUEUE_META),
                        &QueueMeta {
                            ptr: q.ptr,
                            filled: q.filled,
                            written_at: q.written_at.clone(),
                            captions: q.captions.clone(),
                        },
                    )?;
                }
                checkpoint::write_json(&dir.join(checkpoint::STATE), &self.state)?;
                std::fs::write(dir.join(checkpoint::CONFIG), toml::to_string(&self.config)?)?;
                checkpoint::write_json(&dir.join(checkpoint::BUNDLE_BASE), &self.bundle_base)?;
                std::fs::write(dir.join(checkpoint::TOKENIZER), &self.tokenizer_json)?;
                Ok(())
            },
        )
    }

    /// The model being trained.
    pub fn model(&self) -> &DualEncoder {
        &self.model
    }

    /// Progress.
    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// The memory queue (None for the CLIP baseline).
    pub fn queue(&self) -> Option<&MemoryQueue> {
        self.queue.as_ref()
    }
}

/// Drops metric lines past `step` (a resumed run rewrites them).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// `loss.png` (loss terms per step) and, with validation, `valid.png` (Recall@1 and noise AUC
/// per epoch) from `metrics.jsonl`.
pub fn plot_metrics(metrics: &Path, out_dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(metrics)?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let series = |kind: &str, x: &str, keys: &[&str]| -> Vec<Series> {
        keys.iter()
            .map(|k| Series {
                name: (*k).to_owned(),
                points: lines
                    .iter()
                    .filter(|l| l["kind"] == kind)
                    .filter_map(|l| Some((l[x].as_f64()?, l[*k].as_f64()?)))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    line_chart(
        &out_dir.join("loss.png"),
        "training loss",
        "step",
        "loss",
        &series("step", "step", &["loss", "pair", "robust", "ot"]),
    )?;
    let mut valid = series(
        "valid",
        "epoch",
        &[
            "i2t_r1",
            "t2i_r1",
            "i2t_r5",
            "t2i_r5",
            "noise_auc_s",
            "noise_auc_cos",
        ],
    );
    valid.extend(series(
        "epoch",
        "epoch",
        &["train_noise_auc_s", "train_noise_auc_cos"],
    ));
    if !valid.is_empty() {
        line_chart(
            &out_dir.join("valid.png"),
            "validation",
            "epoch",
            "recall / AUC",
            &valid,
        )?;
    }
    Ok(())
}
