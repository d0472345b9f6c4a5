//! Training data over `mirage-data`'s pair reader: synthetic false-positive noise
//! (dynamic, as the reference, or a fixed seeded set); the train transform (resize, random affine
//! ±5°, horizontal flip, CLIP mean/std from the bundle's preprocessing); and a multi-threaded
//! loader that decodes batches ahead of the training step.
//!
//! Every random choice is derived from (seed, epoch, sample) rather than from a shared stream,
//! so a batch is the same whichever thread decodes it and a resumed run sees the same data.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use crossbeam_channel::{Receiver, Sender};
use mirage_data::pairs::Pair;
use mirage_model::config::ImagePreprocess;
use mirage_model::image_input::{load_image, preprocess, DecodeOptions};
use mirage_model::tokenize::{TextTokenizer, TokenIds};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::{NoiseConfig, NoiseMode};

/// Which caption each sample gets under synthetic false-positive noise.
#[derive(Debug, Clone)]
pub struct NoisePlan {
    rate: f64,
    mode: NoiseMode,
    seed: u64,
    len: usize,
    /// Fixed mode: sample → index of the caption it carries instead of its own.
    fixed: HashMap<usize, usize>,
}

/// One row of `noise.jsonl` (fixed mode): which pairs were corrupted and how.
#[derive(Debug, Serialize)]
pub struct NoisyPair {
    /// The sample whose caption was replaced.
    pub index: usize,
    /// The sample whose caption it carries.
    pub caption_from: usize,
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    // SplitMix64 over the three values: independent, well-spread per-sample seeds.
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NoisePlan {
    /// The plan for `len` samples.
    pub fn new(c: &NoiseConfig, len: usize, seed: u64) -> Self {
        let fixed = match c.mode {
            NoiseMode::Fixed => {
                mirage_eval::noise::swapped_pairs(len, c.fp_rate, mix(seed, 0xF1, 0))
                    .into_iter()
                    .collect()
            }
            NoiseMode::Dynamic => HashMap::new(),
        };
        Self {
            rate: c.fp_rate,
            mode: c.mode,
            seed,
            len,
            fixed,
        }
    }

    /// (caption index, noisy) for `index` read in `epoch`.
    pub fn caption_for(&self, index: usize, epoch: u64) -> (usize, bool) {
        if self.rate <= 0.0 {
            return (index, false);
        }
        match self.mode {
            NoiseMode::Fixed => match self.fixed.get(&index) {
                Some(&j) => (j, true),
                None => (index, false),
            },
            NoiseMode::Dynamic => {
                let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, epoch, index as u64));
                if rng.random::<f64>() < self.rate {
                    let j = rng.random_range(0..self.len);
                    (j, j != index)
                } else {
                    (index, false)
                }
            }
        }
    }

    /// The corrupted pairs of fixed mode, sorted.
    pub fn fixed_pairs(&self) -> Vec<NoisyPair> {
        let sorted: BTreeMap<_, _> = self.fixed.iter().collect();
        sorted
            .into_iter()
            .map(|(&index, &caption_from)| NoisyPair {
                index,
                caption_from,
            })
            .collect()
    }
}

/// Rotates a CHW image by `degrees` about its centre (nearest neighbour, torchvision's
/// RandomAffine default) and optionally mirrors it; uncovered pixels get `fill` per channel.
pub fn affine_flip(chw: &[f32], size: usize, degrees: f32, flip: bool, fill: [f32; 3]) -> Vec<f32> {
    let mut out = vec![0.0; chw.len()];
    let (sin, cos) = degrees.to_radians().sin_cos();
    let c = (size as f32 - 1.0) / 2.0;
    for y in 0..size {
        for x in 0..size {
            // Output pixel (x, y) samples the input at the inverse rotation of its position.
            let xo = if flip { size - 1 - x } else { x };
            let (dx, dy) = (xo as f32 - c, y as f32 - c);
            let sx = (cos * dx + sin * dy + c).round();
            let sy = (-sin * dx + cos * dy + c).round();
            let inside = sx >= 0.0 && sy >= 0.0 && (sx as usize) < size && (sy as usize) < size;
            for ch in 0..3 {
                out[ch * size * size + y * size + x] = if inside {
                    chw[ch * size * size + sy as usize * size + sx as usize]
                } else {
                    fill[ch]
                };
            }
        }
    }
    out
}

/// A dataset ready for batching: pairs, preprocessing, tokenizer and noise.
#[derive(Debug)]
pub struct Dataset {
    /// The pairs.
    pub pairs: Vec<Pair>,
    /// Image preprocessing of the bundle being trained.
    pub preprocess: ImagePreprocess,
    /// The bundle's tokenizer.
    pub tokenizer: TextTokenizer,
    /// Caption replacement.
    pub noise: NoisePlan,
    /// Apply the random affine and flip.
    pub augment: bool,
    /// Seed of the augmentations.
    pub seed: u64,
}

