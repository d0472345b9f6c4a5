//! Temperature scaling of zero-shot probabilities (Guo et al., 2017): one scalar T with
//! p = softmax(z / T) fitted by minimising the negative log-likelihood of held-out labels. The
//! NLL is convex in β = 1/T, so a bisection on its derivative finds the optimum without step
//! sizes to tune. `mirage calibrate` fits T on a split's single-label tasks and writes it into a
//! bundle; `mirage eval` reports ECE and NLL with and without it.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::metrics::expected_calibration_error;

/// Temperatures are fitted inside [1/`T_BOUND`, `T_BOUND`]: beyond it the data say only "much
/// sharper" or "much flatter", and a bound keeps the served probabilities finite.
pub const T_BOUND: f64 = 1000.0;

/// Logits of a single-label task: one row of class scores per item and the true class of each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledLogits {
    /// Row per item, one logit per class (the served softmax input before the temperature).
    pub logits: Vec<Vec<f64>>,
    /// True class of each row.
    pub truth: Vec<usize>,
}

/// NLL and ECE of one set of probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// Mean negative log-likelihood of the true class.
    pub nll: f64,
    /// Expected calibration error of the top-1 probability.
    pub ece: f64,
}

/// Numerically stable softmax of `row / t`.
pub fn softmax(row: &[f64], t: f64) -> Vec<f64> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|z| ((z - max) / t).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

