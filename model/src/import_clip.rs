//! `mirage model import`: a bundle from a CLIP-family checkpoint directory. Supported layouts:
//! - Hugging Face `CLIPModel` (`config.json` with `model_type: "clip"`, weights as
//!   `model.safetensors`, sharded safetensors with `model.safetensors.index.json`, or a PyTorch
//!   `pytorch_model.bin`, and `tokenizer.json`);
//! - open_clip (`open_clip_config.json` + `open_clip_model.safetensors` or
//!   `open_clip_pytorch_model.bin`): its own ViT or ModifiedResNet (OpenAI's RN50 family) with
//!   its text transformer (OpenAI and LAION CLIP), or a timm ViT or ModifiedResNet with a Hugging
//!   Face BERT text tower and a linear or MLP projection (BiomedCLIP; PMC-CLIP's architecture).
//!
//! Every tensor of the checkpoint is mapped onto the bundle's scheme (`names.rs`) or refused by
//! name; nothing is initialised at random except the zero biases of bias-free projections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::json;

use crate::bundle::{write_bundle, Bundle, BundleContents};
use crate::config::{
    Architecture, BertConfig, BundleConfig, ClipTextConfig, HiddenAct, ImagePreprocess,
    Interpolation, ResNetConfig, ResizeMode, TextPooling, TextProjection, TextTower,
    TokenizerSettings, VisionPooling, VisionTower, VitConfig, CLIP_MEAN, CLIP_STD,
};
use crate::import::{load_safetensors, read_json};
use crate::names::{self, block, clip_text, path, vit, BIAS, WEIGHT};
use crate::{Error, Result};

/// What to import.
#[derive(Debug, Clone, Default)]
pub struct ClipImportOptions {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Model id written to the bundle.
    pub model_id: String,
    /// `tokenizer.json` to use instead of the directory's own.
    pub tokenizer: Option<PathBuf>,
    /// CLIP's gzipped BPE merge list (`bpe_simple_vocab_16e6.txt.gz`), to build the tokenizer of
    /// a CLIP text tower whose directory has no `tokenizer.json`.
    pub bpe_vocab: Option<PathBuf>,
    /// The Hugging Face `config.json` of the BERT text tower of an open_clip checkpoint
    /// (BiomedCLIP's names a hub model) or of PMC-CLIP; inferred from the tensors when absent
    /// (heads: width/64).
    pub text_config: Option<PathBuf>,
}

/// The checkpoint layouts `mirage model import` recognises in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Hugging Face `CLIPModel`.
    HfClip,
    /// Hugging Face `BertModel` (a text tower only: `mirage model import-hf`).
    HfBert,
    /// open_clip (`open_clip_config.json`).
    OpenClip,
    /// PMC-CLIP's released training checkpoint (`checkpoint.pt`): open_clip's ModifiedResNet and
    /// a Hugging Face BERT (PubMedBERT) with a bare projection.
    PmcClip,
}

/// The file PMC-CLIP's release ships its weights in.
pub const PMC_CLIP_CHECKPOINT: &str = "checkpoint.pt";

/// PMC-CLIP's text context: its BERT reads every text padded to this many tokens.
const PMC_CLIP_CONTEXT: usize = 77;

/// Which layout `dir` holds.
///
/// # Errors
///
/// [`Error::InvalidConfig`] naming what was found when no layout fits.
pub fn detect(dir: &Path) -> Result<Layout> {
    if dir.join("open_clip_config.json").is_file() {
        return Ok(Layout::OpenClip);
    }
    // Before config.json: PubMedBERT's config.json may sit beside PMC-CLIP's checkpoint.
    if dir.join(PMC_CLIP_CHECKPOINT).is_file() {
        return Ok(Layout::PmcClip);
    }
    let cfg_path = dir.join("config.json");
    if !cfg_path.is_file() {
        return Err(Error::InvalidConfig(format!(
            "{}: neither config.json (Hugging Face), open_clip_config.json (open_clip) nor \
             {PMC_CLIP_CHECKPOINT} (PMC-CLIP) — not a checkpoint directory this importer knows",
            dir.display()
        )));
    }
    let cfg = read_json(&cfg_path)?;
    match cfg.get("model_type").and_then(|v| v.as_str()) {
        Some("clip") => Ok(Layout::HfClip),
        Some("bert") => Ok(Layout::HfBert),
        other => Err(Error::InvalidConfig(format!(
            "{}: model_type {other:?} is not one this importer knows (clip; bert with \
             `mirage model import-hf`)",
            cfg_path.display()
        ))),
    }
}

#[derive(Deserialize)]
struct HfClipConfig {
    text_config: HfTextConfig,
    vision_config: HfVisionConfig,
    projection_dim: usize,
}

// Missing fields take transformers' CLIPTextConfig / CLIPVisionConfig defaults, which
// `config.json` files written by older releases omit.
#[derive(Deserialize)]
#[serde(default)]
struct HfTextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    hidden_act: HiddenAct,
    layer_norm_eps: f64,
    eos_token_id: u32,
}

impl Default for HfTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct HfVisionConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: HiddenAct,
    layer_norm_eps: f64,
    num_channels: usize,
}

impl Default for HfVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 224,
            patch_size: 32,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
            num_channels: 3,
        }
    }
}

/// The `preprocessor_config.json` fields of `CLIPImageProcessor` that shape pixels.
#[derive(Deserialize, Default)]
struct HfPreprocessor {
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    resample: Option<u32>,
    do_center_crop: Option<bool>,
}

/// A PyTorch pickle's tensors: a bare state dict, or one under `state_dict` (training
/// checkpoints), without DataParallel's `module.` prefix.
fn load_pickle(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bad = |e: candle_core::Error| Error::Safetensors {
        path: path.to_path_buf(),
        reason: format!("not a PyTorch state dict candle can read: {e}"),
    };
    let mut tensors = candle_core::pickle::read_all(path).map_err(bad)?;
    if tensors.is_empty() {
        tensors = candle_core::pickle::read_all_with_key(path, Some("state_dict")).map_err(bad)?;
    }
    Ok(tensors
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map_or(k.clone(), str::to_owned),
                v,
            )
        })
        .collect())
}

/// The weights of an open_clip directory.
fn load_open_clip_checkpoint(dir: &Path) -> Result<(PathBuf, HashMap<String, Tensor>)> {
    for name in ["open_clip_model.safetensors", "model.safetensors"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok((p.clone(), load_safetensors(&p)?));
        }
    }
    for name in ["open_clip_pytorch_model.bin", "pytorch_model.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok((p.clone(), load_pickle(&p)?));
        }
    }
    Err(Error::InvalidConfig(format!(
        "{}: no weights (open_clip_model.safetensors or open_clip_pytorch_model.bin)",
        dir.display()
    )))
}

