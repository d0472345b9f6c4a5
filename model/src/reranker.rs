//! Cross-encoder rerankers: a Hugging Face `BertForSequenceClassification` (the layout of the
//! ms-marco MiniLM cross-encoders and of MedCPT-Cross-Encoder) that reads a query and a document
//! together and scores their relevance. Design: `docs/RETRIEVAL.md`, "Rerank".
//!
//! A reranker directory holds `reranker.json` ([`RerankerConfig`]), `model.safetensors` (the
//! checkpoint's own tensor names: `bert.…`, `bert.pooler.dense.…`, `classifier.…`, in f32) and
//! `tokenizer.json`. Both engines run it: candle (the BERT tower of `towers::bert` with the
//! pooler and classifier) and ONNX Runtime (a graph written from the weights at load, the text
//! tower's BERT body with the same head).
//!
//! The score of a pair is the classifier's logit; the relevance reported to users is
//! `sigmoid(logit)` for one label (what sentence-transformers' `CrossEncoder` returns), and the
//! softmax probability of label 1 for two or more.

#[cfg(feature = "candle")]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[cfg(feature = "candle")]
use candle_core::{DType, Device, Tensor};
#[cfg(feature = "candle")]
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
#[cfg(feature = "candle")]
use serde_json::json;
use serde_json::Value;
use tokenizers::{Tokenizer, TruncationParams};

use crate::bundle::sha256_hex;
use crate::config::read_json;
use crate::config::BertConfig;
#[cfg(feature = "candle")]
use crate::config::TextPooling;
use crate::engine::{EngineKind, EngineOptions};
#[cfg(feature = "candle")]
use crate::import::load_safetensors;
use crate::names::{self, path, BIAS, WEIGHT};
use crate::onnx::graph::{GraphBuilder, Weights};
use crate::onnx::proto::{Dim, ElemType};
#[cfg(feature = "candle")]
use crate::towers::bert::BertEncoder;
#[cfg(feature = "candle")]
use crate::towers::layers::{linear, Dense};
use crate::{Error, Result};

/// The reranker's description file.
pub const RERANKER_JSON: &str = "reranker.json";
/// Its weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Its tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Version of the reranker directory layout.
pub const RERANKER_FORMAT_VERSION: u32 = 1;
/// Pairs per forward pass at most (the length groups are cut to this size).
const BATCH: usize = 32;

/// The BERT encoder's prefix in a `BertForSequenceClassification` checkpoint.
const BERT: &str = "bert";
/// The pooler's dense layer.
const POOLER: &str = "bert.pooler.dense";
/// The classification head.
const CLASSIFIER: &str = "classifier";
/// Output of the ONNX graph.
const LOGITS_OUTPUT: &str = "logits";

/// `reranker.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankerConfig {
    /// [`RERANKER_FORMAT_VERSION`].
    pub format_version: u32,
    /// The name requests and responses use.
    pub model_id: String,
    /// The encoder's shape (Hugging Face `config.json` fields).
    pub bert: BertConfig,
    /// Classifier outputs.
    pub num_labels: usize,
    /// Tokens of a query–document pair read at most (special tokens included); longer pairs are
    /// cut, the longer side first.
    pub max_length: usize,
    /// sha256 of `model.safetensors`.
    pub weights_sha256: String,
    /// Where it came from.
    pub provenance: Value,
}

/// Every tensor a cross-encoder of shape `c` with `labels` outputs needs, with its shape.
fn expected_tensors(c: &BertConfig, labels: usize) -> Vec<(String, Vec<usize>)> {
    let text_prefix = format!("{}.", names::TEXT);
    let h = c.hidden_size;
    let mut out: Vec<(String, Vec<usize>)> = names::bert_tensors(c)
        .into_iter()
        .map(|s| {
            let short = s.name.strip_prefix(&text_prefix).unwrap_or(&s.name);
            (format!("{BERT}.{short}"), s.shape)
        })
        .collect();
    out.push((path(&[POOLER, WEIGHT]), vec![h, h]));
    out.push((path(&[POOLER, BIAS]), vec![h]));
    out.push((path(&[CLASSIFIER, WEIGHT]), vec![labels, h]));
    out.push((path(&[CLASSIFIER, BIAS]), vec![labels]));
    out
}

