//! `bundle.json`: the contract between the trainer, the importer and every consumer of a bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The bundle format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// File names inside a bundle directory.
pub const BUNDLE_JSON: &str = "bundle.json";
/// Weights of both towers, the projections and the logit scale.
pub const MODEL_SAFETENSORS: &str = "model.safetensors";
/// Hugging Face tokenizers file.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
/// Optional exported memory bank (tensor `bank`, K×D unit rows).
pub const TEXT_BANK_SAFETENSORS: &str = "text_bank.safetensors";
/// Captions of the memory bank, one JSON string per line, in bank order.
pub const TEXT_BANK_JSONL: &str = "text_bank.jsonl";

/// CLIP's image normalisation, used by MIRAGE (docs/METHOD.md §2.6).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's image normalisation standard deviations.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The whole of `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// Must equal [`FORMAT_VERSION`].
    pub format_version: u32,
    /// A stable name for the model (recorded in indexes and in every API response).
    pub model_id: String,
    /// sha256 (hex) of every other file of the bundle, by file name.
    pub files: BTreeMap<String, String>,
    /// Tower shapes; determines every tensor name and shape.
    pub architecture: Architecture,
    /// Multiplicative logit scale σ = exp(`logit_scale` tensor) used for zero-shot softmax.
    pub logit_scale: f32,
    /// How images become tensors.
    pub preprocess: ImagePreprocess,
    /// How text becomes token ids.
    pub tokenizer: TokenizerSettings,
    /// Prompt templates for zero-shot; the built-in medical set when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_templates: Option<PromptTemplates>,
    /// Temperature fitted on held-out data, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// The model's identity when `bundle.json` was rewritten without touching the weights (a
    /// fitted calibration): the sha256 of the `bundle.json` they were first written with, so
    /// collections built with the raw bundle accept the calibrated one (the vectors are the
    /// same). Absent, the identity is the sha256 of this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// How the matching score s is computed against the exported text bank (docs/METHOD.md §2.2);
    /// the training initial value σ_q = 1/0.07 with a soft NN when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<Matching>,
    /// ONNX graphs of both towers (`text.onnx`, `vision.onnx`, listed in `files` with their
    /// sha256) for the ONNX Runtime engine; absent, the engine builds them from the weights at
    /// load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxGraphs>,
    /// Where the weights came from: training data, loss configuration, epochs, commit, metrics,
    /// or the import sources. Free-form JSON so the trainer can add fields without a format bump.
    #[serde(default)]
    pub provenance: serde_json::Value,
}

/// Both towers and the joint embedding size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Dimension of the joint (projected, L2-normalised) embedding space.
    pub embed_dim: usize,
    /// Text tower.
    pub text: TextTower,
    /// How the pooled text feature reaches the joint space (a linear layer unless stated).
    #[serde(default, skip_serializing_if = "TextProjection::is_linear")]
    pub text_projection: TextProjection,
    /// A second text tower for queries (asymmetric retrievers such as MedCPT: a query encoder
    /// beside the document encoder `text`), with its own linear projection `query_text_proj`.
    /// Searches embed their text with it; indexing, zero-shot prompts and document embeddings
    /// use `text`. Absent, one tower serves both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_text: Option<TextTower>,
    /// Vision tower.
    pub vision: VisionTower,
}

/// The text tower: a BERT-family encoder with pooling (MIRAGE, `import-hf`, MedCPT) or CLIP's
/// causal text transformer (OpenAI CLIP, open_clip, Hugging Face `CLIPModel`).
///
/// In `bundle.json` a BERT tower is `{"bert": {…}, "pooling": …}` (the form every earlier bundle
/// has) and a CLIP tower is `{"clip": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TextTower {
    /// BERT encoder.
    Bert {
        /// Hugging Face BERT configuration (the fields that shape the weights).
        bert: BertConfig,
        /// How token states become one vector.
        pooling: TextPooling,
    },
    /// CLIP text transformer.
    Clip {
        /// Its shape.
        clip: ClipTextConfig,
    },
}

impl<'de> Deserialize<'de> for TextTower {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // Chosen by key rather than `untagged`, so a bad field is reported by name instead of
        // "matched no variant".
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Bert {
            bert: BertConfig,
            pooling: TextPooling,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Clip {
            clip: ClipTextConfig,
        }
        let v = serde_json::Value::deserialize(d)?;
        if v.get("clip").is_some() {
            let c: Clip = serde_json::from_value(v).map_err(serde::de::Error::custom)?;
            Ok(Self::Clip { clip: c.clip })
        } else {
            let b: Bert = serde_json::from_value(v).map_err(serde::de::Error::custom)?;
            Ok(Self::Bert {
                bert: b.bert,
                pooling: b.pooling,
            })
        }
    }
}

