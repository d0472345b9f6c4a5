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

use std::borrow::Cow;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Mutex, MutexGuard, RwLock};

use crate::error::{IndexError, Result};
use crate::graph::GraphEngine;
use crate::kernels::{dot, dot_f16, dot_i8, encode_f16, encode_i8, f16_to_f32};
use crate::types::{HnswParams, Quantization};

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
/// Rows requested ahead of the one being scored: enough to cover a memory round trip.
const PREFETCH_AHEAD: usize = 2;
const MAGIC: &[u8; 8] = b"MIRHNSW\0";
const FORMAT_VERSION: u32 = 1;
/// Written in native order; a dump from a machine of the other byte order reads as foreign.
const BYTE_ORDER_MARK: u32 = 0x0102_0304;

/// A candidate point at a distance (`-dot`, so smaller is closer); orders by distance, then id.
#[derive(Clone, Copy, Debug)]
struct Near {
    dist: f32,
    node: u32,
}

impl PartialEq for Near {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.node.cmp(&other.node))
    }
}

/// Stored vectors, row `i` at `i * dim`.
enum Vectors {
    F32(Vec<f32>),
    F16(Vec<u16>),
    I8 { codes: Vec<i8>, scales: Vec<f32> },
}

impl Vectors {
    fn new(q: Quantization) -> Self {
        match q {
            Quantization::F32 => Self::F32(Vec::new()),
            Quantization::F16 => Self::F16(Vec::new()),
            Quantization::I8 => Self::I8 {
                codes: Vec::new(),
                scales: Vec::new(),
            },
        }
    }