/// Builds a reranker directory in `out` from a Hugging Face `BertForSequenceClassification`
/// directory (`config.json`, `model.safetensors`, `tokenizer.json`). `max_length` defaults to
/// `tokenizer_config.json`'s `model_max_length` when it is a real limit, else the position
/// table. Unknown layouts are refused naming what did not fit.
#[cfg(feature = "candle")]
pub fn import_cross_encoder(
    dir: &Path,
    out: &Path,
    model_id: Option<String>,
    max_length: Option<usize>,
) -> Result<RerankerConfig> {
    let cfg_path = dir.join("config.json");
    let cfg = read_json(&cfg_path)?;
    let model_type = cfg.get("model_type").and_then(Value::as_str).unwrap_or("");
    if model_type != "bert" {
        return Err(Error::InvalidConfig(format!(
            "{}: model_type {model_type:?}: only BERT cross-encoders (BertForSequenceClassification) can be imported",
            cfg_path.display()
        )));
    }
    let architectures: Vec<&str> = cfg
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !architectures.contains(&"BertForSequenceClassification") {
        return Err(Error::InvalidConfig(format!(
            "{}: architectures {architectures:?} is not BertForSequenceClassification (a cross-encoder's classification head is needed)",
            cfg_path.display()
        )));
    }
    // transformers' default is 2 labels when the config names none.
    let num_labels = cfg
        .get("num_labels")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .or_else(|| {
            cfg.get("id2label")
                .and_then(Value::as_object)
                .map(|m| m.len())
        })
        .unwrap_or(2);
    if num_labels == 0 {
        return Err(Error::InvalidConfig(format!(
            "{}: the classifier has no labels",
            cfg_path.display()
        )));
    }
    let bert: BertConfig = serde_json::from_value(cfg.clone()).map_err(|source| Error::Json {
        path: cfg_path.clone(),
        source,
    })?;
    let weights_path = dir.join(WEIGHTS_FILE);
    if !weights_path.exists() {
        return Err(Error::InvalidConfig(format!(
            "{}: no {WEIGHTS_FILE} (a pytorch_model.bin must be converted to safetensors first)",
            dir.display()
        )));
    }
    let source = load_safetensors(&weights_path)?;
    let mut tensors = HashMap::new();
    for (name, shape) in expected_tensors(&bert, num_labels) {
        // Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
        let alt = name
            .strip_suffix(".weight")
            .map(|s| format!("{s}.gamma"))
            .or_else(|| name.strip_suffix(".bias").map(|s| format!("{s}.beta")));
        let t = source
            .get(&name)
            .or_else(|| alt.as_ref().and_then(|a| source.get(a)))
            .ok_or_else(|| Error::MissingTensor {
                path: weights_path.clone(),
                name: name.clone(),
                expected: shape.clone(),
            })?;
        if t.dims() != shape.as_slice() {
            return Err(Error::TensorShape {
                path: weights_path.clone(),
                name,
                expected: shape,
                actual: t.dims().to_vec(),
            });
        }
        tensors.insert(name, t.to_dtype(DType::F32)?);
    }
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let tokenizer_json =
        std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
    Tokenizer::from_bytes(&tokenizer_json)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
    let declared = read_json(&dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|v| v.get("model_max_length").and_then(Value::as_u64))
        .map(|m| m as usize)
        .filter(|&m| m <= bert.max_position_embeddings);
    let max_length = max_length
        .or(declared)
        .unwrap_or(bert.max_position_embeddings);
    if max_length < 3 || max_length > bert.max_position_embeddings {
        return Err(Error::InvalidConfig(format!(
            "max length {max_length} must be 3–{} (the position table)",
            bert.max_position_embeddings
        )));
    }

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let weights_out = out.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights_out).map_err(|e| Error::Safetensors {
        path: weights_out.clone(),
        reason: e.to_string(),
    })?;
    let written = std::fs::read(&weights_out).map_err(|e| Error::io(&weights_out, e))?;
    let tok_out = out.join(TOKENIZER_FILE);
    std::fs::write(&tok_out, &tokenizer_json).map_err(|e| Error::io(&tok_out, e))?;
    let config = RerankerConfig {
        format_version: RERANKER_FORMAT_VERSION,
        model_id: model_id.unwrap_or_else(|| {
            dir.file_name()
                .map_or_else(|| "cross-encoder".into(), |n| n.to_string_lossy().into())
        }),
        bert,
        num_labels,
        max_length,
        weights_sha256: sha256_hex(&written),
        provenance: json!({
            "created_by": "mirage model import-reranker",
            "source": dir.display().to_string(),
        }),
    };
    let cfg_out = out.join(RERANKER_JSON);
    let text = serde_json::to_string_pretty(&config).expect("reranker config serialises");
    std::fs::write(&cfg_out, text).map_err(|e| Error::io(&cfg_out, e))?;
    Ok(config)
}

