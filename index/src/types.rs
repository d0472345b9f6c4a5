//! The data model shared by every store: items, vectors, search requests and hits.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{IndexError, Result};
use crate::filter::Filter;

/// The two vector spaces of a collection. Both live in the joint embedding space of one bundle,
/// so a text query can target image vectors and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorName {
    /// The text tower's embedding of the item's text.
    Text,
    /// The vision tower's embedding of the item's image.
    Image,
}

impl VectorName {
    /// Both names, in storage order.
    pub const ALL: [VectorName; 2] = [VectorName::Text, VectorName::Image];

    /// The name used in stores and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            VectorName::Text => "text",
            VectorName::Image => "image",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            VectorName::Text => 0,
            VectorName::Image => 1,
        }
    }
}

impl std::str::FromStr for VectorName {
    type Err = IndexError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "text" => Ok(Self::Text),
            "image" => Ok(Self::Image),
            other => Err(IndexError::invalid(format!(
                "unknown vector name {other:?}: expected \"text\" or \"image\""
            ))),
        }
    }
}

impl std::fmt::Display for VectorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One item of a collection as written by an upsert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The caller's id, unique in the collection (any non-empty string up to 512 characters).
    pub id: String,
    /// The report or caption text, returned with hits.
    pub text: Option<String>,
    /// The image reference (path or URI as given in the corpus), returned with hits.
    pub image: Option<String>,
    /// Filterable JSON metadata.
    pub payload: Map<String, Value>,
    /// Text embedding (normalised by the store).
    pub text_vector: Option<Vec<f32>>,
    /// Image embedding (normalised by the store).
    pub image_vector: Option<Vec<f32>>,
}

/// The payload key under which an item's DICOM tags are stored.
pub const DICOM_PAYLOAD_KEY: &str = "dicom";

impl Item {
    /// Adds the DICOM tags of the item's image to its payload under [`DICOM_PAYLOAD_KEY`],
    /// unless the payload already has that key: the caller's own value wins. Both ingestion paths
    /// (the corpus pipeline and the HTTP upsert) build items through this.
    pub fn add_dicom_tags(&mut self, tags: std::collections::BTreeMap<String, String>) {
        if !tags.is_empty() && !self.payload.contains_key(DICOM_PAYLOAD_KEY) {
            let tags = tags.into_iter().map(|(k, v)| (k, Value::String(v)));
            self.payload
                .insert(DICOM_PAYLOAD_KEY.into(), Value::Object(tags.collect()));
        }
    }

    /// The vector of one space, if present.
    pub fn vector(&self, name: VectorName) -> Option<&[f32]> {
        match name {
            VectorName::Text => self.text_vector.as_deref(),
            VectorName::Image => self.image_vector.as_deref(),
        }
    }
}

/// Longest accepted item id, in characters (as JSON Schema's `maxLength` counts).
pub const MAX_ID_CHARS: usize = 512;

/// An item as read back: everything but the vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredItem {
    /// The caller's id.
    pub id: String,
    /// Report or caption text.
    pub text: Option<String>,
    /// Image reference.
    pub image: Option<String>,
    /// JSON metadata.
    pub payload: Map<String, Value>,
    /// Which vectors the item has.
    pub vectors: Vec<VectorName>,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Item id.
    pub id: String,
    /// Dense search: the cosine similarity of the query and the item's vector in the target
    /// space. Lexical search: the BM25 score. Hybrid search: the fused score
    /// ([`crate::hybrid`]).
    pub score: f32,
    /// Report or caption text.
    pub text: Option<String>,
    /// Image reference.
    pub image: Option<String>,
    /// JSON metadata.
    pub payload: Map<String, Value>,
    /// Where each retrieval leg ranked the item (set by [`crate::hybrid`]; empty on a plain
    /// store search).
    #[serde(default)]
    pub legs: Legs,
}

