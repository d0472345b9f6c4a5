//! One API over both stores. Methods are async because Qdrant is a network service; embedded
//! work runs on tokio's blocking pool so it never stalls the async runtime.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::embedded::{self, EmbeddedCollection};
use crate::error::{IndexError, Result};
use crate::filter::Filter;
use crate::snapshot::SnapshotInfo;
use crate::types::{
    CollectionConfig, CollectionInfo, Hit, Item, LexicalRequest, ModelRef, SearchRequest,
    StoredItem,
};

/// Where collections live: `embedded:DIR` or `qdrant:URL` (the gRPC URL, e.g.
/// `qdrant:http://localhost:6334`; parsing gives no API key, [`StoreSpec::with_api_key`] adds
/// one). Its `Debug` shows whether an API key is set, never the key.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// Embedded collections, one directory each under this root.
    Embedded(PathBuf),
    /// A Qdrant server or cluster.
    Qdrant {
        /// gRPC endpoint.
        url: String,
        /// API key, if the server wants one.
        api_key: Option<String>,
        /// REST endpoint, which snapshots need (default: the gRPC URL's host on port 6333 when
        /// the gRPC port is Qdrant's default 6334).
        rest_url: Option<String>,
    },
}

impl StoreSpec {
    /// The same store reached with `key` (a Qdrant API key; embedded stores have none). The
    /// caller finds the key: a library does not read the environment.
    pub fn with_api_key(self, key: Option<&str>) -> Self {
        match self {
            Self::Qdrant { url, rest_url, .. } => Self::Qdrant {
                url,
                api_key: key.filter(|k| !k.is_empty()).map(str::to_owned),
                rest_url,
            },
            embedded => embedded,
        }
    }

    /// The same store with Qdrant's REST URL (for snapshots; checked by [`check_rest_url`]);
    /// embedded stores have none.
    pub fn with_rest_url(self, rest: Option<&str>) -> Result<Self> {
        let rest = rest.filter(|r| !r.is_empty());
        if let Some(r) = rest {
            check_rest_url(r)?;
        }
        Ok(match self {
            Self::Qdrant { url, api_key, .. } => Self::Qdrant {
                url,
                api_key,
                rest_url: rest.map(str::to_owned),
            },
            embedded => embedded,
        })
    }

    /// `embedded` or `qdrant`: the name [`Collection::kind`] gives its collections.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Qdrant { .. } => "qdrant",
        }
    }
}

/// Refuses a Qdrant REST URL that is not an http(s) URL.
pub fn check_rest_url(url: &str) -> Result<()> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(IndexError::invalid(format!(
            "Qdrant's REST URL must be an http(s) URL, e.g. http://localhost:6333 (got {url:?})"
        )))
    }
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(root) => f.debug_tuple("Embedded").field(root).finish(),
            Self::Qdrant {
                url,
                api_key,
                rest_url,
            } => f
                .debug_struct("Qdrant")
                .field("url", url)
                .field("api_key", &api_key.as_ref().map(|_| "<redacted>"))
                .field("rest_url", rest_url)
                .finish(),
        }
    }
}

impl std::str::FromStr for StoreSpec {
    type Err = IndexError;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(dir) = s.strip_prefix("embedded:") {
            if dir.is_empty() {
                return Err(IndexError::invalid(
                    "embedded: needs a directory, e.g. embedded:./indexes",
                ));
            }
            Ok(Self::Embedded(PathBuf::from(dir)))
        } else if let Some(url) = s.strip_prefix("qdrant:") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(IndexError::invalid(format!(
                    "qdrant: needs an http(s) URL of the gRPC port, e.g. qdrant:http://localhost:6334 (got {url:?})"
                )));
            }
            Ok(Self::Qdrant {
                url: url.to_string(),
                api_key: None,
                rest_url: None,
            })
        } else {
            Err(IndexError::invalid(format!(
                "store {s:?} must be embedded:DIR or qdrant:URL"
            )))
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(dir) => write!(f, "embedded:{}", dir.display()),
            Self::Qdrant { url, .. } => write!(f, "qdrant:{url}"),
        }
    }
}

/// An open collection in either store.
#[derive(Clone)]
pub enum Collection {
    /// Embedded (HNSW graphs + SQLite).
    Embedded(Arc<EmbeddedCollection>),
    /// Qdrant.
    #[cfg(feature = "qdrant")]
    Qdrant(Arc<crate::qdrant::QdrantCollection>),
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IndexError::Graph(format!("store task failed: {e}")))?
}

#[cfg(not(feature = "qdrant"))]
fn qdrant_not_built() -> IndexError {
    IndexError::invalid(
        "this build has no Qdrant support: rebuild with `--features mirage-index/qdrant`",
    )
}

