//! The graph seam of the embedded store, and its engine.
//!
//! The store talks to a graph through [`GraphEngine`] only: add points, search with a predicate
//! on the point id and a beam width, save and load, size and memory. Everything else (SQLite as
//! the truth, checkpoints, replay, filters, the exact fallback, crash safety) lives in the store
//! and is shared by every engine. The engine is USearch (HNSW in C++ with SIMD distances over
//! f32, f16 or i8 storage); which engine built a collection is recorded in its manifest.
//!
//! Deleted and replaced points stay in the graph as tombstones until `compact` rebuilds it: the
//! store's predicate skips points that are no longer live, so a search never returns one.

use std::path::Path;
use std::sync::{Condvar, Mutex, RwLock};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::{IndexError, Result};
use crate::flat::dot;
use crate::types::{HnswParams, Quantization};

/// The engine this build writes, as recorded in manifests.
pub const ENGINE: &str = "usearch";

fn scalar_kind(q: Quantization) -> ScalarKind {
    match q {
        Quantization::F32 => ScalarKind::F32,
        Quantization::F16 => ScalarKind::F16,
        Quantization::I8 => ScalarKind::I8,
    }
}

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

/// A USearch HNSW graph with inner-product distance.
///
/// USearch needs a per-thread search context for every concurrent call and an exclusive caller
/// while it grows, so calls take a context from a counted pool and a shared lock that growth
/// takes exclusively.
pub struct UsearchGraph {
    index: Index,
    quantization: Quantization,
    growth: RwLock<()>,
    contexts: Contexts,
}

/// Counts free USearch thread contexts; a caller waits for one rather than failing.
struct Contexts {
    free: Mutex<usize>,
    returned: Condvar,
}

struct ContextPermit<'a>(&'a Contexts);

impl Contexts {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            returned: Condvar::new(),
        }
    }

    fn take(&self) -> ContextPermit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        ContextPermit(self)
    }
}

impl Drop for ContextPermit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.returned.notify_one();
    }
}

/// Threads that may add to or search one graph at the same time; more callers queue.
fn context_count() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get()) * 4
}

/// Threads a large batch is added with.
fn build_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// USearch's own f32 kernels (NumKong) accumulate in f64 for accuracy, at half the speed of f32
/// lanes; unit vectors need no such care, so f32 graphs measure with our AVX2/FMA dot instead.
// Unsafe because USearch hands the metric raw pointers: it guarantees each points at one stored
// or query vector of `dim` f32s, alive for the call.
#[allow(unsafe_code)]
fn dot_raw(a: *const f32, b: *const f32, dim: usize) -> f32 {
    // SAFETY: see above; the slices are only read during this call.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, dim),
            std::slice::from_raw_parts(b, dim),
        )
    };
    dot(a, b)
}

fn engine_error(what: &str, e: impl std::fmt::Display) -> IndexError {
    IndexError::Graph(format!("usearch: {what}: {e}"))
}

impl UsearchGraph {
    fn options(dim: usize, params: &HnswParams, quantization: Quantization) -> IndexOptions {
        IndexOptions {
            dimensions: dim,
            metric: MetricKind::IP,
            quantization: scalar_kind(quantization),
            connectivity: params.m,
            expansion_add: params.ef_construction,
            // The beam of a search is max(this, results asked for); asking for `ef` results
            // then gives every query its own beam without touching shared settings.
            expansion_search: 1,
            multi: false,
        }
    }

    /// An empty graph with room for `capacity` points.
    pub fn new(
        dim: usize,
        params: &HnswParams,
        quantization: Quantization,
        capacity: usize,
    ) -> Result<Self> {
        let index = Index::new(&Self::options(dim, params, quantization))
            .map_err(|e| engine_error("create", e))?;
        let graph = Self::wrap(index, quantization, dim);
        graph.reserve(capacity.max(1024))?;
        Ok(graph)
    }

