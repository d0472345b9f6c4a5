//! `mirage model import-hf`: a bundle from a Hugging Face BERT directory (and optionally a second
//! one as the query tower) plus optional torchvision vision weights. Whatever is not imported is initialised from a seed, and the bundle says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::bundle::{write_bundle, Bundle, BundleContents};
use crate::config::{
    Architecture, BertConfig, BundleConfig, ImagePreprocess, TextPooling, TextTower,
    TokenizerSettings, VisionTower,
};
use crate::init::random_tensors;
use crate::names::{self, Init, TensorSpec};
use crate::{Error, Result};

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Hugging Face directory with `config.json`, `model.safetensors` and `tokenizer.json`.
    pub text_dir: PathBuf,
    /// Optional torchvision-named vision weights (safetensors), with or without a `vision.` prefix.
    pub vision_weights: Option<PathBuf>,
    /// Vision tower shape.
    pub vision: VisionTower,
    /// Joint dimension; the text hidden size (with an identity text projection) when absent.
    pub embed_dim: Option<usize>,
    /// Text pooling.
    pub pooling: TextPooling,
    /// Token limit; from `sentence_bert_config.json` or the position table when absent.
    pub max_length: Option<usize>,
    /// A second BERT directory whose encoder embeds search queries (MedCPT's query encoder
    /// beside its article encoder in `text_dir`); it must use the same tokenizer.
    pub query_text_dir: Option<PathBuf>,
    /// Token limit of queries (as `max_length`, from the query directory).
    pub query_max_length: Option<usize>,
    /// Seed for everything initialised rather than imported.
    pub seed: u64,
    /// Model id written to the bundle.
    pub model_id: String,
}

pub(crate) use crate::config::read_json;

pub(crate) fn load_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Maps a Hugging Face BERT tensor name to ours (without the `text.` prefix), or `None` for
/// tensors the encoder does not use (pooler, heads, position ids).
pub fn hf_bert_name(name: &str) -> Option<String> {
    let n = name.strip_prefix("bert.").unwrap_or(name);
    if !(n.starts_with("embeddings.") || n.starts_with("encoder."))
        || n == "embeddings.position_ids"
    {
        return None;
    }
    // Old TF-converted checkpoints call LayerNorm parameters gamma/beta.
    let n = n
        .strip_suffix(".gamma")
        .map(|s| format!("{s}.weight"))
        .or_else(|| n.strip_suffix(".beta").map(|s| format!("{s}.bias")))
        .unwrap_or_else(|| n.to_owned());
    Some(n)
}

/// Fills `out` with the tensors of `specs` from `source`, checking shapes; names are looked up
/// with `prefix` removed. Returns the specs that `source` did not have.
fn take(
    source: &HashMap<String, Tensor>,
    file: &Path,
    specs: &[TensorSpec],
    prefix: &str,
    out: &mut HashMap<String, Tensor>,
) -> Result<Vec<TensorSpec>> {
    let mut missing = Vec::new();
    for spec in specs {
        let short = spec.name.strip_prefix(prefix).unwrap_or(&spec.name);
        match source.get(short).or_else(|| source.get(&spec.name)) {
            Some(t) if t.dims() == spec.shape.as_slice() => {
                out.insert(spec.name.clone(), t.to_dtype(DType::F32)?);
            }
            Some(t) => {
                return Err(Error::TensorShape {
                    path: file.to_path_buf(),
                    name: short.to_owned(),
                    expected: spec.shape.clone(),
                    actual: t.dims().to_vec(),
                })
            }
            None => missing.push(spec.clone()),
        }
    }
    Ok(missing)
}

/// A Hugging Face BERT directory, read.
struct BertDir {
    bert: BertConfig,
    tokenizer_json: Vec<u8>,
    /// `sentence_bert_config.json`'s `max_seq_length`, if any.
    max_seq_length: Option<usize>,
    lowercase: bool,
}