impl TextTower {
    /// Width of the pooled text feature, the input of `text_proj`.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Bert { bert, .. } => bert.hidden_size,
            Self::Clip { clip } => clip.hidden_size,
        }
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bert { bert, .. } => bert.vocab_size,
            Self::Clip { clip } => clip.vocab_size,
        }
    }

    /// Longest token sequence the position table covers.
    pub fn max_positions(&self) -> usize {
        match self {
            Self::Bert { bert, .. } => bert.max_position_embeddings,
            Self::Clip { clip } => clip.max_position_embeddings,
        }
    }

    /// Transformer layers.
    pub fn num_layers(&self) -> usize {
        match self {
            Self::Bert { bert, .. } => bert.num_hidden_layers,
            Self::Clip { clip } => clip.num_layers,
        }
    }

    /// Attention heads per layer.
    pub fn num_heads(&self) -> usize {
        match self {
            Self::Bert { bert, .. } => bert.num_attention_heads,
            Self::Clip { clip } => clip.num_heads,
        }
    }

    /// A short human-readable name (`bert-l6-h384`, `clip-l12-h512`).
    pub fn describe(&self) -> String {
        let kind = match self {
            Self::Bert { .. } => "bert",
            Self::Clip { .. } => "clip",
        };
        format!("{kind}-l{}-h{}", self.num_layers(), self.hidden_size())
    }
}

/// CLIP's text transformer (OpenAI CLIP `model.py`, Hugging Face `CLIPTextModel`): token and
/// learned position embeddings, pre-norm blocks under a causal mask, a final norm, and the state
/// of the end-of-text token as the pooled feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width H.
    pub hidden_size: usize,
    /// Blocks.
    pub num_layers: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Context length (77 for CLIP).
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_clip_eps")]
    pub layer_norm_eps: f64,
    /// MLP activation (CLIP: QuickGELU).
    #[serde(default = "quick_gelu")]
    pub activation: HiddenAct,
    /// The end-of-text token: the feature is the state at its first occurrence (CLIP takes the
    /// argmax of the ids, which is the same token, as end-of-text has the largest id).
    pub eos_token_id: u32,
}

fn default_clip_eps() -> f64 {
    1e-5
}
fn quick_gelu() -> HiddenAct {
    HiddenAct::QuickGelu
}

/// The text projection head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TextProjection {
    /// One linear layer `text_proj` (MIRAGE, CLIP).
    #[default]
    Linear,
    /// Linear → exact GELU → linear (`text_proj.0`, `text_proj.2`): open_clip's `mlp` head of
    /// Hugging Face text towers (BiomedCLIP).
    Mlp {
        /// Width of the hidden layer.
        hidden: usize,
    },
}

impl TextProjection {
    /// Whether this is the single linear layer.
    pub fn is_linear(&self) -> bool {
        *self == Self::Linear
    }
}

/// The fields of a Hugging Face `config.json` for `BertModel` that the encoder needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size H.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (H must be divisible by it).
    pub num_attention_heads: usize,
    /// Feed-forward inner size.
    pub intermediate_size: usize,
    /// Longest sequence the position table covers.
    pub max_position_embeddings: usize,
    /// Token type vocabulary (segment ids).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_bert_eps")]
    pub layer_norm_eps: f64,
    /// Feed-forward activation.
    #[serde(default)]
    pub hidden_act: HiddenAct,
}

fn default_type_vocab() -> usize {
    2
}
fn default_bert_eps() -> f64 {
    1e-12
}

/// Feed-forward activation of the BERT layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// Exact (erf) GELU, Hugging Face `gelu`.
    #[default]
    Gelu,
    /// tanh-approximated GELU, Hugging Face `gelu_new` / `gelu_pytorch_tanh`.
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    /// ReLU.
    Relu,
    /// CLIP's `x·sigmoid(1.702·x)`, Hugging Face `quick_gelu`.
    QuickGelu,
}

/// Text pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPooling {
    /// Attention-mask-weighted mean of the last hidden states (MIRAGE, sentence-transformers).
    #[default]
    Mean,
    /// The hidden state of the first (`[CLS]`) token.
    Cls,
}

