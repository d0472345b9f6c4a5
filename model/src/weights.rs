//! A bundle's tensors as plain f32 arrays on the host. The ONNX graph writer and ONNX Runtime
//! start from these, and the candle towers (feature `candle`) convert them, so loading and
//! serving a bundle needs no tensor library.

use std::collections::HashMap;
use std::path::Path;

use crate::{Error, Result};

/// One tensor: its shape and its values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    dims: Vec<usize>,
    data: Vec<f32>,
}

/// Every tensor of a safetensors file, by name.
pub type HostWeights = HashMap<String, HostTensor>;

impl HostTensor {
    /// A tensor of shape `dims` over `data` (row-major; the lengths must agree).
    pub fn new(dims: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = dims.iter().product();
        if n != data.len() {
            return Err(Error::InvalidInput(format!(
                "a tensor of shape {dims:?} holds {n} values, not {}",
                data.len()
            )));
        }
        Ok(Self { dims, data })
    }

    /// The shape.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The transpose of a matrix.
    pub fn transposed(&self) -> Result<Self> {
        let [rows, cols] = self.dims[..] else {
            return Err(Error::InvalidInput(format!(
                "only a matrix can be transposed, not a tensor of shape {:?}",
                self.dims
            )));
        };
        let mut out = vec![0f32; self.data.len()];
        for (r, row) in self.data.chunks_exact(cols.max(1)).enumerate().take(rows) {
            for (c, &v) in row.iter().enumerate() {
                out[c * rows + r] = v;
            }
        }
        Self::new(vec![cols, rows], out)
    }

    /// `parts` stacked along the first dimension (the others must agree).
    pub fn concat(parts: &[&Self]) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::InvalidInput("nothing to concatenate".into()));
        };
        let rest = &first.dims[1.min(first.dims.len())..];
        let mut dims0 = 0;
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for p in parts {
            if p.dims.is_empty() || &p.dims[1..] != rest {
                return Err(Error::InvalidInput(format!(
                    "cannot concatenate tensors of shapes {:?} and {:?}",
                    first.dims, p.dims
                )));
            }
            dims0 += p.dims[0];
            data.extend_from_slice(&p.data);
        }
        let mut dims = vec![dims0];
        dims.extend_from_slice(rest);
        Self::new(dims, data)
    }
}

/// Reads every tensor of the safetensors `bytes` (f32, f16, bf16 or f64) as f32; `path` names
/// the file in errors.
pub fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<HostWeights> {
    use safetensors::Dtype;
    let bad = |reason: String| Error::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = HashMap::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(bad(format!(
                    "tensor {name} is {other:?}; bundles hold f32, f16, bf16 or f64"
                )))
            }
        };
        let t = HostTensor::new(view.shape().to_vec(), data)
            .map_err(|e| bad(format!("tensor {name}: {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// The weights as candle tensors on `device`.
#[cfg(feature = "candle")]
pub fn to_candle(
    weights: HostWeights,
    device: &candle_core::Device,
) -> Result<HashMap<String, candle_core::Tensor>> {
    weights
        .into_iter()
        .map(|(name, t)| {
            let tensor = candle_core::Tensor::from_vec(t.data, t.dims, device)?;
            Ok((name, tensor))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_and_concat_match_their_definitions() {
        let m = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let t = m.transposed().unwrap();
        assert_eq!(t.dims(), &[3, 2]);
        assert_eq!(t.data(), &[1., 4., 2., 5., 3., 6.]);
        let c = HostTensor::concat(&[&m, &m]).unwrap();
        assert_eq!(c.dims(), &[4, 3]);
        assert_eq!(&c.data()[6..], m.data());
        let v = HostTensor::new(vec![3], vec![1., 2., 3.]).unwrap();
        assert!(HostTensor::concat(&[&m, &v]).is_err());
        assert!(v.transposed().is_err());
        assert!(HostTensor::new(vec![2, 2], vec![0.; 3]).is_err());
    }

    #[test]
    fn every_float_dtype_reads_as_f32() {
        use safetensors::tensor::TensorView;
        use safetensors::Dtype;
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f64s: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let views = vec![
            ("a", TensorView::new(Dtype::F32, vec![2], &f32s).unwrap()),
            ("b", TensorView::new(Dtype::F64, vec![1, 2], &f64s).unwrap()),
            ("c", TensorView::new(Dtype::F16, vec![2], &f16s).unwrap()),
            ("d", TensorView::new(Dtype::BF16, vec![2], &bf16s).unwrap()),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        let w = read_safetensors(Path::new("x.safetensors"), &bytes).unwrap();
        for name in ["a", "b", "c", "d"] {
            assert_eq!(w[name].data(), &[1.5, -2.0], "{name}");
        }
        assert_eq!(w["b"].dims(), &[1, 2]);
        let ints = [1u8, 0, 0, 0];
        let bytes = safetensors::serialize(
            vec![("i", TensorView::new(Dtype::I32, vec![1], &ints).unwrap())],
            None,
        )
        .unwrap();
        let err = read_safetensors(Path::new("x.safetensors"), &bytes).unwrap_err();
        assert!(err.to_string().contains("tensor i is I32"), "{err}");
    }
}
