//! The tensor-name scheme of `model.safetensors`, defined once. The candle towers load exactly
//! these names, the trainer writes exactly these names, and bundle validation checks every one of
//! them (name and shape) before anything is loaded, so a bad file fails with the tensor named.
//!
//! - `text.*`: Hugging Face `BertModel` names without the `bert.` prefix, or CLIP's text
//!   transformer ([`clip_text`], its blocks named as the ViT's);
//! - `vision.*`: torchvision names (`ResNet` trunk + CLIP `attnpool.*`, or `VisionTransformer`,
//!   with CLIP's `ln_pre` when the configuration has one);
//! - `text_proj.{weight,bias}`, `vision_proj.{weight,bias}`: linear projections to `embed_dim`
//!   (an MLP text head has `text_proj.0.*` and `text_proj.2.*` instead);
//! - `query_text.*`, `query_text_proj.*`: an asymmetric bundle's query tower, named as `text.*`;
//! - `logit_scale`: a scalar holding ln σ (as in CLIP / open_clip).

use crate::config::{
    Architecture, BertConfig, ClipTextConfig, ResNetConfig, TextProjection, TextTower,
    VisionPooling, VisionTower, VitConfig,
};

/// Prefix of the text tower.
pub const TEXT: &str = "text";
/// Prefix of the vision tower.
pub const VISION: &str = "vision";
/// Text projection.
pub const TEXT_PROJ: &str = "text_proj";
/// Prefix of the query text tower of an asymmetric bundle (same names as [`TEXT`]'s).
pub const QUERY_TEXT: &str = "query_text";
/// Linear projection of the query text tower.
pub const QUERY_TEXT_PROJ: &str = "query_text_proj";
/// Vision projection.
pub const VISION_PROJ: &str = "vision_proj";
/// The first layer of an MLP text projection (under [`TEXT_PROJ`]).
pub const MLP_HEAD_IN: &str = "0";
/// The second layer of an MLP text projection (under [`TEXT_PROJ`]).
pub const MLP_HEAD_OUT: &str = "2";
/// Scalar ln σ.
pub const LOGIT_SCALE: &str = "logit_scale";
/// Tensor name of the exported memory bank in `text_bank.safetensors`.
pub const TEXT_BANK: &str = "bank";

/// Leaf names of a parameterised layer (PyTorch's).
pub const WEIGHT: &str = "weight";
/// Bias of a linear, norm or convolution.
pub const BIAS: &str = "bias";
/// BatchNorm running mean (a buffer).
pub const RUNNING_MEAN: &str = "running_mean";
/// BatchNorm running variance (a buffer).
pub const RUNNING_VAR: &str = "running_var";

/// `a.b.c` from its parts.
pub fn path(parts: &[&str]) -> String {
    parts.join(".")
}

/// Names inside the BERT tower (Hugging Face `BertModel` without `bert.`), relative to [`TEXT`].
pub mod bert {
    /// The embedding block.
    pub const EMBEDDINGS: &str = "embeddings";
    /// Token embeddings (under [`EMBEDDINGS`]).
    pub const WORD: &str = "word_embeddings";
    /// Position embeddings (under [`EMBEDDINGS`]).
    pub const POSITION: &str = "position_embeddings";
    /// Token-type embeddings (under [`EMBEDDINGS`]).
    pub const TOKEN_TYPE: &str = "token_type_embeddings";
    /// Layer norm of the embeddings and of each sub-block's output.
    pub const LAYER_NORM: &str = "LayerNorm";
    /// Encoder layer `i`.
    pub fn layer(i: usize) -> String {
        format!("encoder.layer.{i}")
    }
    /// Self-attention block of a layer.
    pub const ATTENTION: &str = "attention";
    /// Query/key/value projections (under [`ATTENTION`]).
    pub const SELF: &str = "self";
    /// Query projection (under [`SELF`]).
    pub const QUERY: &str = "query";
    /// Key projection (under [`SELF`]).
    pub const KEY: &str = "key";
    /// Value projection (under [`SELF`]).
    pub const VALUE: &str = "value";
    /// Output of the attention block or of the layer (`dense` + [`LAYER_NORM`]).
    pub const OUTPUT: &str = "output";
    /// Feed-forward up-projection (`intermediate.dense`).
    pub const INTERMEDIATE: &str = "intermediate";
    /// The linear layer of [`OUTPUT`] and [`INTERMEDIATE`].
    pub const DENSE: &str = "dense";
}