/// The candle forward pass: BERT, `tanh` pooler over `[CLS]`, classifier.
#[cfg(feature = "candle")]
struct CandleScorer {
    bert: BertEncoder,
    pooler: Dense,
    classifier: Dense,
}

#[cfg(feature = "candle")]
impl CandleScorer {
    fn load(tensors: crate::weights::HostWeights, c: &RerankerConfig) -> Result<Self> {
        let tensors = crate::weights::to_candle(tensors, &Device::Cpu)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let h = c.bert.hidden_size;
        Ok(Self {
            bert: BertEncoder::load(&vb.pp(BERT), &c.bert, TextPooling::Cls)?,
            pooler: linear(&vb.pp(POOLER), h, h)?,
            classifier: linear(&vb.pp(CLASSIFIER), c.num_labels, h)?,
        })
    }

    fn logits(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Vec<f32>> {
        let cls = self.bert.forward(ids, types, mask)?;
        let pooled = self.pooler.forward(&cls)?.tanh()?;
        Ok(self.classifier.forward(&pooled)?.flatten_all()?.to_vec1()?)
    }
}

/// The ONNX graph of a cross-encoder: the text tower's BERT body under `bert`, then the same
/// head as [`CandleScorer`]. Inputs as the text graph's; output `logits` `[batch, labels]`.
fn onnx_graph(c: &RerankerConfig, tensors: &crate::weights::HostWeights) -> Result<Vec<u8>> {
    let w = Weights::new(tensors);
    let mut g = GraphBuilder::new(
        "mirage_cross_encoder",
        format!(
            "cross-encoder `{}`, written by mirage-rs {}",
            c.model_id,
            env!("CARGO_PKG_VERSION")
        ),
    );
    let (x, _) = crate::onnx::text::bert_body(&mut g, &w, BERT, &c.bert)?;
    let first = g.scalar_i64("cls", 0);
    let cls = g.op(
        "Gather",
        &[&x, &first],
        vec![crate::onnx::graph::int("axis", 1)],
    );
    let pooled = g.linear(&cls, &w, POOLER)?;
    let pooled = g.op("Tanh", &[&pooled], Vec::new());
    let logits = g.linear(&pooled, &w, CLASSIFIER)?;
    g.output(
        &logits,
        LOGITS_OUTPUT,
        ElemType::Float,
        vec![Dim::Named("batch".into()), Dim::Fixed(c.num_labels as i64)],
    );
    Ok(g.finish().encode())
}

enum Scorer {
    #[cfg(feature = "candle")]
    Candle(CandleScorer),
    Ort(Mutex<ort::session::Session>),
}

/// A loaded cross-encoder.
pub struct Reranker {
    config: RerankerConfig,
    dir: PathBuf,
    /// Truncating, not padding: pairs are padded per length group in `logits`.
    tokenizer: Tokenizer,
    pad_id: u32,
    scorer: Scorer,
    kind: EngineKind,
}

impl std::fmt::Debug for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reranker")
            .field("model_id", &self.config.model_id)
            .field("engine", &self.kind)
            .finish_non_exhaustive()
    }
}

/// One pair's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScore {
    /// The classifier's output(s) reduced to one relevance in [0, 1].
    pub relevance: f32,
    /// The raw logit of the relevant class (label 0 with one label, label 1 with more).
    pub logit: f32,
    /// Tokens of the pair read (after truncation), special tokens included.
    pub tokens: usize,
}