/// The weights of a checkpoint directory by name, from whichever file it has.
fn load_checkpoint(dir: &Path) -> Result<(PathBuf, HashMap<String, Tensor>)> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok((single.clone(), load_safetensors(&single)?));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let map = read_json(&index)?;
        let shards: std::collections::BTreeSet<String> = map
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::InvalidConfig(format!("{}: no weight_map object", index.display()))
            })?
            .values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let mut all = HashMap::new();
        for shard in shards {
            all.extend(load_safetensors(&dir.join(shard))?);
        }
        return Ok((index, all));
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.is_file() {
        return Ok((bin.clone(), load_pickle(&bin)?));
    }
    Err(Error::InvalidConfig(format!(
        "{}: no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)",
        dir.display()
    )))
}

/// Takes checkpoint tensors by name, remembering which were used, so what is left over can be
/// refused by name.
struct Source {
    file: PathBuf,
    tensors: HashMap<String, Tensor>,
    used: std::collections::HashSet<String>,
}

impl Source {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.file.clone(),
            name: name.to_owned(),
            expected: shape.to_vec(),
        })?;
        // Only axes of size 1 may differ (a class embedding [H] is our [1, 1, H]): a transposed
        // or resized tensor is another layout.
        let squeezed = |d: &[usize]| d.iter().copied().filter(|&x| x != 1).collect::<Vec<_>>();
        if squeezed(t.dims()) != squeezed(shape) {
            return Err(Error::TensorShape {
                path: self.file.clone(),
                name: name.to_owned(),
                expected: shape.to_vec(),
                actual: t.dims().to_vec(),
            });
        }
        self.used.insert(name.to_owned());
        Ok(t.to_dtype(DType::F32)?.reshape(shape)?)
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn dims(&self, name: &str) -> Result<Vec<usize>> {
        self.tensors
            .get(name)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| Error::MissingTensor {
                path: self.file.clone(),
                name: name.to_owned(),
                expected: Vec::new(),
            })
    }

    /// How many blocks `format(i)` names exist, counting from 0.
    fn count(&self, name: impl Fn(usize) -> String) -> usize {
        (0..).take_while(|&i| self.has(&name(i))).count()
    }

    /// Marks every tensor under `prefix` as deliberately unused.
    fn ignore(&mut self, prefix: &str) {
        let keys: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        self.used.extend(keys);
    }

    /// A checkpoint's `[in, out]` parameter used as `x @ W` (open_clip's `proj`,
    /// `text_projection`), as our `[out, in]` weight.
    fn take_t(&mut self, name: &str, in_dim: usize, out_dim: usize) -> Result<Tensor> {
        Ok(self.take(name, &[in_dim, out_dim])?.t()?.contiguous()?)
    }

    /// The first tensor no mapping used, other than buffers the towers recompute.
    fn leftover(&self) -> Option<&String> {
        let mut left: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k) && !k.ends_with("position_ids"))
            .collect();
        left.sort();
        left.first().copied()
    }
}

/// One Hugging Face `CLIPEncoderLayer` stack under `hf` onto [`block`]s under `ours`.
fn hf_blocks(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    hf: &str,
    ours: &str,
    n: usize,
    h: usize,
    mlp: usize,
) -> Result<()> {
    for i in 0..n {
        let from = |leaf: &str| format!("{hf}.encoder.layers.{i}.{leaf}");
        let to = |parts: &[&str]| {
            let l = block::layer(i);
            let mut all = vec![ours, l.as_str()];
            all.extend_from_slice(parts);
            path(&all)
        };
        // torchvision packs q, k and v as one [3H, H] projection.
        let mut w = Vec::new();
        let mut b = Vec::new();
        for p in ["q_proj", "k_proj", "v_proj"] {
            w.push(src.take(&from(&format!("self_attn.{p}.weight")), &[h, h])?);
            b.push(src.take(&from(&format!("self_attn.{p}.bias")), &[h])?);
        }
        out.insert(
            to(&[block::SELF_ATTENTION, block::IN_PROJ_WEIGHT]),
            Tensor::cat(&w, 0)?,
        );
        out.insert(
            to(&[block::SELF_ATTENTION, block::IN_PROJ_BIAS]),
            Tensor::cat(&b, 0)?,
        );
        let a = block::SELF_ATTENTION;
        linear_pair(
            src,
            out,
            &from("self_attn.out_proj"),
            &to(&[a, block::OUT_PROJ]),
            h,
            h,
        )?;
        norm(src, out, &from("layer_norm1"), &to(&[block::LN_1]), h)?;
        norm(src, out, &from("layer_norm2"), &to(&[block::LN_2]), h)?;
        linear_pair(src, out, &from("mlp.fc1"), &to(&[block::MLP_IN]), mlp, h)?;
        linear_pair(src, out, &from("mlp.fc2"), &to(&[block::MLP_OUT]), h, mlp)?;
    }
    Ok(())
}

fn norm(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    hf: &str,
    ours: &str,
    h: usize,
) -> Result<()> {
    out.insert(
        path(&[ours, WEIGHT]),
        src.take(&format!("{hf}.weight"), &[h])?,
    );
    out.insert(path(&[ours, BIAS]), src.take(&format!("{hf}.bias"), &[h])?);
    Ok(())
}