/// Names inside a torchvision ResNet trunk with CLIP attention pooling, relative to [`VISION`].
pub mod resnet {
    /// Stem convolution.
    pub const STEM_CONV: &str = "conv1";
    /// Stem BatchNorm.
    pub const STEM_BN: &str = "bn1";
    /// Block `b` (0-based) of stage `stage` (0-based): torchvision's `layer{stage+1}.{b}`.
    pub fn block(stage: usize, b: usize) -> String {
        format!("layer{}.{b}", stage + 1)
    }
    /// Convolution `j` (1-based) of a block.
    pub fn conv(j: usize) -> String {
        format!("conv{j}")
    }
    /// BatchNorm `j` (1-based) of a block.
    pub fn bn(j: usize) -> String {
        format!("bn{j}")
    }
    /// Shortcut convolution of a block's first unit.
    pub const DOWNSAMPLE_CONV: &str = "downsample.0";
    /// Shortcut BatchNorm.
    pub const DOWNSAMPLE_BN: &str = "downsample.1";
    /// CLIP attention pooling.
    pub const ATTNPOOL: &str = "attnpool";
    /// Learned positions of the pooled sequence (under [`ATTNPOOL`]).
    pub const POSITIONAL: &str = "positional_embedding";
    /// Query projection (under [`ATTNPOOL`]).
    pub const Q_PROJ: &str = "q_proj";
    /// Key projection.
    pub const K_PROJ: &str = "k_proj";
    /// Value projection.
    pub const V_PROJ: &str = "v_proj";
    /// Output projection.
    pub const C_PROJ: &str = "c_proj";
}

/// Names of a pre-norm transformer block (torchvision's ViT encoder layer), shared by the ViT
/// and CLIP's text transformer.
pub mod block {
    /// Block `i`.
    pub fn layer(i: usize) -> String {
        format!("encoder.layers.encoder_layer_{i}")
    }
    /// Norm before attention.
    pub const LN_1: &str = "ln_1";
    /// The attention block.
    pub const SELF_ATTENTION: &str = "self_attention";
    /// Packed q/k/v weight (under [`SELF_ATTENTION`]).
    pub const IN_PROJ_WEIGHT: &str = "in_proj_weight";
    /// Packed q/k/v bias.
    pub const IN_PROJ_BIAS: &str = "in_proj_bias";
    /// Attention output projection.
    pub const OUT_PROJ: &str = "out_proj";
    /// Norm before the MLP.
    pub const LN_2: &str = "ln_2";
    /// MLP up-projection.
    pub const MLP_IN: &str = "mlp.0";
    /// MLP down-projection.
    pub const MLP_OUT: &str = "mlp.3";
}

/// Names inside torchvision's `VisionTransformer`, relative to [`VISION`].
pub mod vit {
    pub use super::block::*;
    /// Patch embedding convolution.
    pub const CONV_PROJ: &str = "conv_proj";
    /// The class token.
    pub const CLASS_TOKEN: &str = "class_token";
    /// Learned positions.
    pub const POS_EMBEDDING: &str = "encoder.pos_embedding";
    /// CLIP's norm before the first block.
    pub const LN_PRE: &str = "ln_pre";
    /// Final norm.
    pub const FINAL_LN: &str = "encoder.ln";
}

/// Names inside CLIP's text transformer, relative to [`TEXT`]; its blocks are [`block`]s.
pub mod clip_text {
    pub use super::block::*;
    /// Token embeddings.
    pub const TOKEN_EMBEDDING: &str = "token_embedding";
    /// Learned positions [context, H].
    pub const POSITIONAL: &str = "positional_embedding";
    /// Final norm.
    pub const FINAL_LN: &str = "ln_final";
}

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
            &path(&[name, WEIGHT]),
            &[out_dim, in_dim],
            Init::Normal(std),
        );
        self.push(&path(&[name, BIAS]), &[out_dim], Init::Zeros);
    }
    fn layer_norm(&mut self, name: &str, dim: usize) {
        self.push(&path(&[name, WEIGHT]), &[dim], Init::Ones);
        self.push(&path(&[name, BIAS]), &[dim], Init::Zeros);
    }
    fn batch_norm(&mut self, name: &str, dim: usize, zero_gamma: bool) {
        let gamma = if zero_gamma { Init::Zeros } else { Init::Ones };
        self.push(&path(&[name, WEIGHT]), &[dim], gamma);
        self.push(&path(&[name, BIAS]), &[dim], Init::Zeros);
        self.push(&path(&[name, RUNNING_MEAN]), &[dim], Init::Zeros);
        self.push(&path(&[name, RUNNING_VAR]), &[dim], Init::Ones);
    }
    /// `n` [`block`]s of width `h` and MLP size `mlp`.
    fn pre_norm_blocks(&mut self, n: usize, h: usize, mlp: usize) {
        use block::*;
        for i in 0..n {
            let l = layer(i);
            self.layer_norm(&path(&[&l, LN_1]), h);
            let xavier = (6.0 / (4 * h) as f32).sqrt() / 3f32.sqrt();
            self.push(
                &path(&[&l, SELF_ATTENTION, IN_PROJ_WEIGHT]),
                &[3 * h, h],
                Init::Normal(xavier),
            );
            self.push(
                &path(&[&l, SELF_ATTENTION, IN_PROJ_BIAS]),
                &[3 * h],
                Init::Zeros,
            );
            self.linear(
                &path(&[&l, SELF_ATTENTION, OUT_PROJ]),
                h,
                h,
                (h as f32).powf(-0.5),
            );
            self.layer_norm(&path(&[&l, LN_2]), h);
            self.linear(&path(&[&l, MLP_IN]), mlp, h, 0.02);
            self.linear(&path(&[&l, MLP_OUT]), h, mlp, 0.02);
        }
    }
    fn conv(&mut self, name: &str, out_c: usize, in_c: usize, k: usize) {
        self.push(
            &path(&[name, WEIGHT]),
            &[out_c, in_c, k, k],
            Init::KaimingFanOut,
        );
    }
}