impl Hit {
    /// A hit with no leg ranks.
    pub fn new(
        id: String,
        score: f32,
        text: Option<String>,
        image: Option<String>,
        payload: Map<String, Value>,
    ) -> Self {
        Self {
            id,
            score,
            text,
            image,
            payload,
            legs: Legs::default(),
        }
    }
}

/// A hit's rank (1-based, among the leg's candidates) and score in one retrieval leg.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LegHit {
    /// 1-based rank in that leg.
    pub rank: usize,
    /// The leg's own score: cosine (dense) or BM25 (lexical).
    pub score: f32,
}

/// Which legs of a search found a hit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Legs {
    /// The dense (vector) leg.
    pub dense: Option<LegHit>,
    /// The lexical (BM25) leg.
    pub lexical: Option<LegHit>,
    /// The cross-encoder that reordered the hits ([`crate::rerank`]): rank and relevance.
    #[serde(default)]
    pub rerank: Option<LegHit>,
}

/// A lexical (BM25) query over the items' texts ([`crate::lexical`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LexicalRequest {
    /// The query text, analyzed as the texts were.
    pub text: String,
    /// Number of hits to return.
    pub limit: usize,
    /// Number of best hits to skip first.
    pub offset: usize,
    /// Payload filter.
    pub filter: Option<Filter>,
    /// Attach each hit's stored text and image reference.
    pub with_content: bool,
}

impl LexicalRequest {
    /// A plain top-`limit` query.
    pub fn new(text: impl Into<String>, limit: usize) -> Self {
        Self {
            text: text.into(),
            limit,
            offset: 0,
            filter: None,
            with_content: true,
        }
    }

    /// Checks the page and the filter; returns how many hits the page holds.
    pub(crate) fn validate(&self) -> Result<usize> {
        let limit = page_limit(self.limit, self.offset)?;
        if let Some(f) = &self.filter {
            f.validate()?;
        }
        Ok(limit)
    }
}

/// How a search is carried out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// HNSW above the collection's exact-search threshold, brute force below it.
    #[default]
    Auto,
    /// Brute force over every candidate: exact, slower on large collections.
    Exact,
}

/// A k-nearest-neighbour query.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// Query vector in the joint space (normalised by the store).
    pub vector: Vec<f32>,
    /// Which vectors of the items to compare with.
    pub target: VectorName,
    /// Number of hits to return.
    pub limit: usize,
    /// Number of best hits to skip first (pagination).
    pub offset: usize,
    /// Hits scoring below this are dropped.
    pub score_threshold: Option<f32>,
    /// Payload filter.
    pub filter: Option<Filter>,
    /// HNSW beam width for this query (default: the collection's).
    pub ef: Option<usize>,
    /// Exact or automatic.
    pub mode: SearchMode,
    /// Attach each hit's stored text and image reference. The embedded store reads them from
    /// SQLite, one row per hit, which costs a fast query ~10 % of its time; callers that want
    /// ids, scores and payloads only (as an ANN library answers) leave them out.
    pub with_content: bool,
}

impl SearchRequest {
    /// A plain top-`limit` query on `target`.
    pub fn new(vector: Vec<f32>, target: VectorName, limit: usize) -> Self {
        Self {
            vector,
            target,
            limit,
            offset: 0,
            score_threshold: None,
            filter: None,
            ef: None,
            mode: SearchMode::Auto,
            with_content: true,
        }
    }
}

/// Ranks one search reaches: hits past rank 1,000 are never returned (deeper pages are a scan,
/// not a search). The HTTP API, the CLI and both stores share this bound.
pub const MAX_SEARCH_DEPTH: usize = 1_000;

/// The number of hits a page of `limit` after `offset` returns: `limit` must be
/// 1–[`MAX_SEARCH_DEPTH`] and `offset` below it; a page reaching past the last rank is cut there.
pub fn page_limit(limit: usize, offset: usize) -> Result<usize> {
    if limit == 0 || limit > MAX_SEARCH_DEPTH || offset >= MAX_SEARCH_DEPTH {
        return Err(IndexError::invalid(format!(
            "limit must be 1–{MAX_SEARCH_DEPTH} and offset 0–{} (got limit {limit} offset {offset})",
            MAX_SEARCH_DEPTH - 1
        )));
    }
    Ok(limit.min(MAX_SEARCH_DEPTH - offset))
}

