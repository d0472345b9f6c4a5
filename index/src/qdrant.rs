//! The Qdrant store: a collection with two named vectors (`text`, `image`, cosine), item ids
//! mapped to UUIDs (Qdrant accepts only integers and UUIDs), and the item's own id, text and image
//! kept under the reserved payload key `_mirage`. The model the collection was built with is
//! recorded in the collection's metadata, as the embedded store records it in its manifest.
//!
//! Lexical search ([`crate::lexical`]): each item with text also has a sparse vector `lexical`
//! holding BM25's term-frequency part per term (length-normalised by the average length of the
//! collection's first batch, recorded in the metadata), and its distinct terms under
//! `_mirage.terms` (a keyword index): a query weighs each term by its inverse document frequency,
//! counted exactly with that index, as FTS5 weighs it in the embedded store.

use std::collections::{HashMap, HashSet};

use qdrant_client::qdrant::{
    self, point_id::PointIdOptions, vectors_output::VectorsOptions, CountPointsBuilder,
    CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, Datatype, DeletePointsBuilder,
    Distance, FieldType, GetPointsBuilder, HnswConfigDiffBuilder, NamedVectors, PointId,
    PointStruct, PointsIdsList, QuantizationType, QueryPointsBuilder, ScalarQuantizationBuilder,
    SearchParamsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder,
    UpdateCollectionBuilder, UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder,
    VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::embedded::validate_collection_name;
use crate::error::{IndexError, Result, StoreFailure};
use crate::filter::{Condition, FieldTest, Filter, MatchValue};
use crate::lexical;
use crate::types::{
    checked_vectors, unit_vector, validate_search, CollectionConfig, CollectionInfo, Hit,
    HnswParams, Item, LexicalRequest, ModelRef, Quantization, SearchMode, SearchRequest,
    StoredItem, VectorName, RESERVED_PAYLOAD_KEY,
};

/// Points per upsert request: large enough to amortise the round trip, small enough to stay
/// far below gRPC's message limit at 1024-d vectors.
const UPSERT_BATCH: usize = 256;
const METADATA_KEY: &str = "mirage";
/// The sparse vector of the lexical index.
const LEXICAL_VECTOR: &str = "lexical";
/// The payload key of an item's distinct terms (keyword-indexed: document frequencies).
const TERMS_KEY: &str = "_mirage.terms";

/// How long a request may wait for a connection: a dead node must fail fast, so callers (and
/// probes) learn of an outage in seconds rather than at the request timeout.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// Longest single request; the largest is one upsert chunk of [`UPSERT_BATCH`] points.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn qerr(context: &str, e: QdrantError) -> IndexError {
    use tonic::Code;
    let failure = match &e {
        QdrantError::ResponseError { status } => match status.code() {
            // `Unknown` is what tonic reports for a broken or refused connection.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown => StoreFailure::Unavailable,
            // qdrant-client reports a failed (re)connection as `Internal`.
            Code::Internal if status.message().starts_with("Failed to connect") => {
                StoreFailure::Unavailable
            }
            Code::Unauthenticated | Code::PermissionDenied => StoreFailure::Unauthenticated,
            _ => StoreFailure::Rejected,
        },
        QdrantError::ResourceExhaustedError { .. } | QdrantError::Io(_) => {
            StoreFailure::Unavailable
        }
        _ => StoreFailure::Rejected,
    };
    IndexError::Qdrant {
        failure,
        message: format!("{context}: {e}"),
    }
}

/// An open Qdrant collection.
pub struct QdrantCollection {
    client: Qdrant,
    name: String,
    dim: usize,
    model: ModelRef,
    hnsw: HnswParams,
    url: String,
    /// Whether the collection has a lexical index (made by this analyzer), and the average
    /// document length its sparse values were normalised by, once the first texts are written.
    lexical: Option<std::sync::Mutex<Option<f64>>>,
}

fn connect(url: &str, api_key: Option<&str>) -> Result<Qdrant> {
    // The client's own version check runs a blocking health check on a new thread and runtime
    // inside every connect (stalling an async worker for up to the connect timeout when Qdrant
    // is down) and prints its verdict to stdout, which carries our JSON output; `probe` reports
    // the server's version instead.
    let mut builder = Qdrant::from_url(url)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .skip_compatibility_check();
    if let Some(key) = api_key {
        builder = builder.api_key(key.to_string());
    }
    builder
        .build()
        .map_err(|e| qerr(&format!("connect to {url}"), e))
}