/// Builds a bundle in `out` from a Hugging Face `CLIPModel` directory.
pub fn import_hf_clip(opts: &ClipImportOptions, out: &Path) -> Result<Bundle> {
    let dir = &opts.dir;
    let cfg_path = dir.join("config.json");
    let cfg: HfClipConfig =
        serde_json::from_value(read_json(&cfg_path)?).map_err(|source| Error::Json {
            path: cfg_path.clone(),
            source,
        })?;
    let (t, v) = (&cfg.text_config, &cfg.vision_config);
    if v.num_channels != 3 {
        return Err(Error::InvalidConfig(format!(
            "{}: vision_config.num_channels {} (only 3 is supported)",
            cfg_path.display(),
            v.num_channels
        )));
    }
    let tokenizer_json = resolve_tokenizer(opts, true)?;
    let tokenizer = tokenizers::Tokenizer::from_bytes(&tokenizer_json)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", dir.display())))?;
    // transformers pools at the argmax of the ids when eos_token_id is the legacy 2, which with
    // CLIP's vocabulary is the end-of-text token (the largest id); otherwise at eos_token_id.
    let eos = if t.eos_token_id == 2 {
        tokenizer.token_to_id("<|endoftext|>").ok_or_else(|| {
            Error::InvalidConfig(format!(
                "{}: text_config.eos_token_id is the legacy 2 and tokenizer.json has no \
                 <|endoftext|> token to pool at",
                cfg_path.display()
            ))
        })?
    } else {
        t.eos_token_id
    };
    let clip = ClipTextConfig {
        vocab_size: t.vocab_size,
        hidden_size: t.hidden_size,
        num_layers: t.num_hidden_layers,
        num_heads: t.num_attention_heads,
        intermediate_size: t.intermediate_size,
        max_position_embeddings: t.max_position_embeddings,
        layer_norm_eps: t.layer_norm_eps,
        activation: t.hidden_act,
        eos_token_id: eos,
    };
    let vit_cfg = VitConfig {
        image_size: v.image_size,
        patch_size: v.patch_size,
        hidden_size: v.hidden_size,
        num_layers: v.num_hidden_layers,
        num_heads: v.num_attention_heads,
        mlp_dim: v.intermediate_size,
        layer_norm_eps: v.layer_norm_eps,
        patch_bias: false,
        pre_norm: true,
        activation: v.hidden_act,
    };
    let arch = Architecture {
        embed_dim: cfg.projection_dim,
        text: TextTower::Clip { clip: clip.clone() },
        text_projection: Default::default(),
        query_text: None,
        vision: VisionTower::Vit(vit_cfg.clone()),
    };

    let (file, tensors) = load_checkpoint(dir)?;
    let mut src = Source {
        file,
        tensors,
        used: Default::default(),
    };
    let mut w = HashMap::new();
    let (th, vh, d) = (t.hidden_size, v.hidden_size, cfg.projection_dim);
    let text = names::TEXT;
    w.insert(
        path(&[text, clip_text::TOKEN_EMBEDDING, WEIGHT]),
        src.take(
            "text_model.embeddings.token_embedding.weight",
            &[t.vocab_size, th],
        )?,
    );
    w.insert(
        path(&[text, clip_text::POSITIONAL]),
        src.take(
            "text_model.embeddings.position_embedding.weight",
            &[t.max_position_embeddings, th],
        )?,
    );
    hf_blocks(
        &mut src,
        &mut w,
        "text_model",
        text,
        t.num_hidden_layers,
        th,
        t.intermediate_size,
    )?;
    norm(
        &mut src,
        &mut w,
        "text_model.final_layer_norm",
        &path(&[text, clip_text::FINAL_LN]),
        th,
    )?;
    let vision = names::VISION;
    w.insert(
        path(&[vision, vit::CONV_PROJ, WEIGHT]),
        src.take(
            "vision_model.embeddings.patch_embedding.weight",
            &[vh, 3, v.patch_size, v.patch_size],
        )?,
    );
    w.insert(
        path(&[vision, vit::CLASS_TOKEN]),
        src.take("vision_model.embeddings.class_embedding", &[1, 1, vh])?,
    );
    w.insert(
        path(&[vision, vit::POS_EMBEDDING]),
        src.take(
            "vision_model.embeddings.position_embedding.weight",
            &[1, vit_cfg.seq_len(), vh],
        )?,
    );
    // "pre_layrnorm" is transformers' spelling.
    norm(
        &mut src,
        &mut w,
        "vision_model.pre_layrnorm",
        &path(&[vision, vit::LN_PRE]),
        vh,
    )?;
    hf_blocks(
        &mut src,
        &mut w,
        "vision_model",
        vision,
        v.num_hidden_layers,
        vh,
        v.intermediate_size,
    )?;
    norm(
        &mut src,
        &mut w,
        "vision_model.post_layernorm",
        &path(&[vision, vit::FINAL_LN]),
        vh,
    )?;
    // CLIP's projections have no bias: ours get zeros.
    for (theirs, ours, width) in [
        ("text_projection.weight", names::TEXT_PROJ, th),
        ("visual_projection.weight", names::VISION_PROJ, vh),
    ] {
        w.insert(path(&[ours, WEIGHT]), src.take(theirs, &[d, width])?);
        w.insert(path(&[ours, BIAS]), zeros(d)?);
    }
    let ln_scale = src.take("logit_scale", &[])?;
    w.insert(names::LOGIT_SCALE.to_owned(), ln_scale.clone());
    if let Some(extra) = src.leftover() {
        return Err(Error::InvalidConfig(format!(
            "{}: tensor `{extra}` has no place in a CLIPModel of this configuration (another \
             layout or architecture?)",
            src.file.display()
        )));
    }

    let preprocess = hf_preprocess(dir, v.image_size)?;
    let config = BundleConfig::new(
        opts.model_id.clone(),
        arch,
        ln_scale.to_scalar::<f32>()?.exp(),
        preprocess,
        TokenizerSettings {
            max_length: t.max_position_embeddings,
            lowercase: false,
            query_max_length: None,
            attend_padding: false,
        },
        json!({
            "created_by": "mirage model import",
            "layout": "hf-clip",
            "source": dir.display().to_string(),
            "weights": src.file.file_name().map(|f| f.to_string_lossy().into_owned()),
            "trained": false,
        }),
    );
    write_imported(out, config, &w, &tokenizer_json)
}

/// Writes an imported model (no text bank: a bank comes from MIRAGE training).
fn write_imported(
    out: &Path,
    config: BundleConfig,
    tensors: &HashMap<String, Tensor>,
    tokenizer_json: &[u8],
) -> Result<Bundle> {
    write_bundle(
        out,
        BundleContents {
            config,
            tensors,
            tokenizer_json,
            text_bank: None,
        },
    )
}

/// Image preprocessing from `preprocessor_config.json` (CLIP's own when the file is absent):
/// CLIP resizes the shorter side and centre-crops, bicubic, with CLIP's mean and std.
fn hf_preprocess(dir: &Path, image_size: usize) -> Result<ImagePreprocess> {
    let p = dir.join("preprocessor_config.json");
    let pre: HfPreprocessor = if p.is_file() {
        serde_json::from_value(read_json(&p)?).map_err(|source| Error::Json {
            path: p.clone(),
            source,
        })?
    } else {
        HfPreprocessor::default()
    };
    let interpolation = match pre.resample.unwrap_or(3) {
        0 => Interpolation::Nearest,
        2 => Interpolation::Bilinear,
        3 => Interpolation::Bicubic,
        other => {
            return Err(Error::InvalidConfig(format!(
                "{}: resample {other} is not one of 0 (nearest), 2 (bilinear), 3 (bicubic)",
                p.display()
            )))
        }
    };
    Ok(ImagePreprocess {
        image_size,
        mean: pre.image_mean.unwrap_or(CLIP_MEAN),
        std: pre.image_std.unwrap_or(CLIP_STD),
        channels: 3,
        interpolation,
        resize: if pre.do_center_crop.unwrap_or(true) {
            ResizeMode::ShorterSideCenterCrop
        } else {
            ResizeMode::Squash
        },
    })
}

/// The tokenizer of an import: `--tokenizer`, else the directory's `tokenizer.json`, else (for a
/// CLIP text tower) one built from CLIP's BPE merge list.
fn resolve_tokenizer(opts: &ClipImportOptions, clip_text: bool) -> Result<Vec<u8>> {
    if let Some(p) = &opts.tokenizer {
        return std::fs::read(p).map_err(|e| Error::io(p, e));
    }
    let own = opts.dir.join("tokenizer.json");
    if own.is_file() {
        return std::fs::read(&own).map_err(|e| Error::io(&own, e));
    }
    match (&opts.bpe_vocab, clip_text) {
        (Some(bpe), true) => crate::clip_tokenizer::from_bpe_vocab(bpe),
        _ => Err(Error::InvalidConfig(format!(
            "{}: no tokenizer.json; pass a tokenizer.json{}",
            opts.dir.display(),
            if clip_text {
                ", or CLIP's bpe_simple_vocab_16e6.txt.gz (shipped in the open_clip_torch wheel) \
                 to build one"
            } else {
                " (the text tower's own, e.g. from its Hugging Face model)"
            }
        ))),
    }
}