/// The model a collection was built with: vectors of another model live in another space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// `bundle.json` model id.
    pub model_id: String,
    /// sha256 of the bundle (as reported by `mirage-model`).
    pub sha256: String,
}

impl ModelRef {
    /// Refuses `given` unless it is this model (the one `collection` was built with), naming both.
    pub fn ensure_matches(&self, collection: &str, given: &ModelRef) -> Result<()> {
        if self != given {
            return Err(IndexError::ModelMismatch {
                collection: collection.to_string(),
                index_model_id: self.model_id.clone(),
                index_sha256: self.sha256.clone(),
                given_model_id: given.model_id.clone(),
                given_sha256: given.sha256.clone(),
            });
        }
        Ok(())
    }
}

/// How a collection's graph stores its vectors. The embedded store keeps every vector in f32
/// besides (SQLite and the flat copy), so quantised graphs rescore their candidates exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// 4 bytes per dimension: exact scores straight from the graph.
    #[default]
    F32,
    /// IEEE half precision, 2 bytes per dimension.
    F16,
    /// Signed bytes (x × 127), 1 byte per dimension.
    I8,
}

impl Quantization {
    /// Every setting, in the order the CLI lists them.
    pub const ALL: [Quantization; 3] = [Quantization::F32, Quantization::F16, Quantization::I8];

    /// The name used in manifests, the CLI and the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F32 => "f32",
            Quantization::F16 => "f16",
            Quantization::I8 => "i8",
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quantization {
    type Err = IndexError;

    fn from_str(s: &str) -> Result<Self> {
        Quantization::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| {
                IndexError::invalid(format!("quantization must be f32, f16 or i8 (got {s:?})"))
            })
    }
}

/// HNSW graph parameters (both stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node (M).
    pub m: usize,
    /// Beam width while building.
    pub ef_construction: usize,
    /// Default beam width while searching.
    pub ef_search: usize,
    /// Below this many live vectors in the target space (or candidates after filtering), search
    /// is brute force: exact and, at that size, as fast as the graph.
    pub exact_threshold: usize,
    /// How the graph stores its vectors (embedded: the graph's copy; Qdrant: f16 vectors or
    /// int8 scalar quantisation). Absent in collections made before it existed: f32.
    #[serde(default)]
    pub quantization: Quantization,
}

/// Links per node a collection accepts (Qdrant and hnswlib use 2–100 in practice; past 256 a
/// node's links outgrow what a graph search can use).
pub const M_RANGE: std::ops::RangeInclusive<usize> = 2..=256;
/// Build beam widths a collection accepts (Qdrant refuses below 4).
pub const EF_CONSTRUCTION_RANGE: std::ops::RangeInclusive<usize> = 4..=4096;
/// Search beam widths, per collection (`ef_search`) and per query (`ef`).
pub const EF_RANGE: std::ops::RangeInclusive<usize> = 1..=4096;
/// Exact-search thresholds a collection accepts.
pub const EXACT_THRESHOLD_RANGE: std::ops::RangeInclusive<usize> = 0..=100_000_000;
/// Qdrant shards per collection.
pub const SHARD_NUMBER_RANGE: std::ops::RangeInclusive<u32> = 1..=64;
/// Qdrant replicas per shard.
pub const REPLICATION_FACTOR_RANGE: std::ops::RangeInclusive<u32> = 1..=16;

/// `field` in `range`, else an invalid-argument error naming the field, the range and the value.
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<()> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(IndexError::invalid(format!(
            "{field} must be {}–{} (got {value})",
            range.start(),
            range.end()
        )))
    }
}

