//! The ONNX Runtime engine: `ort` with the library loaded at run time (`libonnxruntime.so` from
//! the onnxruntime wheel on PyPI, unpacked by `scripts/fetch-assets.sh`), one session per tower
//! created at load, tuned for serving.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

use super::{DeviceChoice, Engine, EngineKind, EngineOptions, TextRole};
use crate::bundle::Bundle;
use crate::onnx::{self, TEXT_INPUTS, TEXT_OUTPUT, VISION_INPUT, VISION_OUTPUT};
use crate::tokenize::TokenIds;
use crate::{Error, Result};

/// The ONNX Runtime library this process loaded.
#[derive(Debug, Clone)]
pub struct OrtLibrary {
    /// The file.
    pub path: PathBuf,
    /// Its version (`1.28.0`), from the library's file name.
    pub version: String,
}

/// Where `libonnxruntime.so` is looked for, in order: `explicit`, `onnxruntime/` under the asset
/// cache `assets` (what `scripts/fetch-assets.sh` fills; the front end resolves it, this crate
/// reads no environment), `lib/` beside or above the executable (the Docker image), then the
/// system library folders.
fn library_candidates(explicit: Option<&Path>, assets: Option<&Path>) -> Vec<PathBuf> {
    const NAME: &str = "libonnxruntime.so";
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
    }
    if let Some(a) = assets {
        out.push(a.join("onnxruntime").join(NAME));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join("lib").join(NAME));
            out.push(dir.join("..").join("lib").join(NAME));
        }
    }
    for dir in ["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu"] {
        out.push(Path::new(dir).join(NAME));
    }
    out
}

/// The first existing candidate of `library_candidates`, or an error listing where it looked
/// and how to get the library.
pub fn find_library(explicit: Option<&Path>, assets: Option<&Path>) -> Result<PathBuf> {
    let candidates = library_candidates(explicit, assets);
    if let Some(p) = explicit {
        // An explicit path is used or refused, never silently replaced by another library.
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::Engine(format!(
                "ONNX Runtime library {} does not exist (scripts/fetch-assets.sh unpacks one from \
                 the onnxruntime wheel on PyPI)",
                p.display()
            )))
        };
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            Error::Engine(format!(
                "ONNX Runtime library libonnxruntime.so not found; looked in: {}. Run \
             scripts/fetch-assets.sh (it unpacks the library from the onnxruntime wheel on PyPI), \
             or set ORT_DYLIB_PATH / --ort-library (or MIRAGE_ASSETS / --assets), or choose --engine candle",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Loads the library once per process; later calls get the same outcome.
pub(crate) fn load_library(explicit: Option<&Path>, assets: Option<&Path>) -> Result<OrtLibrary> {
    if let Some(p) = explicit {
        // Checked on every call: the library may already be loaded from elsewhere.
        find_library(Some(p), None)?;
    }
    static LOADED: OnceLock<std::result::Result<OrtLibrary, String>> = OnceLock::new();
    let outcome = LOADED.get_or_init(|| {
        let path = find_library(explicit, assets).map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path).map_err(|e| {
            format!(
                "ONNX Runtime library {} could not be loaded: {e}",
                path.display()
            )
        })?;
        builder.with_name("mirage").commit();
        // Release builds carry their version in the file name (libonnxruntime.so.1.28.0); the
        // unversioned name is a link to it.
        let version = std::fs::canonicalize(&path)
            .ok()
            .and_then(|p| {
                p.file_name()?
                    .to_str()?
                    .strip_prefix("libonnxruntime.so.")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "unknown version".to_owned());
        Ok(OrtLibrary { path, version })
    });
    match outcome {
        Ok(lib) => {
            if let Some(p) = explicit {
                if p != lib.path {
                    tracing::warn!(
                        requested = %p.display(),
                        loaded = %lib.path.display(),
                        "ONNX Runtime is already loaded from another file; using it"
                    );
                }
            }
            Ok(lib.clone())
        }
        Err(e) => Err(Error::Engine(e.clone())),
    }
}

fn engine_error(what: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |e| Error::Engine(format!("ONNX Runtime: {what}: {e}"))
}

pub(crate) fn session(bytes: &[u8], options: &EngineOptions, tower: &str) -> Result<Session> {
    let err = |e: ort::Error<ort::session::builder::SessionBuilder>| {
        Error::Engine(format!("ONNX Runtime: {tower} session options: {e}"))
    };
    let mut builder = Session::builder()
        .map_err(engine_error("creating a session"))?
        // Level 3 adds the layout transforms (NCHWc convolutions) on top of the fusions.
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(err)?
        .with_intra_threads(options.resolved_threads())
        .map_err(err)?
        .with_inter_threads(1)
        .map_err(err)?
        .with_memory_pattern(true)
        .map_err(err)?
        // Weights are pre-packed into the GEMM kernels' layout once, at session creation.
        .with_config_entry("session.disable_prepacking", "0")
        .map_err(err)?;
    if options.device == DeviceChoice::Cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| {
                Error::Engine(format!(
                    "device cuda: ONNX Runtime could not enable its CUDA execution provider ({e}); \
                     it needs the onnxruntime-gpu build of libonnxruntime.so (--ort-library), an \
                     NVIDIA GPU and the CUDA 12 / cuDNN 9 libraries on the loader path"
                ))
            })?;
    }
    builder
        .commit_from_memory(bytes)
        .map_err(engine_error(&format!("loading the {tower} graph")))
}