    fn push(&mut self, v: &[f32]) {
        match self {
            Self::F32(data) => data.extend_from_slice(v),
            Self::F16(data) => data.extend(v.iter().map(|&x| encode_f16(x))),
            Self::I8 { codes, scales } => {
                let at = codes.len();
                codes.resize(at + v.len(), 0);
                scales.push(encode_i8(v, &mut codes[at..]));
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::F32(d) => d.capacity() * 4,
            Self::F16(d) => d.capacity() * 2,
            Self::I8 { codes, scales } => codes.capacity() + scales.capacity() * 4,
        }
    }
}

/// A query as the stored vectors need it: f32 against f32 and f16 rows, i8 codes against i8.
enum Query<'a> {
    Float(Cow<'a, [f32]>),
    Int8(Cow<'a, [i8]>, f32),
}

/// The points and their links. Rows are appended under the graph's exclusive lock and are
/// immutable afterwards; links change through atomics.
struct Nodes {
    dim: usize,
    /// Link slots of one node at level 0 (`1 + m0`) and at each upper level (`1 + m`).
    stride0: usize,
    stride: usize,
    keys: Vec<u64>,
    levels: Vec<u8>,
    vectors: Vectors,
    links0: Vec<AtomicU32>,
    /// Levels 1..=level of each node, `stride` slots each; empty for level-0 nodes.
    upper: Vec<Box<[AtomicU32]>>,
}

impl Nodes {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn reserve_exact(&mut self, additional: usize) {
        self.keys.reserve_exact(additional);
        self.levels.reserve_exact(additional);
        self.upper.reserve_exact(additional);
        let values = additional * self.dim;
        match &mut self.vectors {
            Vectors::F32(d) => grow_huge(d, values, |x| *x),
            Vectors::F16(d) => grow_huge(d, values, |x| *x),
            Vectors::I8 { codes, scales } => {
                grow_huge(codes, values, |x| *x);
                scales.reserve_exact(additional);
            }
        }
        // Links are only written under the graph's lock or by linking, which never runs while
        // the graph grows (appending holds the exclusive lock).
        grow_huge(&mut self.links0, additional * self.stride0, |a| {
            AtomicU32::new(a.load(RELAXED))
        });
    }

    /// Collapses the rows and level-0 links of the nodes `from..` (new ones, or all of a graph
    /// read from a dump) into huge pages.
    fn advise_huge_pages(&self, from: usize) {
        let n = self.len();
        let values = from * self.dim..n * self.dim;
        match &self.vectors {
            Vectors::F32(d) => advise_huge_pages(d, values),
            Vectors::F16(d) => advise_huge_pages(d, values),
            Vectors::I8 { codes, .. } => advise_huge_pages(codes, values),
        }
        advise_huge_pages(&self.links0, from * self.stride0..n * self.stride0);
    }

    /// The link slots of `node` at `level`: the count, then the ids.
    #[inline]
    fn links(&self, node: u32, level: usize) -> &[AtomicU32] {
        let node = node as usize;
        if level == 0 {
            &self.links0[node * self.stride0..(node + 1) * self.stride0]
        } else {
            &self.upper[node][(level - 1) * self.stride..level * self.stride]
        }
    }

    /// The row of `node` as a query (a borrow for f32 and i8, a conversion for f16).
    fn query_of(&self, node: u32) -> Query<'_> {
        let at = node as usize * self.dim;
        match &self.vectors {
            Vectors::F32(d) => Query::Float(Cow::Borrowed(&d[at..at + self.dim])),
            Vectors::F16(d) => Query::Float(Cow::Owned(
                d[at..at + self.dim]
                    .iter()
                    .map(|&h| f16_to_f32(h))
                    .collect(),
            )),
            Vectors::I8 { codes, scales } => Query::Int8(
                Cow::Borrowed(&codes[at..at + self.dim]),
                scales[node as usize],
            ),
        }
    }

    /// An outside query vector as the stored rows need it.
    fn prepare<'q>(&self, v: &'q [f32]) -> Query<'q> {
        match &self.vectors {
            Vectors::F32(_) | Vectors::F16(_) => Query::Float(Cow::Borrowed(v)),
            Vectors::I8 { .. } => {
                let mut codes = vec![0i8; v.len()];
                let scale = encode_i8(v, &mut codes);
                Query::Int8(Cow::Owned(codes), scale)
            }
        }
    }

    #[inline]
    fn dist(&self, q: &Query<'_>, node: u32) -> f32 {
        let at = node as usize * self.dim;
        let row = at..at + self.dim;
        match (&self.vectors, q) {
            (Vectors::F32(d), Query::Float(q)) => -dot(q, &d[row]),
            (Vectors::F16(d), Query::Float(q)) => -dot_f16(q, &d[row]),
            (Vectors::I8 { codes, scales }, Query::Int8(q, scale)) => {
                -(dot_i8(q, &codes[row]) as f32 * scale * scales[node as usize])
            }
            // Queries are prepared by this graph's own `prepare`/`query_of`.
            _ => f32::INFINITY,
        }
    }

    /// Hints the CPU to start loading the row of `node` (its first cache lines: the hardware
    /// prefetcher follows the stream).
    // Unsafe only by the intrinsic's signature: a prefetch never dereferences (an address
    // outside the process is ignored), and SSE is part of every x86-64 CPU.
    #[allow(unsafe_code)]
    #[inline]
    fn prefetch(&self, node: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let at = node as usize * self.dim;
            let (ptr, bytes) = match &self.vectors {
                Vectors::F32(d) => (d.as_ptr().wrapping_add(at).cast::<i8>(), self.dim * 4),
                Vectors::F16(d) => (d.as_ptr().wrapping_add(at).cast::<i8>(), self.dim * 2),
                Vectors::I8 { codes, .. } => (codes.as_ptr().wrapping_add(at), self.dim),
            };
            for line in (0..bytes).step_by(64) {
                // SAFETY: see above.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.wrapping_add(line)) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = node;
    }

    /// Moves from `start` to ever closer points at `level` until none is closer.
    fn greedy(&self, q: &Query<'_>, mut cur: Near, level: usize) -> Near {
        loop {
            let mut moved = false;
            let links = self.links(cur.node, level);
            let count = (links[0].load(RELAXED) as usize).min(links.len() - 1);
            for slot in &links[1..=count] {
                let n = slot.load(RELAXED);
                let d = self.dist(q, n);
                if d < cur.dist {
                    cur = Near { dist: d, node: n };
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// The beam search of one level from `start`; leaves up to `ef` best accepted points in
    /// `s.results` (a max-heap: the worst on top).
    fn search_level(
        &self,
        q: &Query<'_>,
        start: Near,
        ef: usize,
        level: usize,
        accept: Option<&dyn Fn(u64) -> bool>,
        s: &mut Scratch,
    ) {
        s.visited.reset(self.len());
        s.candidates.clear();
        s.results.clear();
        s.visited.insert(start.node);
        s.candidates.push(Reverse(start));
        let admits = |node: u32| accept.is_none_or(|f| f(self.keys[node as usize]));
        if admits(start.node) {
            s.results.push(start);
        }
        let mut bound = s.results.peek().map_or(f32::INFINITY, |w| w.dist);
        while let Some(Reverse(c)) = s.candidates.pop() {
            if c.dist > bound && s.results.len() >= ef {
                break;
            }
            if let Some(Reverse(next)) = s.candidates.peek() {
                self.prefetch_links(next.node, level);
            }
            let links = self.links(c.node, level);
            let count = (links[0].load(RELAXED) as usize).min(links.len() - 1);
            s.fresh.clear();
            for slot in &links[1..=count] {
                let n = slot.load(RELAXED);
                if s.visited.insert(n) {
                    s.fresh.push(n);
                }
            }
            for &n in s.fresh.iter().take(PREFETCH_AHEAD) {
                self.prefetch(n);
            }
            for i in 0..s.fresh.len() {
                let n = s.fresh[i];
                if let Some(&next) = s.fresh.get(i + PREFETCH_AHEAD) {
                    self.prefetch(next);
                }
                let d = self.dist(q, n);
                if s.results.len() < ef || d < bound {
                    s.candidates.push(Reverse(Near { dist: d, node: n }));
                    if admits(n) {
                        s.results.push(Near { dist: d, node: n });
                        if s.results.len() > ef {
                            s.results.pop();
                        }
                        bound = s.results.peek().map_or(f32::INFINITY, |w| w.dist);
                    }
                }
            }
        }
    }

    /// Hints the CPU to load the link row of `node` at `level` (the next candidate's, while
    /// this one's neighbours are scored).
    #[allow(unsafe_code)]
    #[inline]
    fn prefetch_links(&self, node: u32, level: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let links = self.links(node, level);
            let ptr = links.as_ptr().cast::<i8>();
            for line in (0..std::mem::size_of_val(links)).step_by(64) {
                // SAFETY: as for `prefetch`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.wrapping_add(line)) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (node, level);
    }

    fn memory_bytes(&self) -> usize {
        self.keys.capacity() * 8
            + self.levels.capacity()
            + self.vectors.bytes()
            + self.links0.capacity() * 4
            + self.upper.capacity() * std::mem::size_of::<Box<[AtomicU32]>>()
            + self.upper.iter().map(|u| u.len() * 4).sum::<usize>()
    }
}

/// Asks Linux to back `v` with 2 MiB pages where it can: a walk reads rows at random, and with
/// 4 KiB pages nearly every row read also misses the TLB (the profile's top stall). The advice
/// covers the whole capacity and takes effect for pages first touched after it. The huge pages
/// holding elements `written` (as far as they lie wholly inside `v[..written.end]`) are also
/// collapsed now (`MADV_COLLAPSE`, Linux 6.1): memory malloc recycles, or that a file was read
/// into, was faulted in small pages before any advice. Both happened to the store: its level-0
/// links (13 MB at 100k) come from malloc's heap once earlier frees raised its mmap threshold,
/// and a graph loaded from its dump was read into small pages; each cost ~10–15 % of the
/// queries per second. Without transparent huge pages, on an older kernel or another OS nothing
/// changes.
// Unsafe by the FFI signature only: madvise with MADV_HUGEPAGE or MADV_COLLAPSE changes no
// contents and no mapping; the ranges lie inside the vector's own allocation.
#[allow(unsafe_code)]
fn advise_huge_pages<T>(v: &Vec<T>, written: std::ops::Range<usize>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let size = std::mem::size_of::<T>();
        let start = v.as_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let end = start + v.capacity() * size;
        if end / HUGE * HUGE > first {
            // SAFETY: see above. A refusal (EINVAL without THP) only means small pages.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    end / HUGE * HUGE - first,
                    libc::MADV_HUGEPAGE,
                )
            };
        }
        let written_end = start + written.end.min(v.len()) * size;
        let from = ((start + written.start * size) / HUGE * HUGE).max(first);
        let to = written_end / HUGE * HUGE;
        if to > from {
            // SAFETY: as above; EINVAL (old kernel) or EAGAIN (no free huge page) leaves the
            // small pages in place, and a range already in huge pages is skipped.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_COLLAPSE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (v, written);
}

/// Makes room for `additional` more elements of `v` in a fresh allocation advised for huge pages
/// before anything is written to it, then copies the contents over. `Vec::reserve_exact` would
/// realloc, which for large blocks moves the old pages (mremap): pages first touched before the
/// advice stay small, and huge pages that land at an address not 2 MiB-aligned are split. A
/// store's graph grows batch by batch, and measured with a third of the bare graph's huge pages
/// and 35 % fewer queries per second before this. The fresh block may be memory malloc
/// recycles (already faulted in small pages), so the copied part is collapsed as well.
fn grow_huge<T>(v: &mut Vec<T>, additional: usize, copy: impl Fn(&T) -> T) {
    if v.capacity() - v.len() >= additional {
        return;
    }
    let mut fresh = Vec::with_capacity(v.len() + additional);
    advise_huge_pages(&fresh, 0..0);
    fresh.extend(v.iter().map(copy));
    advise_huge_pages(&fresh, 0..fresh.len());
    *v = fresh;
}

/// A visited set that clears in O(1): a point is visited when its stamp equals the current one.
struct Visited {
    stamps: Vec<u16>,
    current: u16,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.stamps.len() < n {
            self.stamps.resize(n, 0);
        }
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.stamps.fill(0);
            self.current = 1;
        }
    }

    /// Marks `node`; true when it was not visited yet.
    #[inline]
    fn insert(&mut self, node: u32) -> bool {
        let stamp = &mut self.stamps[node as usize];
        let fresh = *stamp != self.current;
        *stamp = self.current;
        fresh
    }
}

/// Per-search working memory, pooled so a search allocates nothing in the steady state.
struct Scratch {
    visited: Visited,
    candidates: BinaryHeap<Reverse<Near>>,
    results: BinaryHeap<Near>,
    fresh: Vec<u32>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            visited: Visited {
                stamps: Vec::new(),
                current: 0,
            },
            candidates: BinaryHeap::new(),
            results: BinaryHeap::new(),
            fresh: Vec::new(),
        }
    }
}

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
            if kept.iter().all(|k| nodes.dist(&cq, k.node) > c.dist) {
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
                    dist: nodes.dist(&nq, n),
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
            dist: nodes.dist(&q, start),
            node: start,
        };
        for l in (level + 1..=top).rev() {
            cur = nodes.greedy(&q, cur, l);
        }
        let mut found: Vec<Near> = Vec::with_capacity(self.ef_construction);
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

    /// Writes the graph as one file (see the module docs).
    fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let nodes = self.read();
        let mut w = Crc32Writer::new(out);
        w.write_all(MAGIC)?;
        for x in [
            FORMAT_VERSION,
            BYTE_ORDER_MARK,
            nodes.dim as u32,
            quantization_code(self.quantization),
            self.m as u32,
        ] {
            w.write_all(&x.to_ne_bytes())?;
        }
        w.write_all(&(nodes.len() as u64).to_ne_bytes())?;
        w.write_all(&self.entry.load(AtomicOrdering::Acquire).to_ne_bytes())?;
        w.write_all(bytemuck::cast_slice(&nodes.keys))?;
        w.write_all(&nodes.levels)?;
        match &nodes.vectors {
            Vectors::F32(d) => w.write_all(bytemuck::cast_slice(d))?,
            Vectors::F16(d) => w.write_all(bytemuck::cast_slice(d))?,
            Vectors::I8 { codes, scales } => {
                w.write_all(bytemuck::cast_slice(codes))?;
                w.write_all(bytemuck::cast_slice(scales))?;
            }
        }
        write_atomics(&mut w, &nodes.links0)?;
        for u in &nodes.upper {
            write_atomics(&mut w, u)?;
        }
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_ne_bytes())?;
        w.inner.flush()
    }

    /// Loads a graph written by [`GraphEngine::save`]. A file that is damaged, foreign, or made
    /// for other settings is an error, never a crash, so the store can rebuild from its database.
    pub fn load(
        path: &Path,
        dim: usize,
        params: &HnswParams,
        quantization: Quantization,
    ) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| {
            IndexError::Graph(format!("cannot load {}: {e}", path.display()))
        };
        let file = fs_err::File::open(path).map_err(|e| fail(&e))?;
        let graph = Self::new(dim, params, quantization, 0);
        graph
            .read_from(&mut BufReader::with_capacity(1 << 20, file), dim)
            .map_err(|e| fail(&e))?;
        Ok(graph)
    }

    fn read_from(&self, input: &mut impl Read, dim: usize) -> std::result::Result<(), String> {
        let mut r = Crc32Reader {
            inner: input,
            crc: crc32fast::Hasher::new(),
        };
        let io = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the file is truncated".to_string()
            } else {
                e.to_string()
            }
        };
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(io)?;
        if &magic != MAGIC {
            return Err("not a mirage-hnsw graph".into());
        }
        let mut u32s = [0u32; 5];
        for x in &mut u32s {
            *x = read_u32(&mut r).map_err(io)?;
        }
        let [version, bom, file_dim, quant, m] = u32s;
        if version != FORMAT_VERSION || bom != BYTE_ORDER_MARK {
            return Err(format!(
                "format {version} (byte order {bom:#x}); this build reads {FORMAT_VERSION}"
            ));
        }
        if file_dim as usize != dim
            || quant != quantization_code(self.quantization)
            || m as usize != self.m
        {
            return Err(format!(
                "it holds {file_dim}-d vectors (quantization code {quant}, M {m}), the \
                 collection {dim}-d {} with M {}",
                self.quantization, self.m
            ));
        }
        let count = read_u64(&mut r).map_err(io)? as usize;
        let entry = read_u64(&mut r).map_err(io)?;
        if count >= u32::MAX as usize {
            return Err(format!("{count} points is more than a graph holds"));
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        // Sizes come from the file; reading in bounded chunks means a lying header fails at
        // the end of the file instead of allocating whatever it claims.
        nodes.keys = read_vec::<u64>(&mut r, count).map_err(io)?;
        nodes.levels = read_vec::<u8>(&mut r, count).map_err(io)?;
        if nodes.levels.iter().any(|&l| usize::from(l) > MAX_LEVEL) {
            return Err("a point's level is out of range".into());
        }
        let values = count * dim;
        nodes.vectors = match self.quantization {
            Quantization::F32 => Vectors::F32(read_vec(&mut r, values).map_err(io)?),
            Quantization::F16 => Vectors::F16(read_vec(&mut r, values).map_err(io)?),
            Quantization::I8 => Vectors::I8 {
                codes: read_vec(&mut r, values).map_err(io)?,
                scales: read_vec(&mut r, count).map_err(io)?,
            },
        };
        let (stride0, stride) = (nodes.stride0, nodes.stride);
        nodes.links0 = atomics(read_vec::<u32>(&mut r, count * stride0).map_err(io)?);
        let mut upper = Vec::with_capacity(count);
        for i in 0..count {
            let level = usize::from(nodes.levels[i]);
            upper.push(
                atomics(read_vec::<u32>(&mut r, level * stride).map_err(io)?).into_boxed_slice(),
            );
        }
        nodes.upper = upper;
        nodes.advise_huge_pages(0);
        let computed = r.crc.clone().finalize();
        let stored = read_u32(&mut *r.inner).map_err(io)?;
        if computed != stored {
            return Err("checksum mismatch: the file is damaged".into());
        }
        if r.inner.read(&mut [0u8; 1]).map_err(io)? != 0 {
            return Err("trailing bytes after the checksum".into());
        }
        // The checksum proves the file is as written; these prove a writer of this format
        // wrote it sanely, so no walk can index out of bounds.
        let in_range = |slots: &[AtomicU32]| {
            let n = slots[0].load(RELAXED) as usize;
            n < slots.len()
                && slots[1..=n]
                    .iter()
                    .all(|s| (s.load(RELAXED) as usize) < count)
        };
        let links_ok = nodes.links0.chunks(stride0).all(in_range)
            && nodes.upper.iter().all(|u| u.chunks(stride).all(in_range));
        let entry_ok = entry == NO_ENTRY && count == 0
            || (entry != NO_ENTRY && {
                let (node, level) = unpack(entry);
                (node as usize) < count && usize::from(nodes.levels[node as usize]) == level
            });
        if !links_ok || !entry_ok {
            return Err("links or entry point out of range".into());
        }
        self.entry.store(entry, AtomicOrdering::Release);
        Ok(())
    }
}

