//! How a graph lies in memory: the stored vectors, the points and their links, and the huge
//! pages they are kept in.

use std::borrow::Cow;
use std::sync::atomic::AtomicU32;

use super::RELAXED;
use crate::types::Quantization;
use mirage_model::kernels::{dot, dot_f16, dot_i8, encode_f16, encode_i8, f16_to_f32};

/// Stored vectors, row `i` at `i * dim`.
pub(super) enum Vectors {
    F32(Vec<f32>),
    F16(Vec<u16>),
    I8 { codes: Vec<i8>, scales: Vec<f32> },
}

impl Vectors {
    pub(super) fn new(q: Quantization) -> Self {
        match q {
            Quantization::F32 => Self::F32(Vec::new()),
            Quantization::F16 => Self::F16(Vec::new()),
            Quantization::I8 => Self::I8 {
                codes: Vec::new(),
                scales: Vec::new(),
            },
        }
    }

    pub(super) fn push(&mut self, v: &[f32]) {
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

/// A query bound to the rows it is scored against: f32 against f32 and f16 rows, i8 codes
/// against i8. Each precision's query travels with its own rows, so a query can never meet rows
/// of another precision (a graph makes queries only for itself: `prepare`, `query_of`).
pub(super) enum Query<'a> {
    F32 {
        q: Cow<'a, [f32]>,
        rows: &'a [f32],
    },
    F16 {
        q: Cow<'a, [f32]>,
        rows: &'a [u16],
    },
    I8 {
        q: Cow<'a, [i8]>,
        scale: f32,
        codes: &'a [i8],
        scales: &'a [f32],
    },
}

impl Query<'_> {
    /// Negated similarity to the row of `node` (smaller is closer).
    #[inline]
    pub(super) fn dist(&self, node: u32) -> f32 {
        let row = |dim: usize| node as usize * dim..(node as usize + 1) * dim;
        match self {
            Self::F32 { q, rows } => -dot(q, &rows[row(q.len())]),
            Self::F16 { q, rows } => -dot_f16(q, &rows[row(q.len())]),
            Self::I8 {
                q,
                scale,
                codes,
                scales,
            } => -(dot_i8(q, &codes[row(q.len())]) as f32 * scale * scales[node as usize]),
        }
    }
}

/// The points and their links. Rows are appended under the graph's exclusive lock and are
/// immutable afterwards; links change through atomics.
pub(super) struct Nodes {
    pub(super) dim: usize,
    /// Link slots of one node at level 0 (`1 + m0`) and at each upper level (`1 + m`).
    pub(super) stride0: usize,
    pub(super) stride: usize,
    pub(super) keys: Vec<u64>,
    pub(super) levels: Vec<u8>,
    pub(super) vectors: Vectors,
    pub(super) links0: Vec<AtomicU32>,
    /// Levels 1..=level of each node, `stride` slots each; empty for level-0 nodes.
    pub(super) upper: Vec<Box<[AtomicU32]>>,
}

impl Nodes {
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn reserve_exact(&mut self, additional: usize) {
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
    pub(super) fn advise_huge_pages(&self, from: usize) {
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
    pub(super) fn links(&self, node: u32, level: usize) -> &[AtomicU32] {
        let node = node as usize;
        if level == 0 {
            &self.links0[node * self.stride0..(node + 1) * self.stride0]
        } else {
            &self.upper[node][(level - 1) * self.stride..level * self.stride]
        }
    }

    /// The row of `node` as a query (a borrow for f32 and i8, a conversion for f16).
    pub(super) fn query_of(&self, node: u32) -> Query<'_> {
        let row = node as usize * self.dim..(node as usize + 1) * self.dim;
        match &self.vectors {
            Vectors::F32(d) => Query::F32 {
                q: Cow::Borrowed(&d[row]),
                rows: d,
            },
            Vectors::F16(d) => Query::F16 {
                q: Cow::Owned(d[row].iter().map(|&h| f16_to_f32(h)).collect()),
                rows: d,
            },
            Vectors::I8 { codes, scales } => Query::I8 {
                q: Cow::Borrowed(&codes[row]),
                scale: scales[node as usize],
                codes,
                scales,
            },
        }
    }

    /// An outside query vector as the stored rows need it.
    pub(super) fn prepare<'q>(&'q self, v: &'q [f32]) -> Query<'q> {
        match &self.vectors {
            Vectors::F32(d) => Query::F32 {
                q: Cow::Borrowed(v),
                rows: d,
            },
            Vectors::F16(d) => Query::F16 {
                q: Cow::Borrowed(v),
                rows: d,
            },
            Vectors::I8 { codes, scales } => {
                let mut q = vec![0i8; v.len()];
                let scale = encode_i8(v, &mut q);
                Query::I8 {
                    q: Cow::Owned(q),
                    scale,
                    codes,
                    scales,
                }
            }
        }
    }

    /// Hints the CPU to start loading the row of `node` (its first cache lines: the hardware
    /// prefetcher follows the stream).
    // Unsafe only by the intrinsic's signature: a prefetch never dereferences (an address
    // outside the process is ignored), and SSE is part of every x86-64 CPU.
    #[allow(unsafe_code)]
    #[inline]
    pub(super) fn prefetch(&self, node: u32) {
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

    /// Hints the CPU to load the link row of `node` at `level` (the next candidate's, while
    /// this one's neighbours are scored).
    #[allow(unsafe_code)]
    #[inline]
    pub(super) fn prefetch_links(&self, node: u32, level: usize) {
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

    pub(super) fn memory_bytes(&self) -> usize {
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
