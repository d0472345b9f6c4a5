//! The few ONNX protobuf messages the graph writer needs, encoded and decoded by hand.
//!
//! ONNX files are protobuf (`onnx.proto`, proto2 syntax). Writing them needs only varints and
//! length-delimited fields, so a protobuf code generator (and its build-time `protoc`) would cost
//! more than the ~300 lines here. Field numbers are those of `onnx.proto` (onnx 1.17); the reader
//! understands exactly what [`OnnxSummary`] reports and skips everything else, so a file written by
//! another tool (PyTorch's exporter, a quantiser) can still be checked at load.

use crate::{Error, Result};

/// `TensorProto.DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// 32-bit float.
    Float,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// Any other type, by its ONNX number.
    Other(i32),
}

impl ElemType {
    fn code(self) -> i32 {
        match self {
            Self::Float => 1,
            Self::Int32 => 6,
            Self::Int64 => 7,
            Self::Other(c) => c,
        }
    }

    fn from_code(c: i64) -> Self {
        match c {
            1 => Self::Float,
            6 => Self::Int32,
            7 => Self::Int64,
            c => Self::Other(i32::try_from(c).unwrap_or(-1)),
        }
    }

    /// Lower-case name as in error messages (`float`, `int64`, …).
    pub fn name(self) -> String {
        match self {
            Self::Float => "float".into(),
            Self::Int32 => "int32".into(),
            Self::Int64 => "int64".into(),
            Self::Other(c) => format!("onnx type {c}"),
        }
    }
}

/// One axis of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic (dynamic) axis such as `batch`.
    Named(String),
}

/// A graph input or output: name, element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    /// Value name.
    pub name: String,
    /// Element type.
    pub elem: ElemType,
    /// Shape.
    pub dims: Vec<Dim>,
}

/// Values of an initializer or constant tensor.
#[derive(Debug, Clone)]
pub enum TensorValues {
    /// f32 values.
    F32(Vec<f32>),
    /// i64 values.
    I64(Vec<i64>),
}

/// A named constant tensor (an initializer or a `value` attribute).
#[derive(Debug, Clone)]
pub struct TensorData {
    /// Name (empty inside attributes).
    pub name: String,
    /// Shape.
    pub dims: Vec<i64>,
    /// Values, row-major.
    pub values: TensorValues,
}

/// A node attribute value.
#[derive(Debug, Clone)]
pub enum AttrValue {
    /// `i`.
    Int(i64),
    /// `f`.
    Float(f32),
    /// `ints`.
    Ints(Vec<i64>),
    /// `s`.
    String(String),
    /// `t`.
    Tensor(TensorData),
}

/// One operator application.
#[derive(Debug, Clone)]
pub struct Node {
    /// Operator name (`MatMul`, `Attention`, …).
    pub op_type: String,
    /// Operator domain: empty for the standard set, `com.microsoft` for ONNX Runtime's.
    pub domain: String,
    /// Unique node name.
    pub name: String,
    /// Input value names (empty string = optional input left out).
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Attributes.
    pub attributes: Vec<(String, AttrValue)>,
}

/// A whole model: one graph and the operator sets it uses.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// `(domain, version)` pairs; the standard domain is the empty string.
    pub opsets: Vec<(String, i64)>,
    /// Graph name.
    pub graph_name: String,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Weights.
    pub initializers: Vec<TensorData>,
    /// Graph inputs.
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
    /// Free text recorded as the model's doc string.
    pub doc: String,
}

/// The IR version written: ONNX 1.13's, the first with opset 18 and enough for 17.
pub const IR_VERSION: i64 = 8;

// --- writing -------------------------------------------------------------------------------------

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Self(Vec::new())
    }
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }
    fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        // Negative int64/int32 values are ten-byte two's-complement varints in protobuf.
        self.varint(v as u64);
    }
    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    fn message(&mut self, field: u32, m: &Writer) {
        self.bytes(field, &m.0);
    }
}

