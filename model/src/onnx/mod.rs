//! ONNX graphs of a bundle's towers, written from Rust from the bundle's own tensors (no Python,
//! no exporter), and the checks a bundle's ONNX files pass before an engine loads them.
//!
//! The graphs compute exactly what the candle towers compute, from the same tensor names
//! (`names.rs`): token ids / pixels in, a unit-norm joint embedding out (projection and L2
//! normalisation included). Interface, fixed for every architecture:
//!
//! | graph | inputs | output |
//! | --- | --- | --- |
//! | `text.onnx` | `input_ids`, `attention_mask`, `token_type_ids`: int64 `[batch, sequence]` | `embedding`: float `[batch, D]` |
//! | `vision.onnx` | `pixel_values`: float `[batch, 3, S, S]` (preprocessed) | `embedding`: float `[batch, D]` |

pub(crate) mod graph;
pub mod proto;
pub(crate) mod text;
mod vision;

use std::path::Path;

use crate::weights::HostWeights;

pub use graph::OPSET;
use proto::{Dim, OnnxSummary, ValueInfo};

use crate::config::{BundleConfig, OnnxDim, OnnxGraphSpec, OnnxGraphs, OnnxValueSpec};
use crate::{Error, Result};

/// File name of the text graph inside a bundle.
pub const TEXT_ONNX: &str = "text.onnx";
/// File name of the vision graph inside a bundle.
pub const VISION_ONNX: &str = "vision.onnx";
/// Inputs of the text graph, in order.
pub const TEXT_INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];
/// Output of the text graph.
pub const TEXT_OUTPUT: &str = "embedding";
/// Input of the vision graph.
pub const VISION_INPUT: &str = "pixel_values";
/// Output of the vision graph.
pub const VISION_OUTPUT: &str = "embedding";
/// Standard opsets an ONNX file of a bundle may import: 17 (`LayerNormalization`) up to what the
/// ONNX Runtime releases we support all implement.
pub const SUPPORTED_OPSETS: std::ops::RangeInclusive<i64> = 17..=21;

/// The query tower's graph of an asymmetric bundle, serialised (`None` without one). It is
/// built from the weights at load and never stored in a bundle.
pub fn build_query(config: &BundleConfig, tensors: &HostWeights) -> Result<Option<Vec<u8>>> {
    let w = graph::Weights::new(tensors);
    let doc = format!(
        "MIRAGE query text tower of model `{}`, written by mirage-rs {}",
        config.model_id,
        env!("CARGO_PKG_VERSION")
    );
    Ok(text::build_query(&config.architecture, &w, doc)?.map(|m| m.encode()))
}

/// Both towers' graphs, serialised.
#[derive(Debug)]
pub struct TowerGraphs {
    /// `text.onnx` bytes.
    pub text: Vec<u8>,
    /// `vision.onnx` bytes.
    pub vision: Vec<u8>,
}

/// Builds both graphs from a bundle's configuration and its f32 tensors (CPU).
pub fn build(config: &BundleConfig, tensors: &HostWeights) -> Result<TowerGraphs> {
    let w = graph::Weights::new(tensors);
    let doc = |tower: &str| {
        format!(
            "MIRAGE {tower} tower of model `{}`, written by mirage-rs {}",
            config.model_id,
            env!("CARGO_PKG_VERSION")
        )
    };
    let text = text::build(&config.architecture, &w, doc("text"))?;
    let vision = vision::build(&config.architecture, &w, doc("vision"))?;
    Ok(TowerGraphs {
        text: text.encode(),
        vision: vision.encode(),
    })
}

fn value_spec(name: &str, dtype: &str, shape: Vec<OnnxDim>) -> OnnxValueSpec {
    OnnxValueSpec {
        name: name.to_owned(),
        dtype: dtype.to_owned(),
        shape,
    }
}