/// The stable UUID of an item id: sha256, cut to 128 bits, as an RFC 4122 version-5-shaped UUID.
pub fn point_uuid(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn point_id(id: &str) -> PointId {
    PointId::from(point_uuid(id))
}

fn metadata_of(config: &CollectionConfig, avg_len: Option<f64>) -> Value {
    json!({
        "format_version": crate::manifest::FORMAT_VERSION,
        "dim": config.dim,
        "model_id": config.model.model_id,
        "sha256": config.model.sha256,
        "hnsw": config.hnsw,
        "lexical": {"analyzer": lexical::ANALYZER, "avg_len": avg_len},
    })
}

/// The lexical index recorded in the metadata: `Some(avg_len)` when it was made by this
/// analyzer (`avg_len` unset until the first texts are written).
fn lexical_of(metadata: &Map<String, Value>) -> Option<Option<f64>> {
    let lex = metadata.get(METADATA_KEY)?.get("lexical")?;
    (lex.get("analyzer")?.as_str()? == lexical::ANALYZER)
        .then(|| lex.get("avg_len").and_then(Value::as_f64))
}

/// Reads what `metadata_of` wrote.
fn parse_metadata(
    name: &str,
    metadata: HashMap<String, qdrant::Value>,
) -> Result<(usize, ModelRef, HnswParams)> {
    let map: Map<String, Value> = Payload::from(metadata).into();
    let not_ours = || IndexError::CollectionExists {
        name: name.to_string(),
        reason: "it was not created by mirage (no mirage metadata); use another name".into(),
    };
    let m = map.get(METADATA_KEY).ok_or_else(not_ours)?;
    let dim = m.get("dim").and_then(Value::as_u64).ok_or_else(not_ours)? as usize;
    let model = ModelRef {
        model_id: m
            .get("model_id")
            .and_then(Value::as_str)
            .ok_or_else(not_ours)?
            .to_string(),
        sha256: m
            .get("sha256")
            .and_then(Value::as_str)
            .ok_or_else(not_ours)?
            .to_string(),
    };
    let hnsw = m
        .get("hnsw")
        .cloned()
        .and_then(|h| serde_json::from_value(h).ok())
        .unwrap_or_default();
    Ok((dim, model, hnsw))
}

/// Our filter in Qdrant's terms. The semantics were chosen to be Qdrant's, so this is a
/// one-to-one translation; user keys live at the payload root as in the embedded store.
pub fn to_qdrant_filter(f: &Filter) -> qdrant::Filter {
    let conv = |cs: &[Condition]| cs.iter().map(to_qdrant_condition).collect::<Vec<_>>();
    qdrant::Filter {
        must: conv(&f.must),
        should: conv(&f.should),
        must_not: conv(&f.must_not),
        ..Default::default()
    }
}

fn to_qdrant_condition(c: &Condition) -> qdrant::Condition {
    match c {
        Condition::Nested(f) => qdrant::Condition::from(to_qdrant_filter(f)),
        Condition::Field { key, test } => match test {
            FieldTest::Equals(MatchValue::String(s)) => qdrant::Condition::matches(key, s.clone()),
            FieldTest::Equals(MatchValue::Integer(i)) => qdrant::Condition::matches(key, *i),
            FieldTest::Equals(MatchValue::Bool(b)) => qdrant::Condition::matches(key, *b),
            FieldTest::In(list) => {
                let strings: Vec<String> = list
                    .iter()
                    .filter_map(|v| match v {
                        MatchValue::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                if strings.len() == list.len() {
                    qdrant::Condition::matches(key, strings)
                } else {
                    let ints: Vec<i64> = list
                        .iter()
                        .filter_map(|v| match v {
                            MatchValue::Integer(i) => Some(*i),
                            _ => None,
                        })
                        .collect();
                    qdrant::Condition::matches(key, ints)
                }
            }
            FieldTest::Range(r) => qdrant::Condition::range(
                key,
                qdrant::Range {
                    gt: r.gt,
                    gte: r.gte,
                    lt: r.lt,
                    lte: r.lte,
                },
            ),
        },
    }
}

/// Splits a stored payload into the item's fields and the user's payload.
fn split_payload(
    payload: HashMap<String, qdrant::Value>,
) -> (
    Option<String>,
    Option<String>,
    Option<String>,
    Map<String, Value>,
) {
    let mut map: Map<String, Value> = Payload::from(payload).into();
    let ours = map.remove(RESERVED_PAYLOAD_KEY).unwrap_or(Value::Null);
    let field = |k: &str| ours.get(k).and_then(Value::as_str).map(str::to_string);
    (field("id"), field("text"), field("image"), map)
}

impl QdrantCollection {
    /// Creates the collection (two named cosine vectors, the given shards and replication), or
    /// opens it when it exists for the same model and dimension.
    pub async fn create_or_open(
        url: &str,
        api_key: Option<&str>,
        name: &str,
        config: &CollectionConfig,
    ) -> Result<Self> {
        validate_collection_name(name)?;
        config.validate()?;
        let client = connect(url, api_key)?;
        let exists = client
            .collection_exists(name)
            .await
            .map_err(|e| qerr("collection_exists", e))?;
        if !exists {
            let mut vectors = VectorsConfigBuilder::default();
            for v in VectorName::ALL {
                let mut params = VectorParamsBuilder::new(config.dim as u64, Distance::Cosine);
                // f16: Qdrant stores the vectors themselves in half precision; i8: it keeps f32
                // vectors and an int8 scalar-quantised copy in RAM that searches use and then
                // rescore from, as the embedded store does.
                match config.hnsw.quantization {
                    Quantization::F32 => {}
                    Quantization::F16 => params = params.datatype(Datatype::Float16),
                    Quantization::I8 => {
                        params = params.quantization_config(
                            ScalarQuantizationBuilder::default()
                                .r#type(QuantizationType::Int8.into())
                                .always_ram(true),
                        )
                    }
                }
                vectors.add_named_vector_params(v.as_str(), params);
            }
            let mut metadata = HashMap::new();
            metadata.insert(METADATA_KEY.to_string(), metadata_of(config, None));
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(LEXICAL_VECTOR, SparseVectorParamsBuilder::default());
            let mut create = CreateCollectionBuilder::new(name)
                .vectors_config(vectors)
                .sparse_vectors_config(sparse)
                .hnsw_config(
                    HnswConfigDiffBuilder::default()
                        .m(config.hnsw.m as u64)
                        .ef_construct(config.hnsw.ef_construction as u64)
                        // Qdrant counts this threshold in KiB of vectors, ours in vectors.
                        .full_scan_threshold(
                            (config.hnsw.exact_threshold * config.dim * 4).div_ceil(1024) as u64,
                        ),
                )
                .metadata(metadata);
            if let Some(n) = config.shard_number {
                create = create.shard_number(n);
            }
            if let Some(n) = config.replication_factor {
                create = create.replication_factor(n);
            }
            client
                .create_collection(create)
                .await
                .map_err(|e| qerr(&format!("create collection {name}"), e))?;
            client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(name, TERMS_KEY, FieldType::Keyword)
                        .wait(true),
                )
                .await
                .map_err(|e| qerr(&format!("index the terms of {name}"), e))?;
        }
        let c = Self::open_with(client, url, name).await?;
        if c.dim != config.dim {
            return Err(IndexError::CollectionExists {
                name: name.into(),
                reason: format!("it has dimension {}, the model gives {}", c.dim, config.dim),
            });
        }
        c.model.ensure_matches(name, &config.model)?;
        Ok(c)
    }

    /// Opens an existing collection.
    pub async fn open(url: &str, api_key: Option<&str>, name: &str) -> Result<Self> {
        validate_collection_name(name)?;
        let client = connect(url, api_key)?;
        Self::open_with(client, url, name).await
    }

    async fn open_with(client: Qdrant, url: &str, name: &str) -> Result<Self> {
        let exists = client
            .collection_exists(name)
            .await
            .map_err(|e| qerr("collection_exists", e))?;
        if !exists {
            return Err(IndexError::CollectionNotFound {
                name: name.into(),
                location: url.into(),
            });
        }
        let info = client
            .collection_info(name)
            .await
            .map_err(|e| qerr(&format!("collection info {name}"), e))?;
        let config = info.result.and_then(|r| r.config);
        let has_sparse = config
            .as_ref()
            .and_then(|c| c.params.as_ref())
            .and_then(|p| p.sparse_vectors_config.as_ref())
            .is_some_and(|s| s.map.contains_key(LEXICAL_VECTOR));
        let metadata = config.map(|c| c.metadata).unwrap_or_default();
        let lexical = has_sparse
            .then(|| lexical_of(&Payload::from(metadata.clone()).into()))
            .flatten();
        let (dim, model, hnsw) = parse_metadata(name, metadata)?;
        Ok(Self {
            client,
            name: name.into(),
            dim,
            model,
            hnsw,
            url: url.into(),
            lexical: lexical.map(std::sync::Mutex::new),
        })
    }

    /// The average document length of the lexical index: the recorded one, else (first texts
    /// of the collection) this batch's, which is then recorded. Another writer may have recorded
    /// one since this collection was opened, so the metadata is read again before recording.
    async fn lexical_avg_len(&self, batch: &[usize]) -> Result<Option<f64>> {
        let Some(cell) = &self.lexical else {
            return Ok(None);
        };
        if let Some(avg) = *cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Ok(Some(avg));
        }
        let info = self
            .client
            .collection_info(&self.name)
            .await
            .map_err(|e| self.fail("collection info", e))?;
        let metadata: Map<String, Value> = Payload::from(
            info.result
                .and_then(|r| r.config)
                .map(|c| c.metadata)
                .unwrap_or_default(),
        )
        .into();
        let recorded = lexical_of(&metadata).flatten();
        let avg = match recorded {
            Some(avg) => avg,
            None if batch.is_empty() => return Ok(None),
            None => {
                let avg = batch.iter().sum::<usize>() as f64 / batch.len() as f64;
                let mut mirage = metadata.get(METADATA_KEY).cloned().unwrap_or(json!({}));
                mirage["lexical"] = json!({"analyzer": lexical::ANALYZER, "avg_len": avg});
                let mut update = HashMap::new();
                update.insert(METADATA_KEY.to_string(), mirage);
                self.client
                    .update_collection(UpdateCollectionBuilder::new(&self.name).metadata(update))
                    .await
                    .map_err(|e| self.fail("record the lexical index's average length", e))?;
                avg
            }
        };
        *cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(avg);
        Ok(Some(avg))
    }

    /// Whether the collection has a lexical index.
    pub fn has_lexical(&self) -> bool {
        self.lexical.is_some()
    }

    /// Collection name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// [`qerr`], except that Qdrant's "not found" on a collection operation means the collection
    /// was deleted since it was opened (e.g. by `mirage index delete --all` elsewhere).
    fn fail(&self, context: &str, e: QdrantError) -> IndexError {
        match &e {
            QdrantError::ResponseError { status } if status.code() == tonic::Code::NotFound => {
                IndexError::CollectionNotFound {
                    name: self.name.clone(),
                    location: self.url.clone(),
                }
            }
            _ => qerr(context, e),
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Model recorded at creation.
    pub fn model(&self) -> &ModelRef {
        &self.model
    }

    /// Inserts or replaces items (whole points: vectors and payload), waiting for each batch to
    /// be applied before acknowledging.
    pub async fn upsert(&self, items: Vec<Item>) -> Result<()> {
        let mut checked = Vec::with_capacity(items.len());
        for item in items {
            let vectors = checked_vectors(&item, self.dim)?;
            let terms = match (&self.lexical, &item.text) {
                (Some(_), Some(text)) => lexical::analyze(text),
                _ => Vec::new(),
            };
            checked.push((item, vectors, terms));
        }
        let lengths: Vec<usize> = checked
            .iter()
            .map(|(_, _, t)| t.len())
            .filter(|&n| n > 0)
            .collect();
        let avg_len = self.lexical_avg_len(&lengths).await?;
        let mut points = Vec::with_capacity(checked.len());
        for (item, vectors, terms) in checked {
            let mut named = NamedVectors::default();
            for (name, v) in VectorName::ALL.into_iter().zip(vectors) {
                if let Some(v) = v {
                    named = named.add_vector(name.as_str(), Vector::new_dense(v));
                }
            }
            let mut ours = json!({"id": item.id, "text": item.text, "image": item.image});
            if let (Some(avg), false) = (avg_len, terms.is_empty()) {
                let (counts, len) = lexical::term_counts(&terms);
                let (indices, values) = sparse_weights(&counts, len, avg);
                named = named.add_vector(LEXICAL_VECTOR, Vector::new_sparse(indices, values));
                ours["terms"] = counts.into_iter().map(|(t, _)| Value::String(t)).collect();
            }
            let mut payload = item.payload;
            payload.insert(RESERVED_PAYLOAD_KEY.into(), ours);
            points.push(PointStruct::new(
                point_id(&item.id),
                named,
                Payload::from(payload),
            ));
        }
        for chunk in points.chunks(UPSERT_BATCH) {
            self.client
                .upsert_points(UpsertPointsBuilder::new(&self.name, chunk.to_vec()).wait(true))
                .await
                .map_err(|e| self.fail("upsert", e))?;
        }
        Ok(())
    }

    /// Deletes by id; returns how many existed.
    pub async fn delete(&self, ids: Vec<String>) -> Result<u64> {
        let present = self.existing(ids).await?;
        if present.is_empty() {
            return Ok(0);
        }
        let list = PointsIdsList {
            ids: present.iter().map(|id| point_id(id)).collect(),
        };
        self.client
            .delete_points(DeletePointsBuilder::new(&self.name).points(list).wait(true))
            .await
            .map_err(|e| self.fail("delete", e))?;
        Ok(present.len() as u64)
    }

    /// Deletes by filter; returns how many matched.
    pub async fn delete_by_filter(&self, filter: &Filter) -> Result<u64> {
        let n = self.count(Some(filter)).await?;
        if n > 0 {
            self.client
                .delete_points(
                    DeletePointsBuilder::new(&self.name)
                        .points(to_qdrant_filter(filter))
                        .wait(true),
                )
                .await
                .map_err(|e| self.fail("delete by filter", e))?;
        }
        Ok(n)
    }

    /// Items by id, in the order asked.
    pub async fn get(&self, ids: Vec<String>) -> Result<Vec<StoredItem>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<PointId> = ids.iter().map(|id| point_id(id)).collect();
        let found = self
            .client
            .get_points(
                GetPointsBuilder::new(&self.name, wanted)
                    .with_payload(true)
                    .with_vectors(true),
            )
            .await
            .map_err(|e| self.fail("get", e))?;
        let mut by_id = HashMap::new();
        for p in found.result {
            let names: Vec<VectorName> = match p.vectors.and_then(|v| v.vectors_options) {
                Some(VectorsOptions::Vectors(named)) => VectorName::ALL
                    .into_iter()
                    .filter(|n| named.vectors.contains_key(n.as_str()))
                    .collect(),
                _ => Vec::new(),
            };
            let (id, text, image, payload) = split_payload(p.payload);
            if let Some(id) = id {
                by_id.insert(
                    id.clone(),
                    StoredItem {
                        id,
                        text,
                        image,
                        payload,
                        vectors: names,
                    },
                );
            }
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    /// Which ids are present.
    pub async fn existing(&self, ids: Vec<String>) -> Result<HashSet<String>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let by_uuid: HashMap<String, String> =
            ids.into_iter().map(|id| (point_uuid(&id), id)).collect();
        let wanted: Vec<PointId> = by_uuid.keys().map(|u| PointId::from(u.clone())).collect();
        let found = self
            .client
            .get_points(
                GetPointsBuilder::new(&self.name, wanted)
                    .with_payload(false)
                    .with_vectors(false),
            )
            .await
            .map_err(|e| self.fail("get", e))?;
        Ok(found
            .result
            .into_iter()
            .filter_map(|p| match p.id?.point_id_options? {
                PointIdOptions::Uuid(u) => by_uuid.get(&u).cloned(),
                PointIdOptions::Num(_) => None,
            })
            .collect())
    }

    /// Exact count of items, or of items passing the filter.
    pub async fn count(&self, filter: Option<&Filter>) -> Result<u64> {
        let mut req = CountPointsBuilder::new(&self.name).exact(true);
        if let Some(f) = filter {
            f.validate()?;
            req = req.filter(to_qdrant_filter(f));
        }
        let res = self
            .client
            .count(req)
            .await
            .map_err(|e| self.fail("count", e))?;
        Ok(res.result.map_or(0, |r| r.count))
    }

    async fn count_condition(&self, c: qdrant::Condition) -> Result<u64> {
        let res = self
            .client
            .count(
                CountPointsBuilder::new(&self.name)
                    .exact(true)
                    .filter(qdrant::Filter::must([c])),
            )
            .await
            .map_err(|e| self.fail("count", e))?;
        Ok(res.result.map_or(0, |r| r.count))
    }

    /// k-nearest-neighbour search on the named vector.
    pub async fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        let limit = validate_search(req)?;
        let query = unit_vector("query", &req.vector, self.dim)?;
        let mut params =
            SearchParamsBuilder::default().hnsw_ef(req.ef.unwrap_or(self.hnsw.ef_search) as u64);
        if req.mode == SearchMode::Exact {
            params = params.exact(true);
        }
        let mut q = QueryPointsBuilder::new(&self.name)
            .query(query)
            .using(req.target.as_str())
            .limit(limit as u64)
            .offset(req.offset as u64)
            .with_payload(true)
            .params(params);
        if let Some(t) = req.score_threshold {
            q = q.score_threshold(t);
        }
        self.query(q, req.filter.as_ref(), req.with_content, "search")
            .await
    }

    /// BM25 search over the items' texts: the query's terms weighted by their inverse document
    /// frequencies (exact counts), against the stored term-frequency parts.
    pub async fn lexical_search(&self, req: &LexicalRequest) -> Result<Vec<Hit>> {
        let limit = req.validate()?;
        if self.lexical.is_none() {
            return Err(crate::error::no_lexical_index(&self.name));
        }
        let terms = lexical::query_terms(&req.text);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let with_terms = || qdrant::Condition::has_vector(LEXICAL_VECTOR);
        let n_docs = self.count_condition(with_terms()).await?;
        let mut weights: HashMap<u32, f32> = HashMap::new();
        for t in &terms {
            let df = self
                .count_condition(qdrant::Condition::matches(TERMS_KEY, t.clone()))
                .await?;
            if df > 0 {
                *weights.entry(lexical::term_index(t)).or_default() +=
                    lexical::idf(n_docs, df) as f32;
            }
        }
        if weights.is_empty() {
            return Ok(Vec::new());
        }
        let (indices, values): (Vec<u32>, Vec<f32>) = weights.into_iter().unzip();
        // The page and a window past it from the top: ties are ordered by id here, as the
        // embedded store orders them, whatever order Qdrant returns them in.
        let depth = req.offset + limit;
        let q = QueryPointsBuilder::new(&self.name)
            .query(VectorInput::new_sparse(indices, values))
            .using(LEXICAL_VECTOR)
            .limit((depth + lexical::TIE_WINDOW) as u64)
            .with_payload(true);
        let mut hits = self
            .query(q, req.filter.as_ref(), req.with_content, "lexical search")
            .await?;
        lexical::rank_ties_by_id(&mut hits, |h| (h.score, h.id.as_str()));
        Ok(hits.into_iter().skip(req.offset).take(limit).collect())
    }

    /// Runs a query with the payload filter, as hits (`what` names it in errors).
    async fn query(
        &self,
        mut q: QueryPointsBuilder,
        filter: Option<&Filter>,
        with_content: bool,
        what: &str,
    ) -> Result<Vec<Hit>> {
        if let Some(f) = filter {
            q = q.filter(to_qdrant_filter(f));
        }
        let res = self.client.query(q).await.map_err(|e| self.fail(what, e))?;
        Ok(res
            .result
            .into_iter()
            .filter_map(|p| {
                let (id, text, image, payload) = split_payload(p.payload);
                // Qdrant returns them with the payload anyway; left out, both stores agree.
                Some(Hit::new(
                    id?,
                    p.score,
                    text.filter(|_| with_content),
                    image.filter(|_| with_content),
                    payload,
                ))
            })
            .collect())
    }

    /// Sizes and settings.
    pub async fn info(&self) -> Result<CollectionInfo> {
        Ok(CollectionInfo {
            name: self.name.clone(),
            store: format!("qdrant:{}", self.url),
            dim: self.dim,
            metric: "cosine".into(),
            model: self.model.clone(),
            hnsw: self.hnsw,
            items: self.count(None).await?,
            text_vectors: self
                .count_condition(qdrant::Condition::has_vector("text"))
                .await?,
            image_vectors: self
                .count_condition(qdrant::Condition::has_vector("image"))
                .await?,
            tombstones: 0,
            format_version: crate::manifest::FORMAT_VERSION,
            // Qdrant keeps no collection-wide write counter.
            generation: None,
            lexical: self.has_lexical().then(|| lexical::ANALYZER.to_owned()),
        })
    }
}

/// The sparse vector of a document's term counts: one index per term (colliding terms' weights
/// added), BM25's term-frequency part as the value.
fn sparse_weights(counts: &[(String, u32)], len: usize, avg_len: f64) -> (Vec<u32>, Vec<f32>) {
    let mut by_index: std::collections::BTreeMap<u32, f32> = std::collections::BTreeMap::new();
    for (term, tf) in counts {
        *by_index.entry(lexical::term_index(term)).or_default() +=
            lexical::tf_weight(*tf, len, avg_len) as f32;
    }
    by_index.into_iter().unzip()
}

/// The file name of Qdrant's own collection snapshot inside a MIRAGE-RS archive.
const QDRANT_SNAPSHOT_FILE: &str = "qdrant.snapshot";

/// Qdrant's REST API, which alone downloads and uploads snapshots (gRPC only creates them).
struct Rest {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Rest {
    /// `rest_url`, or the gRPC `url` with Qdrant's default REST port (6333) for its default
    /// gRPC port (6334).
    fn new(url: &str, rest_url: Option<&str>, api_key: Option<&str>) -> Result<Self> {
        let base = match rest_url {
            Some(r) => r.trim_end_matches('/').to_owned(),
            None => match url.trim_end_matches('/').strip_suffix(":6334") {
                Some(host) => format!("{host}:6333"),
                None => {
                    return Err(IndexError::invalid(format!(
                        "snapshots of Qdrant collections go through Qdrant's REST API, and {url} is not on the default gRPC port 6334: give the REST URL (--qdrant-rest-url or MIRAGE_QDRANT_REST_URL)"
                    )))
                }
            },
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| IndexError::Graph(format!("HTTP client: {e}")))?;
        Ok(Self {
            base,
            api_key: api_key.map(str::to_owned),
            http,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(k) => r.header("api-key", k),
            None => r,
        }
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let fail = |failure, message: String| IndexError::Qdrant { failure, message };
        let res = req.send().await.map_err(|e| {
            fail(
                StoreFailure::Unavailable,
                format!("{what} at {}: {e}", self.base),
            )
        })?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let body = res.text().await.unwrap_or_default();
        let failure = match status.as_u16() {
            401 | 403 => StoreFailure::Unauthenticated,
            429 | 502..=504 => StoreFailure::Unavailable,
            _ => StoreFailure::Rejected,
        };
        Err(fail(
            failure,
            format!("{what} at {}: HTTP {status}: {body}", self.base),
        ))
    }
}

impl QdrantCollection {
    /// Writes a snapshot archive of the collection to `out` ([`crate::snapshot`]): Qdrant takes
    /// its own snapshot (consistent, while the collection serves writes), which is downloaded,
    /// checked against the checksum Qdrant reports, archived, and deleted from the server.
    pub async fn snapshot(
        &self,
        rest_url: Option<&str>,
        api_key: Option<&str>,
        out: &std::path::Path,
    ) -> Result<crate::snapshot::SnapshotInfo> {
        let rest = Rest::new(&self.url, rest_url, api_key)?;
        let items = self.count(None).await?;
        let created = self
            .client
            .create_snapshot(self.name.as_str())
            .await
            .map_err(|e| self.fail("create snapshot", e))?;
        let Some(desc) = created.snapshot_description else {
            return Err(IndexError::Qdrant {
                failure: StoreFailure::Rejected,
                message: format!("create snapshot of {}: no snapshot described", self.name),
            });
        };
        let downloaded = self.download_snapshot(&rest, &desc, out).await;
        if let Err(e) = self
            .client
            .delete_snapshot(qdrant::DeleteSnapshotRequestBuilder::new(
                self.name.as_str(),
                desc.name.as_str(),
            ))
            .await
        {
            tracing::warn!(collection = %self.name, snapshot = %desc.name, error = %e,
                "could not delete Qdrant's copy of a snapshot after archiving it");
        }
        let (file, size) = downloaded?;
        let manifest = crate::snapshot::SnapshotManifest::new(
            "qdrant",
            &self.name,
            self.model.clone(),
            self.dim,
            items,
            None,
        );
        let out = out.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut archive = crate::snapshot::ArchiveWriter::create(&out)?;
            archive.append(QDRANT_SNAPSHOT_FILE, std::io::BufReader::new(file), size)?;
            archive.finish(manifest)
        })
        .await
        .map_err(|e| IndexError::Graph(format!("snapshot task failed: {e}")))?
    }

    /// Downloads Qdrant's snapshot into an unnamed file beside `out`, checking its sha256.
    async fn download_snapshot(
        &self,
        rest: &Rest,
        desc: &qdrant::SnapshotDescription,
        out: &std::path::Path,
    ) -> Result<(std::fs::File, u64)> {
        use sha2::Digest as _;
        use std::io::{Seek, Write};
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let mut file = tempfile::tempfile_in(&dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("a temporary file in {}: {e}", dir.display()),
            )
        })?;
        let what = format!("download snapshot {} of {}", desc.name, self.name);
        let mut res = rest
            .send(
                &what,
                rest.request(
                    reqwest::Method::GET,
                    &format!("/collections/{}/snapshots/{}", self.name, desc.name),
                ),
            )
            .await?;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = res.chunk().await.map_err(|e| IndexError::Qdrant {
            failure: StoreFailure::Unavailable,
            message: format!("{what}: {e}"),
        })? {
            hash.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)?;
        }
        let got = hex::encode(hash.finalize());
        if desc.checksum.as_deref().is_some_and(|want| want != got) {
            return Err(IndexError::Qdrant {
                failure: StoreFailure::Unavailable,
                message: format!(
                    "{what}: the download's sha256 {got} is not Qdrant's {:?}",
                    desc.checksum
                ),
            });
        }
        file.rewind()?;
        Ok((file, size))
    }
}