/// One decoded batch (on the CPU).
#[derive(Debug)]
pub struct Batch {
    /// `B × 3 × S × S` normalised pixels.
    pub pixels: Vec<f32>,
    /// Token ids of the (possibly noisy) captions.
    pub tokens: TokenIds,
    /// The captions fed to the text tower.
    pub captions: Vec<String>,
    /// Dataset index of each sample's image.
    pub indices: Vec<usize>,
    /// True where the caption was replaced by noise.
    pub noisy: Vec<bool>,
    /// Images that could not be read and were replaced by the next readable sample.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Dataset {
    fn pixels_of(&self, index: usize, epoch: u64) -> Result<Vec<f32>> {
        let img = load_image(&self.pairs[index].image, DecodeOptions::default())?;
        let chw = preprocess(&img, &self.preprocess)?;
        if !self.augment {
            return Ok(chw);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed ^ 0xA6, epoch, index as u64));
        let degrees = rng.random_range(-5.0f32..=5.0);
        let flip = rng.random::<bool>();
        let p = &self.preprocess;
        let fill = [0, 1, 2].map(|c| (0.0 - p.mean[c]) / p.std[c]);
        Ok(affine_flip(&chw, p.image_size, degrees, flip, fill))
    }

    /// Decodes the samples `indices` of `epoch`. An unreadable image is replaced by the next
    /// readable sample (wrapping) so the batch keeps its size; the failures are reported.
    pub fn load_batch(&self, indices: &[usize], epoch: u64) -> Result<Batch> {
        let s = self.preprocess.image_size;
        let mut batch = Batch {
            pixels: Vec::with_capacity(indices.len() * 3 * s * s),
            tokens: TokenIds {
                ids: vec![],
                type_ids: vec![],
                mask: vec![],
                lengths: vec![],
                batch: 0,
                seq_len: 0,
            },
            captions: Vec::with_capacity(indices.len()),
            indices: Vec::with_capacity(indices.len()),
            noisy: Vec::with_capacity(indices.len()),
            unreadable: Vec::new(),
        };
        let n = self.pairs.len();
        for &first in indices {
            let mut index = first;
            let pixels = loop {
                match self.pixels_of(index, epoch) {
                    Ok(p) => break p,
                    Err(e) => {
                        batch
                            .unreadable
                            .push((self.pairs[index].image.clone(), e.to_string()));
                        if batch.unreadable.len() > indices.len() {
                            bail!(
                                "no readable image among {} attempts; last: {}: {e}",
                                batch.unreadable.len(),
                                self.pairs[index].image.display()
                            );
                        }
                        index = (index + 1) % n;
                    }
                }
            };
            let (caption_index, noisy) = self.noise.caption_for(index, epoch);
            batch.pixels.extend_from_slice(&pixels);
            batch
                .captions
                .push(self.pairs[caption_index].caption.clone());
            batch.indices.push(index);
            batch.noisy.push(noisy);
        }
        let refs: Vec<&str> = batch.captions.iter().map(String::as_str).collect();
        batch.tokens = self.tokenizer.encode_ids(&refs)?;
        Ok(batch)
    }

    /// Captions only (for the queue fill pass), with noise applied as in training.
    pub fn load_texts(&self, indices: &[usize], epoch: u64) -> Result<(Vec<String>, TokenIds)> {
        let captions: Vec<String> = indices
            .iter()
            .map(|&i| {
                self.pairs[self.noise.caption_for(i, epoch).0]
                    .caption
                    .clone()
            })
            .collect();
        let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
        let tokens = self.tokenizer.encode_ids(&refs)?;
        Ok((captions, tokens))
    }
}

/// The sample order of `epoch`: a seeded permutation, cut into full batches (drop_last).
pub fn epoch_batches(len: usize, batch: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..len).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(seed ^ 0x5F, epoch, 0)));
    idx.chunks_exact(batch).map(<[usize]>::to_vec).collect()
}

type Job = (u64, u64, Vec<usize>);

