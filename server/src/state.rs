//! Shared state of the HTTP service: the served models (`models.rs`), the stores and the open
//! collections, the server's own per-collection settings, readiness and metrics.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mirage_index::{Collection, ModelRef, StoreSpec};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::config::Settings;
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::metrics::Metrics;
use crate::models::{Models, ServedModel};

/// What the server remembers about a collection beyond what the store keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollectionSettings {
    /// `embedded` or `qdrant`.
    pub store: String,
    /// RAG abstention bound for this collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag_min_score: Option<f32>,
    /// Mode of text queries that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_mode: Option<crate::dto::Mode>,
    /// Fusion settings of hybrid searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<crate::dto::FusionSettings>,
}

impl CollectionSettings {
    /// The fusion of a collection's hybrid searches: its saved fields over the defaults.
    pub fn fusion(settings: Option<&Self>) -> mirage_index::hybrid::Fusion {
        settings
            .and_then(|s| s.fusion)
            .unwrap_or_default()
            .over(mirage_index::hybrid::Fusion::default())
    }

    /// The mode of a query that names none: the collection's for text on a collection with a
    /// lexical index, else hybrid for text there, else dense.
    pub fn mode(
        settings: Option<&Self>,
        has_text: bool,
        has_lexical: bool,
    ) -> mirage_index::hybrid::RetrievalMode {
        match settings.and_then(|s| s.search_mode) {
            Some(m) if has_text && has_lexical => m.into(),
            _ => mirage_index::hybrid::RetrievalMode::default_for(has_text, has_lexical),
        }
    }
}

/// Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// See [`AppState`].
pub struct Inner {
    /// Effective settings.
    pub settings: Settings,
    /// The served models, each with its inference queue.
    pub models: Models,
    /// The cross-encoder of `--reranker`, if any.
    pub reranker: Option<Arc<mirage_model::reranker::Reranker>>,
    /// One reranking at a time: it uses every core the engine is given.
    pub rerank_gate: tokio::sync::Semaphore,
    /// Default store.
    pub store: StoreSpec,
    /// Optional second store.
    pub qdrant: Option<StoreSpec>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    open: RwLock<HashMap<String, Collection>>,
    registry: Mutex<BTreeMap<String, CollectionSettings>>,
    registry_path: PathBuf,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state; the registry file is read (or started empty).
    pub fn new(
        settings: Settings,
        served: Vec<ServedModel>,
        reranker: Option<mirage_model::reranker::Reranker>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let models = Models::default();
        for m in served {
            models
                .add(Arc::new(m))
                .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
        }
        let key = settings.qdrant_api_key.as_ref().map(|k| k.0.as_str());
        let rest = settings.qdrant_rest_url.as_deref();
        let store = settings
            .store
            .parse::<StoreSpec>()?
            .with_api_key(key)
            .with_rest_url(rest)?;
        let qdrant = match &settings.qdrant_url {
            Some(url) => Some(
                format!("qdrant:{url}")
                    .parse::<StoreSpec>()?
                    .with_api_key(key)
                    .with_rest_url(rest)?,
            ),
            None => None,
        };
        fs_err::create_dir_all(&settings.data_dir)?;
        let registry_path = settings.data_dir.join("collections.json");
        let registry = match fs_err::read(&registry_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not a collection registry: {e}",
                    registry_path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self(Arc::new(Inner {
            settings,
            models,
            reranker: reranker.map(Arc::new),
            rerank_gate: tokio::sync::Semaphore::new(1),
            store,
            qdrant,
            metrics,
            ready: AtomicBool::new(false),
            open: RwLock::new(HashMap::new()),
            registry: Mutex::new(registry),
            registry_path,
        })))
    }

    /// The cross-encoder and candidate count a request's `rerank` setting asks for: refused
    /// without a reranker or without the query text (`text_field`) it reads.
    pub fn rerank(
        &self,
        settings: Option<crate::dto::RerankSettings>,
        has_text: bool,
        text_field: &str,
    ) -> ApiResult<Option<(Arc<mirage_model::reranker::Reranker>, usize)>> {
        let Some(settings) = settings else {
            return Ok(None);
        };
        let reranker = self.reranker()?;
        mirage_index::rerank::check_candidates(settings.candidates)?;
        if !has_text {
            return Err(ApiError::invalid(format!(
                "rerank reads {text_field} beside each hit's text: give {text_field}, or drop rerank"
            )));
        }
        Ok(Some((reranker, settings.candidates)))
    }

    /// The served cross-encoder, or a problem saying how to start the server with one.
    pub fn reranker(&self) -> ApiResult<Arc<mirage_model::reranker::Reranker>> {
        self.reranker.clone().ok_or_else(|| {
            // Like audit without a text bank: a valid request this deployment cannot serve.
            ApiError::new(
                ErrorKind::NotSupportedByModel,
                "this server has no reranker: start it with --reranker DIR (a cross-encoder imported with `mirage model import-reranker`)",
            )
        })
    }