/// Restores a snapshot archive of a Qdrant collection as collection `name` (default: the name
/// it was taken under): every checksum is checked, then Qdrant's snapshot is uploaded through
/// the REST API. An existing collection of that name is never replaced.
pub async fn restore(
    url: &str,
    rest_url: Option<&str>,
    api_key: Option<&str>,
    archive: &std::path::Path,
    name: Option<&str>,
) -> Result<QdrantCollection> {
    let rest = Rest::new(url, rest_url, api_key)?;
    let dir = tempfile::tempdir()?;
    let info = {
        let (archive, into) = (archive.to_path_buf(), dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || crate::snapshot::verify(&archive, Some(&into)))
            .await
            .map_err(|e| IndexError::Graph(format!("snapshot task failed: {e}")))??
    };
    let snap = &info.manifest;
    if snap.kind != "qdrant" {
        return Err(IndexError::Snapshot {
            path: archive.to_path_buf(),
            reason: format!(
                "it holds a {} collection; restore it into a {} store",
                snap.kind, snap.kind
            ),
        });
    }
    let Some(file) = snap.files.iter().find(|f| f.name == QDRANT_SNAPSHOT_FILE) else {
        return Err(IndexError::Snapshot {
            path: archive.to_path_buf(),
            reason: format!("it holds no {QDRANT_SNAPSHOT_FILE}"),
        });
    };
    let target = name.unwrap_or(&snap.collection).to_owned();
    validate_collection_name(&target)?;
    let client = connect(url, api_key)?;
    if client
        .collection_exists(target.as_str())
        .await
        .map_err(|e| qerr("collection_exists", e))?
    {
        return Err(IndexError::CollectionExists {
            name: target,
            reason: format!(
                "it exists at {url}; restore under another name, or delete the collection first"
            ),
        });
    }
    let path = dir.path().join(QDRANT_SNAPSHOT_FILE);
    let body = reqwest::Body::from(tokio::fs::File::open(&path).await?);
    let part = reqwest::multipart::Part::stream_with_length(body, file.size)
        .file_name(QDRANT_SNAPSHOT_FILE)
        .mime_str("application/octet-stream")
        .map_err(|e| IndexError::Graph(format!("multipart: {e}")))?;
    let form = reqwest::multipart::Form::new().part("snapshot", part);
    rest.send(
        &format!("upload snapshot as {target}"),
        rest.request(
            reqwest::Method::POST,
            &format!(
                "/collections/{target}/snapshots/upload?wait=true&priority=snapshot&checksum={}",
                file.sha256
            ),
        )
        .multipart(form),
    )
    .await?;
    let c = QdrantCollection::open_with(client, url, &target).await?;
    if c.model != snap.model || c.dim != snap.dim {
        return Err(IndexError::Snapshot {
            path: archive.to_path_buf(),
            reason: format!(
                "the restored collection {target:?} records model {} and dimension {}, the archive's manifest {} and {}",
                c.model.sha256, c.dim, snap.model.sha256, snap.dim
            ),
        });
    }
    Ok(c)
}

