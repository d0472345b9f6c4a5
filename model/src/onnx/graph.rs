//! A small graph builder: weights become initializers, each `op` call appends one node with a
//! fresh output name, so the tower files read like the candle forward passes they mirror.

use crate::config::HiddenAct;
use crate::names::{block, path, BIAS, WEIGHT};

use crate::weights::{HostTensor, HostWeights};

use super::proto::{AttrValue, Dim, ElemType, Model, Node, TensorData, TensorValues, ValueInfo};
use crate::{Error, Result};

/// The standard operator set the graphs are written for (`LayerNormalization` needs 17).
pub const OPSET: i64 = 17;
/// ONNX Runtime's contrib domain (fused `Attention`, `SkipLayerNormalization`, `BiasGelu`).
pub(crate) const MS_DOMAIN: &str = "com.microsoft";

/// Attribute shorthand.
pub(crate) fn int(name: &str, v: i64) -> (String, AttrValue) {
    (name.to_owned(), AttrValue::Int(v))
}
pub(crate) fn ints(name: &str, v: &[i64]) -> (String, AttrValue) {
    (name.to_owned(), AttrValue::Ints(v.to_vec()))
}
pub(crate) fn float(name: &str, v: f32) -> (String, AttrValue) {
    (name.to_owned(), AttrValue::Float(v))
}

/// The weights of a bundle by tensor name (f32, on the CPU).
pub(crate) struct Weights<'a> {
    tensors: &'a HostWeights,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(tensors: &'a HostWeights) -> Self {
        Self { tensors }
    }

    pub(crate) fn get(&self, name: &str) -> Result<&'a HostTensor> {
        self.tensors.get(name).ok_or_else(|| {
            Error::InvalidConfig(format!("tensor `{name}` is missing from the weights"))
        })
    }
}

/// Builds one graph.
pub(crate) struct GraphBuilder {
    model: Model,
    counter: usize,
}

