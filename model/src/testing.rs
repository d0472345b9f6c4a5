//! Tiny, seeded bundles for tests of this and downstream crates (server, index, end-to-end): the
//! production writer and loader run on them, so they exercise the real code paths in milliseconds.

use std::path::Path;

use candle_core::Device;
use serde_json::json;

use crate::bundle::{write_bundle, Bundle, BundleContents, TextBank};
use crate::config::{
    Architecture, BertConfig, BundleConfig, ClipTextConfig, HiddenAct, ImagePreprocess,
    ResNetConfig, TextPooling, TextProjection, TextTower, TokenizerSettings, VisionPooling,
    VisionTower, VitConfig,
};
use crate::init::random_tensors;
use crate::names;
use crate::Result;

/// A 123-token WordPiece tokenizer (medical words and single characters) with BERT's special tokens.
pub const TINY_TOKENIZER_JSON: &[u8] = include_bytes!("../tests/fixtures/tiny_tokenizer.json");

/// `model`'s embeddings of a [B, 3, S, S] pixel tensor, one `Vec` per image (reference inputs
/// are kept as tensors).
pub fn embed_pixel_tensor(
    model: &crate::MirageModel,
    pixels: &candle_core::Tensor,
) -> Result<Vec<Vec<f32>>> {
    let b = pixels.dim(0)?;
    let flat = pixels.flatten_all()?.to_vec1::<f32>()?;
    Ok(model.embed_pixel_batch(&flat, b)?.to_rows())
}

/// The directory of the package under test: the `CARGO_MANIFEST_DIR` cargo and nextest set when
/// they run a test, else `compiled` (the caller's `env!("CARGO_MANIFEST_DIR")`). A test binary
/// may be reused from a checkout at another path (one shared target dir), so the path baked in
/// at compile time can point at a checkout that is gone.
pub fn package_dir(compiled: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| compiled.into(), std::path::PathBuf::from)
}

/// A test that cannot run here (`why`: what is missing and how to get it) fails under CI (`CI`
/// set: CI provides everything, so a skip there would hide a missing install step) and prints
/// that it skips elsewhere. The one skip-or-fail rule of every crate's tests; the caller returns
/// after it.
pub fn skip_or_fail(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why} (CI must not skip this test)"
    );
    eprintln!("skipped: {why}");
}

/// Which tiny vision tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyVision {
    /// Bottleneck ResNet, width 4, one block per stage, attention pooling, 64 px.
    ResNetAttention,
    /// Basic-block ResNet, width 4, mean pooling, 64 px.
    ResNetMean,
    /// ViT, 16 px patches, width 32, 2 layers, 64 px.
    Vit,
    /// The CLIP layout: CLIP's ViT (`ln_pre`, no patch bias, QuickGELU) as [`TinyVision::Vit`],
    /// and CLIP's causal text transformer (2 blocks, width 16) in place of BERT, ending at the
    /// tiny tokenizer's `[SEP]`.
    Clip,
    /// OpenAI CLIP's RN50 layout: CLIP's ModifiedResNet (width 4, one block per stage, attention
    /// pool projecting to 24) with CLIP's text transformer, as [`TinyVision::Clip`].
    ClipResNet,
    /// The BiomedCLIP layout: [`TinyVision::Vit`] (timm's ViT is torchvision's), BERT with
    /// `[CLS]` pooling and an MLP text projection (hidden width 12).
    BiomedClip,
    /// The PMC-CLIP layout: [`TinyVision::ClipResNet`]'s ModifiedResNet, BERT with `[CLS]`
    /// pooling reading every text padded to the limit without a mask
    /// ([`TokenizerSettings::attend_padding`]).
    PmcClip,
}

impl TinyVision {
    /// Every layout, for tests that cover them all.
    pub const ALL: [TinyVision; 7] = [
        TinyVision::ResNetAttention,
        TinyVision::ResNetMean,
        TinyVision::Vit,
        TinyVision::Clip,
        TinyVision::BiomedClip,
        TinyVision::ClipResNet,
        TinyVision::PmcClip,
    ];
}

/// A torchvision ResNet with one block per stage, width 4, 2 attention heads, 64 px.
pub fn tiny_resnet(bottleneck: bool, pooling: VisionPooling) -> ResNetConfig {
    ResNetConfig {
        layers: [1, 1, 1, 1],
        bottleneck,
        width: 4,
        pooling,
        attention_heads: 2,
        image_size: 64,
        modified: false,
        attention_output_dim: None,
    }
}