/// Vision tower variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VisionTower {
    /// torchvision ResNet trunk with attention or mean pooling.
    Resnet(ResNetConfig),
    /// torchvision `VisionTransformer` (ViT-B/16 style, any size).
    Vit(VitConfig),
}

/// ResNet trunk shape. [`ResNetConfig::standard`] gives the torchvision depths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// Blocks per stage (4 stages), e.g. `[3, 4, 6, 3]` for ResNet-50.
    pub layers: [usize; 4],
    /// Bottleneck blocks (ResNet-50/101) or basic blocks (ResNet-18/34).
    pub bottleneck: bool,
    /// Channels of the stem and of the first stage's 3×3 convolutions (64 in torchvision).
    pub width: usize,
    /// How the final feature map becomes one vector.
    pub pooling: VisionPooling,
    /// Heads of the attention pool (ignored for mean pooling).
    #[serde(default = "default_attention_heads")]
    pub attention_heads: usize,
    /// Input side length the attention pool's positional embedding is sized for.
    pub image_size: usize,
    /// CLIP's ModifiedResNet (OpenAI RN50, PMC-CLIP): a stem of three 3×3 convolutions and a
    /// 2×2 average pool instead of the 7×7 convolution and max pool, and anti-aliased
    /// downsampling (a strided block average-pools before its last convolution and in its
    /// shortcut instead of striding a convolution). Bottleneck blocks only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub modified: bool,
    /// Output width of the attention pool's `c_proj` (CLIP maps straight to the joint space
    /// there); the trunk width when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_output_dim: Option<usize>,
}

fn default_attention_heads() -> usize {
    8
}

/// Pooling at the top of the ResNet trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionPooling {
    /// CLIP `AttentionPool2d` (docs/METHOD.md §2.6): mean token attends over the grid.
    Attention,
    /// Global average pooling.
    Mean,
}

impl ResNetConfig {
    /// torchvision ResNet-18/34/50/101 at 224 px with the given pooling.
    pub fn standard(depth: u32, pooling: VisionPooling) -> Result<Self> {
        let (layers, bottleneck) = match depth {
            18 => ([2, 2, 2, 2], false),
            34 => ([3, 4, 6, 3], false),
            50 => ([3, 4, 6, 3], true),
            101 => ([3, 4, 23, 3], true),
            other => {
                return Err(Error::InvalidConfig(format!(
                    "resnet depth {other} is not one of 18, 34, 50, 101"
                )))
            }
        };
        Ok(Self {
            layers,
            bottleneck,
            width: 64,
            pooling,
            attention_heads: 8,
            image_size: 224,
            modified: false,
            attention_output_dim: None,
        })
    }

    /// Channels of the trunk's last feature map (2048 for ResNet-50).
    pub fn trunk_dim(&self) -> usize {
        self.width * 8 * if self.bottleneck { 4 } else { 1 }
    }

    /// Width of the pooled feature: the attention pool's output width, else the trunk's.
    pub fn feature_dim(&self) -> usize {
        match (self.pooling, self.attention_output_dim) {
            (VisionPooling::Attention, Some(d)) => d,
            _ => self.trunk_dim(),
        }
    }

    /// Side of the last feature map for an input of `image_size` (stride 32).
    pub fn grid(&self) -> usize {
        self.image_size.div_ceil(32)
    }
}

/// torchvision `VisionTransformer` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// Input side length (must be a multiple of `patch_size`).
    pub image_size: usize,
    /// Patch side length.
    pub patch_size: usize,
    /// Width of the token embeddings.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP inner size.
    pub mlp_dim: usize,
    /// LayerNorm epsilon (torchvision uses 1e-6, CLIP 1e-5).
    #[serde(default = "default_vit_eps")]
    pub layer_norm_eps: f64,
    /// The patch convolution has a bias (torchvision, timm); CLIP's has none.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub patch_bias: bool,
    /// A LayerNorm (`ln_pre`) after the position embeddings, before the first block (CLIP).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pre_norm: bool,
    /// MLP activation (torchvision, timm: exact GELU; OpenAI CLIP: QuickGELU).
    #[serde(default, skip_serializing_if = "is_gelu")]
    pub activation: HiddenAct,
}

fn default_vit_eps() -> f64 {
    1e-6
}
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_gelu(a: &HiddenAct) -> bool {
    *a == HiddenAct::Gelu
}

