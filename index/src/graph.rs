//! The graph seam of the embedded store.
//!
//! The store talks to a graph through [`GraphEngine`] only: add points, search with a predicate
//! on the point id and a beam width, save and load, size and memory. Everything else (SQLite as
//! the truth, checkpoints, replay, filters, the exact fallback, crash safety) lives in the store
//! and is shared by every engine. The engine is [`HnswGraph`] (`hnsw.rs`); which engine built a
//! collection is recorded in its manifest.
//!
//! Deleted and replaced points stay in the graph as tombstones until `compact` rebuilds it: the
//! store's predicate skips points that are no longer live, so a search never returns one.

use std::path::Path;

use crate::error::Result;
use crate::hnsw::HnswGraph;
use crate::kernels::dot;
use crate::types::{HnswParams, Quantization};

/// The engine this build writes, as recorded in manifests (and its dump format's version).
pub const ENGINE: &str = "mirage-hnsw-1";

/// One vector space's graph, as the embedded store sees it. Points are keyed by their SQLite
/// point id; scores are inner products of unit vectors (higher is closer).
pub trait GraphEngine: Send + Sync {
    /// Adds points (ids never seen by this graph before), in parallel for large batches.
    fn add(&self, batch: &[(u64, &[f32])]) -> Result<()>;
    /// Up to `k` best points passing `accept`, best first, walking a beam of at least `ef`.
    /// `accept` is evaluated inside the walk, so a selective predicate costs extra visits, never
    /// a scan of the whole graph.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<Vec<(u64, f32)>>;
    /// Writes the graph to `path` (one file).
    fn save(&self, path: &Path) -> Result<()>;
    /// Points in the graph, tombstones included.
    fn len(&self) -> usize;
    /// Whether the graph holds no point at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes the graph holds in memory (links and its copy of the vectors).
    fn memory_bytes(&self) -> usize;
    /// How the graph stores vectors; anything but f32 gives approximate scores, and `search`
    /// then returns its whole beam for the caller to rescore.
    fn quantization(&self) -> Quantization;
}

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
        crate::kernels::isa().into()
    }
}
