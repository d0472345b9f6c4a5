//! The vision tower as an ONNX graph: torchvision ResNet (BatchNorm folded into the
//! convolutions, as `towers::resnet` does) with CLIP attention pooling or mean pooling, or
//! torchvision's ViT; then the projection and L2 normalisation.
//!
//! Convolutions stay plain `Conv`/`Relu`/`Add` so ONNX Runtime's own optimiser can move them to
//! its blocked (NCHWc) layout and fuse the residual additions; the ViT layers use the fused
//! contrib `Attention` like the text tower.

use super::graph::{int, ints, GraphBuilder, Weights};
use super::proto::{Dim, ElemType, Model};
use super::{VISION_INPUT, VISION_OUTPUT};
use crate::config::{Architecture, ResNetConfig, VisionPooling, VisionTower, VitConfig};
use crate::names::resnet::*;
use crate::names::{path, vit, BIAS, RUNNING_MEAN, RUNNING_VAR, VISION, VISION_PROJ, WEIGHT};
use crate::weights::HostTensor;
use crate::{Error, Result};

const BN_EPS: f64 = 1e-5;

pub(crate) fn build(arch: &Architecture, w: &Weights<'_>, doc: String) -> Result<Model> {
    let mut g = GraphBuilder::new("mirage_vision", doc);
    let size = arch.vision.image_size() as i64;
    let pixels = g.input(
        VISION_INPUT,
        ElemType::Float,
        vec![
            Dim::Named("batch".into()),
            Dim::Fixed(3),
            Dim::Fixed(size),
            Dim::Fixed(size),
        ],
    );
    let features = match &arch.vision {
        VisionTower::Resnet(c) => resnet(&mut g, w, c, &pixels)?,
        VisionTower::Vit(c) => vit(&mut g, w, c, &pixels)?,
    };
    let out = g.project_normalize(&features, w, VISION_PROJ)?;
    g.output(
        &out,
        VISION_OUTPUT,
        ElemType::Float,
        vec![
            Dim::Named("batch".into()),
            Dim::Fixed(arch.embed_dim as i64),
        ],
    );
    Ok(g.finish())
}

/// `conv` with the BatchNorm `bn` folded in: `w·γ/√(var+ε)` and `β − mean·γ/√(var+ε)`.
fn conv_bn(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    x: &str,
    prefix: &str,
    conv: &str,
    bn: &str,
    stride: i64,
) -> Result<String> {
    let p = |layer: &str, leaf: &str| path(&[prefix, layer, leaf]);
    let weight = w.get(&p(conv, WEIGHT))?;
    let gamma = w.get(&p(bn, WEIGHT))?;
    let beta = w.get(&p(bn, BIAS))?;
    let mean = w.get(&p(bn, RUNNING_MEAN))?;
    let var = w.get(&p(bn, RUNNING_VAR))?;
    let [out_c, _, k, _] = weight.dims()[..] else {
        return Err(Error::InvalidConfig(format!(
            "{} is not a 4-D convolution weight",
            p(conv, WEIGHT)
        )));
    };
    // Batch norm folded into the convolution, in f32 as the candle tower computes it.
    let scale: Vec<f32> = gamma
        .data()
        .iter()
        .zip(var.data())
        .map(|(g, v)| g / (v + BN_EPS as f32).sqrt())
        .collect();
    let per_filter = weight.data().len() / out_c.max(1);
    let folded: Vec<f32> = weight
        .data()
        .chunks_exact(per_filter.max(1))
        .zip(&scale)
        .flat_map(|(filter, s)| filter.iter().map(move |w| w * s))
        .collect();
    let bias: Vec<f32> = beta
        .data()
        .iter()
        .zip(mean.data())
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    let folded = HostTensor::new(weight.dims().to_vec(), folded)?;
    let bias = HostTensor::new(vec![out_c], bias)?;
    let wn = g.tensor(&format!("{}+{bn}", p(conv, WEIGHT)), &folded)?;
    let bn_ = g.tensor(&format!("{}+{bn}", p(conv, BIAS)), &bias)?;
    let pad = (k / 2) as i64;
    Ok(g.op(
        "Conv",
        &[x, &wn, &bn_],
        vec![
            ints("kernel_shape", &[k as i64, k as i64]),
            ints("strides", &[stride, stride]),
            ints("pads", &[pad, pad, pad, pad]),
        ],
    ))
}

/// Average pooling `k`×`k` with stride `k` (the modified ResNet's anti-aliasing).
fn avg_pool(g: &mut GraphBuilder, x: &str, k: i64) -> String {
    g.op(
        "AveragePool",
        &[x],
        vec![ints("kernel_shape", &[k, k]), ints("strides", &[k, k])],
    )
}