fn field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn usize_or(v: &serde_json::Value, key: &str, default: usize) -> usize {
    field(v, key)
        .and_then(serde_json::Value::as_u64)
        .map_or(default, |x| x as usize)
}

/// Refuses an open_clip option this importer does not implement, naming it.
fn refuse_set(cfg_path: &Path, section: &str, v: &serde_json::Value, keys: &[&str]) -> Result<()> {
    for k in keys {
        let set = match field(v, k) {
            None | Some(serde_json::Value::Bool(false)) => false,
            Some(_) => true,
        };
        if set {
            return Err(Error::InvalidConfig(format!(
                "{}: {section}.{k} = {} is not supported",
                cfg_path.display(),
                v[k]
            )));
        }
    }
    Ok(())
}

/// The string option `section.key` (`default` when unset), refused naming it unless it is one
/// of `allowed`.
fn str_option<'a>(
    cfg_path: &Path,
    section: &str,
    v: &'a serde_json::Value,
    key: &str,
    default: &'a str,
    allowed: &[&str],
) -> Result<&'a str> {
    let value = field(v, key).and_then(|x| x.as_str()).unwrap_or(default);
    if allowed.contains(&value) {
        return Ok(value);
    }
    Err(Error::InvalidConfig(format!(
        "{}: {section}.{key} {value:?} is not supported ({allowed:?})",
        cfg_path.display()
    )))
}

/// The MLP width of a tower of `width` (open_clip's `mlp_ratio`, 4 by default).
fn mlp_width(v: &serde_json::Value, width: usize) -> usize {
    let ratio = field(v, "mlp_ratio")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(4.0);
    (width as f64 * ratio) as usize
}

/// Refuses a checkpoint whose resblock count is not its config's `section.layers`.
fn layers_match(cfg_path: &Path, section: &str, layers: usize, found: usize) -> Result<()> {
    if found == layers {
        return Ok(());
    }
    Err(Error::InvalidConfig(format!(
        "{}: {section}.layers is {layers}, the weights have {found} resblocks",
        cfg_path.display()
    )))
}

/// open_clip's pre-norm resblocks (`transformer.resblocks.{i}`) under `theirs` onto our
/// [`block`]s under `ours`; returns how many there were.
fn open_clip_blocks(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    theirs: &str,
    ours: &str,
    h: usize,
    mlp: usize,
) -> Result<usize> {
    let n = src.count(|i| format!("{theirs}transformer.resblocks.{i}.ln_1.weight"));
    for i in 0..n {
        let from = |leaf: &str| format!("{theirs}transformer.resblocks.{i}.{leaf}");
        let to = |parts: &[&str]| {
            let l = block::layer(i);
            let mut all = vec![ours, l.as_str()];
            all.extend_from_slice(parts);
            path(&all)
        };
        let a = block::SELF_ATTENTION;
        out.insert(
            to(&[a, block::IN_PROJ_WEIGHT]),
            src.take(&from("attn.in_proj_weight"), &[3 * h, h])?,
        );
        out.insert(
            to(&[a, block::IN_PROJ_BIAS]),
            src.take(&from("attn.in_proj_bias"), &[3 * h])?,
        );
        linear_pair(
            src,
            out,
            &from("attn.out_proj"),
            &to(&[a, block::OUT_PROJ]),
            h,
            h,
        )?;
        norm(src, out, &from("ln_1"), &to(&[block::LN_1]), h)?;
        norm(src, out, &from("ln_2"), &to(&[block::LN_2]), h)?;
        linear_pair(src, out, &from("mlp.c_fc"), &to(&[block::MLP_IN]), mlp, h)?;
        linear_pair(
            src,
            out,
            &from("mlp.c_proj"),
            &to(&[block::MLP_OUT]),
            h,
            mlp,
        )?;
    }
    Ok(n)
}

/// A `Linear`'s weight and bias under `theirs` as ours under `ours`.
fn linear_pair(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    theirs: &str,
    ours: &str,
    o: usize,
    i: usize,
) -> Result<()> {
    out.insert(
        path(&[ours, WEIGHT]),
        src.take(&format!("{theirs}.weight"), &[o, i])?,
    );
    out.insert(
        path(&[ours, BIAS]),
        src.take(&format!("{theirs}.bias"), &[o])?,
    );
    Ok(())
}

fn zeros(n: usize) -> Result<Tensor> {
    Ok(Tensor::zeros(n, DType::F32, &Device::Cpu)?)
}

