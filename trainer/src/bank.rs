//! The text memory queue of docs/METHOD.md §2.4: K unit rows, never differentiated, written FIFO after
//! each backward pass (so the autograd graph never sees a modified input: the in-place hazard of
//! §2.5 cannot arise), with the caption behind every row so the exported bank can explain itself.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::towers::l2n;

/// The queue with its pointer and bookkeeping.
#[derive(Debug)]
pub struct MemoryQueue {
    /// K × D unit rows.
    pub rows: Tensor,
    /// Next row to write.
    pub ptr: i64,
    /// Rows usable by the NN search (K unless the queue started empty).
    pub filled: i64,
    /// Caption of every written row (empty for rows still holding their random start).
    pub captions: Vec<String>,
    /// Step at which each row was written (−1: never).
    pub written_at: Vec<i64>,
}

impl MemoryQueue {
    /// K Gaussian rows, L2-normalised (the reference's start), all usable unless `empty`.
    pub fn random(size: usize, dim: usize, device: Device, empty: bool) -> Self {
        let rows = l2n(&Tensor::randn(
            [size as i64, dim as i64],
            (Kind::Float, device),
        ));
        Self {
            rows,
            ptr: 0,
            filled: if empty { 0 } else { size as i64 },
            captions: vec![String::new(); size],
            written_at: vec![-1; size],
        }
    }

    /// K.
    pub fn size(&self) -> i64 {
        self.rows.size()[0]
    }

    /// Writes `texts` (N × D unit rows, detached) at [ptr, ptr+N) and advances the pointer.
    pub fn enqueue(&mut self, texts: &Tensor, captions: &[String], step: i64) -> Result<()> {
        let n = texts.size()[0];
        let k = self.size();
        if k % n != 0 {
            bail!("queue size {k} is not a multiple of the batch {n} (K mod N must be 0)");
        }
        if captions.len() as i64 != n {
            bail!("{} captions for {n} rows", captions.len());
        }
        tch::no_grad(|| {
            self.rows
                .narrow(0, self.ptr, n)
                .copy_(&texts.detach().to_kind(Kind::Float));
        });
        for (i, c) in captions.iter().enumerate() {
            let row = (self.ptr as usize) + i;
            self.captions[row].clone_from(c);
            self.written_at[row] = step;
        }
        self.ptr = (self.ptr + n) % k;
        self.filled = (self.filled + n).min(k);
        Ok(())
    }

    /// Mean age in steps of the written rows at `step` (how stale the NN texts are).
    pub fn staleness(&self, step: i64) -> f64 {
        let ages: Vec<i64> = self
            .written_at
            .iter()
            .filter(|&&w| w >= 0)
            .map(|&w| step - w)
            .collect();
        if ages.is_empty() {
            0.0
        } else {
            ages.iter().sum::<i64>() as f64 / ages.len() as f64
        }
    }

    /// True when every row holds a real text embedding (what an exported bank needs).
    pub fn fully_written(&self) -> bool {
        self.written_at.iter().all(|&w| w >= 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_writes_rows_and_wraps() {
        let mut q = MemoryQueue::random(8, 4, Device::Cpu, false);
        let t = l2n(&Tensor::randn([4, 4], (Kind::Float, Device::Cpu)));
        let caps: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
        q.enqueue(&t, &caps, 0).unwrap();
        assert_eq!(q.ptr, 4);
        assert!(q.rows.narrow(0, 0, 4).allclose(&t, 0.0, 0.0, false));
        q.enqueue(&t, &caps, 1).unwrap();
        assert_eq!(q.ptr, 0);
        assert!(q.fully_written());
        assert_eq!(q.captions[5], "c1");
        assert!((q.staleness(3) - 2.5).abs() < 1e-9);
        let bad = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
        assert!(q.enqueue(&bad, &caps[..3], 2).is_err());
    }
}
