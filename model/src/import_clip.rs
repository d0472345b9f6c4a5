//! `mirage model import`: a bundle from a CLIP-family checkpoint directory. Supported layout:
//! Hugging Face `CLIPModel` (`config.json` with `model_type: "clip"`, weights as
//! `model.safetensors`, sharded safetensors with `model.safetensors.index.json`, or a PyTorch
//! `pytorch_model.bin`, and `tokenizer.json`). Every tensor of the checkpoint is mapped onto the
//! bundle's scheme (`names.rs`) or refused by name; nothing is initialised at random except the
//! zero biases of CLIP's bias-free projections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::json;

use crate::bundle::{write_bundle, Bundle, BundleContents};
use crate::config::{
    Architecture, BundleConfig, ClipTextConfig, HiddenAct, ImagePreprocess, Interpolation,
    ResizeMode, TextTower, TokenizerSettings, VisionTower, VitConfig, CLIP_MEAN, CLIP_STD,
    FORMAT_VERSION,
};
use crate::import::{load_safetensors, read_json};
use crate::names::{self, block, clip_text, path, vit, BIAS, WEIGHT};
use crate::{Error, Result};

/// What to import.
#[derive(Debug, Clone)]
pub struct ClipImportOptions {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Model id written to the bundle.
    pub model_id: String,
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
}

/// Which layout `dir` holds.
///
/// # Errors
///
/// [`Error::InvalidConfig`] naming what was found when no layout fits.
pub fn detect(dir: &Path) -> Result<Layout> {
    if dir.join("open_clip_config.json").is_file() {
        return Ok(Layout::OpenClip);
    }
    let cfg_path = dir.join("config.json");
    if !cfg_path.is_file() {
        return Err(Error::InvalidConfig(format!(
            "{}: neither config.json (Hugging Face) nor open_clip_config.json (open_clip) — not \
             a checkpoint directory this importer knows",
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

// Defaults are transformers' CLIPTextConfig / CLIPVisionConfig defaults, which `config.json`
// files written by older releases omit.
#[derive(Deserialize)]
struct HfTextConfig {
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    #[serde(default = "d_512")]
    hidden_size: usize,
    #[serde(default = "d_2048")]
    intermediate_size: usize,
    #[serde(default = "d_12")]
    num_hidden_layers: usize,
    #[serde(default = "d_8")]
    num_attention_heads: usize,
    #[serde(default = "d_77")]
    max_position_embeddings: usize,
    #[serde(default = "d_act")]
    hidden_act: HiddenAct,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
    #[serde(default = "d_eos")]
    eos_token_id: u32,
}

#[derive(Deserialize)]
struct HfVisionConfig {
    #[serde(default = "d_768")]
    hidden_size: usize,
    #[serde(default = "d_3072")]
    intermediate_size: usize,
    #[serde(default = "d_12")]
    num_hidden_layers: usize,
    #[serde(default = "d_12")]
    num_attention_heads: usize,
    #[serde(default = "d_224")]
    image_size: usize,
    #[serde(default = "d_32")]
    patch_size: usize,
    #[serde(default = "d_act")]
    hidden_act: HiddenAct,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
    #[serde(default = "d_3")]
    num_channels: usize,
}

fn d_vocab() -> usize {
    49408
}
fn d_512() -> usize {
    512
}
fn d_2048() -> usize {
    2048
}
fn d_12() -> usize {
    12
}
fn d_8() -> usize {
    8
}
fn d_77() -> usize {
    77
}
fn d_768() -> usize {
    768
}
fn d_3072() -> usize {
    3072
}
fn d_224() -> usize {
    224
}
fn d_32() -> usize {
    32
}
fn d_3() -> usize {
    3
}
fn d_act() -> HiddenAct {
    HiddenAct::QuickGelu
}
fn d_eps() -> f64 {
    1e-5
}
fn d_eos() -> u32 {
    2
}

/// The `preprocessor_config.json` fields of `CLIPImageProcessor` that shape pixels.
#[derive(Deserialize, Default)]
struct HfPreprocessor {
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    resample: Option<u32>,
    do_center_crop: Option<bool>,
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
        let tensors = candle_core::pickle::read_all(&bin).map_err(|e| Error::Safetensors {
            path: bin.clone(),
            reason: format!("not a PyTorch state dict candle can read: {e}"),
        })?;
        return Ok((bin, tensors.into_iter().collect()));
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
        let pairs: [(&str, &[&str], [usize; 2]); 5] = [
            (
                "self_attn.out_proj",
                &[block::SELF_ATTENTION, block::OUT_PROJ],
                [h, h],
            ),
            ("layer_norm1", &[block::LN_1], [h, 0]),
            ("layer_norm2", &[block::LN_2], [h, 0]),
            ("mlp.fc1", &[block::MLP_IN], [mlp, h]),
            ("mlp.fc2", &[block::MLP_OUT], [h, mlp]),
        ];
        for (theirs, mine, [o, i_]) in pairs {
            let wshape: Vec<usize> = if i_ == 0 { vec![o] } else { vec![o, i_] };
            let mut leaf = mine.to_vec();
            leaf.push(WEIGHT);
            out.insert(
                to(&leaf),
                src.take(&from(&format!("{theirs}.weight")), &wshape)?,
            );
            leaf.pop();
            leaf.push(BIAS);
            out.insert(to(&leaf), src.take(&from(&format!("{theirs}.bias")), &[o])?);
        }
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
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer_json =
        std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
    let tokenizer = tokenizers::Tokenizer::from_bytes(&tokenizer_json)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
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
        w.insert(
            path(&[ours, BIAS]),
            Tensor::zeros(d, DType::F32, &Device::Cpu)?,
        );
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
    let config = BundleConfig {
        format_version: FORMAT_VERSION,
        model_id: opts.model_id.clone(),
        files: Default::default(),
        architecture: arch,
        logit_scale: ln_scale.to_scalar::<f32>()?.exp(),
        preprocess,
        tokenizer: TokenizerSettings {
            max_length: t.max_position_embeddings,
            lowercase: false,
        },
        prompt_templates: None,
        calibration: None,
        model_sha256: None,
        matching: None,
        onnx: None,
        provenance: json!({
            "created_by": "mirage model import",
            "layout": "hf-clip",
            "source": dir.display().to_string(),
            "weights": src.file.file_name().map(|f| f.to_string_lossy().into_owned()),
            "trained": false,
        }),
    };
    write_bundle(
        out,
        BundleContents {
            config,
            tensors: &w,
            tokenizer_json: &tokenizer_json,
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
