//! The text tower as an ONNX graph: BERT (Hugging Face names under `text.`) with mask-weighted
//! mean or `[CLS]` pooling, or CLIP's causal text transformer pooled at the end-of-text token;
//! then the projection and L2 normalisation — the same arithmetic as `towers::bert` /
//! `towers::clip_text` plus `MirageModel`'s projection.
//!
//! The transformer layers use ONNX Runtime's fused contrib operators (`Attention` with the
//! 0/1 attention mask, `SkipLayerNormalization`, `BiasGelu`/`FastGelu`): they are what ONNX
//! Runtime's own optimiser turns an exported BERT into, written directly so the speed does not
//! depend on a pattern matcher recognising our graph.

use super::graph::{float, int, GraphBuilder, Weights};
use super::proto::{Dim, ElemType, Model};
use super::{TEXT_INPUTS, TEXT_OUTPUT};
use crate::config::{
    Architecture, BertConfig, ClipTextConfig, HiddenAct, TextPooling, TextProjection, TextTower,
};
use crate::names::bert::*;
use crate::names::{self, clip_text, path, BIAS, TEXT, TEXT_PROJ, WEIGHT};
use crate::Result;

/// Where a text tower's weights are and where it projects to.
struct Tower<'a> {
    text: &'a TextTower,
    root: &'a str,
    projection: TextProjection,
    proj: &'a str,
    embed_dim: usize,
}

pub(crate) fn build(arch: &Architecture, w: &Weights<'_>, doc: String) -> Result<Model> {
    let tower = Tower {
        text: &arch.text,
        root: TEXT,
        projection: arch.text_projection,
        proj: TEXT_PROJ,
        embed_dim: arch.embed_dim,
    };
    build_tower(&tower, w, "mirage_text", doc)
}

/// The query tower's graph of an asymmetric bundle (same interface as the text graph).
pub(crate) fn build_query(
    arch: &Architecture,
    w: &Weights<'_>,
    doc: String,
) -> Result<Option<Model>> {
    let Some(q) = &arch.query_text else {
        return Ok(None);
    };
    let tower = Tower {
        text: q,
        root: names::QUERY_TEXT,
        projection: TextProjection::Linear,
        proj: names::QUERY_TEXT_PROJ,
        embed_dim: arch.embed_dim,
    };
    build_tower(&tower, w, "mirage_query_text", doc).map(Some)
}

fn build_tower(t: &Tower<'_>, w: &Weights<'_>, name: &str, doc: String) -> Result<Model> {
    let mut g = GraphBuilder::new(name, doc);
    let (bert, pooling) = match t.text {
        TextTower::Bert { bert, pooling } => (bert, *pooling),
        TextTower::Clip { clip } => {
            let pooled = clip_body(&mut g, w, t.root, clip)?;
            return finish(g, w, t, &pooled);
        }
    };
    let (x, mask) = bert_body(&mut g, w, t.root, bert)?;
    let pooled = match pooling {
        TextPooling::Cls => {
            let first = g.scalar_i64("cls", 0);
            g.op("Gather", &[&x, &first], vec![int("axis", 1)])
        }
        TextPooling::Mean => {
            let m = g.op("Cast", &[&mask], vec![int("to", 1)]);
            let axis2 = g.constant_i64("axis2", &[2]);
            let m = g.op("Unsqueeze", &[&m, &axis2], Vec::new());
            let masked = g.op("Mul", &[&x, &m], Vec::new());
            let axis1 = g.constant_i64("axis1", &[1]);
            let summed = g.op("ReduceSum", &[&masked, &axis1], vec![int("keepdims", 0)]);
            let count = g.op("ReduceSum", &[&m, &axis1], vec![int("keepdims", 0)]);
            let floor = g.constant_f32("min_count", &[], vec![1e-9]);
            let count = g.op("Max", &[&count, &floor], Vec::new());
            g.op("Div", &[&summed, &count], Vec::new())
        }
    };
    finish(g, w, t, &pooled)
}

/// Projection, normalisation and the graph's output.
fn finish(mut g: GraphBuilder, w: &Weights<'_>, t: &Tower<'_>, pooled: &str) -> Result<Model> {
    let out = match t.projection {
        TextProjection::Linear => g.project_normalize(pooled, w, t.proj)?,
        TextProjection::Mlp { .. } => {
            let first = path(&[t.proj, names::MLP_HEAD_IN]);
            let (fw, fb) = (path(&[&first, WEIGHT]), path(&[&first, BIAS]));
            let wt = g.tensor_t(&fw, w.get(&fw)?)?;
            let b = g.tensor(&fb, w.get(&fb)?)?;
            let h = g.op("MatMul", &[pooled, &wt], Vec::new());
            let h = g.bias_act(&h, &b, HiddenAct::Gelu);
            g.project_normalize(&h, w, &path(&[t.proj, names::MLP_HEAD_OUT]))?
        }
    };
    g.output(
        &out,
        TEXT_OUTPUT,
        ElemType::Float,
        vec![Dim::Named("batch".into()), Dim::Fixed(t.embed_dim as i64)],
    );
    Ok(g.finish())
}