fn resnet(g: &mut GraphBuilder, w: &Weights<'_>, c: &ResNetConfig, x: &str) -> Result<String> {
    let mut x = if c.modified {
        let mut y = x.to_owned();
        for j in 1..=3 {
            let stride = if j == 1 { 2 } else { 1 };
            y = conv_bn(g, w, &y, VISION, &conv(j), &bn(j), stride)?;
            y = g.op("Relu", &[&y], Vec::new());
        }
        avg_pool(g, &y, 2)
    } else {
        let stem = conv_bn(g, w, x, VISION, STEM_CONV, STEM_BN, 2)?;
        let stem = g.op("Relu", &[&stem], Vec::new());
        g.op(
            "MaxPool",
            &[&stem],
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
            ],
        )
    };
    let expansion = if c.bottleneck { 4 } else { 1 };
    let mut in_c = c.width;
    for (stage, &n) in c.layers.iter().enumerate() {
        let planes = c.width << stage;
        for b in 0..n {
            let p = path(&[VISION, &block(stage, b)]);
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            // The modified ResNet average-pools where torchvision strides a convolution.
            let (conv_stride, pool) = if c.modified { (1, stride) } else { (stride, 1) };
            let y = if c.bottleneck {
                let y = conv_bn(g, w, &x, &p, &conv(1), &bn(1), 1)?;
                let y = g.op("Relu", &[&y], Vec::new());
                // torchvision (v1.5) puts the stride on the 3×3 convolution of a bottleneck.
                let y = conv_bn(g, w, &y, &p, &conv(2), &bn(2), conv_stride)?;
                let mut y = g.op("Relu", &[&y], Vec::new());
                if pool > 1 {
                    y = avg_pool(g, &y, pool);
                }
                conv_bn(g, w, &y, &p, &conv(3), &bn(3), 1)?
            } else {
                let y = conv_bn(g, w, &x, &p, &conv(1), &bn(1), stride)?;
                let y = g.op("Relu", &[&y], Vec::new());
                conv_bn(g, w, &y, &p, &conv(2), &bn(2), 1)?
            };
            let identity = if b == 0 && (stride != 1 || in_c != planes * expansion) {
                let src = if pool > 1 {
                    avg_pool(g, &x, pool)
                } else {
                    x.clone()
                };
                conv_bn(g, w, &src, &p, DOWNSAMPLE_CONV, DOWNSAMPLE_BN, conv_stride)?
            } else {
                x.clone()
            };
            let sum = g.op("Add", &[&y, &identity], Vec::new());
            x = g.op("Relu", &[&sum], Vec::new());
            in_c = planes * expansion;
        }
    }
    match c.pooling {
        VisionPooling::Mean => {
            let pooled = g.op("GlobalAveragePool", &[&x], Vec::new());
            Ok(g.op("Flatten", &[&pooled], vec![int("axis", 1)]))
        }
        VisionPooling::Attention => attention_pool(g, w, c, &x),
    }
}