/// Reads `dir` (config, tokenizer, sentence-transformers limit) and puts its BERT weights into
/// `out` under `root`; a missing or misshapen tensor is refused by name.
fn read_bert_dir(dir: &Path, root: &str, out: &mut HashMap<String, Tensor>) -> Result<BertDir> {
    let cfg_path = dir.join("config.json");
    let cfg_json = read_json(&cfg_path)?;
    if let Some(kind) = cfg_json.get("model_type").and_then(|v| v.as_str()) {
        if kind != "bert" {
            return Err(Error::InvalidConfig(format!(
                "{}: model_type {kind:?} is not a BERT model",
                cfg_path.display()
            )));
        }
    }
    let bert: BertConfig = serde_json::from_value(cfg_json).map_err(|source| Error::Json {
        path: cfg_path.clone(),
        source,
    })?;
    let weights_path = dir.join("model.safetensors");
    if !weights_path.exists() && dir.join("pytorch_model.bin").exists() {
        return Err(Error::InvalidConfig(format!(
            "{}: only pytorch_model.bin found; convert it to model.safetensors first",
            dir.display()
        )));
    }
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer_json =
        std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
    let st_config = dir.join("sentence_bert_config.json");
    let max_seq_length = if st_config.exists() {
        read_json(&st_config)?
            .get("max_seq_length")
            .and_then(serde_json::Value::as_u64)
            .map(|m| m as usize)
    } else {
        None
    };
    let lowercase = read_json(&dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|v| v.get("do_lower_case").and_then(serde_json::Value::as_bool))
        .unwrap_or(false);
    let hf: HashMap<String, Tensor> = load_safetensors(&weights_path)?
        .into_iter()
        .filter_map(|(k, v)| hf_bert_name(&k).map(|k| (k, v)))
        .collect();
    let prefix = format!("{root}.");
    let specs = names::tower_tensors(
        root,
        &TextTower::Bert {
            bert: bert.clone(),
            pooling: TextPooling::Mean,
        },
    );
    let missing = take(&hf, &weights_path, &specs, &prefix, out)?;
    if let Some(m) = missing.first() {
        return Err(Error::MissingTensor {
            path: weights_path,
            name: m.name.strip_prefix(&prefix).unwrap_or(&m.name).to_owned(),
            expected: m.shape.clone(),
        });
    }
    Ok(BertDir {
        bert,
        tokenizer_json,
        max_seq_length,
        lowercase,
    })
}

