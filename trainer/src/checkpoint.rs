//! Checkpoints: everything needed to continue a run exactly or to export it.
//!
//! `RUN/checkpoints/step-NNNNNNNN/` holds `weights.safetensors` (every tensor and buffer, the
//! log-scales too), `optimizer.safetensors` (AdamW moments), `queue.safetensors` + `queue.json`
//! (rows, pointer, captions, write steps), `state.json` (step, epoch, position in the epoch,
//! schedule), `config.toml` (the resolved configuration), `bundle-base.json` and
//! `tokenizer.json` (what export needs). A checkpoint is written under a `.partial` name and
//! renamed when complete, then `checkpoints/LATEST` names it, so a kill never leaves a
//! half-written checkpoint that resume would pick up.
//!
//! Randomness needs no saved generator: data order, noise and augmentation derive from
//! (seed, epoch, sample), and libtorch's generator (dropout) is re-seeded from (seed, step)
//! before every step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// Progress of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps done.
    pub step: u64,
    /// Epoch in progress.
    pub epoch: u64,
    /// Batches of that epoch already trained on.
    pub batch_in_epoch: u64,
    /// Full batches per epoch.
    pub steps_per_epoch: u64,
    /// Steps the schedule spans.
    pub total_steps: u64,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Training pairs.
    pub train_pairs: usize,
    /// Unreadable images met so far.
    pub unreadable_images: u64,
    /// Samples read so far.
    pub samples_read: u64,
    /// Last validation result.
    pub last_validation: Option<serde_json::Value>,
    /// True once the run has done all its steps.
    pub finished: bool,
}

/// The memory queue's bookkeeping beside its rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueMeta {
    /// Next row to write.
    pub ptr: i64,
    /// Usable rows.
    pub filled: i64,
    /// Step each row was written at (−1 never).
    pub written_at: Vec<i64>,
    /// Caption of each row.
    pub captions: Vec<String>,
}

/// File names inside a checkpoint.
pub const WEIGHTS: &str = "weights.safetensors";
/// AdamW moments.
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// Queue rows.
pub const QUEUE: &str = "queue.safetensors";
/// Queue bookkeeping.
pub const QUEUE_META: &str = "queue.json";
/// Progress.
pub const STATE: &str = "state.json";
/// Resolved configuration.
pub const CONFIG: &str = "config.toml";
/// The bundle configuration the export starts from.
pub const BUNDLE_BASE: &str = "bundle-base.json";
/// Tokenizer.
pub const TOKENIZER: &str = "tokenizer.json";

/// Directory of all checkpoints of a run.
pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Writes a complete checkpoint directory; `write` fills the `.partial` directory.
pub fn commit(
    run: &Path,
    step: u64,
    keep: usize,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run);
    std::fs::create_dir_all(&dir)?;
    let name = format!("step-{step:08}");
    let partial = dir.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    write(&partial)?;
    let final_dir = dir.join(&name);
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&partial, &final_dir)?;
    let latest_tmp = dir.join("LATEST.partial");
    std::fs::write(&latest_tmp, &name)?;
    std::fs::rename(&latest_tmp, dir.join("LATEST"))?;
    prune(&dir, keep, &name)?;
    Ok(final_dir)
}

fn prune(dir: &Path, keep: usize, newest: &str) -> Result<()> {
    let mut steps: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("step-") && !n.ends_with(".partial"))
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep.max(1));
    for old in steps.into_iter().take(excess).filter(|n| n != newest) {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

/// The checkpoint a `--resume` argument means: a checkpoint directory itself, or a run
/// directory (its `LATEST`).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE).exists() {
        return Ok(path.to_path_buf());
    }
    let latest = checkpoints_dir(path).join("LATEST");
    let name = std::fs::read_to_string(&latest).with_context(|| {
        format!(
            "{} is neither a checkpoint (no {STATE}) nor a run directory with checkpoints",
            path.display()
        )
    })?;
    let dir = checkpoints_dir(path).join(name.trim());
    if !dir.join(STATE).exists() {
        bail!(
            "{} names {}, which is incomplete",
            latest.display(),
            dir.display()
        );
    }
    Ok(dir)
}

/// Reads a safetensors file into named tch tensors on `device`.
pub fn read_tensors(path: &Path, device: Device) -> Result<HashMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(path)
        .with_context(|| format!("reading {}", path.display()))?
        .into_iter()
        .map(|(k, v)| (k, v.to_device(device)))
        .collect())
}

/// Writes named tensors (moved to the CPU, contiguous) as safetensors.
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&cpu, path).with_context(|| format!("writing {}", path.display()))
}

/// Reads a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Writes a JSON file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}
