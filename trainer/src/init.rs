//! The starting point of a run: the architecture, tokenizer, preprocessing and first weights,
//! from a bundle or from a Hugging Face BERT directory (through `mirage-model`'s importer, so
//! names and tokenizer handling are the serving code's own).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use mirage_model::config::BundleConfig;
use mirage_model::import::{import_hf, ImportOptions};
use mirage_model::init::random_tensors;
use mirage_model::{names, Bundle};
use tch::{Device, Tensor};

use crate::config::TrainConfig;
use crate::towers::{from_candle, LOG_SCALE_OT, LOG_SCALE_QUEUE, LOG_SCALE_ROBUST};

/// Everything a run starts from.
#[derive(Debug)]
pub struct Start {
    /// The bundle configuration the export will be based on.
    pub bundle_config: BundleConfig,
    /// `tokenizer.json` bytes.
    pub tokenizer_json: Vec<u8>,
    /// Every tensor of the scheme plus the training log-scales.
    pub tensors: BTreeMap<String, Tensor>,
}

fn scalar(v: f64) -> Tensor {
    Tensor::from(v as f32)
}

/// Builds the start of a run; intermediate files go to `work_dir`.
pub fn start(c: &TrainConfig, work_dir: &Path, device: Device) -> Result<Start> {
    let m = &c.model;
    let seed = c.runtime.seed;
    let (bundle, fresh_heads) = match (&m.bundle, &m.text_init) {
        (Some(b), _) => (
            Bundle::open(b).with_context(|| format!("opening model.bundle {}", b.display()))?,
            false,
        ),
        (None, Some(hf)) => {
            let out = work_dir.join("init-bundle");
            let opts = ImportOptions {
                text_dir: hf.clone(),
                vision_weights: m.vision_weights.clone(),
                vision: m.vision.resolve(m.image_size)?,
                embed_dim: Some(m.embed_dim),
                pooling: m.text_pooling,
                max_length: Some(m.max_length),
                query_text_dir: None,
                query_max_length: None,
                seed,
                model_id: m.model_id.clone(),
            };
            let b = import_hf(&opts, &out)
                .with_context(|| format!("importing model.text_init {}", hf.display()))?;
            (b, true)
        }
        (None, None) => anyhow::bail!("model.bundle or model.text_init is required"),
    };
    let mut cfg = bundle.config().clone();
    if cfg.architecture.query_text.is_some() {
        anyhow::bail!(
            "{}: the bundle has a separate query tower (an asymmetric retriever such as MedCPT); the trainer fine-tunes one text tower, so it cannot start from this bundle",
            bundle.dir().display()
        );
    }
    cfg.model_id.clone_from(&m.model_id);
    let arch = cfg.architecture.clone();
    let candle = bundle.load_tensors(&candle_core::Device::Cpu)?;
    let mut tensors: BTreeMap<String, Tensor> = candle
        .iter()
        .map(|(k, v)| Ok((k.clone(), from_candle(v, device)?)))
        .collect::<Result<_>>()?;
    let mut reinit = Vec::new();
    if fresh_heads {
        // docs/METHOD.md §2.6: projections N(0, in^-½), not the importer's identity text projection.
        reinit.extend(names::head_tensors(&arch));
    }
    if m.text_from_scratch {
        reinit.extend(names::text_tensors(&arch.text));
    }
    if !reinit.is_empty() {
        for (k, v) in random_tensors(&reinit, seed ^ 0x1417, &candle_core::Device::Cpu)? {
            tensors.insert(k, from_candle(&v, device)?);
        }
    }
    let t = &c.temps;
    tensors.insert(names::LOGIT_SCALE.into(), scalar((1.0 / t.pair).ln()));
    tensors.insert(LOG_SCALE_ROBUST.into(), scalar((1.0 / t.robust).ln()));
    tensors.insert(LOG_SCALE_OT.into(), scalar((1.0 / t.ot).ln()));
    tensors.insert(
        LOG_SCALE_QUEUE.into(),
        scalar((1.0 / c.nn.temperature).ln()),
    );
    let tokenizer_json = std::fs::read(bundle.tokenizer_path())?;
    Ok(Start {
        bundle_config: cfg,
        tokenizer_json,
        tensors,
    })
}