/// Builds a bundle in `out` from `opts`.
pub fn import_hf(opts: &ImportOptions, out: &Path) -> Result<Bundle> {
    let dir = &opts.text_dir;
    let mut tensors = HashMap::new();
    let doc = read_bert_dir(dir, names::TEXT, &mut tensors)?;
    let bert = doc.bert.clone();
    let max_length = opts
        .max_length
        .or(doc.max_seq_length)
        .unwrap_or(bert.max_position_embeddings);
    let query = match &opts.query_text_dir {
        Some(qdir) => {
            let q = read_bert_dir(qdir, names::QUERY_TEXT, &mut tensors)?;
            // One tokenizer serves both towers: a query tower trained on another vocabulary
            // would read the wrong ids.
            if q.tokenizer_json != doc.tokenizer_json {
                return Err(Error::InvalidConfig(format!(
                    "{}/tokenizer.json differs from {}/tokenizer.json: the query and document towers must share one tokenizer",
                    qdir.display(),
                    dir.display()
                )));
            }
            Some(q)
        }
        None => None,
    };
    let query_max_length = query.as_ref().map(|q| {
        opts.query_max_length
            .or(q.max_seq_length)
            .unwrap_or(q.bert.max_position_embeddings)
    });

    let embed_dim = opts.embed_dim.unwrap_or(bert.hidden_size);
    let arch = Architecture {
        embed_dim,
        text: TextTower::Bert {
            bert: bert.clone(),
            pooling: opts.pooling,
        },
        text_projection: Default::default(),
        query_text: query.as_ref().map(|q| TextTower::Bert {
            bert: q.bert.clone(),
            pooling: opts.pooling,
        }),
        vision: opts.vision.clone(),
    };
    let tokenizer_json = doc.tokenizer_json;
    let lowercase = doc.lowercase;

    let vision_specs = names::vision_tensors(&opts.vision);
    let vision_prefix = format!("{}.", names::VISION);
    let (vision_missing, vision_source) = match &opts.vision_weights {
        Some(path) => {
            let src = load_safetensors(path)?;
            let missing = take(&src, path, &vision_specs, &vision_prefix, &mut tensors)?;
            // A torchvision classification checkpoint has no attention pool: that part may be
            // initialised; a missing trunk tensor means the wrong file or architecture.
            if let Some(m) = missing.iter().find(|m| !m.name.contains(".attnpool.")) {
                return Err(Error::MissingTensor {
                    path: path.clone(),
                    name: m
                        .name
                        .strip_prefix(&vision_prefix)
                        .unwrap_or(&m.name)
                        .to_owned(),
                    expected: m.shape.clone(),
                });
            }
            (
                missing,
                json!({"kind": "imported", "file": path.display().to_string()}),
            )
        }
        None => (vision_specs, json!({"kind": "random", "seed": opts.seed})),
    };
    let mut init_specs = vision_missing.clone();
    let mut head = names::head_tensors(&arch);
    // A projection between equal widths starts as the identity: the imported towers' own
    // space is the joint space (MiniLM, MedCPT).
    let identity_text_proj = embed_dim == bert.hidden_size;
    let identity_query_proj = query
        .as_ref()
        .is_some_and(|q| embed_dim == q.bert.hidden_size);
    for spec in &mut head {
        let identity = (identity_text_proj && spec.name == format!("{}.weight", names::TEXT_PROJ))
            || (identity_query_proj && spec.name == format!("{}.weight", names::QUERY_TEXT_PROJ));
        if identity {
            spec.init = Init::Identity;
        }
    }
    init_specs.extend(head);
    tensors.extend(random_tensors(&init_specs, opts.seed, &Device::Cpu)?);

    let preprocess = ImagePreprocess::clip(opts.vision.image_size());
    // bundle.json's σ is the exponent of the seeded ln σ tensor (head_tensors' init).
    let logit_scale = tensors[names::LOGIT_SCALE].to_scalar::<f32>()?.exp();
    let config = BundleConfig::new(
        opts.model_id.clone(),
        arch,
        logit_scale,
        preprocess,
        TokenizerSettings {
            max_length,
            lowercase,
            query_max_length,
            attend_padding: false,
        },
        json!({
            "created_by": "mirage model import-hf",
            "text": {"kind": "imported", "dir": dir.display().to_string()},
            "text_projection": if identity_text_proj { "identity" } else { "random" },
            "query_text": opts.query_text_dir.as_ref().map(|q| json!({
                "kind": "imported",
                "dir": q.display().to_string(),
                "projection": if identity_query_proj { "identity" } else { "random" },
            })),
            "vision": vision_source,
            "vision_tensors_initialised": vision_missing.len(),
            "seed": opts.seed,
            "trained": false,
        }),
    );
    write_bundle(
        out,
        BundleContents {
            config,
            tensors: &tensors,
            tokenizer_json: &tokenizer_json,
            text_bank: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::hf_bert_name;

    #[test]
    fn hf_names_map_to_the_scheme() {
        assert_eq!(
            hf_bert_name("bert.encoder.layer.0.output.dense.weight").as_deref(),
            Some("encoder.layer.0.output.dense.weight")
        );
        assert_eq!(
            hf_bert_name("embeddings.LayerNorm.gamma").as_deref(),
            Some("embeddings.LayerNorm.weight")
        );
        assert_eq!(
            hf_bert_name("bert.embeddings.LayerNorm.beta").as_deref(),
            Some("embeddings.LayerNorm.bias")
        );
        assert_eq!(hf_bert_name("bert.pooler.dense.weight"), None);
        assert_eq!(hf_bert_name("embeddings.position_ids"), None);
        assert_eq!(hf_bert_name("cls.predictions.bias"), None);
    }
}