impl Reranker {
    /// Opens the reranker in `dir` on the engine `options` choose (ONNX Runtime where its
    /// library loads, else candle, for `auto`).
    pub fn open(dir: &Path, options: &EngineOptions) -> Result<Self> {
        let cfg_path = dir.join(RERANKER_JSON);
        let config: RerankerConfig =
            serde_json::from_value(read_json(&cfg_path)?).map_err(|source| Error::Json {
                path: cfg_path.clone(),
                source,
            })?;
        if config.format_version != RERANKER_FORMAT_VERSION {
            return Err(Error::InvalidConfig(format!(
                "{}: format_version {} is not {RERANKER_FORMAT_VERSION}",
                cfg_path.display(),
                config.format_version
            )));
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
        let digest = sha256_hex(&bytes);
        if digest != config.weights_sha256 {
            return Err(Error::InvalidConfig(format!(
                "{}: sha256 {digest} is not the {} that {RERANKER_JSON} records: the weights were changed or damaged",
                weights_path.display(),
                config.weights_sha256
            )));
        }
        let tensors = crate::weights::read_safetensors(&weights_path, &bytes)?;
        for (name, shape) in expected_tensors(&config.bert, config.num_labels) {
            match tensors.get(&name) {
                Some(t) if t.dims() == shape.as_slice() => {}
                Some(t) => {
                    return Err(Error::TensorShape {
                        path: weights_path,
                        name,
                        expected: shape,
                        actual: t.dims().to_vec(),
                    })
                }
                None => {
                    return Err(Error::MissingTensor {
                        path: weights_path,
                        name,
                        expected: shape,
                    })
                }
            }
        }
        let tok_path = dir.join(TOKENIZER_FILE);
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let pad_id = tokenizer
            .get_padding()
            .map_or_else(|| tokenizer.token_to_id("[PAD]").unwrap_or(0), |p| p.pad_id);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let (scorer, kind) = crate::engine::choose(
            options,
            "reranker",
            tensors,
            |t| {
                crate::engine::ort::load_library(
                    options.ort_library.as_deref(),
                    options.assets.as_deref(),
                )?;
                let graph = onnx_graph(&config, t)?;
                let session = crate::engine::ort::session(&graph, options, "cross-encoder")?;
                Ok(Scorer::Ort(Mutex::new(session)))
            },
            |t| {
                #[cfg(feature = "candle")]
                return Ok(Scorer::Candle(CandleScorer::load(t, &config)?));
                #[cfg(not(feature = "candle"))]
                return Err(crate::engine::without_candle(t));
            },
        )?;
        tracing::info!(model_id = %config.model_id, engine = kind.as_str(), "reranker loaded");
        Ok(Self {
            config,
            dir: dir.to_path_buf(),
            tokenizer,
            pad_id,
            scorer,
            kind,
        })
    }

    /// `reranker.json`.
    pub fn config(&self) -> &RerankerConfig {
        &self.config
    }

    /// The name requests use.
    pub fn model_id(&self) -> &str {
        &self.config.model_id
    }

    /// Where it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine that runs it.
    pub fn engine(&self) -> EngineKind {
        self.kind
    }

    /// Tokens each `(query, document)` pair reads (after truncation), special tokens included.
    pub fn pair_tokens(&self, query: &str, documents: &[&str]) -> Result<Vec<usize>> {
        Ok(self
            .encode(query, documents)?
            .iter()
            .map(tokenizers::Encoding::len)
            .collect())
    }

    /// Every pair tokenised, truncated and unpadded.
    fn encode(&self, query: &str, documents: &[&str]) -> Result<Vec<tokenizers::Encoding>> {
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, *d)).collect();
        self.tokenizer
            .encode_batch(pairs, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The classifier's outputs for each `(query, document)` pair, `num_labels` per pair, in
    /// input order. Pairs run in groups of similar length (as texts do in `MirageModel`), so a
    /// short pair is not padded to the longest candidate; padding is masked, so grouping never
    /// changes a score.
    pub fn logits(&self, query: &str, documents: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.forward(query, documents)?.0)
    }

