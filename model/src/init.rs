//! Seeded initialisation of tensors from the name scheme, for towers without pretrained weights.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::names::{Init, TensorSpec};
use crate::Result;

/// Creates every tensor of `specs` from `seed`. The stream is consumed in spec order, so the same
/// seed and architecture always give the same weights.
pub fn random_tensors(
    specs: &[TensorSpec],
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::with_capacity(specs.len());
    for spec in specs {
        let n: usize = spec.shape.iter().product();
        let data: Vec<f32> = match spec.init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Constant(c) => vec![c; n],
            Init::Normal(std) => normal(&mut rng, n, std),
            Init::KaimingFanOut => {
                let fan_out = spec.shape[0] * spec.shape[2..].iter().product::<usize>();
                normal(&mut rng, n, (2.0 / fan_out as f32).sqrt())
            }
            Init::Identity => {
                let (rows, cols) = (spec.shape[0], spec.shape.get(1).copied().unwrap_or(1));
                let mut d = vec![0.0; n];
                for i in 0..rows.min(cols) {
                    d[i * cols + i] = 1.0;
                }
                d
            }
        };
        out.insert(
            spec.name.clone(),
            Tensor::from_vec(data, spec.shape.as_slice(), device)?,
        );
    }
    Ok(out)
}

fn normal(rng: &mut ChaCha8Rng, n: usize, std: f32) -> Vec<f32> {
    let dist =
        Normal::new(0.0f32, std.max(f32::MIN_POSITIVE)).expect("std is positive — this is a bug");
    (0..n).map(|_| dist.sample(rng)).collect()
}