impl VitConfig {
    /// ViT-B/16 at 224 px.
    pub fn b16() -> Self {
        Self {
            image_size: 224,
            patch_size: 16,
            hidden_size: 768,
            num_layers: 12,
            num_heads: 12,
            mlp_dim: 3072,
            layer_norm_eps: 1e-6,
            patch_bias: true,
            pre_norm: false,
            activation: HiddenAct::Gelu,
        }
    }

    /// Number of tokens including the class token.
    pub fn seq_len(&self) -> usize {
        let g = self.image_size / self.patch_size;
        g * g + 1
    }
}

impl VisionTower {
    /// Width of the pooled vision feature, the input of `vision_proj`.
    pub fn feature_dim(&self) -> usize {
        match self {
            VisionTower::Resnet(c) => c.feature_dim(),
            VisionTower::Vit(c) => c.hidden_size,
        }
    }

    /// Input side length the tower is built for.
    pub fn image_size(&self) -> usize {
        match self {
            VisionTower::Resnet(c) => c.image_size,
            VisionTower::Vit(c) => c.image_size,
        }
    }

    /// A short human-readable name (`resnet50`, `vit-b16`, …).
    pub fn describe(&self) -> String {
        match self {
            VisionTower::Resnet(c) => {
                let blocks: usize = c.layers.iter().sum();
                let depth = 2 + blocks * if c.bottleneck { 3 } else { 2 };
                let kind = if c.modified { "clip-resnet" } else { "resnet" };
                format!("{kind}{depth}-w{}-{:?}", c.width, c.pooling).to_lowercase()
            }
            VisionTower::Vit(c) => {
                format!("vit-p{}-h{}-l{}", c.patch_size, c.hidden_size, c.num_layers)
            }
        }
    }
}

/// Image preprocessing recorded in the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePreprocess {
    /// Output side length (square).
    pub image_size: usize,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
    /// Channels fed to the tower; grayscale inputs are replicated. Only 3 is supported.
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Resampling filter.
    #[serde(default)]
    pub interpolation: Interpolation,
    /// How the aspect ratio is handled.
    #[serde(default)]
    pub resize: ResizeMode,
}

fn default_channels() -> usize {
    3
}

impl ImagePreprocess {
    /// MIRAGE's evaluation transform: squash to `size`×`size`, bilinear, CLIP mean/std.
    pub fn clip(size: usize) -> Self {
        Self {
            image_size: size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            channels: 3,
            interpolation: Interpolation::Bilinear,
            resize: ResizeMode::Squash,
        }
    }
}

/// Resampling filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle filter, antialiased when shrinking).
    #[default]
    Bilinear,
    /// Bicubic (Catmull-Rom).
    Bicubic,
}

/// Aspect-ratio policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Resize both sides to `image_size` (torchvision `Resize((s, s))`, MIRAGE's choice).
    #[default]
    Squash,
    /// Resize the shorter side to `image_size`, then centre-crop (CLIP's choice).
    ShorterSideCenterCrop,
}

/// Tokenizer settings layered over `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSettings {
    /// Truncation length in tokens, special tokens included.
    pub max_length: usize,
    /// Lower-case text before tokenising (harmless when the tokenizer's normaliser already does).
    #[serde(default)]
    pub lowercase: bool,
    /// Truncation length of queries for the query tower (`max_length` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_max_length: Option<usize>,
    /// Pad every text to `max_length` and let the text tower attend to the padding, as models
    /// trained that way need (PMC-CLIP runs its BERT on texts padded to 77 tokens without an
    /// attention mask, so its embeddings depend on the padding).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attend_padding: bool,
}

/// Zero-shot prompt templates; `{}` stands for the label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplates {
    /// Templates describing an image that shows the label.
    pub positive: Vec<String>,
    /// Templates describing an image that does not (multi-label mode).
    pub negative: Vec<String>,
}

impl PromptTemplates {
    /// These templates with the caller's lists in place of any that are given.
    pub fn with_overrides(
        self,
        positive: Option<Vec<String>>,
        negative: Option<Vec<String>>,
    ) -> Self {
        Self {
            positive: positive.unwrap_or(self.positive),
            negative: negative.unwrap_or(self.negative),
        }
    }