    /// Ready for traffic (model warmed up, not draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Marks readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The store named by `kind` (`embedded`, `qdrant`, or the default when `None`).
    pub fn store_for(&self, kind: Option<&str>) -> ApiResult<StoreSpec> {
        let default_kind = self.store.kind();
        match kind {
            None => Ok(self.store.clone()),
            Some(k) if k == default_kind => Ok(self.store.clone()),
            Some("qdrant") => self.qdrant.clone().ok_or_else(|| {
                ApiError::invalid(
                    "this server has no Qdrant store configured (start it with --qdrant-url)",
                )
            }),
            Some(k) => Err(ApiError::invalid(format!(
                "store {k:?} is not available here; this server offers {default_kind:?}{}",
                if self.qdrant.is_some() {
                    " and \"qdrant\""
                } else {
                    ""
                }
            ))),
        }
    }

    /// The retrieval mode and fusion a search of `collection` gets when the request names none:
    /// the request's, else the collection's, else the defaults (hybrid for text on a collection
    /// with a lexical index). Fusion settings are checked here, whoever set them.
    pub async fn retrieval(
        &self,
        collection: &Collection,
        has_text: bool,
        mode: Option<crate::dto::Mode>,
        fusion: Option<crate::dto::FusionSettings>,
    ) -> ApiResult<(
        mirage_index::hybrid::RetrievalMode,
        mirage_index::hybrid::Fusion,
    )> {
        let settings = self.collection_settings(collection.name()).await;
        let fusion = fusion
            .unwrap_or_default()
            .over(CollectionSettings::fusion(settings.as_ref()));
        fusion.validate()?;
        let mode = match mode {
            Some(m) => m.into(),
            None => CollectionSettings::mode(settings.as_ref(), has_text, collection.has_lexical()),
        };
        Ok((mode, fusion))
    }

    /// Settings the server keeps for `name`.
    pub async fn collection_settings(&self, name: &str) -> Option<CollectionSettings> {
        self.registry.lock().await.get(name).cloned()
    }

    /// Records (or forgets, with `None`) the server's settings for `name`, durably.
    pub async fn set_collection_settings(
        &self,
        name: &str,
        settings: Option<CollectionSettings>,
    ) -> ApiResult<()> {
        let mut reg = self.registry.lock().await;
        match settings {
            Some(s) => reg.insert(name.to_owned(), s),
            None => reg.remove(name),
        };
        let bytes = serde_json::to_vec_pretty(&*reg).map_err(ApiError::internal)?;
        let tmp = self.registry_path.with_extension("json.partial");
        let path = self.registry_path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = fs_err::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs_err::rename(&tmp, &path)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }

    /// The stores collections are looked up in: the default one, then Qdrant when configured.
    pub fn stores(&self) -> Vec<StoreSpec> {
        std::iter::once(self.store.clone())
            .chain(self.qdrant.clone())
            .collect()
    }

    /// The open collection `name`, opening it (and checking its model) on first use. A name is
    /// resolved the way the listing shows it: from whichever store holds it, whoever created it;
    /// a name in both stores is a conflict.
    pub async fn collection(&self, name: &str) -> ApiResult<Collection> {
        if let Some(c) = self.open.read().await.get(name) {
            return Ok(c.clone());
        }
        mirage_index::embedded::validate_collection_name(name)?;
        let mut open = self.open.write().await;
        if let Some(c) = open.get(name) {
            return Ok(c.clone());
        }
        let stores = self.stores();
        let Some((_, c)) = mirage_index::locate(&stores, name).await? else {
            return Err(ApiError::not_found(format!(
                "collection {name:?} does not exist; create it with PUT /v1/collections/{name}"
            )));
        };
        self.models.for_collection(name, c.model())?;
        open.insert(name.to_owned(), c.clone());
        Ok(c)
    }

    /// The open collection `name` and the loaded model it was built with.
    pub async fn collection_and_model(
        &self,
        name: &str,
    ) -> ApiResult<(Collection, Arc<ServedModel>)> {
        let c = self.collection(name).await?;
        let m = self.models.for_collection(name, c.model())?;
        Ok((c, m))
    }

    /// The collections of every store built with `model`.
    pub async fn collections_using(&self, model: &ModelRef) -> ApiResult<Vec<String>> {
        let mut using = Vec::new();
        for spec in self.stores() {
            for name in mirage_index::list_collections(&spec).await? {
                match self.collection(&name).await {
                    Ok(c) if c.model() == model => using.push(name),
                    Ok(_) => {}
                    // Built with a model that is not loaded: not this one.
                    Err(e) if e.kind == ErrorKind::Conflict => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(using)
    }

    /// Registers a freshly created collection as open.
    pub async fn insert_open(&self, name: &str, c: Collection) {
        self.open.write().await.insert(name.to_owned(), c);
    }

    /// Closes `name` (so it can be dropped) and returns it if it was open.
    pub async fn close(&self, name: &str) -> Option<Collection> {
        self.open.write().await.remove(name)
    }

    /// Forgets `name` if it is open in Qdrant, so the next use looks it up again.
    pub async fn forget_remote(&self, name: &str) {
        let mut open = self.open.write().await;
        if open.get(name).is_some_and(|c| c.kind() != "embedded") {
            open.remove(name);
        }
    }

    /// Every open collection (for flushing at shutdown).
    pub async fn open_collections(&self) -> Vec<(String, Collection)> {
        self.open
            .read()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