impl GraphBuilder {
    pub(crate) fn new(name: &str, doc: String) -> Self {
        Self {
            model: Model {
                opsets: vec![(String::new(), OPSET), (MS_DOMAIN.to_owned(), 1)],
                graph_name: name.to_owned(),
                doc,
                ..Model::default()
            },
            counter: 0,
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Declares a graph input.
    pub(crate) fn input(&mut self, name: &str, elem: ElemType, dims: Vec<Dim>) -> String {
        self.model.inputs.push(ValueInfo {
            name: name.to_owned(),
            elem,
            dims,
        });
        name.to_owned()
    }

    /// Renames `value` to the graph output `name` (through an `Identity`) and declares it.
    pub(crate) fn output(&mut self, value: &str, name: &str, elem: ElemType, dims: Vec<Dim>) {
        self.node("Identity", "", &[value], &[name], Vec::new());
        self.model.outputs.push(ValueInfo {
            name: name.to_owned(),
            elem,
            dims,
        });
    }

    /// An f32 initializer from raw values.
    pub(crate) fn constant_f32(&mut self, hint: &str, dims: &[i64], values: Vec<f32>) -> String {
        let name = self.fresh(hint);
        self.model.initializers.push(TensorData {
            name: name.clone(),
            dims: dims.to_vec(),
            values: TensorValues::F32(values),
        });
        name
    }

    /// An i64 initializer (shapes, axes, indices).
    pub(crate) fn constant_i64(&mut self, hint: &str, values: &[i64]) -> String {
        let name = self.fresh(hint);
        self.model.initializers.push(TensorData {
            name: name.clone(),
            dims: vec![values.len() as i64],
            values: TensorValues::I64(values.to_vec()),
        });
        name
    }

    /// A scalar i64 initializer.
    pub(crate) fn scalar_i64(&mut self, hint: &str, v: i64) -> String {
        let name = self.fresh(hint);
        self.model.initializers.push(TensorData {
            name: name.clone(),
            dims: Vec::new(),
            values: TensorValues::I64(vec![v]),
        });
        name
    }

    /// A tensor as an initializer named after its bundle name, so a graph viewer shows which
    /// weight is which.
    pub(crate) fn tensor(&mut self, name: &str, t: &HostTensor) -> Result<String> {
        let dims = t.dims().iter().map(|&d| d as i64).collect::<Vec<_>>();
        let values = t.data().to_vec();
        self.model.initializers.push(TensorData {
            name: name.to_owned(),
            dims,
            values: TensorValues::F32(values),
        });
        Ok(name.to_owned())
    }

    /// The transpose of a [out, in] weight, as MatMul wants [in, out].
    pub(crate) fn tensor_t(&mut self, name: &str, t: &HostTensor) -> Result<String> {
        self.tensor(&format!("{name}^T"), &t.transposed()?)
    }

    /// Appends a node with explicit outputs.
    pub(crate) fn node(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<(String, AttrValue)>,
    ) {
        let name = self.fresh(op);
        self.model.nodes.push(Node {
            op_type: op.to_owned(),
            domain: domain.to_owned(),
            name,
            inputs: inputs.iter().map(|s| (*s).to_owned()).collect(),
            outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
            attributes,
        });
    }

    /// Appends a node of `domain` with one fresh output and returns its name.
    fn single(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attributes: Vec<(String, AttrValue)>,
    ) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node(op, domain, inputs, &[&out], attributes);
        out
    }

    /// A standard-domain node with one output.
    pub(crate) fn op(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(String, AttrValue)>,
    ) -> String {
        self.single("", op, inputs, attrs)
    }

    /// A `com.microsoft` (ONNX Runtime contrib) node with one output.
    pub(crate) fn ms_op(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(String, AttrValue)>,
    ) -> String {
        self.single(MS_DOMAIN, op, inputs, attrs)
    }

    /// `x·Wᵀ + b` for a PyTorch-layout weight `[out, in]` (the bias is optional).
    pub(crate) fn linear(&mut self, x: &str, w: &Weights<'_>, prefix: &str) -> Result<String> {
        let weight = path(&[prefix, WEIGHT]);
        let wt = self.tensor_t(&weight, w.get(&weight)?)?;
        let y = self.op("MatMul", &[x, &wt], Vec::new());
        let bias_name = path(&[prefix, BIAS]);
        match w.tensors.get(&bias_name) {
            Some(b) => {
                let b = self.tensor(&bias_name, b)?;
                Ok(self.op("Add", &[&y, &b], Vec::new()))
            }
            None => Ok(y),
        }
    }

    /// `LayerNormalization` over the last axis with the weights under `prefix`.
    pub(crate) fn layer_norm(
        &mut self,
        x: &str,
        w: &Weights<'_>,
        prefix: &str,
        eps: f64,
    ) -> Result<String> {
        let (weight, bias) = (path(&[prefix, WEIGHT]), path(&[prefix, BIAS]));
        let g = self.tensor(&weight, w.get(&weight)?)?;
        let b = self.tensor(&bias, w.get(&bias)?)?;
        Ok(self.op(
            "LayerNormalization",
            &[x, &g, &b],
            vec![int("axis", -1), float("epsilon", eps as f32)],
        ))
    }

    /// Projection to the joint space and L2 normalisation (norm clamped at 1e-12, as candle).
    pub(crate) fn project_normalize(
        &mut self,
        x: &str,
        w: &Weights<'_>,
        proj: &str,
    ) -> Result<String> {
        let y = self.linear(x, w, proj)?;
        let norm = self.op(
            "ReduceL2",
            &[&y],
            vec![ints("axes", &[-1]), int("keepdims", 1)],
        );
        let floor = self.constant_f32("eps", &[], vec![1e-12]);
        let norm = self.op("Max", &[&norm, &floor], Vec::new());
        Ok(self.op("Div", &[&y, &norm], Vec::new()))
    }

    /// `act(x + b)`, with ONNX Runtime's fused bias + GELU kernels where they exist.
    pub(crate) fn bias_act(&mut self, x: &str, b: &str, act: HiddenAct) -> String {
        match act {
            HiddenAct::Gelu => self.ms_op("BiasGelu", &[x, b], Vec::new()),
            HiddenAct::GeluNew => self.ms_op("FastGelu", &[x, b], Vec::new()),
            HiddenAct::Relu => {
                let y = self.op("Add", &[x, b], Vec::new());
                self.op("Relu", &[&y], Vec::new())
            }
            HiddenAct::QuickGelu => {
                // ONNX Runtime's fused x·sigmoid(α·x): one pass over the MLP activations
                // instead of three.
                let y = self.op("Add", &[x, b], Vec::new());
                self.ms_op("QuickGelu", &[&y], vec![float("alpha", 1.702)])
            }
        }
    }

    /// `LayerNorm(x + skip + bias)` with the weights under `ln`, as one
    /// `SkipLayerNormalization` that also returns the sum (the residual stream).
    fn skip_norm(
        &mut self,
        x: &str,
        skip: &str,
        bias: &str,
        w: &Weights<'_>,
        ln: &str,
        eps: f64,
    ) -> Result<(String, String)> {
        let (gw, gb) = (path(&[ln, WEIGHT]), path(&[ln, BIAS]));
        let gamma = self.tensor(&gw, w.get(&gw)?)?;
        let beta = self.tensor(&gb, w.get(&gb)?)?;
        let (normed, sum) = (self.fresh("skipln"), self.fresh("residual"));
        // Outputs 1 and 2 (mean, inverse std) are optional and left unnamed.
        self.node(
            "SkipLayerNormalization",
            MS_DOMAIN,
            &[x, skip, &gamma, &beta, bias],
            &[&normed, "", "", &sum],
            vec![float("epsilon", eps as f32)],
        );
        Ok((normed, sum))
    }

    /// `x·Wᵀ` for the `[out, in]` weight under `prefix`, and its bias as a separate value: the
    /// bias is added where the sum is formed (`skip_norm`).
    fn matmul_bias(&mut self, x: &str, w: &Weights<'_>, prefix: &str) -> Result<(String, String)> {
        let (wn, bn) = (path(&[prefix, WEIGHT]), path(&[prefix, BIAS]));
        let wt = self.tensor_t(&wn, w.get(&wn)?)?;
        let b = self.tensor(&bn, w.get(&bn)?)?;
        Ok((self.op("MatMul", &[x, &wt], Vec::new()), b))
    }

    /// `n` pre-norm [`block`]s under `prefix` over `x` [B, S, H], as `towers::block`; `causal`
    /// lets a token attend only to itself and earlier tokens (CLIP's text transformer). Each
    /// residual addition is fused with the LayerNorm that reads it (`SkipLayerNormalization`,
    /// which also hands on the sum), so a block is two fused norms instead of two adds and two
    /// norms; ONNX Runtime does not find this fusion itself in pre-norm graphs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pre_norm_blocks(
        &mut self,
        x: &str,
        w: &Weights<'_>,
        prefix: &str,
        n: usize,
        heads: usize,
        eps: f64,
        act: HiddenAct,
        causal: bool,
    ) -> Result<String> {
        let mut y = x.to_owned();
        // The previous block's MLP output and bias, not yet added to the stream.
        let mut pending: Option<(String, String)> = None;
        for i in 0..n {
            let l = path(&[prefix, &block::layer(i)]);
            let a = path(&[&l, block::SELF_ATTENTION]);
            let ln1 = path(&[&l, block::LN_1]);
            let n1 = match pending.take() {
                Some((m, b)) => {
                    let (normed, sum) = self.skip_norm(&m, &y, &b, w, &ln1, eps)?;
                    y = sum;
                    normed
                }
                None => self.layer_norm(&y, w, &ln1, eps)?,
            };
            let (iw, ib) = (
                path(&[&a, block::IN_PROJ_WEIGHT]),
                path(&[&a, block::IN_PROJ_BIAS]),
            );
            let in_w = self.tensor_t(&iw, w.get(&iw)?)?;
            let in_b = self.tensor(&ib, w.get(&ib)?)?;
            let ctx = self.ms_op(
                "Attention",
                &[&n1, &in_w, &in_b],
                vec![
                    int("num_heads", heads as i64),
                    int("unidirectional", i64::from(causal)),
                ],
            );
            let (attn, attn_b) = self.matmul_bias(&ctx, w, &path(&[&a, block::OUT_PROJ]))?;
            let (n2, sum) =
                self.skip_norm(&attn, &y, &attn_b, w, &path(&[&l, block::LN_2]), eps)?;
            y = sum;
            let (fw, fb) = (
                path(&[&l, block::MLP_IN, WEIGHT]),
                path(&[&l, block::MLP_IN, BIAS]),
            );
            let fc1_w = self.tensor_t(&fw, w.get(&fw)?)?;
            let fc1_b = self.tensor(&fb, w.get(&fb)?)?;
            let m = self.op("MatMul", &[&n2, &fc1_w], Vec::new());
            let m = self.bias_act(&m, &fc1_b, act);
            pending = Some(self.matmul_bias(&m, w, &path(&[&l, block::MLP_OUT]))?);
        }
        if let Some((m, b)) = pending {
            let m = self.op("Add", &[&m, &b], Vec::new());
            y = self.op("Add", &[&y, &m], Vec::new());
        }
        Ok(y)
    }

    pub(crate) fn finish(self) -> Model {
        self.model
    }
}
