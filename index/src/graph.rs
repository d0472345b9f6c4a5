//! The graph seam of the embedded store.
//!
//! The store talks to a graph through [`GraphEngine`] only: add points, search with a predicate
//! on the point id and a beam width, save and load, size and memory. Everything else (SQLite as
//! the truth, checkpoints, replay, filters, the exact fallback, crash safety) lives in the store
//! and is shared by every engine. The engine is [`HnswGraph`] (`hnsw/`); which engine built a
//! collection is recorded in its manifest, and the store makes and loads graphs only through
//! `create` and `open` here, keyed on that name.
//!
//! Deleted and replaced points stay in the graph as tombstones until `compact` rebuilds it: the
//! store's predicate skips points that are no longer live, so a search never returns one.

use std::path::Path;

use crate::error::{IndexError, Result};
use crate::hnsw::HnswGraph;
pub use crate::hnsw::{BareGraph, ENGINE};
use crate::types::{HnswParams, Quantization};

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

/// An empty graph of the engine named `engine` (a manifest's) for `dim`-dimensional vectors,
/// with room for `capacity` points. An engine this build does not have is refused.
pub(crate) fn create(
    engine: &str,
    dim: usize,
    params: &HnswParams,
    quantization: Quantization,
    capacity: usize,
) -> Result<Box<dyn GraphEngine>> {
    match engine {
        ENGINE => Ok(Box::new(HnswGraph::new(
            dim,
            params,
            quantization,
            capacity,
        ))),
        other => Err(IndexError::invalid(format!(
            "a graph of the {other} engine was asked for, this build uses {ENGINE}"
        ))),
    }
}

/// Loads the graph that the engine named `engine` (a manifest's) saved to `path`. A dump that
/// is damaged, foreign, or made for other settings is an error, never a crash, so the store can
/// rebuild from its database. An engine this build does not have is refused.
pub(crate) fn open(
    engine: &str,
    path: &Path,
    dim: usize,
    params: &HnswParams,
    quantization: Quantization,
) -> Result<Box<dyn GraphEngine>> {
    match engine {
        ENGINE => Ok(Box::new(HnswGraph::load(path, dim, params, quantization)?)),
        other => Err(IndexError::Corrupt {
            path: path.parent().unwrap_or(path).to_path_buf(),
            reason: format!("its graph was built by the {other} engine, this build uses {ENGINE}"),
        }),
    }
}
