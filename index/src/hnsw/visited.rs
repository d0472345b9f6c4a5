//! A search's working memory: its visited set and heaps, pooled across searches.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::search::Near;

/// A visited set that clears in O(1): a point is visited when its stamp equals the current one.
pub(super) struct Visited {
    stamps: Vec<u16>,
    current: u16,
}

impl Visited {
    pub(super) fn reset(&mut self, n: usize) {
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
    pub(super) fn insert(&mut self, node: u32) -> bool {
        let stamp = &mut self.stamps[node as usize];
        let fresh = *stamp != self.current;
        *stamp = self.current;
        fresh
    }
}

/// Per-search working memory, pooled so a search allocates nothing in the steady state.
pub(super) struct Scratch {
    pub(super) visited: Visited,
    pub(super) candidates: BinaryHeap<Reverse<Near>>,
    pub(super) results: BinaryHeap<Near>,
    pub(super) fresh: Vec<u32>,
}

impl Scratch {
    pub(super) fn new() -> Self {
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