impl Collection {
    /// Creates the collection, or opens it when it exists for the same model and dimension.
    pub async fn create_or_open(
        spec: &StoreSpec,
        name: &str,
        config: &CollectionConfig,
    ) -> Result<Self> {
        match spec {
            StoreSpec::Embedded(root) => {
                let (root, name, config) = (root.clone(), name.to_string(), config.clone());
                let c = blocking(move || EmbeddedCollection::create_or_open(&root, &name, &config))
                    .await?;
                Ok(Self::Embedded(Arc::new(c)))
            }
            #[cfg(feature = "qdrant")]
            StoreSpec::Qdrant { url, api_key, .. } => Ok(Self::Qdrant(Arc::new(
                crate::qdrant::QdrantCollection::create_or_open(
                    url,
                    api_key.as_deref(),
                    name,
                    config,
                )
                .await?,
            ))),
            #[cfg(not(feature = "qdrant"))]
            StoreSpec::Qdrant { .. } => Err(qdrant_not_built()),
        }
    }

    /// Opens an existing collection.
    pub async fn open(spec: &StoreSpec, name: &str) -> Result<Self> {
        match spec {
            StoreSpec::Embedded(root) => {
                let (root, name) = (root.clone(), name.to_string());
                let c = blocking(move || EmbeddedCollection::open(&root, &name)).await?;
                Ok(Self::Embedded(Arc::new(c)))
            }
            #[cfg(feature = "qdrant")]
            StoreSpec::Qdrant { url, api_key, .. } => Ok(Self::Qdrant(Arc::new(
                crate::qdrant::QdrantCollection::open(url, api_key.as_deref(), name).await?,
            ))),
            #[cfg(not(feature = "qdrant"))]
            StoreSpec::Qdrant { .. } => Err(qdrant_not_built()),
        }
    }

    /// The model the collection was built with.
    pub fn model(&self) -> &ModelRef {
        match self {
            Self::Embedded(c) => &c.manifest().model,
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.model(),
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        match self {
            Self::Embedded(c) => c.manifest().dim,
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.dim(),
        }
    }

    /// `embedded` or `qdrant`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            #[cfg(feature = "qdrant")]
            Self::Qdrant(_) => "qdrant",
        }
    }

    /// The collection's version (committed writes) without the cost of [`Self::info`]; the
    /// Qdrant store keeps none.
    pub fn index_version(&self) -> Option<u64> {
        match self {
            Self::Embedded(c) => Some(c.generation()),
            #[cfg(feature = "qdrant")]
            Self::Qdrant(_) => None,
        }
    }

    /// Refuses a model other than the one the collection was built with, naming both.
    pub fn check_model(&self, model: &ModelRef) -> Result<()> {
        self.model().ensure_matches(self.name(), model)
    }

    /// Collection name.
    pub fn name(&self) -> &str {
        match self {
            Self::Embedded(c) => &c.manifest().name,
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.name(),
        }
    }

    /// Inserts or replaces items; returns once they are durable.
    #[tracing::instrument(name = "store.upsert", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn upsert(&self, items: Vec<Item>) -> Result<()> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.upsert(items)).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.upsert(items).await,
        }
    }

    /// Deletes items by id; returns how many existed.
    #[tracing::instrument(name = "store.delete", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn delete(&self, ids: Vec<String>) -> Result<u64> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.delete(&ids)).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.delete(ids).await,
        }
    }

    /// Deletes the items whose payload passes the filter; returns how many.
    #[tracing::instrument(name = "store.delete_by_filter", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn delete_by_filter(&self, filter: Filter) -> Result<u64> {
        filter.validate()?;
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.delete_by_filter(&filter)).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.delete_by_filter(&filter).await,
        }
    }

    /// Items by id, in the order asked; unknown ids are left out.
    #[tracing::instrument(name = "store.get", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn get(&self, ids: Vec<String>) -> Result<Vec<StoredItem>> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.get(&ids)).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.get(ids).await,
        }
    }

    /// Which of `ids` are present (for resumable indexing).
    #[tracing::instrument(name = "store.existing", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn existing(&self, ids: Vec<String>) -> Result<HashSet<String>> {
        match self {
            Self::Embedded(c) => Ok(c.existing(&ids)),
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.existing(ids).await,
        }
    }

    /// Number of items, or of items passing the filter.
    #[tracing::instrument(name = "store.count", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn count(&self, filter: Option<Filter>) -> Result<u64> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.count(filter.as_ref())).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.count(filter.as_ref()).await,
        }
    }

    /// k-nearest-neighbour search.
    #[tracing::instrument(name = "store.search", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn search(&self, req: SearchRequest) -> Result<Vec<Hit>> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.search(&req)).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.search(&req).await,
        }
    }

    /// Several k-nearest-neighbour searches, each answered (or refused) in order. The embedded
    /// store runs them in one task on the blocking pool: a batch of queries pays one hand-over
    /// between threads instead of one each.
    #[tracing::instrument(name = "store.search_many", skip_all, fields(collection = %self.name(), store = self.kind(), queries = reqs.len()))]
    pub async fn search_many(&self, reqs: Vec<SearchRequest>) -> Result<Vec<Result<Vec<Hit>>>> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || Ok(reqs.iter().map(|r| c.search(r)).collect())).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => {
                let mut out = Vec::with_capacity(reqs.len());
                for r in &reqs {
                    out.push(c.search(r).await);
                }
                Ok(out)
            }
        }
    }

    /// BM25 search of the items' texts ([`crate::lexical`]); same analyzer and formula in both
    /// stores. A Qdrant collection made before lexical search existed has no index: an error
    /// says so.
    #[tracing::instrument(name = "store.lexical_search", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn lexical_search(&self, req: LexicalRequest) -> Result<Vec<Hit>> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.lexical_search(&req)).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.lexical_search(&req).await,
        }
    }

    /// Whether the collection has a lexical index (every embedded collection does).
    pub fn has_lexical(&self) -> bool {
        match self {
            Self::Embedded(_) => true,
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.has_lexical(),
        }
    }

    /// Sizes and settings.
    #[tracing::instrument(name = "store.info", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn info(&self) -> Result<CollectionInfo> {
        match self {
            Self::Embedded(c) => Ok(c.info()),
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c.info().await,
        }
    }

    /// Makes recent writes cheap to reopen (embedded: dumps the graphs). Writes are durable
    /// without it.
    #[tracing::instrument(name = "store.flush", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn flush(&self) -> Result<()> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.flush()).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(_) => Ok(()),
        }
    }

    /// Embedded: rebuilds the graphs without tombstones. Qdrant optimises on its own.
    #[tracing::instrument(name = "store.compact", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn compact(&self) -> Result<()> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.compact()).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(_) => Ok(()),
        }
    }
}