impl HnswParams {
    /// Checks every parameter against the ranges above, before any graph library sees it.
    pub fn validate(&self) -> Result<()> {
        check_range("hnsw.m", self.m, &M_RANGE)?;
        check_range(
            "hnsw.ef_construction",
            self.ef_construction,
            &EF_CONSTRUCTION_RANGE,
        )?;
        check_range("hnsw.ef_search", self.ef_search, &EF_RANGE)?;
        check_range(
            "hnsw.exact_threshold",
            self.exact_threshold,
            &EXACT_THRESHOLD_RANGE,
        )
    }
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
            exact_threshold: 10_000,
            quantization: Quantization::F32,
        }
    }
}

/// Settings of a new collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// Embedding dimension.
    pub dim: usize,
    /// The bundle the vectors come from.
    pub model: ModelRef,
    /// Graph parameters.
    pub hnsw: HnswParams,
    /// Qdrant only: number of shards.
    pub shard_number: Option<u32>,
    /// Qdrant only: replication factor.
    pub replication_factor: Option<u32>,
}

impl CollectionConfig {
    /// Checks the graph, shard and replica settings against their ranges.
    pub fn validate(&self) -> Result<()> {
        self.hnsw.validate()?;
        if let Some(n) = self.shard_number {
            check_range("shard_number", n, &SHARD_NUMBER_RANGE)?;
        }
        if let Some(n) = self.replication_factor {
            check_range("replication_factor", n, &REPLICATION_FACTOR_RANGE)?;
        }
        Ok(())
    }

    /// A config with default graph parameters.
    pub fn new(dim: usize, model: ModelRef) -> Self {
        Self {
            dim,
            model,
            hnsw: HnswParams::default(),
            shard_number: None,
            replication_factor: None,
        }
    }
}

/// What `info` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// Collection name.
    pub name: String,
    /// Store kind and location.
    pub store: String,
    /// Embedding dimension.
    pub dim: usize,
    /// Always "cosine".
    pub metric: String,
    /// Model the collection was built with.
    pub model: ModelRef,
    /// Graph parameters.
    pub hnsw: HnswParams,
    /// Live items.
    pub items: u64,
    /// Live vectors per space.
    pub text_vectors: u64,
    /// Live image vectors.
    pub image_vectors: u64,
    /// Embedded store: deleted or replaced vectors still in the graph (reclaimed by `compact`).
    pub tombstones: u64,
    /// On-disk format version (embedded store).
    pub format_version: u32,
    /// Committed writes (upserts and effective deletes) since creation: the index version that
    /// search results cite. The Qdrant store has none.
    #[serde(default)]
    pub generation: Option<u64>,
    /// The analyzer of the collection's lexical (BM25) index, or none when it has none (Qdrant
    /// collections made before lexical search existed).
    #[serde(default)]
    pub lexical: Option<String>,
}

/// Payload key reserved for the stores' own bookkeeping (the Qdrant store keeps id and text there).
pub const RESERVED_PAYLOAD_KEY: &str = "_mirage";

/// Everything both stores check before writing an item: its id, its payload keys, and its
/// vectors (right length, finite, non-zero; at least one). Returns the vectors at unit length,
/// indexed by [`VectorName`] order.
pub(crate) fn checked_vectors(item: &Item, dim: usize) -> Result<[Option<Vec<f32>>; 2]> {
    validate_id(&item.id)?;
    if item.payload.contains_key(RESERVED_PAYLOAD_KEY) {
        return Err(IndexError::invalid(format!(
            "payload key {RESERVED_PAYLOAD_KEY:?} is reserved"
        )));
    }
    let mut vectors: [Option<Vec<f32>>; 2] = [None, None];
    for name in VectorName::ALL {
        if let Some(v) = item.vector(name) {
            vectors[name.index()] =
                Some(unit_vector(&format!("item {:?} {name}", item.id), v, dim)?);
        }
    }
    if vectors.iter().all(Option::is_none) {
        return Err(IndexError::invalid(format!(
            "item {:?} has neither a text nor an image vector",
            item.id
        )));
    }
    Ok(vectors)
}

fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(IndexError::invalid("item id is empty"));
    }
    let chars = id.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(IndexError::invalid(format!(
            "item id is {chars} characters long; the limit is {MAX_ID_CHARS}"
        )));
    }
    Ok(())
}

/// `v` at unit length (the graph's inner product is then the cosine), or why it has no direction: the one vector check of both stores, the
/// vector imports and the HTTP API (`what` names the vector in errors). Computed in f64 after
/// scaling by the largest magnitude, so any finite numbers not all zero give a direction, however
/// small or large (1e-300 and 1e300 alike; JSON numbers arrive as f64).
pub fn unit_vector<T: Copy + Into<f64>>(what: &str, v: &[T], dim: usize) -> Result<Vec<f32>> {
    if v.len() != dim {
        return Err(IndexError::Dimension {
            what: what.to_string(),
            expected: dim,
            got: v.len(),
        });
    }
    if let Some(i) = v.iter().position(|x| !(*x).into().is_finite()) {
        return Err(IndexError::invalid(format!(
            "{what}[{i}] is not a finite number (NaN or infinity)"
        )));
    }
    let scale = v.iter().fold(0.0f64, |m, x| m.max((*x).into().abs()));
    if scale == 0.0 {
        return Err(IndexError::invalid(format!(
            "{what} is all zeros: a zero vector has no direction"
        )));
    }
    let norm = v
        .iter()
        .map(|x| ((*x).into() / scale).powi(2))
        .sum::<f64>()
        .sqrt();
    Ok(v.iter()
        .map(|x| ((*x).into() / scale / norm) as f32)
        .collect())
}

/// Checks a search and returns how many hits its page holds ([`page_limit`]).
pub(crate) fn validate_search(req: &SearchRequest) -> Result<usize> {
    let limit = page_limit(req.limit, req.offset)?;
    if let Some(t) = req.score_threshold {
        if !t.is_finite() {
            return Err(IndexError::invalid(
                "score_threshold must be a finite number",
            ));
        }
    }
    if let Some(ef) = req.ef {
        check_range("ef", ef, &EF_RANGE)?;
    }
    if let Some(f) = &req.filter {
        f.validate()?;
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_tags_join_the_payload_without_replacing_the_callers_key() {
        let tags = std::collections::BTreeMap::from([("Modality".to_owned(), "CT".to_owned())]);
        let mut item = Item {
            id: "a".into(),
            text: None,
            image: Some("a.dcm".into()),
            payload: Map::new(),
            text_vector: None,
            image_vector: Some(vec![1.0]),
        };
        item.add_dicom_tags(tags.clone());
        assert_eq!(item.payload["dicom"]["Modality"], "CT");
        item.payload.insert("dicom".into(), Value::from("mine"));
        item.add_dicom_tags(tags);
        assert_eq!(item.payload["dicom"], "mine");
    }

    #[test]
    fn any_finite_nonzero_vector_has_a_direction_and_pages_end_at_the_last_rank() {
        let v = unit_vector("v", &[1e-300f64, 0.0, 1e-300], 3).unwrap();
        assert!((v[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        let v = unit_vector("v", &[3e38f32, 3e38], 2).unwrap();
        assert!(v.iter().all(|x| x.is_finite()));
        let e = unit_vector("q", &[0.0f32, 0.0], 2).unwrap_err().to_string();
        assert!(e.contains("q is all zeros"), "{e}");
        let e = unit_vector("q", &[1.0, f64::NAN], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("q[1] is not a finite number"), "{e}");
        assert!(matches!(
            unit_vector("q", &[1.0f32], 2),
            Err(IndexError::Dimension {
                expected: 2,
                got: 1,
                ..
            })
        ));
        assert_eq!(page_limit(10, 0).unwrap(), 10);
        assert_eq!(page_limit(1_000, 995).unwrap(), 5);
        for (limit, offset) in [(0, 0), (1_001, 0), (1, 1_000)] {
            assert!(page_limit(limit, offset).is_err(), "{limit} {offset}");
        }
    }
}
