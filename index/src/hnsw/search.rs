//! The walk: a greedy descent through the upper levels and the beam search of one level.

use std::cmp::{Ordering, Reverse};

use super::layout::{Nodes, Query};
use super::visited::Scratch;
use super::RELAXED;

/// Rows requested ahead of the one being scored: enough to cover a memory round trip.
const PREFETCH_AHEAD: usize = 2;

/// A candidate point at a distance (`-dot`, so smaller is closer); orders by distance, then id.
#[derive(Clone, Copy, Debug)]
pub(super) struct Near {
    pub(super) dist: f32,
    pub(super) node: u32,
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

impl Nodes {
    /// Moves from `start` to ever closer points at `level` until none is closer.
    pub(super) fn greedy(&self, q: &Query<'_>, mut cur: Near, level: usize) -> Near {
        loop {
            let mut moved = false;
            let links = self.links(cur.node, level);
            let count = (links[0].load(RELAXED) as usize).min(links.len() - 1);
            for slot in &links[1..=count] {
                let n = slot.load(RELAXED);
                let d = q.dist(n);
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
    pub(super) fn search_level(
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
                let d = q.dist(n);
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
}