/// timm's `VisionTransformer` (`visual.trunk.*`) with open_clip's linear head onto our ViT.
fn timm_vit(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    cfg_path: &Path,
    vision_cfg: &serde_json::Value,
    embed_dim: usize,
) -> Result<VitConfig> {
    let name = field(vision_cfg, "timm_model_name")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if !name.starts_with("vit_") {
        return Err(Error::InvalidConfig(format!(
            "{}: timm model {name:?} is not supported (timm ViTs, vit_*, are)",
            cfg_path.display()
        )));
    }
    str_option(
        cfg_path,
        "vision_cfg",
        vision_cfg,
        "timm_pool",
        "",
        &["", "token"],
    )?;
    str_option(
        cfg_path,
        "vision_cfg",
        vision_cfg,
        "timm_proj",
        "linear",
        &["linear"],
    )?;
    let t = "visual.trunk.";
    let pw = src.dims(&format!("{t}patch_embed.proj.weight"))?;
    let (h, patch) = (pw[0], pw[2]);
    let tokens = src.dims(&format!("{t}pos_embed"))?[1];
    let grid = ((tokens - 1) as f64).sqrt() as usize;
    let image_size = usize_or(vision_cfg, "image_size", grid * patch);
    let layers = src.count(|i| format!("{t}blocks.{i}.norm1.weight"));
    let mlp = src.dims(&format!("{t}blocks.0.mlp.fc1.weight"))?[0];
    // timm's ViTs use 64-wide heads, except the huge ones (80).
    let head_dim = if name.contains("huge") { 80 } else { 64 };
    let c = VitConfig {
        image_size,
        patch_size: patch,
        hidden_size: h,
        num_layers: layers,
        num_heads: h / head_dim,
        mlp_dim: mlp,
        layer_norm_eps: 1e-6,
        patch_bias: src.has(&format!("{t}patch_embed.proj.bias")),
        pre_norm: src.has(&format!("{t}norm_pre.weight")),
        activation: HiddenAct::Gelu,
    };
    if tokens != c.seq_len() {
        return Err(Error::InvalidConfig(format!(
            "{}: pos_embed has {tokens} positions, a {image_size} px image in {patch} px patches \
             needs {}",
            cfg_path.display(),
            c.seq_len()
        )));
    }
    let v = names::VISION;
    out.insert(
        path(&[v, vit::CONV_PROJ, WEIGHT]),
        src.take(
            &format!("{t}patch_embed.proj.weight"),
            &[h, 3, patch, patch],
        )?,
    );
    if c.patch_bias {
        out.insert(
            path(&[v, vit::CONV_PROJ, BIAS]),
            src.take(&format!("{t}patch_embed.proj.bias"), &[h])?,
        );
    }
    out.insert(
        path(&[v, vit::CLASS_TOKEN]),
        src.take(&format!("{t}cls_token"), &[1, 1, h])?,
    );
    out.insert(
        path(&[v, vit::POS_EMBEDDING]),
        src.take(&format!("{t}pos_embed"), &[1, tokens, h])?,
    );
    if c.pre_norm {
        norm(
            src,
            out,
            &format!("{t}norm_pre"),
            &path(&[v, vit::LN_PRE]),
            h,
        )?;
    }
    for i in 0..layers {
        let from = |leaf: &str| format!("{t}blocks.{i}.{leaf}");
        let l = path(&[v, &block::layer(i)]);
        let a = path(&[&l, block::SELF_ATTENTION]);
        out.insert(
            path(&[&a, block::IN_PROJ_WEIGHT]),
            src.take(&from("attn.qkv.weight"), &[3 * h, h])?,
        );
        out.insert(
            path(&[&a, block::IN_PROJ_BIAS]),
            src.take(&from("attn.qkv.bias"), &[3 * h])?,
        );
        linear_pair(
            src,
            out,
            &from("attn.proj"),
            &path(&[&a, block::OUT_PROJ]),
            h,
            h,
        )?;
        norm(src, out, &from("norm1"), &path(&[&l, block::LN_1]), h)?;
        norm(src, out, &from("norm2"), &path(&[&l, block::LN_2]), h)?;
        linear_pair(
            src,
            out,
            &from("mlp.fc1"),
            &path(&[&l, block::MLP_IN]),
            mlp,
            h,
        )?;
        linear_pair(
            src,
            out,
            &from("mlp.fc2"),
            &path(&[&l, block::MLP_OUT]),
            h,
            mlp,
        )?;
    }
    norm(src, out, &format!("{t}norm"), &path(&[v, vit::FINAL_LN]), h)?;
    out.insert(
        path(&[names::VISION_PROJ, WEIGHT]),
        src.take("visual.head.proj.weight", &[embed_dim, h])?,
    );
    out.insert(path(&[names::VISION_PROJ, BIAS]), zeros(embed_dim)?);
    Ok(c)
}

/// open_clip's `ModifiedResNet` (`visual.*`: OpenAI's RN50 family; PMC-CLIP's vision tower)
/// onto our ResNet with `modified` set. Its attention pool projects to the joint space itself, so
/// our vision projection is the identity.
fn open_clip_resnet(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    cfg_path: &Path,
    vision_cfg: &serde_json::Value,
    embed_dim: usize,
) -> Result<ResNetConfig> {
    let layers: Vec<usize> =
        serde_json::from_value(vision_cfg["layers"].clone()).map_err(|source| Error::Json {
            path: cfg_path.to_path_buf(),
            source,
        })?;
    let layers: [usize; 4] = layers.try_into().map_err(|l: Vec<usize>| {
        Error::InvalidConfig(format!(
            "{}: vision_cfg.layers has {} stages; a ModifiedResNet has 4",
            cfg_path.display(),
            l.len()
        ))
    })?;
    let width = usize_or(vision_cfg, "width", 64);
    let head_width = usize_or(vision_cfg, "head_width", 64).max(1);
    let c = ResNetConfig {
        layers,
        bottleneck: true,
        width,
        pooling: VisionPooling::Attention,
        attention_heads: width * 32 / head_width,
        image_size: usize_or(vision_cfg, "image_size", 224),
        modified: true,
        attention_output_dim: Some(embed_dim),
    };
    // Our names are open_clip's under `visual.` (torchvision's and CLIP's own).
    for spec in names::vision_tensors(&VisionTower::Resnet(c.clone())) {
        let short = spec
            .name
            .strip_prefix(&format!("{}.", names::VISION))
            .expect("vision tensors are under vision.");
        out.insert(
            spec.name.clone(),
            src.take(&format!("visual.{short}"), &spec.shape)?,
        );
    }
    // BatchNorm's step counters are training state.
    let counters: Vec<String> = src
        .tensors
        .keys()
        .filter(|k| k.starts_with("visual.") && k.ends_with("num_batches_tracked"))
        .cloned()
        .collect();
    src.used.extend(counters);
    out.insert(
        path(&[names::VISION_PROJ, WEIGHT]),
        Tensor::eye(embed_dim, DType::F32, &Device::Cpu)?,
    );
    out.insert(path(&[names::VISION_PROJ, BIAS]), zeros(embed_dim)?);
    Ok(c)
}

/// open_clip's own `VisionTransformer` (`visual.*`) onto our ViT.
fn open_clip_vit(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    cfg_path: &Path,
    vision_cfg: &serde_json::Value,
    embed_dim: usize,
    act: HiddenAct,
) -> Result<VitConfig> {
    refuse_set(
        cfg_path,
        "vision_cfg",
        vision_cfg,
        &[
            "attentional_pool",
            "global_average_pool",
            "no_ln_pre",
            "ls_init_value",
            "output_tokens",
        ],
    )?;
    str_option(
        cfg_path,
        "vision_cfg",
        vision_cfg,
        "pool_type",
        "tok",
        &["tok"],
    )?;
    let h = usize_or(vision_cfg, "width", 768);
    let head_width = usize_or(vision_cfg, "head_width", 64);
    let c = VitConfig {
        image_size: usize_or(vision_cfg, "image_size", 224),
        patch_size: usize_or(vision_cfg, "patch_size", 16),
        hidden_size: h,
        num_layers: usize_or(vision_cfg, "layers", 12),
        num_heads: h / head_width.max(1),
        mlp_dim: mlp_width(vision_cfg, h),
        layer_norm_eps: 1e-5,
        patch_bias: false,
        pre_norm: true,
        activation: act,
    };
    let v = names::VISION;
    out.insert(
        path(&[v, vit::CONV_PROJ, WEIGHT]),
        src.take("visual.conv1.weight", &[h, 3, c.patch_size, c.patch_size])?,
    );
    out.insert(
        path(&[v, vit::CLASS_TOKEN]),
        src.take("visual.class_embedding", &[1, 1, h])?,
    );
    out.insert(
        path(&[v, vit::POS_EMBEDDING]),
        src.take("visual.positional_embedding", &[1, c.seq_len(), h])?,
    );
    norm(src, out, "visual.ln_pre", &path(&[v, vit::LN_PRE]), h)?;
    let n = open_clip_blocks(src, out, "visual.", v, h, c.mlp_dim)?;
    layers_match(cfg_path, "vision_cfg", c.num_layers, n)?;
    norm(src, out, "visual.ln_post", &path(&[v, vit::FINAL_LN]), h)?;
    out.insert(
        path(&[names::VISION_PROJ, WEIGHT]),
        src.take_t("visual.proj", h, embed_dim)?,
    );
    out.insert(path(&[names::VISION_PROJ, BIAS]), zeros(embed_dim)?);
    Ok(c)
}

