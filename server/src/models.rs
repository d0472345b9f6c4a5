//! The models one server serves. Each bundle runs behind its own inference queue, with its own
//! text bank and identity; the first is the default for requests that name none. A collection is
//! bound to the bundle it was built with (the sha256 it records), so its searches and writes go to
//! that model and never to another one's vectors. Models can be loaded and unloaded while the
//! server runs: a request holds its model until it finishes, so unloading drops nothing in
//! flight.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use mirage_index::ModelRef;
use mirage_model::bundle::TextBank;
use mirage_model::{Bundle, MirageModel};

use crate::config::Settings;
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::infer::{Encoder, Input};
use crate::metrics::Metrics;

/// A loaded bundle.
pub struct ServedModel {
    /// Its inference queue (owns the model).
    pub encoder: Encoder,
    /// Its text bank, for audit.
    pub text_bank: Option<TextBank>,
    /// Its identity, which collections record.
    pub model_ref: ModelRef,
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// Bytes of its weights and graphs on disk: what loading it costs in memory, roughly.
    pub weight_bytes: u64,
    /// Unix time it was loaded.
    pub loaded_at: u64,
}

impl ServedModel {
    /// The model.
    pub fn model(&self) -> &MirageModel {
        self.encoder.model()
    }

    /// Loads the bundle in `dir` with the server's engine and queue settings, and runs one
    /// forward pass through each tower, so a broken model fails here rather than on a request.
    pub async fn load(
        dir: &Path,
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let options = settings.engine.options();
        let owned = dir.to_path_buf();
        let (model, bank, weight_bytes) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let bundle = Bundle::open(&owned)
                    .with_context(|| format!("opening bundle {}", owned.display()))?;
                let model = MirageModel::load(&bundle, &options)
                    .with_context(|| format!("loading bundle {}", owned.display()))?;
                let bank = bundle.text_bank()?;
                let weight_bytes = ["model.safetensors", "text.onnx", "vision.onnx"]
                    .iter()
                    .filter_map(|f| std::fs::metadata(owned.join(f)).ok())
                    .map(|m| m.len())
                    .sum();
                Ok((model, bank, weight_bytes))
            })
            .await??;
        let model_ref = mirage_index::pipeline::model_ref(&model);
        let encoder = Encoder::start(
            Arc::new(model),
            settings.batch_size,
            settings.max_queue_items,
            metrics,
        );
        let s = encoder.model().config().preprocess.image_size;
        encoder
            .embed(vec![
                Input::Text("warm-up".into()),
                Input::Pixels(vec![0.0; 3 * s * s]),
            ])
            .await
            .map_err(|e| anyhow::anyhow!("model warm-up failed: {}", e.detail))?;
        Ok(Self {
            encoder,
            text_bank: bank,
            model_ref,
            dir: dir.to_path_buf(),
            weight_bytes,
            loaded_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }
}

/// The loaded models, the default first.
#[derive(Default)]
pub struct Models {
    list: RwLock<Vec<Arc<ServedModel>>>,
}

impl Models {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<ServedModel>>> {
        // The list is replaced whole under the lock, so a panic elsewhere cannot leave it torn.
        self.list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<ServedModel>>> {
        self.list
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every loaded model, the default first.
    pub fn all(&self) -> Vec<Arc<ServedModel>> {
        self.read().clone()
    }

    /// The default model (the first loaded).
    pub fn default_model(&self) -> Arc<ServedModel> {
        self.read()
            .first()
            .cloned()
            .expect("a server always has a model — this is a bug")
    }

    fn names(&self) -> String {
        self.read()
            .iter()
            .map(|m| format!("{:?}", m.model_ref.model_id))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The model `id` names (the default when `None`); an unknown name is a 404 listing the
    /// loaded ones.
    pub fn get(&self, id: Option<&str>) -> ApiResult<Arc<ServedModel>> {
        let Some(id) = id else {
            return Ok(self.default_model());
        };
        self.read()
            .iter()
            .find(|m| m.model_ref.model_id == id)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "model {id:?} is not loaded here; loaded: {}",
                    self.names()
                ))
            })
    }

    /// The loaded model a collection was built with, or a conflict naming it.
    pub fn for_collection(&self, name: &str, wanted: &ModelRef) -> ApiResult<Arc<ServedModel>> {
        self.read()
            .iter()
            .find(|m| &m.model_ref == wanted)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::Conflict,
                    format!(
                        "collection {name:?} was built with model {:?} (bundle sha256 {}), which this server has not loaded (loaded: {}); load it with POST /v1/models or serve it with --bundle",
                        wanted.model_id,
                        wanted.sha256,
                        self.names()
                    ),
                )
            })
    }

    /// Adds a model; two models may not share an id (requests name models by id).
    pub fn add(&self, model: Arc<ServedModel>) -> ApiResult<()> {
        let mut list = self.write();
        if let Some(m) = list
            .iter()
            .find(|m| m.model_ref.model_id == model.model_ref.model_id)
        {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "a model named {:?} is already loaded (from {}, bundle sha256 {})",
                    m.model_ref.model_id,
                    m.dir.display(),
                    m.model_ref.sha256
                ),
            ));
        }
        list.push(model);
        Ok(())
    }

    /// Removes the model `id`; the last one cannot go (a server always has a default).
    pub fn remove(&self, id: &str) -> ApiResult<Arc<ServedModel>> {
        let mut list = self.write();
        let Some(i) = list.iter().position(|m| m.model_ref.model_id == id) else {
            drop(list);
            return Err(ApiError::not_found(format!(
                "model {id:?} is not loaded here; loaded: {}",
                self.names()
            )));
        };
        if list.len() == 1 {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("{id:?} is the only loaded model; load another before unloading it"),
            ));
        }
        Ok(list.remove(i))
    }
}
