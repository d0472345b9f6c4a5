//! Embeddings as rows of one flat `f32` buffer: what the model returns for a batch, and what
//! zero-shot classification, the matching score and evaluation compare — without a tensor type.

use crate::kernels::dot;
use crate::{Error, Result};

/// `len` unit vectors of `dim` values each, row after row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    dim: usize,
    data: Vec<f32>,
}

impl Embeddings {
    /// Rows of `dim` values from `data` (its length must be a multiple of `dim`).
    pub fn new(data: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::InvalidInput(format!(
                "{} values do not make rows of {dim}",
                data.len()
            )));
        }
        Ok(Self { dim, data })
    }

    /// The rows `rows`, which must all have `dim` values.
    pub fn from_rows(rows: &[Vec<f32>], dim: usize) -> Result<Self> {
        if let Some(r) = rows.iter().find(|r| r.len() != dim) {
            return Err(Error::InvalidInput(format!(
                "a row of {} values among rows of {dim}",
                r.len()
            )));
        }
        Self::new(rows.concat(), dim)
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Every row, in order.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.dim.max(1))
    }

    /// The values, row after row.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// One `Vec` per row.
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        self.rows().map(<[f32]>::to_vec).collect()
    }

    /// Appends `other`'s rows (of the same width).
    pub fn extend(&mut self, other: &Embeddings) -> Result<()> {
        if self.data.is_empty() {
            self.dim = other.dim;
        } else if other.dim != self.dim && !other.is_empty() {
            return Err(Error::InvalidInput(format!(
                "rows of {} values appended to rows of {}",
                other.dim, self.dim
            )));
        }
        self.data.extend_from_slice(&other.data);
        Ok(())
    }

    /// ⟨self_i, other_j⟩ for every pair, row-major: `self.len()` rows of `other.len()` values.
    pub fn similarities(&self, other: &Embeddings) -> Result<Vec<f32>> {
        if self.dim != other.dim && !self.is_empty() && !other.is_empty() {
            return Err(Error::InvalidInput(format!(
                "rows of {} values compared with rows of {}",
                self.dim, other.dim
            )));
        }
        Ok(self
            .rows()
            .flat_map(|a| other.rows().map(move |b| dot(a, b)))
            .collect())
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Softmax of `xs` in place, shifted by the largest value so no exponent overflows.
pub fn softmax(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in xs.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    xs.iter_mut().for_each(|x| *x /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_similarities_and_bad_shapes() {
        let a = Embeddings::new(vec![1.0, 0.0, 0.0, 1.0], 2).unwrap();
        let b = Embeddings::from_rows(&[vec![0.6, 0.8]], 2).unwrap();
        assert_eq!((a.len(), a.dim(), a.row(1)), (2, 2, &[0.0f32, 1.0][..]));
        assert_eq!(a.similarities(&b).unwrap(), vec![0.6, 0.8]);
        assert!(Embeddings::new(vec![1.0; 3], 2).is_err());
        assert!(Embeddings::from_rows(&[vec![1.0; 3]], 2).is_err());
        let mut c = Embeddings::default();
        c.extend(&a).unwrap();
        c.extend(&b).unwrap();
        assert_eq!(c.len(), 3);
        let mut s = [1.0f32, 2.0, 3.0];
        softmax(&mut s);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6 && s[2] > s[1]);
        let mut v = [3.0f32, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
    }
}
