//! The embedded store's graph engine: HNSW (Malkov & Yashunin 2018) over inner products, in
//! Rust, laid out for speed.
//!
//! - Vectors sit in one contiguous array per graph (f32, f16 or i8 with a scale per vector),
//!   links in another: level 0 as fixed `1 + 2M` slots per node (count, then ids), the rare upper
//!   levels per node. A walk touches one link row and the neighbours' vector rows, prefetched.
//! - Visited sets are generation-stamped arrays reused across searches (no hashing, no clearing).
//! - Adding a batch first appends its vectors and empty link rows under an exclusive lock (fast:
//!   a copy), then links the new points on every core under a shared one, so searches run
//!   throughout. Links are atomics written under a striped lock per node and read without one:
//!   a reader racing a rewrite sees a mix of old and new valid ids, never an invalid one.
//! - Neighbours are chosen by the paper's heuristic (keep a candidate only if it is closer to the
//!   new point than to every neighbour kept so far), M per level, up to 2M at level 0.
//! - A search with a predicate walks the whole beam but admits to its results only points the
//!   predicate accepts, and stops when the beam is exhausted.
//! - Dumps are one file: a header, the arrays, and a CRC-32; anything that does not check out is
//!   an error, never a panic, and the store rebuilds from SQLite.
//!
//! The parts: `layout.rs` holds the arrays of points, vectors and links; `search.rs` the walk
//! over them; `visited.rs` the walk's working memory; `dump.rs` the file a graph is saved to;
//! `bare.rs` the graph without the store around it, for benchmarks.

mod bare;
mod dump;
mod layout;
mod search;
#[cfg(test)]
mod tests;
mod visited;

use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Mutex, MutexGuard, RwLock};

use crate::error::{IndexError, Result};
use crate::graph::GraphEngine;
use crate::types::{HnswParams, Quantization};

pub use bare::BareGraph;
use layout::{Nodes, Vectors};
use search::Near;
use visited::Scratch;

/// The engine this build writes, as recorded in manifests (and its dump format's version).
pub const ENGINE: &str = "mirage-hnsw-1";

const RELAXED: AtomicOrdering = AtomicOrdering::Relaxed;

/// Levels above this are never drawn (the chance is M^-16).
const MAX_LEVEL: usize = 16;
/// `entry` when the graph is empty.
const NO_ENTRY: u64 = u64::MAX;
/// Striped link locks: a writer holds one at a time, so stripes never deadlock, and with a few
/// threads two of them rarely want the same stripe.
const LOCK_STRIPES: usize = 4096;
/// Batches smaller than this per thread are linked on the calling thread.
const MIN_PER_THREAD: usize = 64;