/// Deletes a collection created by mirage.
pub async fn drop_collection(url: &str, api_key: Option<&str>, name: &str) -> Result<()> {
    // Opening first checks that it exists and is ours.
    let c = QdrantCollection::open(url, api_key, name).await?;
    c.client
        .delete_collection(name)
        .await
        .map_err(|e| qerr(&format!("delete collection {name}"), e))?;
    Ok(())
}

/// Names of the MIRAGE-RS collections on the server (those `open` accepts), sorted.
pub async fn list_collections(url: &str, api_key: Option<&str>) -> Result<Vec<String>> {
    let client = connect(url, api_key)?;
    let listed = client
        .list_collections()
        .await
        .map_err(|e| qerr("list collections", e))?;
    let mut names = Vec::new();
    for c in listed.collections {
        match QdrantCollection::open_with(client.clone(), url, &c.name).await {
            Ok(_) => names.push(c.name),
            // Not ours, or dropped since the listing.
            Err(IndexError::CollectionExists { .. } | IndexError::CollectionNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    names.sort();
    Ok(names)
}

/// Whether the server answers an authenticated request; `Ok` carries its version.
pub async fn probe(url: &str, api_key: Option<&str>) -> Result<String> {
    let client = connect(url, api_key)?;
    // Listing needs the API key where health checks do not, so a wrong key shows here.
    client
        .list_collections()
        .await
        .map_err(|e| qerr(&format!("list collections at {url}"), e))?;
    let health = client
        .health_check()
        .await
        .map_err(|e| qerr(&format!("health check of {url}"), e))?;
    Ok(format!("qdrant {}", health.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_uuids_are_stable_and_well_formed() {
        let u = point_uuid("PMC123_fig1.jpg");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "5");
        assert_eq!(u, point_uuid("PMC123_fig1.jpg"));
        assert_ne!(u, point_uuid("PMC123_fig2.jpg"));
    }
}
