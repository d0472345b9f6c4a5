//! The HNSW graph of one vector space (hnsw_rs) and the flat copy of its live vectors.
//!
//! hnsw_rs cannot delete, so the graph keeps every vector ever inserted; the flat store knows
//! which are live, and searches skip the rest (tombstones) until `compact` rebuilds the graph.
//! The flat store also serves exact search and rebuilds, which is why vectors are held twice.

use std::collections::HashMap;
use std::path::Path;

use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{AnnT, Distance, Hnsw};

use crate::error::{IndexError, Result};
use crate::types::HnswParams;

/// `1 - <a, b>` on unit vectors, clamped at 0: hnsw_rs's own `DistDot` asserts `<a, b> <= 1`,
/// which rounding breaks for a vector compared with itself. Eight accumulators let the compiler
/// vectorise the sum (a single running sum may not be reordered).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Inner product of two equally long slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// hnsw_rs's graph type over our distance. `'static` because a reloaded graph borrows its
/// loader, which we leak (one small struct per load) to keep the graph in a plain struct.
pub(crate) type Graph = Hnsw<'static, f32, UnitDot>;

const MAX_LAYERS: usize = 16;

pub(crate) fn new_graph(params: &HnswParams, capacity: usize) -> Graph {
    Hnsw::new(
        params.m,
        capacity.max(1024),
        MAX_LAYERS,
        params.ef_construction,
        UnitDot,
    )
}

pub(crate) fn insert_into_graph(graph: &Graph, batch: &[(&[f32], usize)]) {
    // hnsw_rs's parallel insert pays off only for batches big enough to spread over threads.
    match batch.len() {
        0 => {}
        1..=63 => batch.iter().for_each(|&entry| graph.insert_slice(entry)),
        _ => graph.parallel_insert_slice(&batch.to_vec()),
    }
}

/// The hnsw_rs graph exactly as the embedded store configures it, without the store around it:
/// for benchmarks that separate the graph's cost from the store's.
pub struct BareGraph(Graph);

impl BareGraph {
    /// Builds a graph over `vectors` (unit length), ids = positions.
    pub fn build(vectors: &[Vec<f32>], params: &HnswParams) -> Self {
        let graph = new_graph(params, vectors.len());
        let batch: Vec<(&[f32], usize)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_slice(), i))
            .collect();
        for chunk in batch.chunks(1000) {
            insert_into_graph(&graph, chunk);
        }
        Self(graph)
    }

    /// Ids of the approximate `k` nearest neighbours, best first.
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<usize> {
        self.0
            .search(query, k, ef.max(k))
            .into_iter()
            .map(|n| n.get_origin_id())
            .collect()
    }
}

pub(crate) fn load_graph(dir: &Path, basename: &str) -> Result<Graph> {
    let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
    let fail = |why: String| {
        IndexError::Graph(format!(
            "cannot load {basename} in {}: {why}",
            dir.display()
        ))
    };
    // hnsw_rs unwraps on some malformed files; a damaged dump must not take the process down
    // when the database can rebuild the graph.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let owned = loader;
        load_leaked(owned)
    })) {
        Ok(Ok(graph)) => Ok(graph),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail("the dump is malformed".into())),
    }
}

/// Takes the loader by value so the graph can borrow it for `'static`.
fn load_leaked(loader: &'static mut HnswIo) -> anyhow::Result<Graph> {
    loader.load_hnsw::<f32, UnitDot>()
}

/// Dumps the graph under `basename` (or a name hnsw_rs derives from it when that one is taken)
/// and returns the name actually written.
pub(crate) fn dump_graph(graph: &Graph, dir: &Path, basename: &str) -> Result<String> {
    graph
        .file_dump(dir, basename)
        .map_err(|e| IndexError::Graph(format!("cannot write {basename}: {e}")))
}

/// Live vectors of one space, contiguous for fast brute-force scans.
#[derive(Default)]
pub(crate) struct FlatVectors {
    dim: usize,
    data: Vec<f32>,
    points: Vec<u64>,
    owners: Vec<u32>,
    row_of: HashMap<u64, usize>,
}

impl FlatVectors {
    pub(crate) fn new(dim: usize) -> Self {
        Self {
            dim,
            ..Default::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    pub(crate) fn insert(&mut self, point: u64, owner: u32, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        self.row_of.insert(point, self.points.len());
        self.points.push(point);
        self.owners.push(owner);
        self.data.extend_from_slice(v);
    }

    pub(crate) fn remove(&mut self, point: u64) {
        let Some(row) = self.row_of.remove(&point) else {
            return;
        };
        let last = self.points.len() - 1;
        if row != last {
            let moved = self.points[last];
            self.points[row] = moved;
            self.owners[row] = self.owners[last];
            let (head, tail) = self.data.split_at_mut(last * self.dim);
            head[row * self.dim..(row + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.row_of.insert(moved, row);
        }
        self.points.pop();
        self.owners.pop();
        self.data.truncate(last * self.dim);
    }

    pub(crate) fn owner_of(&self, point: u64) -> Option<u32> {
        self.row_of.get(&point).map(|&row| self.owners[row])
    }

    pub(crate) fn vector(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    pub(crate) fn rows(&self) -> impl Iterator<Item = (usize, u64, u32)> + '_ {
        self.points
            .iter()
            .zip(&self.owners)
            .enumerate()
            .map(|(row, (&p, &o))| (row, p, o))
    }
}

/// Keeps the best `k` (score, item) pairs seen, best first on `into_sorted`.
pub(crate) struct TopK {
    k: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Scored>>,
}

#[derive(PartialEq)]
pub(crate) struct Scored(pub f32, pub u32);

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Ties broken by owner slot so exact results are deterministic.
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        Self {
            k,
            heap: std::collections::BinaryHeap::with_capacity(k + 1),
        }
    }

    pub(crate) fn push(&mut self, score: f32, owner: u32) {
        let item = std::cmp::Reverse(Scored(score, owner));
        if self.heap.len() < self.k {
            self.heap.push(item);
        } else if let Some(worst) = self.heap.peek() {
            if item < *worst {
                self.heap.pop();
                self.heap.push(item);
            }
        }
    }

    pub(crate) fn into_sorted(self) -> Vec<Scored> {
        let mut v: Vec<Scored> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}