/// open_clip's `TextTransformer` (top-level names) onto our CLIP text tower.
#[allow(clippy::too_many_arguments)]
fn open_clip_text(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    cfg_path: &Path,
    text_cfg: &serde_json::Value,
    embed_dim: usize,
    act: HiddenAct,
    eos: u32,
) -> Result<ClipTextConfig> {
    refuse_set(
        cfg_path,
        "text_cfg",
        text_cfg,
        &[
            "no_causal_mask",
            "embed_cls",
            "ls_init_value",
            "output_tokens",
        ],
    )?;
    str_option(
        cfg_path,
        "text_cfg",
        text_cfg,
        "pool_type",
        "argmax",
        &["argmax", "eos"],
    )?;
    let h = usize_or(text_cfg, "width", 512);
    let c = ClipTextConfig {
        vocab_size: usize_or(text_cfg, "vocab_size", 49408),
        hidden_size: h,
        num_layers: usize_or(text_cfg, "layers", 12),
        num_heads: usize_or(text_cfg, "heads", 8),
        intermediate_size: mlp_width(text_cfg, h),
        max_position_embeddings: usize_or(text_cfg, "context_length", 77),
        layer_norm_eps: 1e-5,
        activation: act,
        eos_token_id: eos,
    };
    // open_clip pools at the argmax of the ids: the end-of-text token only while it is the
    // largest id of the vocabulary.
    if eos as usize + 1 != c.vocab_size {
        return Err(Error::InvalidConfig(format!(
            "{}: the tokenizer's end-of-text id {eos} is not the vocabulary's last ({}), so \
             open_clip's argmax pooling would not pick it",
            cfg_path.display(),
            c.vocab_size - 1
        )));
    }
    let t = names::TEXT;
    out.insert(
        path(&[t, clip_text::TOKEN_EMBEDDING, WEIGHT]),
        src.take("token_embedding.weight", &[c.vocab_size, h])?,
    );
    out.insert(
        path(&[t, clip_text::POSITIONAL]),
        src.take("positional_embedding", &[c.max_position_embeddings, h])?,
    );
    let n = open_clip_blocks(src, out, "", t, h, c.intermediate_size)?;
    layers_match(cfg_path, "text_cfg", c.num_layers, n)?;
    norm(src, out, "ln_final", &path(&[t, clip_text::FINAL_LN]), h)?;
    // A Linear (proj_bias or proj_type linear) or a bare [width, embed] parameter.
    if src.has("text_projection.weight") {
        out.insert(
            path(&[names::TEXT_PROJ, WEIGHT]),
            src.take("text_projection.weight", &[embed_dim, h])?,
        );
        let bias = if src.has("text_projection.bias") {
            src.take("text_projection.bias", &[embed_dim])?
        } else {
            zeros(embed_dim)?
        };
        out.insert(path(&[names::TEXT_PROJ, BIAS]), bias);
    } else {
        out.insert(
            path(&[names::TEXT_PROJ, WEIGHT]),
            src.take_t("text_projection", h, embed_dim)?,
        );
        out.insert(path(&[names::TEXT_PROJ, BIAS]), zeros(embed_dim)?);
    }
    Ok(c)
}

/// A Hugging Face `BertModel` under `tp` onto our BERT text tower: its config from
/// `--text-config`, else read off the tensors (heads: hidden / 64). Returns the config and where it
/// came from, for the provenance.
fn hf_bert(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    opts: &ClipImportOptions,
    tp: &str,
) -> Result<(BertConfig, serde_json::Value)> {
    let renamed: HashMap<String, String> = src
        .tensors
        .keys()
        .filter_map(|k| {
            let short = k.strip_prefix(tp)?;
            crate::import::hf_bert_name(short).map(|ours| (ours, k.clone()))
        })
        .collect();
    let dims = |ours: &str| -> Result<Vec<usize>> {
        let theirs = renamed.get(ours).ok_or_else(|| Error::MissingTensor {
            path: src.file.clone(),
            name: format!("{tp}{ours}"),
            expected: Vec::new(),
        })?;
        src.dims(theirs)
    };
    let (bert, source) = match &opts.text_config {
        Some(p) => {
            let bert: BertConfig =
                serde_json::from_value(read_json(p)?).map_err(|source| Error::Json {
                    path: p.clone(),
                    source,
                })?;
            (bert, json!({"config": p.display().to_string()}))
        }
        None => {
            let word = dims("embeddings.word_embeddings.weight")?;
            let h = word[1];
            let bert = BertConfig {
                vocab_size: word[0],
                hidden_size: h,
                num_hidden_layers: (0..)
                    .take_while(|i| {
                        renamed.contains_key(&format!("encoder.layer.{i}.output.dense.weight"))
                    })
                    .count(),
                num_attention_heads: (h / 64).max(1),
                intermediate_size: dims("encoder.layer.0.intermediate.dense.weight")?[0],
                max_position_embeddings: dims("embeddings.position_embeddings.weight")?[0],
                type_vocab_size: dims("embeddings.token_type_embeddings.weight")?[0],
                layer_norm_eps: 1e-12,
                hidden_act: HiddenAct::Gelu,
            };
            (
                bert,
                json!({"config": "inferred from the tensors; heads = hidden / 64"}),
            )
        }
    };
    for spec in names::bert_tensors(&bert) {
        let ours = spec
            .name
            .strip_prefix(&format!("{}.", names::TEXT))
            .expect("BERT tensors are under text.");
        let theirs = renamed
            .get(ours)
            .cloned()
            .unwrap_or_else(|| format!("{tp}{ours}"));
        out.insert(spec.name.clone(), src.take(&theirs, &spec.shape)?);
    }
    // The BERT pooler is not used by these poolers; position ids are a buffer.
    src.ignore(&format!("{tp}pooler."));
    Ok((bert, source))
}