/// The BERT encoder under `root` (`text` for a tower, `bert` for a cross-encoder): adds the
/// three int64 inputs ([`TEXT_INPUTS`]) and returns the last hidden states `[B, L, H]` and the
/// attention mask input's name.
pub(crate) fn bert_body(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    root: &str,
    c: &BertConfig,
) -> Result<(String, String)> {
    let eps = c.layer_norm_eps;
    let [ids, mask, types] = text_inputs(g);

    // Embeddings: word + position (0..L) + token type, then LayerNorm.
    let p = path(&[root, EMBEDDINGS]);
    let word = g.tensor(
        &path(&[&p, WORD, WEIGHT]),
        w.get(&path(&[&p, WORD, WEIGHT]))?,
    )?;
    let pos = g.tensor(
        &path(&[&p, POSITION, WEIGHT]),
        w.get(&path(&[&p, POSITION, WEIGHT]))?,
    )?;
    let tt = g.tensor(
        &path(&[&p, TOKEN_TYPE, WEIGHT]),
        w.get(&path(&[&p, TOKEN_TYPE, WEIGHT]))?,
    )?;
    let x_word = g.op("Gather", &[&word, &ids], vec![int("axis", 0)]);
    let x_pos = position_rows(g, &pos, &ids);
    let x_tt = g.op("Gather", &[&tt, &types], vec![int("axis", 0)]);
    let x = g.op("Add", &[&x_word, &x_pos], Vec::new());
    let x = g.op("Add", &[&x, &x_tt], Vec::new());
    let mut x = g.layer_norm(&x, w, &path(&[&p, LAYER_NORM]), eps)?;

    let mask_i32 = g.op("Cast", &[&mask], vec![int("to", 6)]);
    for i in 0..c.num_hidden_layers {
        let l = path(&[root, &layer(i)]);
        let a = path(&[&l, ATTENTION]);
        let qkv = |part: &str, leaf: &str| path(&[&a, SELF, part, leaf]);
        // Attention wants Q|K|V side by side as one [H, 3H] weight and one [3H] bias.
        let qkv_w = crate::weights::HostTensor::concat(&[
            w.get(&qkv(QUERY, WEIGHT))?,
            w.get(&qkv(KEY, WEIGHT))?,
            w.get(&qkv(VALUE, WEIGHT))?,
        ])?;
        let qkv_b = crate::weights::HostTensor::concat(&[
            w.get(&qkv(QUERY, BIAS))?,
            w.get(&qkv(KEY, BIAS))?,
            w.get(&qkv(VALUE, BIAS))?,
        ])?;
        let qkv_w = g.tensor_t(&format!("{a}.self.qkv.weight"), &qkv_w)?;
        let qkv_b = g.tensor(&format!("{a}.self.qkv.bias"), &qkv_b)?;
        let ctx = g.ms_op(
            "Attention",
            &[&x, &qkv_w, &qkv_b, &mask_i32],
            vec![int("num_heads", c.num_attention_heads as i64)],
        );
        let attn = skip_norm_dense(g, w, &ctx, &x, &path(&[&a, OUTPUT]), eps)?;
        // Feed-forward: dense → activation (bias fused in) → dense, residual + LayerNorm.
        let ip = path(&[&l, INTERMEDIATE, DENSE]);
        let (iw, ib) = (path(&[&ip, WEIGHT]), path(&[&ip, BIAS]));
        let wi = g.tensor_t(&iw, w.get(&iw)?)?;
        let bi = g.tensor(&ib, w.get(&ib)?)?;
        let inner = g.op("MatMul", &[&attn, &wi], Vec::new());
        let act = g.bias_act(&inner, &bi, c.hidden_act);
        x = skip_norm_dense(g, w, &act, &attn, &path(&[&l, OUTPUT]), eps)?;
    }

    Ok((x, mask))
}

/// The three int64 inputs ([`TEXT_INPUTS`]), `[batch, sequence]`.
fn text_inputs(g: &mut GraphBuilder) -> [String; 3] {
    TEXT_INPUTS.map(|name| {
        g.input(
            name,
            ElemType::Int64,
            vec![Dim::Named("batch".into()), Dim::Named("sequence".into())],
        )
    })
}