/// An HNSW graph over inner products of unit vectors; see the module docs.
pub struct HnswGraph {
    quantization: Quantization,
    /// Links per node chosen at every level; level 0 holds up to `2 m`.
    m: usize,
    ef_construction: usize,
    level_mult: f64,
    nodes: RwLock<Nodes>,
    /// `level << 32 | node` of the entry point, or [`NO_ENTRY`].
    entry: AtomicU64,
    /// Held by an insertion that raises the top level, for its whole insertion.
    raise: Mutex<()>,
    locks: Box<[Mutex<()>]>,
    scratch: Mutex<Vec<Scratch>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pack(node: u32, level: usize) -> u64 {
    ((level as u64) << 32) | u64::from(node)
}

fn unpack(entry: u64) -> (u32, usize) {
    (entry as u32, (entry >> 32) as usize)
}

/// A point's level, drawn from the paper's exponential law by a hash of its key, so a graph's
/// shape does not depend on thread timing.
fn level_of(key: u64, mult: f64) -> usize {
    // SplitMix64 finaliser.
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // Uniform in (0, 1].
    let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    ((-u.ln() * mult) as usize).min(MAX_LEVEL)
}

fn graph_error(what: impl std::fmt::Display) -> IndexError {
    IndexError::Graph(format!("hnsw: {what}"))
}

/// Threads a large batch is linked with.
fn build_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl HnswGraph {
    /// An empty graph for `dim`-dimensional vectors with room for `capacity` points.
    pub fn new(
        dim: usize,
        params: &HnswParams,
        quantization: Quantization,
        capacity: usize,
    ) -> Self {
        let m = params.m.max(2);
        let mut nodes = Nodes {
            dim,
            stride0: 1 + 2 * m,
            stride: 1 + m,
            keys: Vec::new(),
            levels: Vec::new(),
            vectors: Vectors::new(quantization),
            links0: Vec::new(),
            upper: Vec::new(),
        };
        nodes.reserve_exact(capacity);
        Self {
            quantization,
            m,
            ef_construction: params.ef_construction.max(m),
            level_mult: 1.0 / (m as f64).ln(),
            nodes: RwLock::new(nodes),
            entry: AtomicU64::new(NO_ENTRY),
            raise: Mutex::new(()),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            scratch: Mutex::new(Vec::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Nodes> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn take_scratch(&self) -> Scratch {
        lock(&self.scratch).pop().unwrap_or_else(Scratch::new)
    }

    fn give_scratch(&self, s: Scratch) {
        lock(&self.scratch).push(s);
    }

    fn link_lock(&self, node: u32) -> MutexGuard<'_, ()> {
        lock(&self.locks[node as usize % LOCK_STRIPES])
    }

    /// The paper's neighbour heuristic over `candidates` sorted closest first: a candidate is
    /// kept if it is closer to the new point than to every point kept so far, up to `m`.
    fn select(&self, nodes: &Nodes, candidates: &[Near], m: usize) -> Vec<Near> {
        if candidates.len() <= m {
            return candidates.to_vec();
        }
        let mut kept: Vec<Near> = Vec::with_capacity(m);
        for &c in candidates {
            if kept.len() >= m {
                break;
            }
            let cq = nodes.query_of(c.node);
            if kept.iter().all(|k| cq.dist(k.node) > c.dist) {
                kept.push(c);
            }
        }
        kept
    }

    /// Writes `chosen` as the links of `node` at `level` (ids first, then the count).
    fn write_links(links: &[AtomicU32], chosen: impl Iterator<Item = u32>) {
        let mut count = 0;
        for (slot, id) in links[1..].iter().zip(chosen) {
            slot.store(id, RELAXED);
            count += 1;
        }
        links[0].store(count, RELAXED);
    }

    /// Adds the link `node → new` at `level`, pruning `node`'s list by the heuristic when full.
    fn connect(&self, nodes: &Nodes, node: u32, new: Near, level: usize) {
        let _guard = self.link_lock(node);
        let links = nodes.links(node, level);
        let cap = links.len() - 1;
        let count = (links[0].load(RELAXED) as usize).min(cap);
        if links[1..=count].iter().any(|s| s.load(RELAXED) == new.node) {
            return;
        }
        if count < cap {
            links[1 + count].store(new.node, RELAXED);
            links[0].store(count as u32 + 1, RELAXED);
            return;
        }
        let nq = nodes.query_of(node);
        let mut candidates: Vec<Near> = links[1..=count]
            .iter()
            .map(|s| {
                let n = s.load(RELAXED);
                Near {
                    dist: nq.dist(n),
                    node: n,
                }
            })
            .collect();
        candidates.push(new);
        candidates.sort_unstable();
        let kept = self.select(nodes, &candidates, cap);
        Self::write_links(links, kept.iter().map(|k| k.node));
    }

    /// Links the stored point `node` into the graph.
    fn insert(&self, nodes: &Nodes, node: u32, s: &mut Scratch) {
        let level = usize::from(nodes.levels[node as usize]);
        let mut entry = self.entry.load(AtomicOrdering::Acquire);
        let mut _raising = None;
        if entry == NO_ENTRY || level > unpack(entry).1 {
            _raising = Some(lock(&self.raise));
            entry = self.entry.load(AtomicOrdering::Acquire);
            if entry == NO_ENTRY {
                self.entry.store(pack(node, level), AtomicOrdering::Release);
                return;
            }
        }
        let (start, top) = unpack(entry);
        let q = nodes.query_of(node);
        let mut cur = Near {
            dist: q.dist(start),
            node: start,
        };
        for l in (level + 1..=top).rev() {
            cur = nodes.greedy(&q, cur, l);
        }
        let mut found: Vec<Near> = Vec::with_capacity(self.ef_construction);
        let mut chosen_at: Vec<(usize, Vec<Near>)> = Vec::with_capacity(level.min(top) + 1);
        for l in (0..=level.min(top)).rev() {
            nodes.search_level(&q, cur, self.ef_construction, l, None, s);
            found.clear();
            found.extend(s.results.drain().filter(|n| n.node != node));
            found.sort_unstable();
            if let Some(&best) = found.first() {
                cur = best;
            }
            let chosen = self.select(nodes, &found, self.m);
            {
                let _guard = self.link_lock(node);
                Self::write_links(nodes.links(node, l), chosen.iter().map(|c| c.node));
            }
            chosen_at.push((l, chosen));
        }
        // Only the links back make `node` reachable, so they go in once its own lists are written
        // on every level. Linked level by level instead, another thread could reach `node` on an
        // upper level and descend into a level whose list was still empty: its new point then
        // found `node` alone there, and its link into `node`'s list was overwritten when `node`
        // wrote that list, leaving the point with no way in.
        for (l, chosen) in chosen_at {
            for c in &chosen {
                self.connect(nodes, c.node, Near { dist: c.dist, node }, l);
            }
        }
        if level > top {
            self.entry.store(pack(node, level), AtomicOrdering::Release);
        }
    }

    /// Appends the rows of `batch` (vectors, keys, levels, empty links); returns the first
    /// new node.
    fn append(&self, batch: &[(u64, &[f32])]) -> Result<u32> {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some((key, v)) = batch.iter().find(|(_, v)| v.len() != nodes.dim) {
            return Err(graph_error(format!(
                "point {key} has {} dimensions, the graph {}",
                v.len(),
                nodes.dim
            )));
        }
        let first = nodes.len();
        if first + batch.len() >= u32::MAX as usize {
            return Err(graph_error("more than 2^32 - 1 points in one graph"));
        }
        let new_len = first + batch.len();
        let (stride0, stride) = (nodes.stride0, nodes.stride);
        if nodes.keys.capacity() < new_len {
            // Amortised growth for a stream of small batches, one exact step for a big one.
            let additional = batch.len().max(first / 2);
            nodes.reserve_exact(additional);
        }
        for &(key, v) in batch {
            let level = level_of(key, self.level_mult);
            nodes.keys.push(key);
            nodes.levels.push(level as u8);
            nodes.vectors.push(v);
            nodes.upper.push(if level == 0 {
                Box::default()
            } else {
                (0..level * stride).map(|_| AtomicU32::new(0)).collect()
            });
        }
        nodes
            .links0
            .resize_with(new_len * stride0, || AtomicU32::new(0));
        nodes.advise_huge_pages(first);
        Ok(first as u32)
    }
}

impl GraphEngine for HnswGraph {
    fn add(&self, batch: &[(u64, &[f32])]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let first = self.append(batch)?;
        let nodes = self.read();
        let nodes: &Nodes = &nodes;
        let count = batch.len() as u32;
        let threads = build_threads()
            .min(batch.len().div_ceil(MIN_PER_THREAD))
            .max(1);
        let link = |t: usize| {
            let mut s = self.take_scratch();
            // Interleaved so every thread works across the whole batch, as one thread would.
            for i in (t as u32..count).step_by(threads) {
                self.insert(nodes, first + i, &mut s);
            }
            self.give_scratch(s);
        };
        if threads == 1 {
            link(0);
            return Ok(());
        }
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads).map(|t| scope.spawn(move || link(t))).collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .map_err(|_| graph_error("a thread linking points panicked"))
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
        let entry = self.entry.load(AtomicOrdering::Acquire);
        if k == 0 || entry == NO_ENTRY {
            return Ok(Vec::new());
        }
        let nodes = self.read();
        if query.len() != nodes.dim {
            return Err(graph_error(format!(
                "the query has {} dimensions, the graph {}",
                query.len(),
                nodes.dim
            )));
        }
        let q = nodes.prepare(query);
        let (start, top) = unpack(entry);
        let mut cur = Near {
            dist: q.dist(start),
            node: start,
        };
        for l in (1..=top).rev() {
            cur = nodes.greedy(&q, cur, l);
        }
        let beam = ef.max(k);
        let mut s = self.take_scratch();
        nodes.search_level(&q, cur, beam, 0, accept, &mut s);
        let mut found: Vec<Near> = s.results.drain().collect();
        self.give_scratch(s);
        found.sort_unstable();
        // Quantised graphs give the caller, who rescores in f32, the whole beam: quantised
        // distances misorder close neighbours, and the true top-k is usually inside it.
        if self.quantization == Quantization::F32 {
            found.truncate(k);
        }
        Ok(found
            .into_iter()
            .map(|n| (nodes.keys[n.node as usize], -n.dist))
            .collect())
    }

    fn save(&self, path: &Path) -> Result<()> {
        let fail = |e: std::io::Error| graph_error(format!("save {}: {e}", path.display()));
        let file = fs_err::File::create(path).map_err(fail)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        self.write_to(&mut out).map_err(fail)?;
        out.into_inner()
            .map_err(|e| fail(e.into_error()))?
            .sync_all()
            .map_err(fail)
    }

    fn len(&self) -> usize {
        self.read().len()
    }

    fn memory_bytes(&self) -> usize {
        self.read().memory_bytes() + self.locks.len() * std::mem::size_of::<Mutex<()>>()
    }

    fn quantization(&self) -> Quantization {
        self.quantization
    }
}
