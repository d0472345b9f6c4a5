//! The flat copy of one space's live vectors: liveness and owners of graph points, exact scans,
//! and the f32 rescoring of quantised graphs. Rows are contiguous so a scan streams memory.

/// Marks a point id without a row.
const NO_ROW: u32 = u32::MAX;

/// Live vectors of one space, contiguous for fast brute-force scans.
#[derive(Default)]
pub(crate) struct FlatVectors {
    dim: usize,
    data: Vec<f32>,
    points: Vec<u64>,
    owners: Vec<u32>,
    /// Row of each point id (ids are SQLite's AUTOINCREMENT, so dense): a graph walk asks
    /// "is this point live, and whose is it" at every step, and an array answers in one load.
    row_of: Vec<u32>,
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
        let at = point as usize;
        if at >= self.row_of.len() {
            self.row_of
                .resize((at + 1).max(self.row_of.len() * 2), NO_ROW);
        }
        self.row_of[at] = self.points.len() as u32;
        self.points.push(point);
        self.owners.push(owner);
        self.data.extend_from_slice(v);
    }

    fn row(&self, point: u64) -> Option<usize> {
        match self.row_of.get(point as usize) {
            Some(&row) if row != NO_ROW => Some(row as usize),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, point: u64) {
        let Some(row) = self.row(point) else {
            return;
        };
        self.row_of[point as usize] = NO_ROW;
        let last = self.points.len() - 1;
        if row != last {
            let moved = self.points[last];
            self.points[row] = moved;
            self.owners[row] = self.owners[last];
            let (head, tail) = self.data.split_at_mut(last * self.dim);
            head[row * self.dim..(row + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.row_of[moved as usize] = row as u32;
        }
        self.points.pop();
        self.owners.pop();
        self.data.truncate(last * self.dim);
    }

    pub(crate) fn owner_of(&self, point: u64) -> Option<u32> {
        self.row(point).map(|row| self.owners[row])
    }

    /// The vector of a live point.
    pub(crate) fn vector_of(&self, point: u64) -> Option<&[f32]> {
        self.row(point).map(|row| self.vector(row))
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

    /// Bytes held per live vector (vectors, ids, owners and the id → row array).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.data.capacity() * 4
            + self.points.capacity() * 8
            + self.owners.capacity() * 4
            + self.row_of.capacity() * 4
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_removals() {
        let mut flat = FlatVectors::new(2);
        flat.insert(5, 0, &[1.0, 0.0]);
        flat.insert(9, 1, &[0.0, 1.0]);
        flat.insert(12, 2, &[0.6, 0.8]);
        flat.remove(5);
        assert_eq!(flat.len(), 2);
        assert_eq!(flat.owner_of(5), None);
        assert_eq!(flat.owner_of(12), Some(2));
        assert_eq!(flat.vector_of(12), Some(&[0.6, 0.8][..]));
        assert_eq!(flat.vector_of(9), Some(&[0.0, 1.0][..]));
        flat.remove(5);
        flat.remove(1000);
        assert_eq!(flat.len(), 2);
    }
}