/// open_clip's `HFTextEncoder` over a BERT model (`text.transformer.*`, `text.proj*`).
fn open_clip_hf_text(
    src: &mut Source,
    out: &mut HashMap<String, Tensor>,
    opts: &ClipImportOptions,
    cfg_path: &Path,
    text_cfg: &serde_json::Value,
    embed_dim: usize,
) -> Result<(TextTower, TextProjection, serde_json::Value)> {
    let pooling = match field(text_cfg, "hf_pooler_type").and_then(|v| v.as_str()) {
        Some("cls_last_hidden_state_pooler") | Some("cls_pooler") => TextPooling::Cls,
        Some("mean_pooler") => TextPooling::Mean,
        other => {
            return Err(Error::InvalidConfig(format!(
                "{}: text_cfg.hf_pooler_type {other:?} is not supported \
                 (cls_last_hidden_state_pooler, mean_pooler)",
                cfg_path.display()
            )))
        }
    };
    let (bert, source) = hf_bert(src, out, opts, "text.transformer.")?;
    let h = bert.hidden_size;
    let proj = match field(text_cfg, "hf_proj_type").and_then(|v| v.as_str()) {
        Some("mlp") => {
            let hidden = src.dims("text.proj.0.weight")?[0];
            let p = |leaf: &str| path(&[names::TEXT_PROJ, leaf]);
            out.insert(
                path(&[&p(names::MLP_HEAD_IN), WEIGHT]),
                src.take("text.proj.0.weight", &[hidden, h])?,
            );
            out.insert(path(&[&p(names::MLP_HEAD_IN), BIAS]), zeros(hidden)?);
            out.insert(
                path(&[&p(names::MLP_HEAD_OUT), WEIGHT]),
                src.take("text.proj.2.weight", &[embed_dim, hidden])?,
            );
            out.insert(path(&[&p(names::MLP_HEAD_OUT), BIAS]), zeros(embed_dim)?);
            TextProjection::Mlp { hidden }
        }
        Some("linear") => {
            out.insert(
                path(&[names::TEXT_PROJ, WEIGHT]),
                src.take("text.proj.weight", &[embed_dim, h])?,
            );
            out.insert(path(&[names::TEXT_PROJ, BIAS]), zeros(embed_dim)?);
            TextProjection::Linear
        }
        other => {
            return Err(Error::InvalidConfig(format!(
                "{}: text_cfg.hf_proj_type {other:?} is not supported (mlp, linear)",
                cfg_path.display()
            )))
        }
    };
    Ok((TextTower::Bert { bert, pooling }, proj, source))
}

/// Builds a bundle in `out` from an open_clip checkpoint directory.
pub fn import_open_clip(opts: &ClipImportOptions, out: &Path) -> Result<Bundle> {
    let dir = &opts.dir;
    let cfg_path = dir.join("open_clip_config.json");
    let cfg = read_json(&cfg_path)?;
    let model_cfg = field(&cfg, "model_cfg").unwrap_or(&cfg);
    let embed_dim = field(model_cfg, "embed_dim")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "{}: model_cfg.embed_dim is missing",
                cfg_path.display()
            ))
        })? as usize;
    let empty = json!({});
    let vision_cfg = field(model_cfg, "vision_cfg").unwrap_or(&empty);
    let text_cfg = field(model_cfg, "text_cfg").unwrap_or(&empty);
    let act = if field(model_cfg, "quick_gelu").and_then(|v| v.as_bool()) == Some(true) {
        HiddenAct::QuickGelu
    } else {
        HiddenAct::Gelu
    };
    let hf_text = field(text_cfg, "hf_model_name").is_some();
    let tokenizer_json = resolve_tokenizer(opts, !hf_text)?;

    let (file, tensors) = load_open_clip_checkpoint(dir)?;
    let mut src = Source {
        file,
        tensors,
        used: Default::default(),
    };
    if src.has("logit_bias") {
        return Err(Error::InvalidConfig(format!(
            "{}: logit_bias: SigLIP's sigmoid loss is not supported",
            src.file.display()
        )));
    }
    let mut w = HashMap::new();
    let vision = if field(vision_cfg, "timm_model_name").is_some() {
        VisionTower::Vit(timm_vit(
            &mut src, &mut w, &cfg_path, vision_cfg, embed_dim,
        )?)
    } else if field(vision_cfg, "layers").is_some_and(serde_json::Value::is_array) {
        VisionTower::Resnet(open_clip_resnet(
            &mut src, &mut w, &cfg_path, vision_cfg, embed_dim,
        )?)
    } else {
        VisionTower::Vit(open_clip_vit(
            &mut src, &mut w, &cfg_path, vision_cfg, embed_dim, act,
        )?)
    };
    let (text, text_projection, text_source, max_length) = if hf_text {
        let (tower, proj, source) =
            open_clip_hf_text(&mut src, &mut w, opts, &cfg_path, text_cfg, embed_dim)?;
        let limit = usize_or(text_cfg, "context_length", 77).min(tower.max_positions());
        (tower, proj, source, limit)
    } else {
        let tok = tokenizers::Tokenizer::from_bytes(&tokenizer_json)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let eos = tok.token_to_id(crate::clip_tokenizer::EOT).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "the tokenizer has no {} token for CLIP's text tower to pool at",
                crate::clip_tokenizer::EOT
            ))
        })?;
        let clip = open_clip_text(&mut src, &mut w, &cfg_path, text_cfg, embed_dim, act, eos)?;
        let limit = clip.max_position_embeddings;
        (
            TextTower::Clip { clip },
            TextProjection::Linear,
            json!({"kind": "open_clip"}),
            limit,
        )
    };
    let ln_scale = src.take("logit_scale", &[])?;
    w.insert(names::LOGIT_SCALE.to_owned(), ln_scale.clone());
    if let Some(extra) = src.leftover() {
        return Err(Error::InvalidConfig(format!(
            "{}: tensor `{extra}` has no place in the layout open_clip_config.json describes",
            src.file.display()
        )));
    }
    let pre = field(&cfg, "preprocess_cfg").unwrap_or(&empty);
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
        match field(pre, key) {
            None => Ok(default),
            Some(v) => serde_json::from_value(v.clone()).map_err(|source| Error::Json {
                path: cfg_path.clone(),
                source,
            }),
        }
    };
    let interpolation = match field(pre, "interpolation").and_then(|v| v.as_str()) {
        None | Some("bicubic") => Interpolation::Bicubic,
        Some("bilinear") => Interpolation::Bilinear,
        Some(other) => {
            return Err(Error::InvalidConfig(format!(
                "{}: preprocess_cfg.interpolation {other:?} is not supported",
                cfg_path.display()
            )))
        }
    };
    let resize = match field(pre, "resize_mode").and_then(|v| v.as_str()) {
        None | Some("shortest") => ResizeMode::ShorterSideCenterCrop,
        Some("squash") => ResizeMode::Squash,
        Some(other) => {
            return Err(Error::InvalidConfig(format!(
                "{}: preprocess_cfg.resize_mode {other:?} is not supported",
                cfg_path.display()
            )))
        }
    };
    let preprocess = ImagePreprocess {
        image_size: vision.image_size(),
        mean: triple("mean", CLIP_MEAN)?,
        std: triple("std", CLIP_STD)?,
        channels: 3,
        interpolation,
        resize,
    };
    let config = BundleConfig::new(
        opts.model_id.clone(),
        Architecture {
            embed_dim,
            text,
            text_projection,
            query_text: None,
            vision,
        },
        ln_scale.to_scalar::<f32>()?.exp(),
        preprocess,
        TokenizerSettings {
            max_length,
            lowercase: false,
            query_max_length: None,
            attend_padding: false,
        },
        json!({
            "created_by": "mirage model import",
            "layout": if hf_text { "open_clip-hf-text" } else { "open_clip" },
            "source": dir.display().to_string(),
            "weights": src.file.file_name().map(|f| f.to_string_lossy().into_owned()),
            "text": text_source,
            "trained": false,
        }),
    );
    write_imported(out, config, &w, &tokenizer_json)
}

