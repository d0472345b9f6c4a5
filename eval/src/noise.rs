//! Synthetic false-positive noise: which pairs get another pair's caption. One plan for the
//! trainer (fixed mode) and `mirage eval`'s injected-noise detection, so a rate and a seed mean
//! the same corruption in both.

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The swaps of a seeded `rate` share of `len` pairs: `(pair, pair whose caption it carries)`,
/// each chosen pair carrying the next chosen one's caption (a rotation, so none keeps its own).
/// A positive rate swaps at least two pairs when there are two: one alone has no partner, and a
/// rate the user asked for must corrupt something. Rates are clamped to [0, 1].
pub fn swapped_pairs(len: usize, rate: f64, seed: u64) -> Vec<(usize, usize)> {
    if rate <= 0.0 || len < 2 {
        return Vec::new();
    }
    let m = ((rate.min(1.0) * len as f64).floor() as usize).clamp(2, len);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut chosen: Vec<usize> = (0..len).collect();
    chosen.shuffle(&mut rng);
    chosen.truncate(m);
    (0..m).map(|k| (chosen[k], chosen[(k + 1) % m])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_share_rotates_and_nobody_keeps_its_own() {
        let swaps = swapped_pairs(100, 0.25, 7);
        assert_eq!(swaps.len(), 25);
        assert_eq!(swaps, swapped_pairs(100, 0.25, 7), "seeded");
        assert_ne!(swaps, swapped_pairs(100, 0.25, 8));
        assert!(swaps.iter().all(|(i, j)| i != j));
        let mut from: Vec<usize> = swaps.iter().map(|s| s.1).collect();
        let mut to: Vec<usize> = swaps.iter().map(|s| s.0).collect();
        from.sort_unstable();
        to.sort_unstable();
        assert_eq!(
            from, to,
            "every chosen caption lands on another chosen pair"
        );
        assert_eq!(
            swapped_pairs(10, 0.01, 1).len(),
            2,
            "a positive rate swaps something"
        );
        assert!(swapped_pairs(10, 0.0, 1).is_empty());
        assert!(swapped_pairs(1, 0.5, 1).is_empty());
        assert_eq!(swapped_pairs(10, 1.0, 1).len(), 10);
    }
}
