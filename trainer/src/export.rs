//! `mirage-train export`: a checkpoint becomes the bundle of docs/DESIGN.md §2 — weights under the
//! serving names, σ_p as `logit_scale`, σ_q and the NN mode as `matching`, the memory queue as
//! the text bank with its captions, and the training provenance.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use mirage_model::config::{BundleConfig, Matching};
use mirage_model::{names, write_bundle, Bundle, BundleContents, TextBank};
use serde_json::json;

use crate::checkpoint::{self, QueueMeta, RunState};
use crate::config::{NnMode, TrainConfig};
use crate::towers::LOG_SCALE_QUEUE;

/// Options of an export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Replace the model id.
    pub model_id: Option<String>,
    /// Leave the text bank out (smaller bundle; no `/v1/audit`).
    pub no_bank: bool,
    /// Leave the ONNX graphs out (the ONNX Runtime engine then builds them at each load).
    pub no_onnx: bool,
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Writes the bundle of `checkpoint` (a checkpoint or run directory) to `out`.
pub fn export(checkpoint_path: &Path, out: &Path, opts: &ExportOptions) -> Result<Bundle> {
    let ck = checkpoint::resolve(checkpoint_path)?;
    let mut cfg: BundleConfig = checkpoint::read_json(&ck.join(checkpoint::BUNDLE_BASE))?;
    let state: RunState = checkpoint::read_json(&ck.join(checkpoint::STATE))?;
    let train_cfg: TrainConfig =
        toml::from_str(&std::fs::read_to_string(ck.join(checkpoint::CONFIG))?)
            .context("parsing the checkpoint's config.toml")?;
    let tokenizer = std::fs::read(ck.join(checkpoint::TOKENIZER))?;
    let weights_path = ck.join(checkpoint::WEIGHTS);
    let all = candle_core::safetensors::load(&weights_path, &candle_core::Device::Cpu)
        .with_context(|| format!("reading {}", weights_path.display()))?;
    let specs = names::model_tensors(&cfg.architecture);
    let mut tensors = HashMap::with_capacity(specs.len());
    for spec in &specs {
        let t = all
            .get(&spec.name)
            .with_context(|| format!("checkpoint lacks `{}`", spec.name))?;
        tensors.insert(spec.name.clone(), t.clone());
    }
    let theta_p = all[names::LOGIT_SCALE].to_scalar::<f32>()?;
    cfg.logit_scale = theta_p.exp();
    if let Some(id) = &opts.model_id {
        cfg.model_id.clone_from(id);
    }
    let clip = train_cfg.loss.is_clip();
    if !clip {
        let theta_q = all
            .get(LOG_SCALE_QUEUE)
            .context("checkpoint lacks the queue log-scale")?
            .to_scalar::<f32>()?;
        cfg.matching = Some(Matching {
            nn_scale: theta_q.exp(),
            hard: train_cfg.nn.mode == NnMode::Hard,
        });
    }
    let bank = if clip || opts.no_bank {
        None
    } else {
        let meta: QueueMeta = checkpoint::read_json(&ck.join(checkpoint::QUEUE_META))?;
        if meta.written_at.iter().any(|&w| w < 0) {
            bail!(
                "the queue still holds rows from its random start (queue.init_fill = random or \
                 warm and fewer than K/N steps trained): export with --no-bank"
            );
        }
        let rows =
            candle_core::safetensors::load(ck.join(checkpoint::QUEUE), &candle_core::Device::Cpu)?;
        let rows = rows.get("rows").context("queue checkpoint lacks `rows`")?;
        let dim = rows.dim(1)?;
        let rows = rows
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Some(TextBank {
            embeddings: mirage_model::Embeddings::new(rows, dim)?,
            captions: meta.captions,
        })
    };
    let scale = |name: &str| {
        all.get(name)
            .and_then(|t| t.to_scalar::<f32>().ok())
            .map(f32::exp)
    };
    cfg.provenance = json!({
        "created_by": "mirage-train export",
        "trained": true,
        "method": if clip { "clip" } else { "mirage" },
        "checkpoint": ck.display().to_string(),
        "step": state.step,
        "epochs_completed": state.epoch,
        "finished": state.finished,
        "train_data": train_cfg.data.train,
        "train_pairs": state.train_pairs,
        "noise": train_cfg.noise,
        "loss": train_cfg.loss,
        "nn": train_cfg.nn,
        "queue": train_cfg.queue,
        "optim": train_cfg.optim,
        "seed": train_cfg.runtime.seed,
        "sigmas": {
            "pair": theta_p.exp(),
            "robust": scale(crate::towers::LOG_SCALE_ROBUST),
            "ot": scale(crate::towers::LOG_SCALE_OT),
            "queue": scale(LOG_SCALE_QUEUE),
        },
        "metrics": state.last_validation,
        "git_commit": git_commit(),
        "init": cfg.provenance,
    });
    let bundle = write_bundle(
        out,
        BundleContents {
            config: cfg,
            tensors: &tensors,
            tokenizer_json: &tokenizer,
            text_bank: bank.as_ref(),
        },
    )?;
    if opts.no_onnx {
        return Ok(bundle);
    }
    Ok(mirage_model::add_onnx(out)?)
}