/// CLIP `AttentionPool2d`: the mean token (with learned positions) attends over the grid.
fn attention_pool(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    c: &ResNetConfig,
    x: &str,
) -> Result<String> {
    let dim = c.trunk_dim() as i64;
    let heads = c.attention_heads as i64;
    let hd = dim / heads;
    let p = path(&[VISION, ATTNPOOL]);
    let flat_shape = g.constant_i64("shape", &[0, dim, -1]);
    let flat = g.op("Reshape", &[x, &flat_shape], Vec::new()); // [B, C, HW]
    let tokens = g.op("Transpose", &[&flat], vec![ints("perm", &[0, 2, 1])]); // [B, HW, C]
    let mean = g.op(
        "ReduceMean",
        &[&tokens],
        vec![ints("axes", &[1]), int("keepdims", 1)],
    );
    let seq = g.op("Concat", &[&mean, &tokens], vec![int("axis", 1)]); // [B, S, C]
    let pos_name = path(&[&p, POSITIONAL]);
    let pos = g.tensor(&pos_name, w.get(&pos_name)?)?;
    let seq = g.op("Add", &[&seq, &pos], Vec::new());
    let (s0, s1, ax1) = (
        g.constant_i64("start", &[0]),
        g.constant_i64("end", &[1]),
        g.constant_i64("axis", &[1]),
    );
    let first = g.op("Slice", &[&seq, &s0, &s1, &ax1], Vec::new()); // [B, 1, C]
    let q = g.linear(&first, w, &path(&[&p, Q_PROJ]))?;
    let scale = g.constant_f32("scale", &[], vec![(hd as f32).powf(-0.5)]);
    let q = g.op("Mul", &[&q, &scale], Vec::new());
    let k = g.linear(&seq, w, &path(&[&p, K_PROJ]))?;
    let v = g.linear(&seq, w, &path(&[&p, V_PROJ]))?;
    let heads_shape = g.constant_i64("shape", &[0, 0, heads, hd]);
    let q = g.op("Reshape", &[&q, &heads_shape], Vec::new());
    let q = g.op("Transpose", &[&q], vec![ints("perm", &[0, 2, 1, 3])]); // [B, h, 1, hd]
    let k = g.op("Reshape", &[&k, &heads_shape], Vec::new());
    let k = g.op("Transpose", &[&k], vec![ints("perm", &[0, 2, 3, 1])]); // [B, h, hd, S]
    let v = g.op("Reshape", &[&v, &heads_shape], Vec::new());
    let v = g.op("Transpose", &[&v], vec![ints("perm", &[0, 2, 1, 3])]); // [B, h, S, hd]
    let scores = g.op("MatMul", &[&q, &k], Vec::new());
    let attn = g.op("Softmax", &[&scores], vec![int("axis", -1)]);
    let ctx = g.op("MatMul", &[&attn, &v], Vec::new()); // [B, h, 1, hd]
    let ctx = g.op("Transpose", &[&ctx], vec![ints("perm", &[0, 2, 1, 3])]);
    let out_shape = g.constant_i64("shape", &[0, dim]);
    let ctx = g.op("Reshape", &[&ctx, &out_shape], Vec::new()); // [B, C]
    g.linear(&ctx, w, &path(&[&p, C_PROJ]))
}

fn vit(g: &mut GraphBuilder, w: &Weights<'_>, c: &VitConfig, x: &str) -> Result<String> {
    let h = c.hidden_size as i64;
    let patch = c.patch_size as i64;
    let cw = path(&[VISION, vit::CONV_PROJ, WEIGHT]);
    let cw = g.tensor(&cw, w.get(&cw)?)?;
    let mut conv_inputs = vec![x.to_owned(), cw];
    if c.patch_bias {
        let cb = path(&[VISION, vit::CONV_PROJ, BIAS]);
        conv_inputs.push(g.tensor(&cb, w.get(&cb)?)?);
    }
    let conv_inputs: Vec<&str> = conv_inputs.iter().map(String::as_str).collect();
    let y = g.op(
        "Conv",
        &conv_inputs,
        vec![
            ints("kernel_shape", &[patch, patch]),
            ints("strides", &[patch, patch]),
        ],
    );
    let flat_shape = g.constant_i64("shape", &[0, h, -1]);
    let y = g.op("Reshape", &[&y, &flat_shape], Vec::new());
    let y = g.op("Transpose", &[&y], vec![ints("perm", &[0, 2, 1])]); // [B, N, H]
                                                                      // The class token, repeated over the batch: Expand to [B, 1, H] with B read from the input.
    let shape = g.op("Shape", &[&y], Vec::new());
    let (s0, s1, ax0) = (
        g.constant_i64("start", &[0]),
        g.constant_i64("end", &[1]),
        g.constant_i64("axis", &[0]),
    );
    let batch = g.op("Slice", &[&shape, &s0, &s1, &ax0], Vec::new());
    let tail = g.constant_i64("shape", &[1, h]);
    let cls_shape = g.op("Concat", &[&batch, &tail], vec![int("axis", 0)]);
    let ct_name = path(&[VISION, vit::CLASS_TOKEN]);
    let ct = g.tensor(&ct_name, w.get(&ct_name)?)?;
    let cls = g.op("Expand", &[&ct, &cls_shape], Vec::new());
    let y = g.op("Concat", &[&cls, &y], vec![int("axis", 1)]);
    let pe_name = path(&[VISION, vit::POS_EMBEDDING]);
    let pe = g.tensor(&pe_name, w.get(&pe_name)?)?;
    let mut y = g.op("Add", &[&y, &pe], Vec::new());
    let eps = c.layer_norm_eps;
    if c.pre_norm {
        y = g.layer_norm(&y, w, &path(&[VISION, vit::LN_PRE]), eps)?;
    }
    let y = g.pre_norm_blocks(
        &y,
        w,
        VISION,
        c.num_layers,
        c.num_heads,
        eps,
        c.activation,
        false,
    )?;
    let first = g.scalar_i64("cls", 0);
    let cls = g.op("Gather", &[&y, &first], vec![int("axis", 1)]);
    g.layer_norm(&cls, w, &path(&[VISION, vit::FINAL_LN]), eps)
}