/// What `bundle.json` records for graphs built by [`build`] for `config`; `model_sha256` is the
/// sha256 of `bundle.json` without them.
pub fn specs(config: &BundleConfig, model_sha256: &str) -> OnnxGraphs {
    let named = |s: &str| OnnxDim::Named(s.to_owned());
    let d = config.architecture.embed_dim as i64;
    let s = config.architecture.vision.image_size() as i64;
    let out = vec![value_spec(
        TEXT_OUTPUT,
        "float",
        vec![named("batch"), OnnxDim::Fixed(d)],
    )];
    OnnxGraphs {
        opset: OPSET,
        model_sha256: model_sha256.to_owned(),
        text: OnnxGraphSpec {
            file: TEXT_ONNX.to_owned(),
            inputs: TEXT_INPUTS
                .iter()
                .map(|n| value_spec(n, "int64", vec![named("batch"), named("sequence")]))
                .collect(),
            outputs: out.clone(),
        },
        vision: OnnxGraphSpec {
            file: VISION_ONNX.to_owned(),
            inputs: vec![value_spec(
                VISION_INPUT,
                "float",
                vec![
                    named("batch"),
                    OnnxDim::Fixed(3),
                    OnnxDim::Fixed(s),
                    OnnxDim::Fixed(s),
                ],
            )],
            outputs: vec![value_spec(
                VISION_OUTPUT,
                "float",
                vec![named("batch"), OnnxDim::Fixed(d)],
            )],
        },
    }
}

fn describe(v: &ValueInfo) -> OnnxValueSpec {
    value_spec(
        &v.name,
        &v.elem.name(),
        v.dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => OnnxDim::Fixed(*n),
                Dim::Named(s) => OnnxDim::Named(s.clone()),
            })
            .collect(),
    )
}

fn show(v: &[OnnxValueSpec]) -> String {
    v.iter()
        .map(|v| {
            let dims: Vec<String> = v
                .shape
                .iter()
                .map(|d| match d {
                    OnnxDim::Fixed(n) => n.to_string(),
                    OnnxDim::Named(s) => s.clone(),
                })
                .collect();
            format!("{} {}[{}]", v.name, v.dtype, dims.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Two shapes agree when fixed axes are equal; a named axis matches any dynamic one (exporters
/// name them differently) but not a fixed size, which would refuse other batch sizes.
fn same_interface(a: &[OnnxValueSpec], b: &[OnnxValueSpec]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.dtype == y.dtype
                && x.shape.len() == y.shape.len()
                && x.shape.iter().zip(&y.shape).all(|(p, q)| match (p, q) {
                    (OnnxDim::Fixed(m), OnnxDim::Fixed(n)) => m == n,
                    (OnnxDim::Named(_), OnnxDim::Named(_)) => true,
                    _ => false,
                })
        })
}

/// Checks an ONNX file against what `bundle.json` records for it (opset, input and output
/// names, types and shapes) and against what the engine feeds it (`expected`, from
/// [`specs`]); the error names the file and what differs.
pub fn check(
    path: &Path,
    bytes: &[u8],
    recorded: &OnnxGraphSpec,
    recorded_opset: i64,
    expected: &OnnxGraphSpec,
) -> Result<OnnxSummary> {
    let summary = proto::read_summary(path, bytes)?;
    let fail = |reason: String| Error::Onnx {
        path: path.to_path_buf(),
        reason,
    };
    match summary.opset() {
        Some(v) if v == recorded_opset && SUPPORTED_OPSETS.contains(&v) => {}
        Some(v) if v != recorded_opset => {
            return Err(fail(format!(
                "imports opset {v}, bundle.json records opset {recorded_opset}"
            )))
        }
        Some(v) => {
            return Err(fail(format!(
                "imports opset {v}; supported opsets are {}..={}",
                SUPPORTED_OPSETS.start(),
                SUPPORTED_OPSETS.end()
            )))
        }
        None => return Err(fail("imports no standard ONNX opset".into())),
    }
    let inputs: Vec<OnnxValueSpec> = summary.inputs.iter().map(describe).collect();
    let outputs: Vec<OnnxValueSpec> = summary.outputs.iter().map(describe).collect();
    for (what, found, rec) in [
        ("inputs", &inputs, &recorded.inputs),
        ("outputs", &outputs, &recorded.outputs),
    ] {
        if !same_interface(found, rec) {
            return Err(fail(format!(
                "graph {what} are [{}], bundle.json records [{}]",
                show(found),
                show(rec)
            )));
        }
    }
    for (what, rec, exp) in [
        ("inputs", &recorded.inputs, &expected.inputs),
        ("outputs", &recorded.outputs, &expected.outputs),
    ] {
        if !same_interface(rec, exp) {
            return Err(fail(format!(
                "bundle.json records {what} [{}], this architecture's engine needs [{}]",
                show(rec),
                show(exp)
            )));
        }
    }
    Ok(summary)
}
