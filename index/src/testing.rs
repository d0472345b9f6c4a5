//! Seeded vectors for tests and benchmarks.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Latent dimension of [`embedding_like_vectors`].
pub const LATENT_DIM: usize = 32;

/// `n` seeded unit vectors shaped like text embeddings: `LATENT_DIM` Gaussian factors mapped to
/// `dim` by one fixed random matrix, plus isotropic noise. Real embeddings concentrate on a
/// low-dimensional subspace; isotropic Gaussian vectors in 384 dimensions do not, and have almost
/// no neighbour structure for any graph index to find (hnswlib reaches Recall@10 0.43 at ef 128
/// on them). Base and query sets drawn with different `seed`s share the mixing matrix.
pub fn embedding_like_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let normal = Normal::new(0.0f32, 1.0).expect("unit normal");
    let mut mix_rng = ChaCha8Rng::seed_from_u64(7);
    let mix: Vec<f32> = (0..LATENT_DIM * dim)
        .map(|_| normal.sample(&mut mix_rng))
        .collect();
    let noise = 0.1 * (LATENT_DIM as f32).sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let z: Vec<f32> = (0..LATENT_DIM).map(|_| normal.sample(&mut rng)).collect();
            let mut v: Vec<f32> = (0..dim)
                .map(|j| {
                    let signal: f32 = (0..LATENT_DIM).map(|l| z[l] * mix[l * dim + j]).sum();
                    signal + noise * normal.sample(&mut rng)
                })
                .collect();
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}