/// A one-layer ViT of width 8 on 32 px images: the vision tower of text-tower import tests.
pub fn tiny_vit() -> VitConfig {
    VitConfig {
        image_size: 32,
        patch_size: 16,
        hidden_size: 8,
        num_layers: 1,
        num_heads: 2,
        mlp_dim: 8,
        ..VitConfig::b16()
    }
}

/// The configuration of a tiny bundle (files are filled in when written).
pub fn tiny_config(vision: TinyVision, embed_dim: usize) -> BundleConfig {
    let vision_tower = match vision {
        TinyVision::ResNetAttention => {
            VisionTower::Resnet(tiny_resnet(true, VisionPooling::Attention))
        }
        TinyVision::ResNetMean => VisionTower::Resnet(tiny_resnet(false, VisionPooling::Mean)),
        TinyVision::ClipResNet | TinyVision::PmcClip => VisionTower::Resnet(ResNetConfig {
            modified: true,
            attention_output_dim: Some(24),
            ..tiny_resnet(true, VisionPooling::Attention)
        }),
        TinyVision::Vit | TinyVision::BiomedClip => VisionTower::Vit(VitConfig {
            image_size: 64,
            patch_size: 16,
            hidden_size: 32,
            num_layers: 2,
            num_heads: 2,
            mlp_dim: 64,
            layer_norm_eps: 1e-6,
            patch_bias: true,
            pre_norm: false,
            activation: HiddenAct::Gelu,
        }),
        TinyVision::Clip => VisionTower::Vit(VitConfig {
            image_size: 64,
            patch_size: 16,
            hidden_size: 32,
            num_layers: 2,
            num_heads: 2,
            mlp_dim: 64,
            layer_norm_eps: 1e-5,
            patch_bias: false,
            pre_norm: true,
            activation: HiddenAct::QuickGelu,
        }),
    };
    let text = if matches!(vision, TinyVision::Clip | TinyVision::ClipResNet) {
        TextTower::Clip {
            clip: ClipTextConfig {
                vocab_size: 123,
                hidden_size: 16,
                num_layers: 2,
                num_heads: 2,
                intermediate_size: 32,
                max_position_embeddings: 64,
                layer_norm_eps: 1e-5,
                activation: HiddenAct::QuickGelu,
                eos_token_id: 3,
            },
        }
    } else {
        TextTower::Bert {
            bert: BertConfig {
                vocab_size: 123,
                hidden_size: 16,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                intermediate_size: 32,
                max_position_embeddings: 64,
                type_vocab_size: 2,
                layer_norm_eps: 1e-12,
                hidden_act: HiddenAct::Gelu,
            },
            pooling: if matches!(vision, TinyVision::BiomedClip | TinyVision::PmcClip) {
                TextPooling::Cls
            } else {
                TextPooling::Mean
            },
        }
    };
    let text_projection = if vision == TinyVision::BiomedClip {
        TextProjection::Mlp { hidden: 12 }
    } else {
        TextProjection::Linear
    };
    BundleConfig::new(
        format!("tiny-{vision:?}").to_lowercase(),
        Architecture {
            embed_dim,
            text,
            text_projection,
            query_text: None,
            vision: vision_tower,
        },
        (1.0f32 / 0.07).ln().exp(),
        ImagePreprocess::clip(64),
        TokenizerSettings {
            max_length: 32,
            lowercase: true,
            query_max_length: None,
            attend_padding: vision == TinyVision::PmcClip,
        },
        json!({"created_by": "mirage_model::testing::write_tiny_bundle"}),
    )
}

fn write_tiny(
    dir: &Path,
    vision: TinyVision,
    embed_dim: usize,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    text_bank: Option<&TextBank>,
) -> Result<Bundle> {
    write_bundle(
        dir,
        BundleContents {
            config: tiny_config(vision, embed_dim),
            tensors,
            tokenizer_json: TINY_TOKENIZER_JSON,
            text_bank,
        },
    )
}

fn tiny_tensors(
    vision: TinyVision,
    embed_dim: usize,
    seed: u64,
) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
    let config = tiny_config(vision, embed_dim);
    random_tensors(
        &names::model_tensors(&config.architecture),
        seed,
        &Device::Cpu,
    )
}

/// Writes a tiny bundle with weights drawn from `seed`.
pub fn write_tiny_bundle(
    dir: &Path,
    vision: TinyVision,
    embed_dim: usize,
    seed: u64,
) -> Result<Bundle> {
    let tensors = tiny_tensors(vision, embed_dim, seed)?;
    write_tiny(dir, vision, embed_dim, &tensors, None)
}