/// Rows `0..L` of the position table `pos`, L read from `ids` `[B, L]`.
fn position_rows(g: &mut GraphBuilder, pos: &str, ids: &str) -> String {
    let shape = g.op("Shape", &[ids], Vec::new());
    let one_idx = g.scalar_i64("axis1", 1);
    let len = g.op("Gather", &[&shape, &one_idx], vec![int("axis", 0)]);
    let zero = g.scalar_i64("zero", 0);
    let step = g.scalar_i64("one", 1);
    let positions = g.op("Range", &[&zero, &len, &step], Vec::new());
    g.op("Gather", &[pos, &positions], vec![int("axis", 0)])
}

/// CLIP's text transformer: returns the final-normed state of each item's first end-of-text
/// token `[B, H]`. The mask and type-id inputs exist for the fixed interface and go unused: under
/// the causal mask padding never reaches the end-of-text token.
fn clip_body(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    root: &str,
    c: &ClipTextConfig,
) -> Result<String> {
    use clip_text::*;
    let [ids, _, _] = text_inputs(g);
    let tok_name = path(&[root, TOKEN_EMBEDDING, WEIGHT]);
    let tok = g.tensor(&tok_name, w.get(&tok_name)?)?;
    let pos_name = path(&[root, POSITIONAL]);
    let pos = g.tensor(&pos_name, w.get(&pos_name)?)?;
    let x = g.op("Gather", &[&tok, &ids], vec![int("axis", 0)]);
    let x_pos = position_rows(g, &pos, &ids);
    let x = g.op("Add", &[&x, &x_pos], Vec::new());
    let x = g.pre_norm_blocks(
        &x,
        w,
        root,
        c.num_layers,
        c.num_heads,
        c.layer_norm_eps,
        c.activation,
        true,
    )?;
    let x = g.layer_norm(&x, w, &path(&[root, FINAL_LN]), c.layer_norm_eps)?;
    // First end-of-text position: ArgMax of (ids == eos) returns the first maximum.
    let eos = g.constant_i64("eos", &[i64::from(c.eos_token_id)]);
    let hit = g.op("Equal", &[&ids, &eos], Vec::new());
    let hit = g.op("Cast", &[&hit], vec![int("to", 1)]);
    let at = g.op("ArgMax", &[&hit], vec![int("axis", 1), int("keepdims", 1)]); // [B, 1]
    let axis2 = g.constant_i64("axis2", &[2]);
    let at = g.op("Unsqueeze", &[&at, &axis2], Vec::new()); // [B, 1, 1]
    let shape = g.op("Shape", &[&x], Vec::new());
    let (s0, s1, ax0) = (
        g.constant_i64("start", &[0]),
        g.constant_i64("end", &[1]),
        g.constant_i64("axis", &[0]),
    );
    let batch = g.op("Slice", &[&shape, &s0, &s1, &ax0], Vec::new());
    let tail = g.constant_i64("shape", &[1, c.hidden_size as i64]);
    let idx_shape = g.op("Concat", &[&batch, &tail], vec![int("axis", 0)]);
    let at = g.op("Expand", &[&at, &idx_shape], Vec::new()); // [B, 1, H]
    let picked = g.op("GatherElements", &[&x, &at], vec![int("axis", 1)]);
    let axis1 = g.constant_i64("axis1", &[1]);
    Ok(g.op("Squeeze", &[&picked, &axis1], Vec::new()))
}

/// `LayerNorm(x·Wᵀ + b + skip)` for the `dense` + `LayerNorm` pair under `prefix`, as one
/// `SkipLayerNormalization` after the bias-free product.
fn skip_norm_dense(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    x: &str,
    skip: &str,
    prefix: &str,
    eps: f64,
) -> Result<String> {
    let name = |block: &str, leaf: &str| path(&[prefix, block, leaf]);
    let (dw, db) = (name(DENSE, WEIGHT), name(DENSE, BIAS));
    let wt = g.tensor_t(&dw, w.get(&dw)?)?;
    let b = g.tensor(&db, w.get(&db)?)?;
    let (lw, lb) = (name(LAYER_NORM, WEIGHT), name(LAYER_NORM, BIAS));
    let gamma = g.tensor(&lw, w.get(&lw)?)?;
    let beta = g.tensor(&lb, w.get(&lb)?)?;
    let y = g.op("MatMul", &[x, &wt], Vec::new());
    Ok(g.ms_op(
        "SkipLayerNormalization",
        &[&y, skip, &gamma, &beta, &b],
        vec![float("epsilon", eps as f32)],
    ))
}