    /// Every problem with these templates (empty lists, a template without `{}`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.positive.is_empty() || self.negative.is_empty() {
            problems.push(
                "prompt templates need at least one positive and one negative template".into(),
            );
        }
        for tpl in self.positive.iter().chain(&self.negative) {
            if !tpl.contains("{}") {
                problems.push(format!(
                    "prompt template {tpl:?} has no {{}} placeholder for the label"
                ));
            }
        }
        problems
    }
}

/// The ONNX graphs a bundle carries and the interface each one must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxGraphs {
    /// Standard operator-set version both graphs import.
    pub opset: i64,
    /// sha256 of `bundle.json` as it was without ONNX graphs: the model's identity, which
    /// indexes record, stays the same when graphs are added to a bundle.
    pub model_sha256: String,
    /// The text tower's graph.
    pub text: OnnxGraphSpec,
    /// The vision tower's graph.
    pub vision: OnnxGraphSpec,
}

/// One ONNX file and its inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxGraphSpec {
    /// File name inside the bundle.
    pub file: String,
    /// Graph inputs, in order.
    pub inputs: Vec<OnnxValueSpec>,
    /// Graph outputs, in order.
    pub outputs: Vec<OnnxValueSpec>,
}

/// A graph input or output: name, element type (`float`, `int64`) and shape, where a string
/// names a dynamic axis (`batch`, `sequence`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxValueSpec {
    /// Value name.
    pub name: String,
    /// Element type.
    pub dtype: String,
    /// Shape: numbers for fixed axes, names for dynamic ones.
    pub shape: Vec<OnnxDim>,
}

/// One axis of an [`OnnxValueSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OnnxDim {
    /// A fixed size.
    Fixed(i64),
    /// A named dynamic axis.
    Named(String),
}

/// Temperature scaling fitted on held-out data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Logits are divided by this before the softmax.
    pub temperature: f32,
    /// What it was fitted on.
    #[serde(default)]
    pub fitted_on: String,
}

/// The nearest-neighbour text used for the matching score s, as the model was trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matching {
    /// σ_q, the multiplicative scale of the soft-NN softmax over the bank (exp of θ_q).
    pub nn_scale: f32,
    /// Hard NN (argmax row) instead of the softmax-weighted mean.
    #[serde(default)]
    pub hard: bool,
}

impl Default for Matching {
    fn default() -> Self {
        Self {
            nn_scale: 1.0 / 0.07,
            hard: false,
        }
    }
}

/// What an evaluation or audit changes of a model's [`Matching`] (its variants of docs/METHOD.md
/// §2.2: hard vs soft nearest neighbour, another σ_q); unset parts keep the model's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchingOverride {
    /// Hard (argmax row) or soft nearest neighbour.
    pub hard: Option<bool>,
    /// σ_q, positive and finite.
    pub nn_scale: Option<f32>,
}

impl MatchingOverride {
    /// `base` with the set parts replaced.
    pub fn apply(self, base: Matching) -> Matching {
        Matching {
            nn_scale: self.nn_scale.unwrap_or(base.nn_scale),
            hard: self.hard.unwrap_or(base.hard),
        }
    }

    /// Checks σ_q.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when σ_q is not positive and finite.
    pub fn validate(&self) -> Result<()> {
        match self.nn_scale {
            Some(x) if !(x > 0.0 && x.is_finite()) => Err(Error::InvalidInput(format!(
                "the nearest-neighbour scale σ_q must be positive and finite (got {x})"
            ))),
            _ => Ok(()),
        }
    }
}