impl Collection {
    /// Writes a snapshot archive of the collection to `out`, which must not exist
    /// ([`crate::snapshot`]); the collection keeps serving meanwhile. `spec` is the store it
    /// lives in (a Qdrant snapshot goes through the REST URL and key it names).
    #[cfg_attr(not(feature = "qdrant"), allow(unused_variables))]
    #[tracing::instrument(name = "store.snapshot", skip_all, fields(collection = %self.name(), store = self.kind()))]
    pub async fn snapshot(&self, spec: &StoreSpec, out: PathBuf) -> Result<SnapshotInfo> {
        match self {
            Self::Embedded(c) => {
                let c = c.clone();
                blocking(move || c.snapshot(&out)).await
            }
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => {
                let StoreSpec::Qdrant {
                    api_key, rest_url, ..
                } = spec
                else {
                    return Err(IndexError::invalid(
                        "a Qdrant collection's snapshot needs its Qdrant store",
                    ));
                };
                c.snapshot(rest_url.as_deref(), api_key.as_deref(), &out)
                    .await
            }
        }
    }
}

/// Restores the snapshot archive `archive` into `spec` as collection `name` (default: the
/// name it was taken under), after checking its checksums, format and model record. An
/// existing collection is never replaced.
pub async fn restore(
    spec: &StoreSpec,
    archive: PathBuf,
    name: Option<String>,
) -> Result<Collection> {
    match spec {
        StoreSpec::Embedded(root) => {
            let root = root.clone();
            let c = blocking(move || EmbeddedCollection::restore(&archive, &root, name.as_deref()))
                .await?;
            Ok(Collection::Embedded(Arc::new(c)))
        }
        #[cfg(feature = "qdrant")]
        StoreSpec::Qdrant {
            url,
            api_key,
            rest_url,
        } => Ok(Collection::Qdrant(Arc::new(
            crate::qdrant::restore(
                url,
                rest_url.as_deref(),
                api_key.as_deref(),
                &archive,
                name.as_deref(),
            )
            .await?,
        ))),
        #[cfg(not(feature = "qdrant"))]
        StoreSpec::Qdrant { .. } => Err(qdrant_not_built()),
    }
}

/// Deletes a collection and everything in it.
pub async fn drop_collection(spec: &StoreSpec, name: &str) -> Result<()> {
    match spec {
        StoreSpec::Embedded(root) => {
            let (root, name) = (root.clone(), name.to_string());
            blocking(move || embedded::drop_collection(&root, &name)).await
        }
        #[cfg(feature = "qdrant")]
        StoreSpec::Qdrant { url, api_key, .. } => {
            crate::qdrant::drop_collection(url, api_key.as_deref(), name).await
        }
        #[cfg(not(feature = "qdrant"))]
        StoreSpec::Qdrant { .. } => Err(qdrant_not_built()),
    }
}

