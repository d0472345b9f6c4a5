//! The graph as the embedded store configures it, without the store: for benchmarks.

use super::HnswGraph;
use crate::error::Result;
use crate::graph::GraphEngine;
use crate::types::{HnswParams, Quantization};
use mirage_model::kernels::dot;

/// The graph exactly as the embedded store configures it, without the store around it: for
/// benchmarks that separate the graph's cost from the store's.
pub struct BareGraph(HnswGraph);

impl BareGraph {
    /// Builds a graph over `vectors` (unit length), ids = positions, on every core.
    pub fn build(
        vectors: &[Vec<f32>],
        params: &HnswParams,
        quantization: Quantization,
    ) -> Result<Self> {
        let dim = vectors.first().map_or(1, Vec::len);
        let graph = HnswGraph::new(dim, params, quantization, vectors.len());
        let batch: Vec<(u64, &[f32])> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice()))
            .collect();
        graph.add(&batch)?;
        Ok(Self(graph))
    }

    /// Ids of the approximate `k` nearest neighbours, best first; quantised graphs rescore their
    /// beam against `vectors` in f32 as the store does.
    pub fn search(&self, vectors: &[Vec<f32>], query: &[f32], k: usize, ef: usize) -> Vec<usize> {
        let mut hits = self.0.search(query, k, ef, None).unwrap_or_default();
        if self.0.quantization() != Quantization::F32 {
            for h in &mut hits {
                h.1 = dot(query, &vectors[h.0 as usize]);
            }
            hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        }
        hits.into_iter()
            .take(k)
            .map(|(id, _)| id as usize)
            .collect()
    }

    /// Bytes the graph holds.
    pub fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }

    /// The instruction set the distance kernels run on here.
    pub fn isa(&self) -> String {
        mirage_model::kernels::isa().into()
    }
}