/// Writes a tiny bundle (weights from `seed`) whose exported text bank holds the model's own
/// embeddings of `captions`, as `mirage-train export` writes it, for audit tests.
pub fn write_tiny_bundle_with_bank(
    dir: &Path,
    vision: TinyVision,
    embed_dim: usize,
    seed: u64,
    captions: &[&str],
) -> Result<Bundle> {
    // The bank needs the model's embeddings, so the bundle is written once without it.
    let tensors = tiny_tensors(vision, embed_dim, seed)?;
    write_tiny(dir, vision, embed_dim, &tensors, None)?;
    let model = crate::MirageModel::open_cpu(dir)?;
    let bank = TextBank {
        embeddings: model.embed_text_batch(captions)?,
        captions: captions.iter().map(|c| (*c).to_owned()).collect(),
    };
    write_tiny(dir, vision, embed_dim, &tensors, Some(&bank))
}

/// Writes a Hugging Face-style BERT directory (`config.json`, `model.safetensors` with `bert.`
/// names plus the pooler and position ids that the importer must skip, `tokenizer.json`) holding
/// the tiny text tower, for importer tests.
pub fn write_tiny_hf_dir(dir: &Path, seed: u64) -> Result<()> {
    use std::collections::HashMap;
    let config = tiny_config(TinyVision::ResNetMean, 16);
    let TextTower::Bert { bert, .. } = &config.architecture.text else {
        unreachable!("the tiny ResNet bundle has a BERT text tower")
    };
    let io = |p: &Path, e: std::io::Error| crate::Error::Io {
        path: p.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut hf: HashMap<String, candle_core::Tensor> =
        random_tensors(&names::bert_tensors(bert), seed, &Device::Cpu)?
            .into_iter()
            .map(|(k, v)| (format!("bert.{}", k.trim_start_matches("text.")), v))
            .collect();
    hf.insert(
        "bert.pooler.dense.weight".into(),
        candle_core::Tensor::zeros((16, 16), candle_core::DType::F32, &Device::Cpu)?,
    );
    hf.insert(
        "bert.embeddings.position_ids".into(),
        candle_core::Tensor::arange(0i64, 64, &Device::Cpu)?.unsqueeze(0)?,
    );
    let st = dir.join("model.safetensors");
    candle_core::safetensors::save(&hf, &st)?;
    let mut cfg = serde_json::to_value(bert).expect("config serialises — this is a bug");
    cfg["model_type"] = json!("bert");
    cfg["architectures"] = json!(["BertModel"]);
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json"))
        .map_err(|e| io(&cfg_path, e))?;
    let tok = dir.join("tokenizer.json");
    std::fs::write(&tok, TINY_TOKENIZER_JSON).map_err(|e| io(&tok, e))?;
    Ok(())
}

/// Writes a Hugging Face-style `BertForSequenceClassification` directory (one label) over the
/// tiny text tower with a seeded random pooler and classifier, for reranker tests that need no
/// reference data.
pub fn write_tiny_cross_encoder_dir(dir: &Path, seed: u64) -> Result<()> {
    write_tiny_hf_dir(dir, seed)?;
    let st = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&st, &Device::Cpu)?;
    let spec = |name: &str, shape: &[usize], init: names::Init| names::TensorSpec {
        name: name.to_owned(),
        shape: shape.to_vec(),
        init,
    };
    let head = [
        spec(
            "bert.pooler.dense.weight",
            &[16, 16],
            names::Init::Normal(0.5),
        ),
        spec("bert.pooler.dense.bias", &[16], names::Init::Zeros),
        spec("classifier.weight", &[1, 16], names::Init::Normal(2.0)),
        spec("classifier.bias", &[1], names::Init::Zeros),
    ];
    tensors.extend(random_tensors(&head, seed.wrapping_add(1), &Device::Cpu)?);
    candle_core::safetensors::save(&tensors, &st)?;
    let cfg_path = dir.join("config.json");
    let io = |e: std::io::Error| crate::Error::Io {
        path: cfg_path.clone(),
        source: e,
    };
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).map_err(io)?).expect("json");
    cfg["architectures"] = json!(["BertForSequenceClassification"]);
    cfg["id2label"] = json!({"0": "LABEL_0"});
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json")).map_err(io)?;
    Ok(())
}