pub(crate) struct OrtEngine {
    text: Mutex<Session>,
    /// The query tower of an asymmetric bundle.
    query_text: Option<Mutex<Session>>,
    vision: Mutex<Session>,
    dim: usize,
    image_size: usize,
    description: String,
}

impl OrtEngine {
    pub(crate) fn load(
        bundle: &Bundle,
        tensors: &crate::weights::HostWeights,
        options: &EngineOptions,
    ) -> Result<Self> {
        let library = load_library(options.ort_library.as_deref(), options.assets.as_deref())?;
        let config = bundle.config();
        let (graphs, source) = match bundle.onnx_graphs()? {
            Some(g) => (g, "bundle"),
            None => {
                // Graphs built from the weights are the same graphs `mirage model export-onnx`
                // writes; building them takes about as long as reading the weights.
                (onnx::build(config, tensors)?, "built at load")
            }
        };
        let text = session(&graphs.text, options, "text")?;
        let query_text = match onnx::build_query(config, tensors)? {
            Some(bytes) => Some(Mutex::new(session(&bytes, options, "query text")?)),
            None => None,
        };
        let vision = session(&graphs.vision, options, "vision")?;
        let device = options.device.as_str();
        Ok(Self {
            text: Mutex::new(text),
            query_text,
            vision: Mutex::new(vision),
            dim: config.architecture.embed_dim,
            image_size: config.preprocess.image_size,
            description: format!(
                "ort {} ({device}, {} threads, graphs {source}, {})",
                library.version,
                options.resolved_threads(),
                library.path.display()
            ),
        })
    }

    fn lock(m: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
        // A panic mid-run leaves the session itself intact; keep serving with it.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_output(&self, data: (&ort::value::Shape, &[f32]), rows: usize) -> Result<Vec<f32>> {
        let (shape, values) = data;
        if values.len() != rows * self.dim {
            return Err(Error::Engine(format!(
                "ONNX Runtime returned an embedding of shape {shape:?}, expected [{rows}, {}]",
                self.dim
            )));
        }
        Ok(values.to_vec())
    }
}

impl Engine for OrtEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Ort
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn embed_tokens(&self, t: &TokenIds, role: TextRole) -> Result<Vec<f32>> {
        let widen = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>();
        let (ids, mask, types) = (widen(&t.ids), widen(&t.mask), widen(&t.type_ids));
        let shape = [t.batch as i64, t.seq_len as i64];
        fn view(shape: [i64; 2], v: &[i64]) -> Result<TensorRef<'_, i64>> {
            TensorRef::from_array_view((shape, v)).map_err(engine_error("text input"))
        }
        let [n_ids, n_mask, n_types] = TEXT_INPUTS;
        let inputs = ort::inputs![
            n_ids => view(shape, &ids)?,
            n_mask => view(shape, &mask)?,
            n_types => view(shape, &types)?,
        ];
        let tower = match (&self.query_text, role) {
            (Some(q), TextRole::Query) => q,
            _ => &self.text,
        };
        let mut session = Self::lock(tower);
        let out = session.run(inputs).map_err(engine_error("text forward"))?;
        let data = out[TEXT_OUTPUT]
            .try_extract_tensor::<f32>()
            .map_err(engine_error("text output"))?;
        self.take_output(data, t.batch)
    }

    fn embed_pixels(&self, pixels: &[f32], count: usize) -> Result<Vec<f32>> {
        let s = self.image_size as i64;
        let x = TensorRef::from_array_view(([count as i64, 3, s, s], pixels))
            .map_err(engine_error("pixel input"))?;
        let mut session = Self::lock(&self.vision);
        let out = session
            .run(ort::inputs![VISION_INPUT => x])
            .map_err(engine_error("vision forward"))?;
        let data = out[VISION_OUTPUT]
            .try_extract_tensor::<f32>()
            .map_err(engine_error("vision output"))?;
        self.take_output(data, count)
    }
}
