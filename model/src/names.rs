//! The tensor-name scheme of `model.safetensors`, defined once. The candle towers load exactly
//! these names, the trainer writes exactly these names, and bundle validation checks every one of
//! them (name and shape) before anything is loaded, so a bad file fails with the tensor named.
//!
//! - `text.*`: Hugging Face `BertModel` names without the `bert.` prefix;
//! - `vision.*`: torchvision names (`ResNet` trunk + CLIP `attnpool.*`, or `VisionTransformer`);
//! - `text_proj.{weight,bias}`, `vision_proj.{weight,bias}`: linear projections to `embed_dim`;
//! - `logit_scale`: a scalar holding ln σ (as in CLIP / open_clip).

use crate::config::{
    Architecture, BertConfig, ResNetConfig, VisionPooling, VisionTower, VitConfig,
};

/// Prefix of the text tower.
pub const TEXT: &str = "text";
/// Prefix of the vision tower.
pub const VISION: &str = "vision";
/// Text projection.
pub const TEXT_PROJ: &str = "text_proj";
/// Vision projection.
pub const VISION_PROJ: &str = "vision_proj";
/// Scalar ln σ.
pub const LOGIT_SCALE: &str = "logit_scale";
/// Tensor name of the exported memory bank in `text_bank.safetensors`.
pub const TEXT_BANK: &str = "bank";

/// How a tensor is initialised when it is created from a seed rather than loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// N(0, std²).
    Normal(f32),
    /// Kaiming normal, fan-out, ReLU gain (torchvision's ResNet convolutions).
    KaimingFanOut,
    /// Identity matrix (a projection that changes nothing); zero-padded when not square.
    Identity,
    /// A constant.
    Constant(f32),
}

/// One tensor of the scheme.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Full name in `model.safetensors`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Initialisation when created from a seed.
    pub init: Init,
}

struct Specs {
    prefix: String,
    out: Vec<TensorSpec>,
}

impl Specs {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            out: Vec::new(),
        }
    }
    fn push(&mut self, name: &str, shape: &[usize], init: Init) {
        let name = if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        };
        self.out.push(TensorSpec {
            name,
            shape: shape.to_vec(),
            init,
        });
    }
    fn linear(&mut self, name: &str, out_dim: usize, in_dim: usize, std: f32) {
        self.push(
            &format!("{name}.weight"),
            &[out_dim, in_dim],
            Init::Normal(std),
        );
        self.push(&format!("{name}.bias"), &[out_dim], Init::Zeros);
    }
    fn layer_norm(&mut self, name: &str, dim: usize) {
        self.push(&format!("{name}.weight"), &[dim], Init::Ones);
        self.push(&format!("{name}.bias"), &[dim], Init::Zeros);
    }
    fn batch_norm(&mut self, name: &str, dim: usize, zero_gamma: bool) {
        let gamma = if zero_gamma { Init::Zeros } else { Init::Ones };
        self.push(&format!("{name}.weight"), &[dim], gamma);
        self.push(&format!("{name}.bias"), &[dim], Init::Zeros);
        self.push(&format!("{name}.running_mean"), &[dim], Init::Zeros);
        self.push(&format!("{name}.running_var"), &[dim], Init::Ones);
    }
    fn conv(&mut self, name: &str, out_c: usize, in_c: usize, k: usize) {
        self.push(
            &format!("{name}.weight"),
            &[out_c, in_c, k, k],
            Init::KaimingFanOut,
        );
    }
}

/// Tensors of the BERT text tower, under `text.`.
pub fn text_tensors(c: &BertConfig) -> Vec<TensorSpec> {
    let h = c.hidden_size;
    let mut s = Specs::new(TEXT);
    s.push(
        "embeddings.word_embeddings.weight",
        &[c.vocab_size, h],
        Init::Normal(0.02),
    );
    s.push(
        "embeddings.position_embeddings.weight",
        &[c.max_position_embeddings, h],
        Init::Normal(0.02),
    );
    s.push(
        "embeddings.token_type_embeddings.weight",
        &[c.type_vocab_size, h],
        Init::Normal(0.02),
    );
    s.layer_norm("embeddings.LayerNorm", h);
    for i in 0..c.num_hidden_layers {
        let l = format!("encoder.layer.{i}");
        for p in ["query", "key", "value"] {
            s.linear(&format!("{l}.attention.self.{p}"), h, h, 0.02);
        }
        s.linear(&format!("{l}.attention.output.dense"), h, h, 0.02);
        s.layer_norm(&format!("{l}.attention.output.LayerNorm"), h);
        s.linear(
            &format!("{l}.intermediate.dense"),
            c.intermediate_size,
            h,
            0.02,
        );
        s.linear(&format!("{l}.output.dense"), h, c.intermediate_size, 0.02);
        s.layer_norm(&format!("{l}.output.LayerNorm"), h);
    }
    s.out
}