/// Builds a bundle in `out` from PMC-CLIP's released `checkpoint.pt` (a training checkpoint:
/// the model under `state_dict`, with DataParallel's `module.` prefix). Its image tower is
/// open_clip's ModifiedResNet (`visual.*`, the attention pool projecting to the joint space); its
/// text tower a Hugging Face BERT (`text_encoder.*`, PubMedBERT) whose `[CLS]` output goes through
/// the bare `text_projection` (`x @ W`). PMC-CLIP runs that BERT on texts padded to 77 tokens with
/// no attention mask, so the bundle pads to 77 and attends to the padding
/// ([`TokenizerSettings::attend_padding`]). The shapes are read off the tensors; the fusion module
/// and masked-language head its training used are left out. The checkpoint ships no tokenizer:
/// `--tokenizer` gives PubMedBERT's `tokenizer.json` (and `--text-config` its `config.json`);
/// either may instead sit beside `checkpoint.pt`.
pub fn import_pmc_clip(opts: &ClipImportOptions, out: &Path) -> Result<Bundle> {
    let file = opts.dir.join(PMC_CLIP_CHECKPOINT);
    let tokenizer_json = resolve_tokenizer(opts, false)?;
    let mut src = Source {
        tensors: load_pickle(&file)?,
        file: file.clone(),
        used: Default::default(),
    };
    // The vision config open_clip would have written, from the shapes: stage depths, stem
    // width, and the input side from the attention pool's positions ((side / 32)² + 1).
    let depth = |stage: usize| src.count(|i| format!("visual.layer{stage}.{i}.conv1.weight"));
    let layers: Vec<usize> = (1..=4).map(depth).collect();
    let width = src.dims("visual.conv3.weight")?[0];
    let positions = src.dims("visual.attnpool.positional_embedding")?[0];
    let grid = ((positions.saturating_sub(1)) as f64).sqrt().round() as usize;
    let embed_dim = src.dims("visual.attnpool.c_proj.weight")?[0];
    let vision_cfg = json!({"layers": layers, "width": width, "image_size": grid * 32});
    let mut w = HashMap::new();
    let vision = VisionTower::Resnet(open_clip_resnet(
        &mut src,
        &mut w,
        &file,
        &vision_cfg,
        embed_dim,
    )?);
    // PubMedBERT's config.json beside the checkpoint serves when --text-config is not given.
    let beside = opts.dir.join("config.json");
    let opts = &ClipImportOptions {
        text_config: opts
            .text_config
            .clone()
            .or_else(|| beside.is_file().then_some(beside)),
        ..opts.clone()
    };
    let (bert, text_source) = hf_bert(&mut src, &mut w, opts, "text_encoder.")?;
    w.insert(
        path(&[names::TEXT_PROJ, WEIGHT]),
        src.take_t("text_projection", bert.hidden_size, embed_dim)?,
    );
    w.insert(path(&[names::TEXT_PROJ, BIAS]), zeros(embed_dim)?);
    let ln_scale = src.take("logit_scale", &[])?;
    w.insert(names::LOGIT_SCALE.to_owned(), ln_scale.clone());
    // Training-only parts: the image-text fusion transformer and the masked-language head
    // (with their own positions, final norm and image token); no embedding passes through them.
    for unused in [
        "fusion_module.",
        "mlm_projection",
        "img_special_token",
        "positional_embedding",
        "ln_final.",
    ] {
        src.ignore(unused);
    }
    if let Some(extra) = src.leftover() {
        return Err(Error::InvalidConfig(format!(
            "{}: tensor `{extra}` has no place in the PMC-CLIP layout",
            file.display()
        )));
    }
    let max_length = PMC_CLIP_CONTEXT.min(bert.max_position_embeddings);
    let image_size = vision.image_size();
    let config = BundleConfig::new(
        opts.model_id.clone(),
        Architecture {
            embed_dim,
            text: TextTower::Bert {
                bert,
                pooling: TextPooling::Cls,
            },
            text_projection: TextProjection::Linear,
            query_text: None,
            vision,
        },
        ln_scale.to_scalar::<f32>()?.exp(),
        ImagePreprocess {
            image_size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            channels: 3,
            interpolation: Interpolation::Bicubic,
            resize: ResizeMode::ShorterSideCenterCrop,
        },
        TokenizerSettings {
            max_length,
            lowercase: false,
            query_max_length: None,
            attend_padding: true,
        },
        json!({
            "created_by": "mirage model import",
            "layout": "pmc-clip",
            "source": opts.dir.display().to_string(),
            "weights": PMC_CLIP_CHECKPOINT,
            "text": text_source,
            "trained": false,
        }),
    );
    write_imported(out, config, &w, &tokenizer_json)
}

/// Imports whatever supported layout `opts.dir` holds.
///
/// # Errors
///
/// A BERT directory (use [`crate::import::import_hf`]), an unknown layout, or any import error.
pub fn import(opts: &ClipImportOptions, out: &Path) -> Result<Bundle> {
    match detect(&opts.dir)? {
        Layout::HfClip => import_hf_clip(opts, out),
        Layout::OpenClip => import_open_clip(opts, out),
        Layout::PmcClip => import_pmc_clip(opts, out),
        Layout::HfBert => Err(Error::InvalidConfig(format!(
            "{} is a Hugging Face BERT model (a text tower only): import it with `mirage model \
             import-hf --text {}`",
            opts.dir.display(),
            opts.dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_options_outside_what_is_implemented_are_refused_by_name() {
        let p = Path::new("open_clip_config.json");
        let v = json!({"pool_type": "avg", "timm_pool": null, "mlp_ratio": 2.0});
        let err = str_option(p, "vision_cfg", &v, "pool_type", "tok", &["tok"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("open_clip_config.json: vision_cfg.pool_type \"avg\" is not supported"),
            "{err}"
        );
        // Unset (or null) takes the default, which is checked like a set value.
        assert_eq!(
            str_option(p, "vision_cfg", &v, "timm_pool", "", &["", "token"]).unwrap(),
            ""
        );
        assert!(str_option(p, "vision_cfg", &v, "timm_proj", "mlp", &["linear"]).is_err());
        assert_eq!(mlp_width(&v, 16), 32);
        assert_eq!(mlp_width(&json!({}), 16), 64);
        layers_match(p, "text_cfg", 12, 12).unwrap();
        let err = layers_match(p, "text_cfg", 12, 2).unwrap_err().to_string();
        assert!(
            err.contains("text_cfg.layers is 12, the weights have 2 resblocks"),
            "{err}"
        );
    }
}