/// Names of the collections in a store, sorted. Qdrant collections not made by MIRAGE-RS (no
/// model record) are left out.
pub async fn list_collections(spec: &StoreSpec) -> Result<Vec<String>> {
    match spec {
        StoreSpec::Embedded(root) => {
            let root = root.clone();
            blocking(move || embedded::list_collections(&root)).await
        }
        #[cfg(feature = "qdrant")]
        StoreSpec::Qdrant { url, api_key, .. } => {
            crate::qdrant::list_collections(url, api_key.as_deref()).await
        }
        #[cfg(not(feature = "qdrant"))]
        StoreSpec::Qdrant { .. } => Err(qdrant_not_built()),
    }
}

/// Creates collection `name` in `target`, or opens it there, refusing when it lives in another
/// of `stores` (a name may live in one store only, so a search by name is never ambiguous).
/// Only the other stores are searched, so `target`'s collection is opened once. Both front ends
/// create through this: the CLI's `index build` (its `--check-store`s) and `PUT /v1/collections`
/// (the server's stores).
pub async fn create_unique(
    stores: &[StoreSpec],
    target: &StoreSpec,
    name: &str,
    config: &CollectionConfig,
) -> Result<Collection> {
    let others: Vec<StoreSpec> = stores.iter().filter(|s| *s != target).cloned().collect();
    if !others.is_empty() {
        // Only the index: an embedded collection is open once per process.
        if let Some(i) = locate(&others, name).await?.map(|(i, _)| i) {
            one_store(name, &others[i], target)?;
        }
    }
    Collection::create_or_open(target, name, config).await
}

/// The rule [`create_unique`] enforces, for a caller that already knows where `name` lives.
pub fn one_store(name: &str, lives_in: &StoreSpec, target: &StoreSpec) -> Result<()> {
    if lives_in == target {
        return Ok(());
    }
    Err(IndexError::CollectionExists {
        name: name.to_string(),
        reason: format!(
            "it lives in {lives_in}, and a name may live in one store only: use that store or choose another name"
        ),
    })
}

/// Opens `name` in whichever of `stores` holds it: one name, one collection. A name held by two
/// stores is [`IndexError::CollectionExists`] naming both; `Ok(None)` when no store holds it. A
/// store that cannot be asked fails the lookup unless another store holds the name (then the
/// duplicate check is incomplete, which is logged).
pub async fn locate(stores: &[StoreSpec], name: &str) -> Result<Option<(usize, Collection)>> {
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for (i, spec) in stores.iter().enumerate() {
        match Collection::open(spec, name).await {
            Ok(c) => found.push((i, c)),
            // Absent, or a Qdrant collection not made by MIRAGE-RS (not listed either).
            Err(IndexError::CollectionNotFound { .. } | IndexError::CollectionExists { .. }) => {}
            Err(e) => failed.push((i, e)),
        }
    }
    match found.len() {
        0 => failed.into_iter().next().map_or(Ok(None), |(_, e)| Err(e)),
        1 => {
            for (i, e) in &failed {
                tracing::warn!(collection = name, store = %stores[*i], error = %e,
                    "could not check this store for a second collection of the same name");
            }
            Ok(found.pop())
        }
        _ => Err(IndexError::CollectionExists {
            name: name.to_string(),
            reason: format!(
                "it exists in {}; a name may live in one store only: delete or rename one of them",
                found
                    .iter()
                    .map(|(i, _)| stores[*i].to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        }),
    }
}

/// Whether the store answers (Qdrant: an authenticated request); `Ok` describes it.
pub async fn probe(spec: &StoreSpec) -> Result<String> {
    match spec {
        StoreSpec::Embedded(root) => {
            let root = root.clone();
            blocking(move || {
                // The root is created with the first collection; until then it may be absent.
                match fs_err::metadata(&root) {
                    Ok(m) if !m.is_dir() => Err(IndexError::invalid(format!(
                        "{} is not a directory",
                        root.display()
                    ))),
                    Ok(_) | Err(_) => Ok(format!("embedded store at {}", root.display())),
                }
            })
            .await
        }
        #[cfg(feature = "qdrant")]
        StoreSpec::Qdrant { url, api_key, .. } => {
            crate::qdrant::probe(url, api_key.as_deref()).await
        }
        #[cfg(not(feature = "qdrant"))]
        StoreSpec::Qdrant { .. } => Err(qdrant_not_built()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_api_key() {
        let spec = StoreSpec::Qdrant {
            url: "http://q:6334".into(),
            api_key: Some("s3cret-key".into()),
            rest_url: None,
        };
        let shown = format!("{spec:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("http://q:6334"),
            "{shown}"
        );
    }
}