fn resnet_tensors(c: &ResNetConfig, s: &mut Specs) {
    let expansion = if c.bottleneck { 4 } else { 1 };
    s.conv("conv1", c.width, 3, 7);
    s.batch_norm("bn1", c.width, false);
    let mut in_c = c.width;
    for (stage, &blocks) in c.layers.iter().enumerate() {
        let planes = c.width << stage;
        let stride = if stage == 0 { 1 } else { 2 };
        for b in 0..blocks {
            let p = format!("layer{}.{b}", stage + 1);
            if c.bottleneck {
                s.conv(&format!("{p}.conv1"), planes, in_c, 1);
                s.batch_norm(&format!("{p}.bn1"), planes, false);
                s.conv(&format!("{p}.conv2"), planes, planes, 3);
                s.batch_norm(&format!("{p}.bn2"), planes, false);
                s.conv(&format!("{p}.conv3"), planes * expansion, planes, 1);
                s.batch_norm(&format!("{p}.bn3"), planes * expansion, false);
            } else {
                s.conv(&format!("{p}.conv1"), planes, in_c, 3);
                s.batch_norm(&format!("{p}.bn1"), planes, false);
                s.conv(&format!("{p}.conv2"), planes, planes, 3);
                s.batch_norm(&format!("{p}.bn2"), planes, false);
            }
            if b == 0 && (stride != 1 || in_c != planes * expansion) {
                s.conv(&format!("{p}.downsample.0"), planes * expansion, in_c, 1);
                s.batch_norm(&format!("{p}.downsample.1"), planes * expansion, false);
            }
            in_c = planes * expansion;
        }
    }
    if c.pooling == VisionPooling::Attention {
        let d = c.feature_dim();
        let tokens = c.grid() * c.grid() + 1;
        let std = (d as f32).powf(-0.5);
        s.push(
            "attnpool.positional_embedding",
            &[tokens, d],
            Init::Normal(std),
        );
        for p in ["q_proj", "k_proj", "v_proj", "c_proj"] {
            s.linear(&format!("attnpool.{p}"), d, d, std);
        }
    }
}

fn vit_tensors(c: &VitConfig, s: &mut Specs) {
    let h = c.hidden_size;
    let fan_in = 3 * c.patch_size * c.patch_size;
    s.push(
        "conv_proj.weight",
        &[h, 3, c.patch_size, c.patch_size],
        Init::Normal((1.0 / fan_in as f32).sqrt()),
    );
    s.push("conv_proj.bias", &[h], Init::Zeros);
    s.push("class_token", &[1, 1, h], Init::Zeros);
    s.push(
        "encoder.pos_embedding",
        &[1, c.seq_len(), h],
        Init::Normal(0.02),
    );
    for i in 0..c.num_layers {
        let l = format!("encoder.layers.encoder_layer_{i}");
        s.layer_norm(&format!("{l}.ln_1"), h);
        let xavier = (6.0 / (4 * h) as f32).sqrt() / 3f32.sqrt();
        s.push(
            &format!("{l}.self_attention.in_proj_weight"),
            &[3 * h, h],
            Init::Normal(xavier),
        );
        s.push(
            &format!("{l}.self_attention.in_proj_bias"),
            &[3 * h],
            Init::Zeros,
        );
        s.linear(
            &format!("{l}.self_attention.out_proj"),
            h,
            h,
            (h as f32).powf(-0.5),
        );
        s.layer_norm(&format!("{l}.ln_2"), h);
        s.linear(&format!("{l}.mlp.0"), c.mlp_dim, h, 0.02);
        s.linear(&format!("{l}.mlp.3"), h, c.mlp_dim, 0.02);
    }
    s.layer_norm("encoder.ln", h);
}

/// Tensors of the vision tower, under `vision.`.
pub fn vision_tensors(v: &VisionTower) -> Vec<TensorSpec> {
    let mut s = Specs::new(VISION);
    match v {
        VisionTower::Resnet(c) => resnet_tensors(c, &mut s),
        VisionTower::Vit(c) => vit_tensors(c, &mut s),
    }
    s.out
}

/// The two projections and the logit scale, with METHOD.md §2.6's initialisation.
pub fn head_tensors(a: &Architecture) -> Vec<TensorSpec> {
    let mut s = Specs::new("");
    let th = a.text.bert.hidden_size;
    let vf = a.vision.feature_dim();
    s.linear(TEXT_PROJ, a.embed_dim, th, (th as f32).powf(-0.5));
    s.linear(VISION_PROJ, a.embed_dim, vf, (vf as f32).powf(-0.5));
    s.push(LOGIT_SCALE, &[], Init::Constant((1.0f32 / 0.07).ln()));
    s.out
}

/// Every tensor of `model.safetensors` for this architecture, in a stable order.
pub fn model_tensors(a: &Architecture) -> Vec<TensorSpec> {
    let mut all = text_tensors(&a.text.bert);
    all.extend(vision_tensors(&a.vision));
    all.extend(head_tensors(a));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet50_has_torchvision_parameter_count() {
        // torchvision resnet50 without fc: 23,508,032 parameters (+ BN buffers excluded here).
        let c = ResNetConfig::standard(50, VisionPooling::Mean).unwrap();
        let specs = vision_tensors(&VisionTower::Resnet(c));
        let params: usize = specs
            .iter()
            .filter(|t| !t.name.ends_with("running_mean") && !t.name.ends_with("running_var"))
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        assert_eq!(params, 23_508_032);
        assert!(specs
            .iter()
            .any(|t| t.name == "vision.layer4.2.bn3.running_var"));
        assert!(specs
            .iter()
            .any(|t| t.name == "vision.layer2.0.downsample.0.weight"));
    }

    #[test]
    fn resnet18_has_torchvision_parameter_count() {
        // torchvision resnet18 without fc: 11,176,512 parameters.
        let c = ResNetConfig::standard(18, VisionPooling::Mean).unwrap();
        let params: usize = vision_tensors(&VisionTower::Resnet(c))
            .iter()
            .filter(|t| !t.name.contains("running_"))
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        assert_eq!(params, 11_176_512);
    }

    #[test]
    fn vit_b16_has_torchvision_parameter_count() {
        // torchvision vit_b_16 without the head: 85,798,656 parameters.
        let params: usize = vision_tensors(&VisionTower::Vit(VitConfig::b16()))
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        assert_eq!(params, 85_798_656);
    }
}