impl LabelledLogits {
    /// Checks that every row has the same number of classes (at least 2) and a truth in range.
    ///
    /// # Errors
    ///
    /// Ragged rows, fewer than two classes, a truth out of range, no rows or non-finite logits.
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.logits.is_empty(), "no labelled items to calibrate on");
        ensure!(
            self.logits.len() == self.truth.len(),
            "{} logit rows for {} labels",
            self.logits.len(),
            self.truth.len()
        );
        for (i, (row, &y)) in self.logits.iter().zip(&self.truth).enumerate() {
            ensure!(row.len() >= 2, "item {i}: {} classes (need 2)", row.len());
            ensure!(y < row.len(), "item {i}: class {y} of {}", row.len());
            ensure!(
                row.iter().all(|z| z.is_finite()),
                "item {i}: non-finite logit"
            );
        }
        Ok(())
    }

    /// Appends another task's items (tasks may have different class counts).
    pub fn extend(&mut self, other: &LabelledLogits) {
        self.logits.extend(other.logits.iter().cloned());
        self.truth.extend(&other.truth);
    }

    /// Mean NLL of the true class under softmax(z / t).
    pub fn nll(&self, t: f64) -> f64 {
        let n = self.logits.len().max(1) as f64;
        self.logits
            .iter()
            .zip(&self.truth)
            .map(|(row, &y)| -softmax(row, t)[y].max(f64::MIN_POSITIVE).ln())
            .sum::<f64>()
            / n
    }

    /// Top-1 predictions, their probabilities and whether they are right, under softmax(z / t).
    pub fn top1(&self, t: f64) -> (Vec<usize>, Vec<f64>, Vec<bool>) {
        let mut predicted = Vec::with_capacity(self.logits.len());
        let mut confidence = Vec::with_capacity(self.logits.len());
        for row in &self.logits {
            let p = softmax(row, t);
            let (best, top) = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .expect("validated: at least two classes");
            predicted.push(best);
            confidence.push(*top);
        }
        let correct = predicted
            .iter()
            .zip(&self.truth)
            .map(|(p, y)| p == y)
            .collect();
        (predicted, confidence, correct)
    }

    /// NLL and ECE (`bins` equal-width bins) at temperature `t`.
    pub fn fit_at(&self, t: f64, bins: usize) -> Fit {
        let (_, confidence, correct) = self.top1(t);
        Fit {
            nll: self.nll(t),
            ece: expected_calibration_error(&confidence, &correct, bins),
        }
    }

    /// d NLL / dβ at β = 1/T: mean over items of E_p[z] − z_y. Increasing in β (the NLL is
    /// convex in β), zero at the optimum.
    fn slope(&self, beta: f64) -> f64 {
        let n = self.logits.len().max(1) as f64;
        self.logits
            .iter()
            .zip(&self.truth)
            .map(|(row, &y)| {
                let p = softmax(row, 1.0 / beta);
                p.iter().zip(row).map(|(p, z)| p * z).sum::<f64>() - row[y]
            })
            .sum::<f64>()
            / n
    }

    /// The temperature minimising [`Self::nll`], within [1/[`T_BOUND`], [`T_BOUND`]].
    ///
    /// # Errors
    ///
    /// The logits fail [`Self::validate`].
    pub fn fit_temperature(&self) -> Result<f64> {
        self.validate()?;
        let (mut lo, mut hi) = ((1.0 / T_BOUND).ln(), T_BOUND.ln()); // ln β
        if self.slope(lo.exp()) >= 0.0 {
            return Ok(T_BOUND); // flatter than any bound: the logits carry no signal
        }
        if self.slope(hi.exp()) <= 0.0 {
            return Ok(1.0 / T_BOUND); // separable: sharper is always better
        }
        // 100 halvings of a width-14 interval in ln β: far below f64 resolution of T.
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if self.slope(mid.exp()) < 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(1.0 / (0.5 * (lo + hi)).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Draws labels from softmax(u) for random true logits u, then returns the logits
    /// multiplied by `scale`: a model whose probabilities are right at T = `scale`.
    fn mis_scaled(n: usize, classes: usize, scale: f64, seed: u64) -> LabelledLogits {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out = LabelledLogits::default();
        for _ in 0..n {
            let u: Vec<f64> = (0..classes).map(|_| rng.random_range(-2.0..2.0)).collect();
            let p = softmax(&u, 1.0);
            let r: f64 = rng.random();
            let mut acc = 0.0;
            let y = p
                .iter()
                .position(|q| {
                    acc += q;
                    r < acc
                })
                .unwrap_or(classes - 1);
            out.logits.push(u.iter().map(|z| z * scale).collect());
            out.truth.push(y);
        }
        out
    }

    #[test]
    fn recovers_the_temperature_of_mis_scaled_logits() {
        for (scale, seed) in [(3.0, 1), (0.4, 2), (1.0, 3), (8.0, 4)] {
            let data = mis_scaled(6000, 5, scale, seed);
            let t = data.fit_temperature().unwrap();
            assert!(
                (t / scale - 1.0).abs() < 0.1,
                "scale {scale}: fitted T = {t}"
            );
            // The fit is the NLL minimum: nudging T either way costs likelihood.
            let best = data.nll(t);
            assert!(best <= data.nll(t * 1.05) && best <= data.nll(t / 1.05));
            if scale > 2.0 {
                assert!(data.fit_at(t, 10).ece < data.fit_at(1.0, 10).ece);
            }
        }
    }

    #[test]
    fn degenerate_logits_hit_the_bounds_and_bad_input_is_refused() {
        // Always right with a margin: sharper is always better.
        let sure = LabelledLogits {
            logits: vec![vec![1.0, 0.0], vec![0.0, 1.0]],
            truth: vec![0, 1],
        };
        assert_eq!(sure.fit_temperature().unwrap(), 1.0 / T_BOUND);
        // Always wrong: as flat as allowed.
        let wrong = LabelledLogits {
            logits: vec![vec![1.0, 0.0], vec![0.0, 1.0]],
            truth: vec![1, 0],
        };
        assert_eq!(wrong.fit_temperature().unwrap(), T_BOUND);
        for (bad, why) in [
            (LabelledLogits::default(), "no labelled items"),
            (
                LabelledLogits {
                    logits: vec![vec![1.0]],
                    truth: vec![0],
                },
                "need 2",
            ),
            (
                LabelledLogits {
                    logits: vec![vec![1.0, 2.0]],
                    truth: vec![2],
                },
                "class 2 of 2",
            ),
            (
                LabelledLogits {
                    logits: vec![vec![1.0, f64::NAN]],
                    truth: vec![0],
                },
                "non-finite",
            ),
        ] {
            let e = bad.fit_temperature().unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let p = softmax(&[1000.0, 999.0], 1.0);
        assert!((p[0] + p[1] - 1.0).abs() < 1e-12 && p[0] > p[1]);
    }
}