    /// Loads a graph written by [`GraphEngine::save`]; a damaged or foreign file is an error,
    /// never a crash, so the store can rebuild from its database instead.
    pub fn load(
        path: &Path,
        dim: usize,
        params: &HnswParams,
        quantization: Quantization,
    ) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| {
            IndexError::Graph(format!("cannot load {}: {e}", path.display()))
        };
        let path_str = path
            .to_str()
            .ok_or_else(|| fail(&"the path is not UTF-8"))?;
        let meta = Index::metadata(path_str).map_err(|e| fail(&e))?;
        if meta.dimensions as usize != dim || meta.quantization != scalar_kind(quantization) {
            return Err(fail(&format!(
                "it holds {}-d {:?} vectors, the collection {dim}-d {quantization}",
                meta.dimensions, meta.quantization
            )));
        }
        let index = Index::new(&Self::options(dim, params, quantization)).map_err(|e| fail(&e))?;
        index.load(path_str).map_err(|e| fail(&e))?;
        // A load replaces the settings with the file's; set the per-query beam rule again.
        index.change_expansion_search(1);
        index.change_expansion_add(params.ef_construction);
        let graph = Self::wrap(index, quantization, dim);
        graph.reserve(graph.index.size() + 1024)?;
        Ok(graph)
    }

    fn wrap(mut index: Index, quantization: Quantization, dim: usize) -> Self {
        if quantization == Quantization::F32 {
            index.change_metric::<f32>(Box::new(move |a, b| 1.0 - dot_raw(a, b, dim)));
        }
        Self {
            index,
            quantization,
            growth: RwLock::new(()),
            contexts: Contexts::new(context_count()),
        }
    }

    /// Grows the capacity to at least `wanted` points (doubling, so appends stay amortised O(1)).
    fn reserve(&self, wanted: usize) -> Result<()> {
        if wanted <= self.index.capacity() {
            return Ok(());
        }
        let _exclusive = self.growth.write().unwrap_or_else(|e| e.into_inner());
        let capacity = self.index.capacity();
        if wanted <= capacity {
            return Ok(());
        }
        self.index
            .reserve_capacity_and_threads(wanted.max(capacity * 2), context_count())
            .map_err(|e| engine_error("reserve", e))
    }

    fn add_one(&self, key: u64, v: &[f32]) -> Result<()> {
        let _shared = self.growth.read().unwrap_or_else(|e| e.into_inner());
        let _context = self.contexts.take();
        self.index
            .add(key, v)
            .map_err(|e| engine_error(&format!("add point {key}"), e))
    }
}

impl GraphEngine for UsearchGraph {
    fn add(&self, batch: &[(u64, &[f32])]) -> Result<()> {
        self.reserve(self.index.size() + batch.len())?;
        let threads = build_threads().min(batch.len().div_ceil(64)).max(1);
        if threads == 1 {
            return batch.iter().try_for_each(|&(k, v)| self.add_one(k, v));
        }
        // Interleaved so every thread works on the whole id range, as a sequential build would.
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        batch
                            .iter()
                            .skip(t)
                            .step_by(threads)
                            .try_for_each(|&(k, v)| self.add_one(k, v))
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(IndexError::Graph("usearch: an add panicked".into())))
            })
        })
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<Vec<(u64, f32)>> {
        if k == 0 || self.index.size() == 0 {
            return Ok(Vec::new());
        }
        let wanted = ef.max(k);
        let matches = {
            let _shared = self.growth.read().unwrap_or_else(|e| e.into_inner());
            let _context = self.contexts.take();
            match accept {
                None => self.index.search(query, wanted),
                Some(accept) => self.index.filtered_search(query, wanted, accept),
            }
            .map_err(|e| engine_error("search", e))?
        };
        let mut hits: Vec<(u64, f32)> = matches
            .keys
            .into_iter()
            .zip(matches.distances)
            .map(|(key, d)| (key, 1.0 - d))
            .collect();
        hits.truncate(if self.quantization == Quantization::F32 {
            k
        } else {
            // The caller rescoring in f32 gets the whole beam: quantised distances misorder
            // close neighbours, and the true top-k is usually inside the top-ef.
            wanted
        });
        Ok(hits)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let path_str = path
            .to_str()
            .ok_or_else(|| IndexError::Graph(format!("{} is not UTF-8", path.display())))?;
        // Exclusive: a point added while the file is written could be saved half-linked.
        let _exclusive = self.growth.write().unwrap_or_else(|e| e.into_inner());
        self.index
            .save(path_str)
            .map_err(|e| engine_error(&format!("save {}", path.display()), e))
    }

    fn len(&self) -> usize {
        self.index.size()
    }

    fn memory_bytes(&self) -> usize {
        self.index.memory_usage()
    }

    fn quantization(&self) -> Quantization {
        self.quantization
    }
}

/// The graph exactly as the embedded store configures it, without the store around it: for
/// benchmarks that separate the graph's cost from the store's.
pub struct BareGraph(UsearchGraph);

impl BareGraph {
    /// Builds a graph over `vectors` (unit length), ids = positions, on every core.
    pub fn build(
        vectors: &[Vec<f32>],
        params: &HnswParams,
        quantization: Quantization,
    ) -> Result<Self> {
        let dim = vectors.first().map_or(1, Vec::len);
        let graph = UsearchGraph::new(dim, params, quantization, vectors.len())?;
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
        if self.0.quantization != Quantization::F32 {
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

    /// The instruction set USearch's distance kernels run on here.
    pub fn isa(&self) -> String {
        self.0.index.hardware_acceleration()
    }
}
