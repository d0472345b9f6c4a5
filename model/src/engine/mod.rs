//! The engine seam: the two forward passes (token ids → unit joint embeddings, preprocessed
//! pixels → unit joint embeddings) behind one trait, so `MirageModel` and everything above it
//! never know which library runs them.
//!
//! - [`EngineKind::Ort`]: ONNX Runtime through `ort` (library loaded at run time), over the
//!   bundle's ONNX graphs or graphs built from its weights at load. The default where the
//!   library loads.
//! - [`EngineKind::Candle`]: the pure-Rust candle towers (`towers/`).

#[cfg(feature = "candle")]
mod candle;
pub(crate) mod ort;

use std::path::PathBuf;

use crate::bundle::Bundle;
use crate::tokenize::TokenIds;
use crate::weights::HostWeights;
use crate::{Error, Result};

pub use self::ort::{find_library, OrtLibrary};

/// The engine that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// ONNX Runtime.
    Ort,
    /// candle (pure Rust).
    Candle,
}

impl EngineKind {
    /// `ort` or `candle`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ort => "ort",
            Self::Candle => "candle",
        }
    }
}

/// The engine a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// ONNX Runtime when its library loads, else candle (with a warning saying why) in a build
    /// with the feature `candle`.
    #[default]
    Auto,
    /// ONNX Runtime or an error.
    Ort,
    /// candle.
    Candle,
}

impl std::str::FromStr for EngineChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "ort" => Ok(Self::Ort),
            "candle" => Ok(Self::Candle),
            other => Err(Error::InvalidInput(format!(
                "engine `{other}` is not one of auto, ort, candle"
            ))),
        }
    }
}

impl DeviceChoice {
    /// `cpu` or `cuda`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
}

/// Where the forward passes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU through ONNX Runtime's CUDA execution provider (onnxruntime-gpu).
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(Error::InvalidInput(format!(
                "device `{other}` is not one of cpu, cuda"
            ))),
        }
    }
}

/// Most threads a forward pass may ask for: ONNX Runtime would try to start every one of them.
pub const MAX_THREADS: usize = 1024;

/// How to pick and set up the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Which engine.
    pub engine: EngineChoice,
    /// Which device.
    pub device: DeviceChoice,
    /// Threads one forward pass may use (ONNX Runtime's intra-op pool, candle's rayon pool);
    /// 0 = every available core.
    pub threads: usize,
    /// `libonnxruntime.so` to load; when unset, [`find_library`] looks in the usual places.
    pub ort_library: Option<PathBuf>,
    /// The asset cache `scripts/fetch-assets.sh` fills; [`find_library`] looks in its
    /// `onnxruntime/`.
    pub assets: Option<PathBuf>,
}

impl EngineOptions {
    /// Threads to use, 0 resolved to the available cores.
    pub fn resolved_threads(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        } else {
            self.threads
        }
    }
}

/// The two forward passes. Implementations are thread-safe; outputs are row-major `[B, D]`
/// unit-norm embeddings.
/// Which text tower embeds a text: asymmetric bundles embed queries with their own tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextRole {
    /// What is indexed, classified against or returned (the `text` tower).
    #[default]
    Document,
    /// A search query (the `query_text` tower where the bundle has one).
    Query,
}

pub(crate) trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;
    /// One line for logs and `/info`: engine, version, device, threads.
    fn describe(&self) -> String;
    /// Unit joint embeddings of `tokens` by the document tower, or by the query tower for
    /// [`TextRole::Query`] when the bundle has one.
    fn embed_tokens(&self, tokens: &TokenIds, role: TextRole) -> Result<Vec<f32>>;
    /// `pixels` holds `count` preprocessed images of 3 × S × S.
    fn embed_pixels(&self, pixels: &[f32], count: usize) -> Result<Vec<f32>>;
}

/// Loads the engine `options` ask for over `bundle`, whose f32 weights are `tensors`.
pub(crate) fn load(
    bundle: &Bundle,
    tensors: HostWeights,
    options: &EngineOptions,
) -> Result<Box<dyn Engine>> {
    let (engine, _) = choose(
        options,
        "model",
        tensors,
        |t| Ok(Box::new(ort::OrtEngine::load(bundle, t, options)?) as Box<dyn Engine>),
        |t| {
            #[cfg(feature = "candle")]
            return Ok(Box::new(candle::CandleEngine::load(bundle, t, options)?) as Box<dyn Engine>);
            #[cfg(not(feature = "candle"))]
            return Err(without_candle(t));
        },
    )?;
    Ok(engine)
}

/// The refusal of a build without the candle engine (mirage-model's feature `candle`).
#[cfg(not(feature = "candle"))]
pub(crate) fn without_candle(_: HostWeights) -> Error {
    Error::Engine(
        "this build has no candle engine (mirage-model's feature `candle`): use ONNX Runtime \
         (--engine ort, with its library: ORT_DYLIB_PATH, --ort-library or --assets)"
            .into(),
    )
}

/// The engine rule for every model this crate runs (the towers, a reranker): the thread count
/// is checked, candle is refused on CUDA, and `auto` takes ONNX Runtime where its library loads,
/// else (on the CPU) candle with a warning. `what` names the model in logs.
pub(crate) fn choose<T>(
    options: &EngineOptions,
    what: &str,
    tensors: HostWeights,
    ort: impl FnOnce(&HostWeights) -> Result<T>,
    candle: impl FnOnce(HostWeights) -> Result<T>,
) -> Result<(T, EngineKind)> {
    if options.threads > MAX_THREADS {
        return Err(Error::InvalidInput(format!(
            "threads {} is out of range 0..={MAX_THREADS} (0 = all cores)",
            options.threads
        )));
    }
    match options.engine {
        EngineChoice::Candle => {
            if options.device == DeviceChoice::Cuda {
                return Err(Error::Engine(
                    "the candle engine runs on the CPU only; use --engine ort with --device cuda \
                     (onnxruntime-gpu) for a GPU"
                        .into(),
                ));
            }
            Ok((candle(tensors)?, EngineKind::Candle))
        }
        EngineChoice::Ort => Ok((ort(&tensors)?, EngineKind::Ort)),
        EngineChoice::Auto => match ort(&tensors) {
            Ok(e) => {
                tracing::info!(
                    engine = "ort",
                    "{what} engine: ort (auto: ONNX Runtime loaded)"
                );
                Ok((e, EngineKind::Ort))
            }
            // Without candle there is nothing to fall back to: the ONNX Runtime error stands.
            Err(Error::Engine(why))
                if options.device == DeviceChoice::Cpu && cfg!(feature = "candle") =>
            {
                tracing::warn!(engine = "candle", reason = %why, "{what} engine: candle (auto: ONNX Runtime unavailable)");
                Ok((candle(tensors)?, EngineKind::Candle))
            }
            Err(e) => Err(e),
        },
    }
}