impl BundleConfig {
    /// A new model's configuration: no files yet (`write_bundle` lists them), and none of what
    /// later steps add (prompt templates, calibration, the matching score, ONNX graphs).
    pub fn new(
        model_id: String,
        architecture: Architecture,
        logit_scale: f32,
        preprocess: ImagePreprocess,
        tokenizer: TokenizerSettings,
        provenance: serde_json::Value,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            model_id,
            files: Default::default(),
            architecture,
            logit_scale,
            preprocess,
            tokenizer,
            prompt_templates: None,
            calibration: None,
            model_sha256: None,
            matching: None,
            onnx: None,
            provenance,
        }
    }

    /// Checks the configuration for internal consistency, reporting every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let arch = &self.architecture;
        let text = &arch.text;
        if arch.embed_dim == 0 {
            problems.push("architecture.embed_dim must be > 0".to_owned());
        }
        if text.num_heads() == 0 || !text.hidden_size().is_multiple_of(text.num_heads()) {
            problems.push(format!(
                "text hidden_size {} is not divisible by num_attention_heads {}",
                text.hidden_size(),
                text.num_heads()
            ));
        }
        if self.tokenizer.max_length == 0 || self.tokenizer.max_length > text.max_positions() {
            problems.push(format!(
                "tokenizer.max_length {} must be in 1..={} (max_position_embeddings)",
                self.tokenizer.max_length,
                text.max_positions()
            ));
        }
        match (&arch.query_text, self.tokenizer.query_max_length) {
            (Some(q), limit) => {
                if q.num_heads() == 0 || !q.hidden_size().is_multiple_of(q.num_heads()) {
                    problems.push(format!(
                        "query text hidden_size {} is not divisible by num_attention_heads {}",
                        q.hidden_size(),
                        q.num_heads()
                    ));
                }
                let limit = limit.unwrap_or(self.tokenizer.max_length);
                if limit == 0 || limit > q.max_positions() {
                    problems.push(format!(
                        "the query token limit {limit} must be in 1..={} (the query tower's max_position_embeddings)",
                        q.max_positions()
                    ));
                }
            }
            (None, Some(_)) => problems
                .push("tokenizer.query_max_length is set but there is no query_text tower".into()),
            (None, None) => {}
        }
        if self.tokenizer.attend_padding && arch.query_text.is_some() {
            // Queries would be padded to their own limit, which the model never saw.
            problems.push(
                "tokenizer.attend_padding cannot go with a query_text tower (queries would be \
                 padded to another length than the one the model attends to)"
                    .into(),
            );
        }
        match &arch.vision {
            VisionTower::Resnet(c) => {
                if c.width == 0 || c.layers.contains(&0) {
                    problems.push("resnet width and every stage's block count must be > 0".into());
                }
                if c.modified && !(c.bottleneck && c.width % 2 == 0) {
                    problems.push(
                        "a modified (CLIP) resnet needs bottleneck blocks and an even width".into(),
                    );
                }
                if c.pooling == VisionPooling::Attention
                    && (c.attention_heads == 0 || c.trunk_dim() % c.attention_heads != 0)
                {
                    problems.push(format!(
                        "resnet feature dim {} is not divisible by attention_heads {}",
                        c.trunk_dim(),
                        c.attention_heads
                    ));
                }
                if c.image_size % 32 != 0 && c.pooling == VisionPooling::Attention {
                    problems.push(format!(
                        "resnet image_size {} must be a multiple of 32 for attention pooling",
                        c.image_size
                    ));
                }
            }
            VisionTower::Vit(c) => {
                if c.patch_size == 0 || c.image_size % c.patch_size != 0 {
                    problems.push(format!(
                        "vit image_size {} is not a multiple of patch_size {}",
                        c.image_size, c.patch_size
                    ));
                }
                if c.num_heads == 0 || c.hidden_size % c.num_heads != 0 {
                    problems.push(format!(
                        "vit hidden_size {} is not divisible by num_heads {}",
                        c.hidden_size, c.num_heads
                    ));
                }
            }
        }
        if self.preprocess.image_size != arch.vision.image_size() {
            problems.push(format!(
                "preprocess.image_size {} differs from the vision tower's image_size {}",
                self.preprocess.image_size,
                arch.vision.image_size()
            ));
        }
        if self.preprocess.channels != 3 {
            problems.push(format!(
                "preprocess.channels {} is not supported (only 3)",
                self.preprocess.channels
            ));
        }
        if self.preprocess.std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            problems.push("preprocess.std must be positive".into());
        }
        if !(self.logit_scale.is_finite() && self.logit_scale > 0.0) {
            problems.push(format!("logit_scale {} must be positive", self.logit_scale));
        }
        if let Some(c) = &self.calibration {
            if !(c.temperature.is_finite() && c.temperature > 0.0) {
                problems.push(format!(
                    "calibration.temperature {} must be positive",
                    c.temperature
                ));
            }
        }
        if let Some(id) = &self.model_sha256 {
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!("model_sha256 {id:?} is not a sha256 in hex"));
            }
        }
        if let Some(m) = &self.matching {
            if !(m.nn_scale.is_finite() && m.nn_scale > 0.0) {
                problems.push(format!("matching.nn_scale {} must be positive", m.nn_scale));
            }
        }
        if let Some(t) = &self.prompt_templates {
            problems.extend(t.problems());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidConfig(problems.join("; ")))
        }
    }
}

/// A JSON file, with its path in any error.
pub(crate) fn read_json(path: &std::path::Path) -> crate::Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| crate::Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