/// Tensors of the text tower, under `text.`.
pub fn text_tensors(t: &TextTower) -> Vec<TensorSpec> {
    tower_tensors(TEXT, t)
}

/// Tensors of a text tower under `root` (`text`, or `query_text` for a query tower).
pub fn tower_tensors(root: &str, t: &TextTower) -> Vec<TensorSpec> {
    match t {
        TextTower::Bert { bert, .. } => bert_tensors_at(root, bert),
        TextTower::Clip { clip } => clip_text_tensors(root, clip),
    }
}

fn clip_text_tensors(root: &str, c: &ClipTextConfig) -> Vec<TensorSpec> {
    use clip_text::*;
    let h = c.hidden_size;
    let mut s = Specs::new(root);
    s.push(
        &path(&[TOKEN_EMBEDDING, WEIGHT]),
        &[c.vocab_size, h],
        Init::Normal(0.02),
    );
    s.push(
        POSITIONAL,
        &[c.max_position_embeddings, h],
        Init::Normal(0.01),
    );
    s.pre_norm_blocks(c.num_layers, h, c.intermediate_size);
    s.layer_norm(FINAL_LN, h);
    s.out
}

/// Tensors of a BERT encoder, under `text.`.
pub fn bert_tensors(c: &BertConfig) -> Vec<TensorSpec> {
    bert_tensors_at(TEXT, c)
}

fn bert_tensors_at(root: &str, c: &BertConfig) -> Vec<TensorSpec> {
    use bert::*;
    let h = c.hidden_size;
    let mut s = Specs::new(root);
    for (table, rows) in [
        (WORD, c.vocab_size),
        (POSITION, c.max_position_embeddings),
        (TOKEN_TYPE, c.type_vocab_size),
    ] {
        s.push(
            &path(&[EMBEDDINGS, table, WEIGHT]),
            &[rows, h],
            Init::Normal(0.02),
        );
    }
    s.layer_norm(&path(&[EMBEDDINGS, LAYER_NORM]), h);
    for i in 0..c.num_hidden_layers {
        let l = layer(i);
        for p in [QUERY, KEY, VALUE] {
            s.linear(&path(&[&l, ATTENTION, SELF, p]), h, h, 0.02);
        }
        s.linear(&path(&[&l, ATTENTION, OUTPUT, DENSE]), h, h, 0.02);
        s.layer_norm(&path(&[&l, ATTENTION, OUTPUT, LAYER_NORM]), h);
        s.linear(
            &path(&[&l, INTERMEDIATE, DENSE]),
            c.intermediate_size,
            h,
            0.02,
        );
        s.linear(&path(&[&l, OUTPUT, DENSE]), h, c.intermediate_size, 0.02);
        s.layer_norm(&path(&[&l, OUTPUT, LAYER_NORM]), h);
    }
    s.out
}

