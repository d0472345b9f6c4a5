//! The candle engine: the pure-Rust towers of `towers/` plus the projections.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{Engine, EngineKind, EngineOptions, TextRole};
use crate::bundle::Bundle;
use crate::names;
use crate::tokenize::TokenIds;
use crate::towers::layers::{l2_normalize, TextHead};
use crate::towers::text::TextEncoder;
use crate::towers::vision::VisionEncoder;
use crate::{Error, Result};

pub(crate) struct CandleEngine {
    text: TextEncoder,
    vision: VisionEncoder,
    text_proj: TextHead,
    /// The query tower of an asymmetric bundle.
    query: Option<(TextEncoder, Linear)>,
    vision_proj: Linear,
    image_size: usize,
    threads: usize,
    /// Forward passes run in this pool, so `threads` bounds them without touching the
    /// process's environment or rayon's global pool.
    pool: rayon::ThreadPool,
}

impl CandleEngine {
    pub(crate) fn load(
        bundle: &Bundle,
        tensors: crate::weights::HostWeights,
        options: &EngineOptions,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let tensors = crate::weights::to_candle(tensors, &device)?;
        let threads = options.resolved_threads();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("candle-{i}"))
            .build()
            .map_err(|e| Error::Engine(format!("cannot start {threads} candle threads: {e}")))?;
        let config = bundle.config();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let arch = &config.architecture;
        let text = TextEncoder::load(&vb.pp(names::TEXT), &arch.text)?;
        let vision = VisionEncoder::load(&vb.pp(names::VISION), &arch.vision)?;
        let proj = |name: &str, in_dim: usize| -> Result<Linear> {
            let p = vb.pp(name);
            Ok(Linear::new(
                p.get((arch.embed_dim, in_dim), "weight")?,
                Some(p.get(arch.embed_dim, "bias")?),
            ))
        };
        let query = match &arch.query_text {
            Some(q) => Some((
                TextEncoder::load(&vb.pp(names::QUERY_TEXT), q)?,
                proj(names::QUERY_TEXT_PROJ, q.hidden_size())?,
            )),
            None => None,
        };
        Ok(Self {
            query,
            text_proj: TextHead::load(
                &vb.pp(names::TEXT_PROJ),
                arch.text_projection,
                arch.text.hidden_size(),
                arch.embed_dim,
            )?,
            vision_proj: proj(names::VISION_PROJ, arch.vision.feature_dim())?,
            text,
            vision,
            image_size: config.preprocess.image_size,
            threads,
            pool,
        })
    }
}

impl Engine for CandleEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Candle
    }

    fn describe(&self) -> String {
        format!("candle (cpu, {} threads)", self.threads)
    }

    fn embed_tokens(&self, t: &TokenIds, role: TextRole) -> Result<Vec<f32>> {
        self.pool.install(|| {
            let shape = (t.batch, t.seq_len);
            let ids = Tensor::from_slice(&t.ids, shape, &Device::Cpu)?;
            let type_ids = Tensor::from_slice(&t.type_ids, shape, &Device::Cpu)?;
            let mask = Tensor::from_slice(&t.mask, shape, &Device::Cpu)?;
            let projected = match (&self.query, role) {
                (Some((tower, proj)), TextRole::Query) => {
                    proj.forward(&tower.forward(&ids, &type_ids, &mask)?)?
                }
                _ => self
                    .text_proj
                    .forward(&self.text.forward(&ids, &type_ids, &mask)?)?,
            };
            let e = l2_normalize(&projected)?;
            Ok(e.flatten_all()?.to_vec1()?)
        })
    }

    fn embed_pixels(&self, pixels: &[f32], count: usize) -> Result<Vec<f32>> {
        self.pool.install(|| {
            let s = self.image_size;
            let x = Tensor::from_slice(pixels, (count, 3, s, s), &Device::Cpu)?;
            let f = self.vision.forward(&x)?;
            let e = l2_normalize(&self.vision_proj.forward(&f)?)?;
            Ok(e.flatten_all()?.to_vec1()?)
        })
    }
}