fn tensor_bytes(t: &TensorData) -> Writer {
    let mut w = Writer::new();
    for &d in &t.dims {
        w.int(1, d);
    }
    let (code, raw): (ElemType, Vec<u8>) = match &t.values {
        TensorValues::F32(v) => (
            ElemType::Float,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorValues::I64(v) => (
            ElemType::Int64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    w.int(2, i64::from(code.code()));
    if !t.name.is_empty() {
        w.string(8, &t.name);
    }
    w.bytes(9, &raw);
    w
}

fn value_info_bytes(v: &ValueInfo) -> Writer {
    let mut shape = Writer::new();
    for d in &v.dims {
        let mut dim = Writer::new();
        match d {
            Dim::Fixed(n) => dim.int(1, *n),
            Dim::Named(s) => dim.string(2, s),
        }
        shape.message(1, &dim);
    }
    let mut tensor = Writer::new();
    tensor.int(1, i64::from(v.elem.code()));
    tensor.message(2, &shape);
    let mut ty = Writer::new();
    ty.message(1, &tensor);
    let mut w = Writer::new();
    w.string(1, &v.name);
    w.message(2, &ty);
    w
}

fn attribute_bytes(name: &str, v: &AttrValue) -> Writer {
    let mut w = Writer::new();
    w.string(1, name);
    // AttributeProto.AttributeType: FLOAT 1, INT 2, STRING 3, TENSOR 4, INTS 7.
    match v {
        AttrValue::Float(f) => {
            w.float(2, *f);
            w.int(20, 1);
        }
        AttrValue::Int(i) => {
            w.int(3, *i);
            w.int(20, 2);
        }
        AttrValue::String(s) => {
            w.string(4, s);
            w.int(20, 3);
        }
        AttrValue::Tensor(t) => {
            w.message(5, &tensor_bytes(t));
            w.int(20, 4);
        }
        AttrValue::Ints(v) => {
            for &i in v {
                w.int(8, i);
            }
            w.int(20, 7);
        }
    }
    w
}

impl Model {
    /// Serialises the model as an ONNX `ModelProto`.
    pub fn encode(&self) -> Vec<u8> {
        let mut g = Writer::new();
        for n in &self.nodes {
            let mut nw = Writer::new();
            for i in &n.inputs {
                nw.string(1, i);
            }
            for o in &n.outputs {
                nw.string(2, o);
            }
            nw.string(3, &n.name);
            nw.string(4, &n.op_type);
            for (k, v) in &n.attributes {
                nw.message(5, &attribute_bytes(k, v));
            }
            if !n.domain.is_empty() {
                nw.string(7, &n.domain);
            }
            g.message(1, &nw);
        }
        g.string(2, &self.graph_name);
        for t in &self.initializers {
            g.message(5, &tensor_bytes(t));
        }
        for v in &self.inputs {
            g.message(11, &value_info_bytes(v));
        }
        for v in &self.outputs {
            g.message(12, &value_info_bytes(v));
        }
        let mut m = Writer::new();
        m.int(1, IR_VERSION);
        m.string(2, "mirage-rs");
        m.string(3, env!("CARGO_PKG_VERSION"));
        if !self.doc.is_empty() {
            m.string(6, &self.doc);
        }
        m.message(7, &g);
        for (domain, version) in &self.opsets {
            let mut o = Writer::new();
            if !domain.is_empty() {
                o.string(1, domain);
            }
            o.int(2, *version);
            m.message(8, &o);
        }
        m.0
    }
}

// --- reading -------------------------------------------------------------------------------------

/// What load-time checks need to know of an ONNX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxSummary {
    /// `ir_version`.
    pub ir_version: i64,
    /// `(domain, version)` of every imported operator set ("" = the standard one).
    pub opsets: Vec<(String, i64)>,
    /// Graph inputs that are not initializers.
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
}

impl OnnxSummary {
    /// The version of the standard operator set, if imported.
    pub fn opset(&self) -> Option<i64> {
        self.opsets
            .iter()
            .find(|(d, _)| d.is_empty() || d == "ai.onnx")
            .map(|(_, v)| *v)
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// The next `(field number, value)`, `Ok(None)` at the end, `Err` on malformed input.
    fn next(&mut self) -> std::result::Result<Option<(u32, Field<'a>)>, ()> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint().ok_or(())?;
        let field = u32::try_from(key >> 3).map_err(|_| ())?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint().ok_or(())?),
            1 => {
                self.skip(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint().ok_or(())?).map_err(|_| ())?;
                let start = self.pos;
                self.skip(len)?;
                Field::Bytes(&self.buf[start..self.pos])
            }
            5 => {
                self.skip(4)?;
                Field::Fixed
            }
            _ => return Err(()),
        };
        Ok(Some((field, value)))
    }

    fn skip(&mut self, n: usize) -> std::result::Result<(), ()> {
        let end = self.pos.checked_add(n).ok_or(())?;
        if end > self.buf.len() {
            return Err(());
        }
        self.pos = end;
        Ok(())
    }
}

fn parse_value_info(b: &[u8]) -> std::result::Result<ValueInfo, ()> {
    let mut out = ValueInfo {
        name: String::new(),
        elem: ElemType::Other(0),
        dims: Vec::new(),
    };
    let mut r = Reader::new(b);
    while let Some((f, v)) = r.next()? {
        match (f, v) {
            (1, Field::Bytes(s)) => out.name = String::from_utf8_lossy(s).into_owned(),
            (2, Field::Bytes(ty)) => {
                let mut r = Reader::new(ty);
                while let Some((f, v)) = r.next()? {
                    let (1, Field::Bytes(tensor)) = (f, v) else {
                        continue;
                    };
                    let mut r = Reader::new(tensor);
                    while let Some((f, v)) = r.next()? {
                        match (f, v) {
                            (1, Field::Varint(c)) => out.elem = ElemType::from_code(c as i64),
                            (2, Field::Bytes(shape)) => {
                                let mut r = Reader::new(shape);
                                while let Some((f, v)) = r.next()? {
                                    let (1, Field::Bytes(dim)) = (f, v) else {
                                        continue;
                                    };
                                    let mut d = Dim::Named(String::new());
                                    let mut r = Reader::new(dim);
                                    while let Some((f, v)) = r.next()? {
                                        match (f, v) {
                                            (1, Field::Varint(n)) => d = Dim::Fixed(n as i64),
                                            (2, Field::Bytes(s)) => {
                                                d = Dim::Named(
                                                    String::from_utf8_lossy(s).into_owned(),
                                                );
                                            }
                                            _ => {}
                                        }
                                    }
                                    out.dims.push(d);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn summarize(bytes: &[u8]) -> std::result::Result<OnnxSummary, ()> {
    let mut out = OnnxSummary {
        ir_version: 0,
        opsets: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    let mut graph = None;
    let mut r = Reader::new(bytes);
    while let Some((f, v)) = r.next()? {
        match (f, v) {
            (1, Field::Varint(v)) => out.ir_version = v as i64,
            (7, Field::Bytes(g)) => graph = Some(g),
            (8, Field::Bytes(o)) => {
                let (mut domain, mut version) = (String::new(), 0);
                let mut r = Reader::new(o);
                while let Some((f, v)) = r.next()? {
                    match (f, v) {
                        (1, Field::Bytes(s)) => domain = String::from_utf8_lossy(s).into_owned(),
                        (2, Field::Varint(n)) => version = n as i64,
                        _ => {}
                    }
                }
                out.opsets.push((domain, version));
            }
            _ => {}
        }
    }
    let graph = graph.ok_or(())?;
    let mut initializers = std::collections::HashSet::new();
    let mut inputs = Vec::new();
    let mut r = Reader::new(graph);
    while let Some((f, v)) = r.next()? {
        match (f, v) {
            (5, Field::Bytes(t)) => {
                let mut r = Reader::new(t);
                while let Some((f, v)) = r.next()? {
                    if let (8, Field::Bytes(s)) = (f, v) {
                        initializers.insert(String::from_utf8_lossy(s).into_owned());
                    }
                }
            }
            (11, Field::Bytes(v)) => inputs.push(parse_value_info(v)?),
            (12, Field::Bytes(v)) => out.outputs.push(parse_value_info(v)?),
            _ => {}
        }
    }
    // Old exporters list weights among the inputs too; they are not what a caller feeds.
    out.inputs = inputs
        .into_iter()
        .filter(|v| !initializers.contains(&v.name))
        .collect();
    Ok(out)
}

/// Reads the opsets and the graph's inputs and outputs of an ONNX file's bytes; `path` only
/// names the file in the error.
pub fn read_summary(path: &std::path::Path, bytes: &[u8]) -> Result<OnnxSummary> {
    summarize(bytes).map_err(|()| Error::Onnx {
        path: path.to_path_buf(),
        reason: "not a readable ONNX model (malformed protobuf or no graph)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_back_what_was_written() {
        let io = |name: &str, elem, dims: Vec<Dim>| ValueInfo {
            name: name.into(),
            elem,
            dims,
        };
        let model = Model {
            opsets: vec![(String::new(), 17), ("com.microsoft".into(), 1)],
            graph_name: "g".into(),
            nodes: vec![Node {
                op_type: "Identity".into(),
                domain: String::new(),
                name: "n".into(),
                inputs: vec!["x".into()],
                outputs: vec!["y".into()],
                attributes: vec![("k".into(), AttrValue::Int(-3))],
            }],
            initializers: vec![TensorData {
                name: "w".into(),
                dims: vec![2],
                values: TensorValues::F32(vec![1.0, 2.0]),
            }],
            inputs: vec![io(
                "x",
                ElemType::Int64,
                vec![Dim::Named("batch".into()), Dim::Fixed(7)],
            )],
            outputs: vec![io("y", ElemType::Float, vec![Dim::Named("batch".into())])],
            doc: "d".into(),
        };
        let s = read_summary(std::path::Path::new("m.onnx"), &model.encode()).unwrap();
        assert_eq!(s.ir_version, IR_VERSION);
        assert_eq!(s.opset(), Some(17));
        assert_eq!(s.inputs, model.inputs);
        assert_eq!(s.outputs, model.outputs);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b"\xff\xff\xff"[..], b"\x3a\x05ab", b""] {
            assert!(read_summary(std::path::Path::new("x.onnx"), bytes).is_err());
        }
    }
}