fn resnet_tensors(c: &ResNetConfig, s: &mut Specs) {
    use resnet::*;
    let expansion = if c.bottleneck { 4 } else { 1 };
    if c.modified {
        let half = c.width / 2;
        for (j, (out_c, in_c)) in [(half, 3), (half, half), (c.width, half)]
            .into_iter()
            .enumerate()
        {
            s.conv(&conv(j + 1), out_c, in_c, 3);
            s.batch_norm(&bn(j + 1), out_c, false);
        }
    } else {
        s.conv(STEM_CONV, c.width, 3, 7);
        s.batch_norm(STEM_BN, c.width, false);
    }
    let mut in_c = c.width;
    for (stage, &blocks) in c.layers.iter().enumerate() {
        let planes = c.width << stage;
        let stride = if stage == 0 { 1 } else { 2 };
        for b in 0..blocks {
            let p = block(stage, b);
            // (output channels, input channels, kernel) of each convolution in order.
            let convs: Vec<(usize, usize, usize)> = if c.bottleneck {
                vec![
                    (planes, in_c, 1),
                    (planes, planes, 3),
                    (planes * expansion, planes, 1),
                ]
            } else {
                vec![(planes, in_c, 3), (planes, planes, 3)]
            };
            for (j, (out_c, in_ch, k)) in convs.into_iter().enumerate() {
                s.conv(&path(&[&p, &conv(j + 1)]), out_c, in_ch, k);
                s.batch_norm(&path(&[&p, &bn(j + 1)]), out_c, false);
            }
            if b == 0 && (stride != 1 || in_c != planes * expansion) {
                s.conv(&path(&[&p, DOWNSAMPLE_CONV]), planes * expansion, in_c, 1);
                s.batch_norm(&path(&[&p, DOWNSAMPLE_BN]), planes * expansion, false);
            }
            in_c = planes * expansion;
        }
    }
    if c.pooling == VisionPooling::Attention {
        let d = c.trunk_dim();
        let tokens = c.grid() * c.grid() + 1;
        let std = (d as f32).powf(-0.5);
        s.push(
            &path(&[ATTNPOOL, POSITIONAL]),
            &[tokens, d],
            Init::Normal(std),
        );
        for p in [Q_PROJ, K_PROJ, V_PROJ] {
            s.linear(&path(&[ATTNPOOL, p]), d, d, std);
        }
        s.linear(&path(&[ATTNPOOL, C_PROJ]), c.feature_dim(), d, std);
    }
}

fn vit_tensors(c: &VitConfig, s: &mut Specs) {
    use vit::*;
    let h = c.hidden_size;
    let fan_in = 3 * c.patch_size * c.patch_size;
    s.push(
        &path(&[CONV_PROJ, WEIGHT]),
        &[h, 3, c.patch_size, c.patch_size],
        Init::Normal((1.0 / fan_in as f32).sqrt()),
    );
    if c.patch_bias {
        s.push(&path(&[CONV_PROJ, BIAS]), &[h], Init::Zeros);
    }
    s.push(CLASS_TOKEN, &[1, 1, h], Init::Zeros);
    s.push(POS_EMBEDDING, &[1, c.seq_len(), h], Init::Normal(0.02));
    if c.pre_norm {
        s.layer_norm(LN_PRE, h);
    }
    s.pre_norm_blocks(c.num_layers, h, c.mlp_dim);
    s.layer_norm(FINAL_LN, h);
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

/// The two projections and the logit scale, with docs/METHOD.md §2.6's initialisation.
pub fn head_tensors(a: &Architecture) -> Vec<TensorSpec> {
    let mut s = Specs::new("");
    let th = a.text.hidden_size();
    let vf = a.vision.feature_dim();
    match a.text_projection {
        TextProjection::Linear => s.linear(TEXT_PROJ, a.embed_dim, th, (th as f32).powf(-0.5)),
        TextProjection::Mlp { hidden } => {
            s.linear(
                &path(&[TEXT_PROJ, MLP_HEAD_IN]),
                hidden,
                th,
                (th as f32).powf(-0.5),
            );
            s.linear(
                &path(&[TEXT_PROJ, MLP_HEAD_OUT]),
                a.embed_dim,
                hidden,
                (hidden as f32).powf(-0.5),
            );
        }
    }
    s.linear(VISION_PROJ, a.embed_dim, vf, (vf as f32).powf(-0.5));
    if let Some(q) = &a.query_text {
        let qh = q.hidden_size();
        s.linear(QUERY_TEXT_PROJ, a.embed_dim, qh, (qh as f32).powf(-0.5));
    }
    s.push(LOGIT_SCALE, &[], Init::Constant((1.0f32 / 0.07).ln()));
    s.out
}

/// Every tensor of `model.safetensors` for this architecture, in a stable order.
pub fn model_tensors(a: &Architecture) -> Vec<TensorSpec> {
    let mut all = text_tensors(&a.text);
    if let Some(q) = &a.query_text {
        all.extend(tower_tensors(QUERY_TEXT, q));
    }
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