/// Decodes batches on `workers` threads, up to `prefetch` ahead, delivered in order.
pub struct Loader {
    jobs: Option<Sender<Job>>,
    results: Receiver<(u64, Result<Batch>)>,
    handles: Vec<std::thread::JoinHandle<()>>,
    pending: BTreeMap<u64, Result<Batch>>,
    queued: std::collections::VecDeque<(u64, Vec<usize>)>,
    submitted: u64,
    delivered: u64,
    prefetch: u64,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("submitted", &self.submitted)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// Starts the workers over `dataset`.
    pub fn new(dataset: Arc<Dataset>, workers: usize, prefetch: usize) -> Self {
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (res_tx, res_rx) = crossbeam_channel::unbounded();
        let handles = (0..workers.max(1))
            .map(|_| {
                let rx = job_rx.clone();
                let tx = res_tx.clone();
                let ds = Arc::clone(&dataset);
                std::thread::spawn(move || {
                    for (seq, epoch, indices) in rx {
                        if tx.send((seq, ds.load_batch(&indices, epoch))).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Self {
            jobs: Some(job_tx),
            results: res_rx,
            handles,
            pending: BTreeMap::new(),
            queued: Default::default(),
            submitted: 0,
            delivered: 0,
            prefetch: prefetch.max(1) as u64,
        }
    }

    /// Queues the batches of an epoch; they are decoded as the prefetch window allows.
    pub fn enqueue_epoch(&mut self, epoch: u64, batches: Vec<Vec<usize>>) {
        self.queued.extend(batches.into_iter().map(|b| (epoch, b)));
        self.top_up();
    }

    fn top_up(&mut self) {
        while self.submitted < self.delivered + self.prefetch {
            let Some((epoch, indices)) = self.queued.pop_front() else {
                break;
            };
            let jobs = self.jobs.as_ref().expect("loader is running");
            jobs.send((self.submitted, epoch, indices))
                .expect("loader workers are alive");
            self.submitted += 1;
        }
    }

    /// The next batch in order, or `None` when everything queued was delivered.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        self.top_up();
        if self.delivered == self.submitted {
            return None;
        }
        let want = self.delivered;
        while !self.pending.contains_key(&want) {
            match self.results.recv() {
                Ok((seq, b)) => {
                    self.pending.insert(seq, b);
                }
                Err(_) => return Some(Err(anyhow::anyhow!("data loader threads stopped"))),
            }
        }
        self.delivered += 1;
        let batch = self.pending.remove(&want);
        self.top_up();
        batch
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.jobs.take();
        self.queued.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_noise_is_a_seeded_derangement_of_the_chosen_share() {
        let c = NoiseConfig {
            fp_rate: 0.3,
            mode: NoiseMode::Fixed,
        };
        let a = NoisePlan::new(&c, 100, 7);
        let b = NoisePlan::new(&c, 100, 7);
        let pairs = a.fixed_pairs();
        assert_eq!(pairs.len(), 30);
        assert!(pairs.iter().all(|p| p.index != p.caption_from));
        assert_eq!(
            a.caption_for(pairs[0].index, 3),
            (pairs[0].caption_from, true)
        );
        // Same seed, same plan; epochs do not change it.
        for i in 0..100 {
            assert_eq!(a.caption_for(i, 0), b.caption_for(i, 5));
        }
    }

    #[test]
    fn dynamic_noise_rate_and_redraws() {
        let c = NoiseConfig {
            fp_rate: 0.4,
            mode: NoiseMode::Dynamic,
        };
        let plan = NoisePlan::new(&c, 10_000, 1);
        let noisy = (0..10_000).filter(|&i| plan.caption_for(i, 0).1).count();
        assert!((3_800..4_200).contains(&noisy), "{noisy}");
        let changed = (0..10_000)
            .filter(|&i| plan.caption_for(i, 0) != plan.caption_for(i, 1))
            .count();
        assert!(
            changed > 3_000,
            "the noisy set is re-drawn each epoch: {changed}"
        );
        assert_eq!(plan.caption_for(5, 2), plan.caption_for(5, 2));
    }

    #[test]
    fn affine_identity_flip_and_fill() {
        let size = 4;
        let img: Vec<f32> = (0..3 * size * size).map(|v| v as f32).collect();
        assert_eq!(affine_flip(&img, size, 0.0, false, [0.0; 3]), img);
        let flipped = affine_flip(&img, size, 0.0, true, [0.0; 3]);
        assert_eq!(flipped[0], img[3]);
        // A 45° turn leaves corners uncovered.
        let turned = affine_flip(&img, size, 45.0, false, [-9.0, -8.0, -7.0]);
        assert_eq!(turned[0], -9.0);
        assert_eq!(turned[size * size], -8.0);
    }

    #[test]
    fn epochs_are_seeded_permutations_in_full_batches() {
        let a = epoch_batches(10, 3, 1, 0);
        assert_eq!(a.len(), 3);
        assert_eq!(a, epoch_batches(10, 3, 1, 0));
        assert_ne!(a, epoch_batches(10, 3, 1, 1));
        let mut all: Vec<usize> = a.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 9);
    }
}