fn quantization_code(q: Quantization) -> u32 {
    match q {
        Quantization::F32 => 0,
        Quantization::F16 => 1,
        Quantization::I8 => 2,
    }
}

fn atomics(v: Vec<u32>) -> Vec<AtomicU32> {
    v.into_iter().map(AtomicU32::new).collect()
}

fn write_atomics(w: &mut impl Write, slots: &[AtomicU32]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(slots.len().min(1 << 16));
    for chunk in slots.chunks(1 << 16) {
        buf.clear();
        buf.extend(chunk.iter().map(|s| s.load(RELAXED)));
        w.write_all(bytemuck::cast_slice(&buf))?;
    }
    Ok(())
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_ne_bytes(b))
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// Reads `n` plain values, growing the vector chunk by chunk as the bytes arrive.
fn read_vec<T: bytemuck::Pod>(r: &mut impl Read, n: usize) -> std::io::Result<Vec<T>> {
    const CHUNK: usize = 1 << 20;
    let mut out: Vec<T> = Vec::new();
    while out.len() < n {
        let at = out.len();
        let take = (n - at).min(CHUNK);
        // Exact steps: the vector ends with no spare capacity to hold memory for nothing.
        out.reserve_exact(take);
        out.resize(at + take, T::zeroed());
        r.read_exact(bytemuck::cast_slice_mut(&mut out[at..]))?;
    }
    Ok(out)
}

