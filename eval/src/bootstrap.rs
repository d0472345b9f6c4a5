//! Paired bootstrap intervals for "method A − method B" over the same test queries: each
//! resample draws queries with replacement (the same draw for every seed), and the statistic is
//! the mean over seeds of the mean per-query difference. Pairing by query and seed removes the
//! between-query and between-seed variance both methods share, which is what makes a
//! one-point difference on a few hundred queries testable at all.

use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A point estimate with a percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the data as observed.
    pub estimate: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Coverage, e.g. 0.95.
    pub level: f64,
}

impl Interval {
    /// Whether the interval lies entirely on one side of 0.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// Resamples of the study's intervals: enough that the 2.5 % tails rest on ~50 draws each.
pub const DEFAULT_RESAMPLES: usize = 2000;

/// The `q` quantile (0..=1) of sorted `xs`, interpolated linearly between order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Paired bootstrap of the mean of `a − b`: `a[s][q]` and `b[s][q]` are per-query outcomes
/// (a hit, a correct prediction) of seed `s` on query `q`, seeds and queries aligned.
///
/// # Errors
///
/// No seeds, seeds or queries that do not line up, no queries, fewer than 100 resamples or a
/// level outside (0, 1).
pub fn paired_difference(
    a: &[Vec<f64>],
    b: &[Vec<f64>],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Result<Interval> {
    ensure!(!a.is_empty(), "no seeds to compare");
    ensure!(
        a.len() == b.len(),
        "{} seeds against {} (seeds are paired)",
        a.len(),
        b.len()
    );
    let n = a[0].len();
    ensure!(n > 0, "no queries to compare");
    for (s, (x, y)) in a.iter().zip(b).enumerate() {
        ensure!(
            x.len() == n && y.len() == n,
            "seed {s}: {} and {} queries, expected {n} (queries are paired)",
            x.len(),
            y.len()
        );
    }
    ensure!(
        resamples >= 100,
        "{resamples} resamples (need at least 100)"
    );
    ensure!(
        level > 0.0 && level < 1.0,
        "interval level {level} must be in (0, 1)"
    );
    // Per query, the seed-averaged difference: resampling queries then averages these.
    let diff: Vec<f64> = (0..n)
        .map(|q| a.iter().zip(b).map(|(x, y)| x[q] - y[q]).sum::<f64>() / a.len() as f64)
        .collect();
    let estimate = diff.iter().sum::<f64>() / n as f64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut stats: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| diff[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Ok(Interval {
        estimate,
        low: quantile(&stats, tail),
        high: quantile(&stats, 1.0 - tail),
        level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn a_constant_difference_has_a_point_interval() {
        let a = vec![vec![1.0; 50], vec![1.0; 50]];
        let b = vec![vec![0.75; 50], vec![0.75; 50]];
        let i = paired_difference(&a, &b, 500, 0.95, 1).unwrap();
        assert!((i.estimate - 0.25).abs() < 1e-12);
        assert!((i.low - 0.25).abs() < 1e-12 && (i.high - 0.25).abs() < 1e-12);
        assert!(i.excludes_zero());
    }

    /// Normal differences with sd 1 over n queries: the interval is the textbook
    /// mean ± 1.96/√n, and shared per-query noise cancels in the pairing.
    #[test]
    fn matches_the_normal_interval_and_pairing_cancels_shared_noise() {
        let n = 4000;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let shared = Normal::new(0.0, 10.0).unwrap();
        let base: Vec<f64> = (0..n).map(|_| shared.sample(&mut rng)).collect();
        let b: Vec<f64> = base.clone();
        let a: Vec<f64> = base
            .iter()
            .map(|x| x + 0.1 + noise.sample(&mut rng))
            .collect();
        let i = paired_difference(&[a], &[b], 4000, 0.95, 2).unwrap();
        let half = 1.96 / (n as f64).sqrt();
        assert!((i.estimate - 0.1).abs() < 3.0 * half / 1.96, "{i:?}");
        let width = (i.high - i.low) / 2.0;
        assert!((width / half - 1.0).abs() < 0.1, "{i:?} vs ±{half}");
        assert!(i.low < i.estimate && i.estimate < i.high && i.excludes_zero());
        // No true difference: the interval straddles 0.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let a: Vec<f64> = (0..500).map(|_| noise.sample(&mut rng)).collect();
        let b: Vec<f64> = (0..500).map(|_| noise.sample(&mut rng)).collect();
        let i = paired_difference(&[a], &[b], 2000, 0.95, 3).unwrap();
        assert!(!i.excludes_zero(), "{i:?}");
    }

    #[test]
    fn seeds_average_and_misaligned_input_is_refused() {
        // Seed 0 gains 1 on every query, seed 1 gains 0: the paired mean is 0.5.
        let a = vec![vec![1.0, 1.0, 1.0], vec![0.0, 0.0, 0.0]];
        let b = vec![vec![0.0; 3], vec![0.0; 3]];
        let i = paired_difference(&a, &b, 200, 0.9, 0).unwrap();
        assert!((i.estimate - 0.5).abs() < 1e-12 && (i.low - 0.5).abs() < 1e-12);
        for (a, b, resamples, level, why) in [
            (vec![], vec![], 200, 0.95, "no seeds"),
            (vec![vec![1.0]], vec![], 200, 0.95, "seeds are paired"),
            (
                vec![vec![1.0]],
                vec![vec![1.0, 0.0]],
                200,
                0.95,
                "queries are paired",
            ),
            (vec![vec![]], vec![vec![]], 200, 0.95, "no queries"),
            (vec![vec![1.0]], vec![vec![0.0]], 10, 0.95, "resamples"),
            (vec![vec![1.0]], vec![vec![0.0]], 200, 1.0, "level"),
        ] {
            let e = paired_difference(&a, &b, resamples, level, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