    /// [`Self::logits`] and the tokens each pair read, from one tokenisation.
    fn forward(&self, query: &str, documents: &[&str]) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        let labels = self.config.num_labels;
        let enc = self.encode(query, documents)?;
        let lengths: Vec<usize> = enc.iter().map(tokenizers::Encoding::len).collect();
        let mut out = vec![Vec::new(); documents.len()];
        for group in crate::model::length_groups(&lengths) {
            for rows in group.chunks(BATCH) {
                let (b, l) = (
                    rows.len(),
                    rows.iter().map(|&i| lengths[i]).max().unwrap_or(0),
                );
                let padded = |f: fn(&tokenizers::Encoding) -> &[u32], pad: u32| -> Vec<u32> {
                    let mut v = Vec::with_capacity(b * l);
                    for &i in rows {
                        let row = f(&enc[i]);
                        v.extend_from_slice(row);
                        v.resize(v.len() + l - row.len(), pad);
                    }
                    v
                };
                let (ids, types, mask) = (
                    padded(tokenizers::Encoding::get_ids, self.pad_id),
                    padded(tokenizers::Encoding::get_type_ids, 0),
                    padded(tokenizers::Encoding::get_attention_mask, 0),
                );
                let values = match &self.scorer {
                    #[cfg(feature = "candle")]
                    Scorer::Candle(s) => {
                        let t = |v: Vec<u32>| Tensor::from_vec(v, (b, l), &Device::Cpu);
                        s.logits(&t(ids)?, &t(types)?, &t(mask)?)?
                    }
                    Scorer::Ort(session) => ort_logits(session, b, l, &ids, &mask, &types)?,
                };
                if values.len() != b * labels {
                    return Err(Error::Engine(format!(
                        "the cross-encoder returned {} values for {b} pairs of {labels} labels",
                        values.len()
                    )));
                }
                for (&i, v) in rows.iter().zip(values.chunks_exact(labels)) {
                    out[i] = v.to_vec();
                }
            }
        }
        Ok((out, lengths))
    }

    /// Each pair's relevance (see the module documentation), logit and tokens, in input order.
    pub fn score(&self, query: &str, documents: &[&str]) -> Result<Vec<PairScore>> {
        let (logits, tokens) = self.forward(query, documents)?;
        Ok(logits
            .iter()
            .zip(tokens)
            .map(|(l, t)| relevance(l, t))
            .collect())
    }
}

/// One pair's relevance from its logits; it read `tokens`.
fn relevance(logits: &[f32], tokens: usize) -> PairScore {
    if logits.len() == 1 {
        let z = logits[0];
        return PairScore {
            relevance: 1.0 / (1.0 + (-z).exp()),
            logit: z,
            tokens,
        };
    }
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|z| (z - top).exp()).sum();
    PairScore {
        relevance: (logits[1] - top).exp() / sum,
        logit: logits[1],
        tokens,
    }
}

fn ort_logits(
    session: &Mutex<ort::session::Session>,
    b: usize,
    l: usize,
    ids: &[u32],
    mask: &[u32],
    types: &[u32],
) -> Result<Vec<f32>> {
    use ort::value::TensorRef;
    let err = |what: &'static str| {
        move |e: ort::Error| Error::Engine(format!("ONNX Runtime: {what}: {e}"))
    };
    let widen = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>();
    let (ids, mask, types) = (widen(ids), widen(mask), widen(types));
    let shape = [b as i64, l as i64];
    let [n_ids, n_mask, n_types] = crate::onnx::TEXT_INPUTS;
    let inputs = ort::inputs![
        n_ids => TensorRef::from_array_view((shape, &ids[..])).map_err(err("input"))?,
        n_mask => TensorRef::from_array_view((shape, &mask[..])).map_err(err("input"))?,
        n_types => TensorRef::from_array_view((shape, &types[..])).map_err(err("input"))?,
    ];
    let mut s = session
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = s.run(inputs).map_err(err("cross-encoder forward"))?;
    let (_, values) = out[LOGITS_OUTPUT]
        .try_extract_tensor::<f32>()
        .map_err(err("cross-encoder output"))?;
    Ok(values.to_vec())
}

#[cfg(test)]
mod tests {
    use super::relevance;

    #[test]
    fn relevance_is_the_sigmoid_of_one_logit_and_the_softmax_of_label_1() {
        let one = relevance(&[0.0], 0);
        assert!((one.relevance - 0.5).abs() < 1e-6);
        let two = relevance(&[0.0, 2f32.ln()], 0);
        assert!((two.relevance - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(two.logit, 2f32.ln());
    }
}