struct Crc32Writer<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Crc32Writer<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Crc32Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Crc32Reader<'a, R> {
    inner: &'a mut R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for Crc32Reader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
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
            dist: nodes.dist(&q, start),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dot;

    fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let norm = dot(&v, &v).sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    fn exact(base: &[Vec<f32>], q: &[f32], k: usize) -> Vec<u64> {
        let mut all: Vec<(u64, f32)> = base
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64 * 3 + 7, dot(q, v)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.into_iter().take(k).map(|(id, _)| id).collect()
    }

    fn build(base: &[Vec<f32>], q: Quantization) -> HnswGraph {
        let params = HnswParams {
            m: 8,
            ef_construction: 64,
            ..HnswParams::default()
        };
        let graph = HnswGraph::new(base[0].len(), &params, q, 0);
        // Keys unlike positions, in two batches (the second linked into the first).
        let batch: Vec<(u64, &[f32])> = base
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64 * 3 + 7, v.as_slice()))
            .collect();
        let (a, b) = batch.split_at(base.len() / 3);
        graph.add(a).unwrap();
        graph.add(b).unwrap();
        graph
    }

    fn recall(graph: &HnswGraph, base: &[Vec<f32>], queries: &[Vec<f32>]) -> f64 {
        let mut hit = 0;
        for q in queries {
            let want = exact(base, q, 10);
            let got: Vec<u64> = graph
                .search(q, 10, 64, None)
                .unwrap()
                .into_iter()
                .map(|h| h.0)
                .collect();
            hit += want.iter().filter(|id| got.contains(id)).count();
        }
        hit as f64 / (10 * queries.len()) as f64
    }

    #[test]
    fn finds_the_true_neighbours_in_every_storage() {
        // 16-d: uniform points in more dimensions need wider beams (hnswlib too).
        let base = unit_vectors(3000, 16, 1);
        let queries = unit_vectors(50, 16, 2);
        for q in Quantization::ALL {
            let graph = build(&base, q);
            assert_eq!(graph.len(), 3000);
            let r = recall(&graph, &base, &queries);
            let floor = if q == Quantization::F32 { 0.95 } else { 0.85 };
            assert!(r >= floor, "{q}: recall {r}");
        }
    }

    #[test]
    fn the_predicate_admits_only_accepted_points() {
        let base = unit_vectors(2000, 16, 3);
        let graph = build(&base, Quantization::F32);
        let q = &base[17];
        let odd = |key: u64| key % 2 == 1;
        let hits = graph.search(q, 20, 50, Some(&odd)).unwrap();
        assert_eq!(hits.len(), 20);
        assert!(hits.iter().all(|h| odd(h.0)));
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
        let none = graph.search(q, 5, 50, Some(&|_| false)).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn a_dump_loads_back_identically_and_damage_is_refused() {
        let base = unit_vectors(500, 16, 4);
        let dir = tempfile::tempdir().unwrap();
        let params = HnswParams {
            m: 8,
            ef_construction: 64,
            ..HnswParams::default()
        };
        for q in Quantization::ALL {
            let graph = build(&base, q);
            let path = dir.path().join(format!("g-{q}.hnsw"));
            graph.save(&path).unwrap();
            let back = HnswGraph::load(&path, 16, &params, q).unwrap();
            assert_eq!(back.len(), graph.len());
            for v in base.iter().step_by(50) {
                assert_eq!(
                    back.search(v, 5, 32, None).unwrap(),
                    graph.search(v, 5, 32, None).unwrap()
                );
            }
            let bytes = std::fs::read(&path).unwrap();
            let mut flipped = bytes.clone();
            flipped[bytes.len() / 2] ^= 0x10;
            for (name, damaged) in [
                ("flipped", flipped),
                ("truncated", bytes[..bytes.len() - 9].to_vec()),
                ("header only", bytes[..40].to_vec()),
                ("empty", Vec::new()),
                ("trailing", [bytes.clone(), vec![0]].concat()),
            ] {
                std::fs::write(&path, damaged).unwrap();
                assert!(
                    HnswGraph::load(&path, 16, &params, q).is_err(),
                    "{q} {name} loaded"
                );
            }
            std::fs::write(&path, &bytes).unwrap();
            let err = HnswGraph::load(&path, 17, &params, q).err().unwrap();
            assert!(err.to_string().contains("16-d"), "{err}");
        }
    }

    #[test]
    fn searches_run_while_points_are_added() {
        let base = unit_vectors(4000, 16, 5);
        let graph = build(&base[..1000], Quantization::F32);
        let rest: Vec<(u64, &[f32])> = base[1000..]
            .iter()
            .enumerate()
            .map(|(i, v)| ((1000 + i) as u64 * 3 + 7, v.as_slice()))
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for chunk in rest.chunks(500) {
                    graph.add(chunk).unwrap();
                }
            });
            for v in base.iter().take(300) {
                assert!(!graph.search(v, 5, 32, None).unwrap().is_empty());
            }
        });
        assert_eq!(graph.len(), 4000);
        let queries = unit_vectors(30, 16, 6);
        assert!(recall(&graph, &base, &queries) >= 0.95);
    }

    #[test]
    fn wrong_widths_are_errors() {
        let graph = HnswGraph::new(4, &HnswParams::default(), Quantization::F32, 0);
        assert!(graph.add(&[(1, &[1.0, 0.0][..])]).is_err());
        assert!(graph.is_empty());
        graph.add(&[(1, &[1.0, 0.0, 0.0, 0.0][..])]).unwrap();
        assert!(graph.search(&[1.0], 1, 8, None).is_err());
        assert_eq!(
            graph.search(&[1.0, 0.0, 0.0, 0.0], 3, 8, None).unwrap(),
            vec![(1, 1.0)]
        );
    }
}
