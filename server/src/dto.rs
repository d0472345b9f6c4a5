//! Request and response bodies of the HTTP API (they are the OpenAPI schemas).

use mirage_index::passages::PassageInfo;
use mirage_index::rag::RagOptions;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// An image: a data URI (`data:image/png;base64,…`) or bare base64 of PNG, JPEG or DICOM bytes.
/// In a multipart request, a file part carries it instead.
pub type ImageData = String;

/// The schema of [`ImageData`]: the custom format `image-data` says what no JSON Schema keyword
/// can (the bytes must decode as PNG, JPEG or DICOM).
#[derive(ToSchema)]
#[schema(format = "image-data")]
pub struct Image(pub String);

/// A text with at least one non-whitespace character.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(pattern = r"\S")]
pub struct NonBlank(pub String);

/// A collection name: 1–128 letters, digits, `-`, `_` or `.`, not starting with `.`.
#[derive(ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", example = "reports")]
pub struct CollectionName(pub String);

/// A prompt template: `{}` marks where the label goes.
#[derive(ToSchema)]
#[schema(pattern = r"\{\}", example = "a chest x-ray showing {}")]
pub struct Template(pub String);

/// OpenAI-style `input`: one string, or a list whose items are strings (texts) or objects
/// with exactly one of `text` / `image`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(NonBlank),
    /// Several inputs.
    Many(Vec<EmbeddingItem>),
}

/// One item of `input`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingItem {
    /// A text.
    Text(NonBlank),
    /// `{"text": …}` or `{"image": …}`.
    Object(InputObject),
}

/// A text or an image.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputObject {
    /// Text to embed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<NonBlank>)]
    pub text: Option<String>,
    /// Image to embed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Image>)]
    pub image: Option<ImageData>,
}

/// `float` (default) or `base64` (little-endian f32, as OpenAI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON numbers.
    #[default]
    Float,
    /// base64 of little-endian f32 bytes.
    Base64,
}

/// `POST /v1/embeddings` (OpenAI-compatible, with images).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// What to embed.
    #[schema(value_type = EmbeddingInput)]
    pub input: Value,
    /// Model id (`GET /v1/models`); default: the server's default model.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub model: Option<String>,
    /// Output encoding.
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Must equal the model's dimension when given (no truncation): `embed_dim` of `GET /info`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
    /// Ignored (OpenAI compatibility).
    #[serde(default)]
    pub user: Option<String>,
    /// Frame of multi-frame DICOM images.
    #[serde(default)]
    #[schema(maximum = 65535)]
    pub frame: u16,
    /// Whether texts are search queries or documents: a model with a query tower (MedCPT-style
    /// asymmetric retrievers) embeds queries with it. Images ignore it.
    #[serde(default)]
    pub input_type: InputType,
}

/// What a text is, for models that embed queries and documents with different towers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Indexed content (the document tower).
    #[default]
    Document,
    /// A search query (the query tower where the model has one).
    Query,
}

/// One embedding.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    /// Position in `input`.
    pub index: usize,
    /// The unit vector.
    pub embedding: EmbeddingVector,
}

/// Numbers, or a base64 string of little-endian f32 with `encoding_format: base64`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// Token counts (images count 0 tokens).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Tokens of all text inputs.
    pub prompt_tokens: usize,
    /// Same as `prompt_tokens`.
    pub total_tokens: usize,
}

/// Response of `POST /v1/embeddings`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: String,
    /// In input order.
    pub data: Vec<Embedding>,
    /// Served model id.
    pub model: String,
    /// Token usage.
    pub usage: Usage,
}

/// `POST /v1/classify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// The image.
    #[schema(value_type = Image)]
    pub image: ImageData,
    /// Candidate labels (plain words, e.g. "pneumonia"), distinct; at most
    /// `max_inputs_per_request` (`GET /info`).
    #[schema(value_type = Vec<NonBlank>, min_items = 1, max_items = 256)]
    pub labels: Vec<String>,
    /// Prompt templates, each with one `{}` for the label; default: the bundle's, else the
    /// built-in set.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Template>>, min_items = 1, max_items = 64)]
    pub templates: Option<Vec<String>>,
    /// Negation templates for multi-label mode, each with one `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Template>>, min_items = 1, max_items = 64)]
    pub negative_templates: Option<Vec<String>>,
    /// Score each label on its own against its negation (sigmoid) instead of a softmax.
    #[serde(default)]
    pub multi_label: bool,
    /// Divide logits by this; default: the bundle's calibration temperature, else 1.
    #[serde(default)]
    #[schema(minimum = 0.001, maximum = 1000)]
    pub temperature: Option<f32>,
    /// Frame of a multi-frame DICOM image.
    #[serde(default)]
    #[schema(maximum = 65535)]
    pub frame: u16,
    /// Model id (`GET /v1/models`); default: the server's default model.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub model: Option<String>,
}

/// One label's result.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LabelResult {
    /// The label.
    pub label: String,
    /// Calibrated probability.
    pub probability: f32,
    /// Raw cosine similarity between image and label prototype.
    pub score: f32,
}

/// Response of `POST /v1/classify`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClassifyResponse {
    /// Served model id.
    pub model_id: String,
    /// Mode used.
    pub multi_label: bool,
    /// Temperature applied.
    pub temperature: f32,
    /// Whether the temperature came from the bundle's fitted calibration.
    pub calibrated: bool,
    /// Labels by decreasing probability.
    pub labels: Vec<LabelResult>,
}

/// What to search with: `text`, `image` or `vector`, or `text` with one of the others. The
/// dense leg embeds the text and the image (each item at its best cosine over the two), or uses
/// the vector as given; the lexical leg matches the text's words. An image or a vector alone is
/// a dense query (it has no words).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Text query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<NonBlank>)]
    pub text: Option<String>,
    /// Image query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Image>)]
    pub image: Option<ImageData>,
    /// A vector in the model's joint space, `embed_dim` (`GET /info`) numbers, not all zero
    /// (normalised by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f64>>,
}

/// Which vectors of the items to search.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The items' text (caption/report) vectors.
    #[default]
    Text,
    /// The items' image vectors.
    Image,
}

fn default_limit() -> usize {
    10
}

/// `POST /v1/search`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Collection to search.
    #[schema(value_type = CollectionName)]
    pub collection: String,
    /// The query.
    pub query: Query,
    /// Vectors the dense leg searches (default text).
    #[serde(default)]
    pub target: Target,
    /// Retrieval mode. Default: the collection's (`search_mode`) for a query with text, else
    /// `hybrid` when the query has text and the collection a lexical index, else `dense`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Fusion settings of hybrid mode; unset fields take the collection's, then the defaults.
    #[serde(default, deserialize_with = "object_only")]
    pub fusion: Option<FusionSettings>,
    /// Hits to return. Ranks end at 1000: hits past rank 1000 (`offset + limit > 1000`) are
    /// not returned.
    #[serde(default = "default_limit")]
    #[schema(minimum = 1)]
    pub limit: usize,
    /// Hits to skip (pagination).
    #[serde(default)]
    pub offset: usize,
    /// Payload filter (Qdrant syntax: must / should / must_not with match / range).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Drop dense candidates scoring below this cosine (not in mode `lexical`, which has none).
    #[serde(default)]
    #[schema(minimum = -1, maximum = 1)]
    pub score_threshold: Option<f32>,
    /// HNSW beam width for this query.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4096)]
    pub ef: Option<usize>,
    /// Exact (brute-force) search.
    #[serde(default)]
    pub exact: bool,
    /// `parent`: one hit per document, its passages (items of a split text, payload key
    /// `passage`) grouped under it and ranked by the best; `limit` and `offset` then count
    /// documents.
    #[serde(default)]
    pub group_by: Option<GroupBy>,
    /// Rerank the first `rerank.candidates` hits with the server's cross-encoder (`--reranker`):
    /// hits are then ordered by its relevance of `query.text` and each hit's text.
    #[serde(default, deserialize_with = "object_only")]
    pub rerank: Option<RerankSettings>,
    /// With `group_by`: passages listed per document (default 3).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub group_size: Option<usize>,
    /// Frame of a multi-frame DICOM query image.
    #[serde(default)]
    #[schema(maximum = 65535)]
    pub frame: u16,
}

fn default_rerank_candidates() -> usize {
    mirage_index::rerank::DEFAULT_CANDIDATES
}

/// Reranking of retrieved hits by a cross-encoder.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankSettings {
    /// Hits of the retrieval that are reranked (at least the page's depth are).
    #[serde(default = "default_rerank_candidates")]
    #[schema(minimum = 1, maximum = 1000)]
    pub candidates: usize,
}

/// A document to rerank: its text, or an object with `text` (the Cohere and Jina shapes).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RerankDocument {
    /// The text.
    #[schema(value_type = NonBlank)]
    Text(String),
    /// An object with the text.
    Object(RerankDocumentObject),
}

impl RerankDocument {
    /// The document's text.
    pub fn text(&self) -> &str {
        match self {
            Self::Text(t) => t,
            Self::Object(o) => &o.text,
        }
    }
}

/// A document as an object.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankDocumentObject {
    /// The text.
    #[schema(value_type = NonBlank)]
    pub text: String,
}

/// `POST /v1/rerank` (the Cohere / Jina rerank shape).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// The reranker's model id (`GET /info`); any other is refused. Default: the served one.
    #[serde(default)]
    pub model: Option<String>,
    /// The query.
    #[schema(value_type = NonBlank)]
    pub query: String,
    /// Documents to order; at most `max_inputs_per_request` (`GET /info`).
    #[schema(min_items = 1, max_items = 256)]
    pub documents: Vec<RerankDocument>,
    /// Results to return, best first (default: all).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub top_n: Option<usize>,
    /// Include each document's text in its result.
    #[serde(default)]
    pub return_documents: bool,
}

/// One reranked document.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RerankResult {
    /// Its position in `documents`.
    pub index: usize,
    /// Relevance in [0, 1]: the sigmoid of the cross-encoder's logit (one label) or the
    /// probability of label 1 (two or more).
    pub relevance_score: f32,
    /// The document, with `return_documents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<RerankDocumentObject>,
}

/// Tokens read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RerankUsage {
    /// Tokens of every query–document pair, after truncation to the reranker's limit.
    pub total_tokens: usize,
}

/// Response of `POST /v1/rerank`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RerankResponse {
    /// The reranker's model id.
    pub model: String,
    /// Documents by decreasing relevance (ties in input order).
    pub results: Vec<RerankResult>,
    /// Tokens read.
    pub usage: RerankUsage,
}

/// How search results are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By the document a passage was split from.
    Parent,
}

/// A passage's place in its document (the payload key `passage` of items split from a longer
/// text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PassageRef {
    /// The document's id.
    pub parent: String,
    /// 0-based passage number.
    pub index: usize,
    /// Passages of the document.
    pub count: usize,
    /// Section heading (split by sections).
    pub section: Option<String>,
    /// First character of the passage in the document (Unicode code points).
    pub start: usize,
    /// One past its last character.
    pub end: usize,
}

impl From<PassageInfo> for PassageRef {
    fn from(p: PassageInfo) -> Self {
        Self {
            parent: p.parent,
            index: p.index,
            count: p.count,
            section: p.section,
            start: p.start,
            end: p.end,
        }
    }
}

/// One passage of a grouped hit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupPassage {
    /// Item id of the passage.
    pub id: String,
    /// Its ranking score.
    pub score: f32,
    /// Where each retrieval leg ranked it.
    pub legs: HitLegs,
    /// Its text.
    pub text: Option<String>,
    /// Its place in the document (absent for an item that is not a passage).
    pub passage: Option<PassageRef>,
}

/// Where a hit comes from, enough to cite and reproduce it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Provenance {
    /// Collection.
    pub collection: String,
    /// Item id in the collection.
    pub item_id: String,
    /// Model that embedded query and item.
    pub model_id: String,
    /// sha256 of that model's bundle.json.
    pub bundle_sha256: String,
    /// Store (`embedded` or `qdrant`).
    pub store: String,
    /// Collection version at query time (committed writes; embedded store only).
    pub index_version: Option<u64>,
    /// The ranking score (see `SearchHit.score`).
    pub score: f32,
    /// The retrieval mode that ranked it.
    pub mode: Mode,
}

/// A hit's rank and score in one retrieval leg.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct LegRank {
    /// 1-based rank among the leg's candidates.
    pub rank: usize,
    /// The leg's score: cosine (dense) or BM25 (lexical).
    pub score: f32,
}

/// Which retrieval legs found a hit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct HitLegs {
    /// The dense (vector) leg, when it found the hit.
    pub dense: Option<LegRank>,
    /// The lexical (BM25) leg, when it found the hit.
    pub lexical: Option<LegRank>,
    /// The cross-encoder, when the request asked to rerank: rank and relevance (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<LegRank>,
}

impl From<mirage_index::Legs> for HitLegs {
    fn from(l: mirage_index::Legs) -> Self {
        let leg = |h: mirage_index::LegHit| LegRank {
            rank: h.rank,
            score: h.score,
        };
        Self {
            dense: l.dense.map(leg),
            lexical: l.lexical.map(leg),
            rerank: l.rerank.map(leg),
        }
    }
}

/// Deserialises an optional settings object, refusing the JSON array serde would otherwise read
/// a struct from (the schema says object or null).
fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => serde_path_to_error::deserialize(v).map(Some).map_err(|e| {
            match e.path().to_string().as_str() {
                "." => D::Error::custom(e.into_inner()),
                path => D::Error::custom(format!("{path}: {}", e.into_inner())),
            }
        }),
        Some(Value::Array(_)) => Err(D::Error::custom("expected an object or null, got an array")),
        Some(other) => Err(D::Error::custom(format!(
            "expected an object or null, got {other}"
        ))),
    }
}

/// Retrieval mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Vector search: an embedding of the query against the items' vectors.
    Dense,
    /// BM25 over the items' texts (their analyzed words).
    Lexical,
    /// Both, fused (reciprocal rank fusion or weighted scores).
    Hybrid,
}

impl From<Mode> for mirage_index::hybrid::RetrievalMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Dense => Self::Dense,
            Mode::Lexical => Self::Lexical,
            Mode::Hybrid => Self::Hybrid,
        }
    }
}

impl From<mirage_index::hybrid::RetrievalMode> for Mode {
    fn from(m: mirage_index::hybrid::RetrievalMode) -> Self {
        use mirage_index::hybrid::RetrievalMode as R;
        match m {
            R::Dense => Self::Dense,
            R::Lexical => Self::Lexical,
            R::Hybrid => Self::Hybrid,
        }
    }
}

/// How hybrid mode merges its legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethodSetting {
    /// Reciprocal rank fusion: Σ weight / (rrf_k + rank) over the legs that found the hit.
    Rrf,
    /// Σ weight × the leg's score min-max normalised over its candidates.
    Weighted,
}

/// Fusion settings of hybrid mode; every field optional (unset: the collection's, then the
/// defaults: rrf, k 60, weights 1 and 1, 100 candidates per leg).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FusionSettings {
    /// `rrf` or `weighted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<FusionMethodSetting>,
    /// RRF's k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10000)]
    pub rrf_k: Option<f64>,
    /// Weight of the dense leg (not both weights 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub dense_weight: Option<f64>,
    /// Weight of the lexical leg (not both weights 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub lexical_weight: Option<f64>,
    /// Candidates each leg fetches (raised to `offset + limit` when smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub candidates: Option<usize>,
}

impl FusionSettings {
    /// These settings over `base`: each field given replaces base's.
    pub fn over(self, base: mirage_index::hybrid::Fusion) -> mirage_index::hybrid::Fusion {
        use mirage_index::hybrid::FusionMethod;
        mirage_index::hybrid::Fusion {
            method: match self.method {
                Some(FusionMethodSetting::Rrf) => FusionMethod::Rrf,
                Some(FusionMethodSetting::Weighted) => FusionMethod::Weighted,
                None => base.method,
            },
            rrf_k: self.rrf_k.unwrap_or(base.rrf_k),
            dense_weight: self.dense_weight.unwrap_or(base.dense_weight),
            lexical_weight: self.lexical_weight.unwrap_or(base.lexical_weight),
            candidates: self.candidates.unwrap_or(base.candidates),
        }
    }

    /// Every field of `f`, given.
    pub fn of(f: mirage_index::hybrid::Fusion) -> Self {
        use mirage_index::hybrid::FusionMethod;
        Self {
            method: Some(match f.method {
                FusionMethod::Rrf => FusionMethodSetting::Rrf,
                FusionMethod::Weighted => FusionMethodSetting::Weighted,
            }),
            rrf_k: Some(f.rrf_k),
            dense_weight: Some(f.dense_weight),
            lexical_weight: Some(f.lexical_weight),
            candidates: Some(f.candidates),
        }
    }
}

/// One result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    /// 1-based rank, counting the offset.
    pub rank: usize,
    /// Item id.
    pub id: String,
    /// The ranking score: cosine similarity (mode `dense`), BM25 (mode `lexical`) or the fused
    /// score (mode `hybrid`).
    pub score: f32,
    /// Where each retrieval leg ranked the hit.
    pub legs: HitLegs,
    /// The item's text.
    pub text: Option<String>,
    /// The item's image reference.
    pub image: Option<String>,
    /// The item's payload.
    #[schema(value_type = Object)]
    pub payload: Map<String, Value>,
    /// When the item is a passage of a longer text: its document and character span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passage: Option<PassageRef>,
    /// Grouped search (`group_by`): the document's id (the hit's own id for an item that is
    /// not a passage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Grouped search: the document's best passages among the candidates, best first (the
    /// first is this hit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passages: Option<Vec<GroupPassage>>,
    /// Provenance.
    pub provenance: Provenance,
}

/// Response of `POST /v1/search`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    /// Collection searched.
    pub collection: String,
    /// Served model id.
    pub model_id: String,
    /// What the query held: `text`, `image`, `vector`, `text+image` or `text+vector`.
    pub query_modality: String,
    /// The retrieval mode that ran.
    pub mode: Mode,
    /// Vectors searched.
    pub target: Target,
    /// Items of the collection matching the filter, with or without a vector of the searched
    /// kind: an upper bound on how far pagination can go.
    pub total: u64,
    /// Hits.
    pub hits: Vec<SearchHit>,
}

fn default_k() -> usize {
    RagOptions::default().k
}
fn default_max_chars() -> usize {
    RagOptions::default().max_chars
}
fn default_dedup() -> f32 {
    RagOptions::default().dedup_threshold
}

/// `POST /v1/rag/context`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RagRequest {
    /// Collection of reports/captions.
    #[schema(value_type = CollectionName)]
    pub collection: String,
    /// A question (embedded as text).
    #[serde(default)]
    #[schema(value_type = Option<NonBlank>)]
    pub question: Option<String>,
    /// An image (embedded as image); with a question, the two result lists are merged.
    #[serde(default)]
    #[schema(value_type = Option<Image>)]
    pub image: Option<ImageData>,
    /// Passages to return at most.
    // The bounds of `k` and `max_chars` come from `mirage_index::rag` (set in openapi.rs).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Vectors the dense leg searches (default text).
    #[serde(default)]
    pub target: Target,
    /// Retrieval mode (default as in `POST /v1/search`: the question is the text).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Fusion settings of hybrid mode.
    #[serde(default, deserialize_with = "object_only")]
    pub fusion: Option<FusionSettings>,
    /// Rerank the candidates with the server's cross-encoder before choosing passages (needs a
    /// question).
    #[serde(default, deserialize_with = "object_only")]
    pub rerank: Option<RerankSettings>,
    /// Payload filter.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Abstain when the best dense cosine is below this, and drop passages whose cosine is
    /// below it (default: the collection's, else the server's). Mode `lexical` has no cosine:
    /// there, only an empty result abstains.
    #[serde(default)]
    #[schema(minimum = -1, maximum = 1)]
    pub min_score: Option<f32>,
    /// Adaptive k: drop passages scoring below this fraction of the best score.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub relative_score: Option<f32>,
    /// Adaptive k: stop at the first drop between consecutive scores larger than this fraction
    /// of the best score.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub max_score_gap: Option<f32>,
    /// Character budget of `context`.
    #[serde(default = "default_max_chars")]
    pub max_chars: usize,
    /// Passages whose word overlap (Jaccard) with a better one is at least this are dropped.
    #[serde(default = "default_dedup")]
    #[schema(minimum = 0, maximum = 1)]
    pub dedup_threshold: f32,
    /// Frame of a multi-frame DICOM image.
    #[serde(default)]
    #[schema(maximum = 65535)]
    pub frame: u16,
}

/// An OpenAI chat content part.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContentPart {
    /// `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: String,
}

/// Response of `POST /v1/rag/context`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RagResponse {
    /// Numbered passages (`[1] …`) within `max_chars`; empty when abstained.
    pub context: String,
    /// The same context as OpenAI chat content parts, ready to put in a user message.
    pub content_parts: Vec<ContentPart>,
    /// The cited hits, numbered as in `context`.
    pub citations: Vec<SearchHit>,
    /// True when nothing was good enough to cite.
    pub abstained: bool,
    /// Why it abstained.
    pub reason: Option<String>,
    /// Best score found.
    pub best_score: Option<f32>,
    /// The bound applied.
    pub min_score: f32,
    /// Passages dropped as near-duplicates.
    pub duplicates_removed: usize,
    /// Whether the budget cut passages.
    pub truncated: bool,
    /// The retrieval mode that ran.
    pub mode: Mode,
    /// Every candidate considered, in rank order, with why it was cited or dropped.
    pub passages: Vec<Passage>,
}

/// Why a candidate passage was cited or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PassageDecision {
    /// Cited.
    Cited,
    /// Its dense cosine is below `min_score`.
    BelowMinScore,
    /// Its score is below `relative_score` × the best.
    BelowRelativeScore,
    /// It comes after a score drop larger than `max_score_gap` × the best.
    AfterScoreGap,
    /// A near-duplicate of a better passage.
    Duplicate,
    /// `k` passages were already cited.
    BeyondK,
    /// The character budget was spent.
    OverBudget,
}

/// One candidate passage of a RAG context.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Passage {
    /// Item id.
    pub id: String,
    /// Its ranking score.
    pub score: f32,
    /// Cited, or why not.
    pub decision: PassageDecision,
}

impl From<mirage_index::rag::PassageDecision> for Passage {
    fn from(p: mirage_index::rag::PassageDecision) -> Self {
        use mirage_index::rag::Decision as D;
        Self {
            id: p.id,
            score: p.score,
            decision: match p.decision {
                D::Cited => PassageDecision::Cited,
                D::BelowMinScore => PassageDecision::BelowMinScore,
                D::BelowRelativeScore => PassageDecision::BelowRelativeScore,
                D::AfterScoreGap => PassageDecision::AfterScoreGap,
                D::Duplicate => PassageDecision::Duplicate,
                D::BeyondK => PassageDecision::BeyondK,
                D::OverBudget => PassageDecision::OverBudget,
            },
        }
    }
}

/// One pair to audit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditPair {
    /// Your id for the pair (echoed back).
    #[serde(default)]
    pub id: Option<String>,
    /// The image.
    #[schema(value_type = Image)]
    pub image: ImageData,
    /// Its caption.
    #[schema(value_type = NonBlank)]
    pub caption: String,
}

/// `POST /v1/audit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRequest {
    /// Pairs to score; at most `max_inputs_per_request` (`GET /info`).
    #[schema(min_items = 1, max_items = 256)]
    pub pairs: Vec<AuditPair>,
    /// Flag pairs whose s is below this (default: the server's audit_threshold).
    #[serde(default)]
    #[schema(minimum = -1, maximum = 1)]
    pub threshold: Option<f32>,
    /// Frame of multi-frame DICOM images.
    #[serde(default)]
    #[schema(maximum = 65535)]
    pub frame: u16,
    /// Model id (`GET /v1/models`) whose text bank scores the pairs; default: the server's
    /// default model.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub model: Option<String>,
}

/// One pair's audit.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditResult {
    /// Position in `pairs`.
    pub index: usize,
    /// Your id.
    pub id: Option<String>,
    /// Matching score s ∈ [−1, 1]: agreement between the caption and the image's nearest bank captions.
    pub s: f32,
    /// s below the threshold: likely a mismatched pair.
    pub flagged: bool,
    /// Direct cosine between image and caption embeddings.
    pub image_caption_similarity: f32,
    /// The bank caption nearest to the image.
    pub nearest_bank_caption: String,
    /// Its softmax weight.
    pub nearest_bank_weight: f32,
}

/// Response of `POST /v1/audit`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditResponse {
    /// Served model id.
    pub model_id: String,
    /// Bound used.
    pub threshold: f32,
    /// Bank size.
    pub bank_size: usize,
    /// Pairs flagged.
    pub flagged: usize,
    /// In input order.
    pub results: Vec<AuditResult>,
}

/// HNSW settings of a new embedded collection.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HnswSettings {
    /// Links per node.
    #[schema(minimum = 2, maximum = 256)]
    pub m: Option<usize>,
    /// Build beam width.
    #[schema(minimum = 4, maximum = 4096)]
    pub ef_construction: Option<usize>,
    /// Default search beam width.
    #[schema(minimum = 1, maximum = 4096)]
    pub ef_search: Option<usize>,
    /// Below this many candidates, search is exact.
    #[schema(maximum = 100000000)]
    pub exact_threshold: Option<usize>,
    /// How the graph stores vectors: `f32`, `f16` (half the bytes) or `i8` (a quarter; the
    /// embedded store rescores candidates in f32, Qdrant uses int8 scalar quantisation).
    pub quantization: Option<QuantizationSetting>,
}

/// Vector storage of a collection's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuantizationSetting {
    /// 4 bytes per dimension.
    F32,
    /// 2 bytes per dimension.
    F16,
    /// 1 byte per dimension.
    I8,
}

impl From<QuantizationSetting> for mirage_index::Quantization {
    fn from(q: QuantizationSetting) -> Self {
        match q {
            QuantizationSetting::F32 => Self::F32,
            QuantizationSetting::F16 => Self::F16,
            QuantizationSetting::I8 => Self::I8,
        }
    }
}

impl From<mirage_index::Quantization> for QuantizationSetting {
    fn from(q: mirage_index::Quantization) -> Self {
        match q {
            mirage_index::Quantization::F32 => Self::F32,
            mirage_index::Quantization::F16 => Self::F16,
            mirage_index::Quantization::I8 => Self::I8,
        }
    }
}

/// A store of collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded store (HNSW graph + SQLite on the server's disk).
    Embedded,
    /// The Qdrant server given by `--qdrant-url` or `--store qdrant:URL`.
    Qdrant,
}

impl StoreKind {
    /// Its name in store specs and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Qdrant => "qdrant",
        }
    }
}

/// `PUT /v1/collections/{name}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollectionRequest {
    /// Model id (`GET /v1/models`) the collection is built with and searched by, for good;
    /// default: the server's default model.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub model: Option<String>,
    /// Store of the new collection (default: the server's default store); this server's
    /// `/openapi.json` lists the stores it offers (`GET /info`: `store`, `qdrant`).
    #[serde(default)]
    pub store: Option<StoreKind>,
    /// Graph settings.
    #[serde(default, deserialize_with = "object_only")]
    pub hnsw: Option<HnswSettings>,
    /// Qdrant shards (the embedded store ignores it).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64)]
    pub shard_number: Option<u32>,
    /// Qdrant replicas of each shard (the embedded store ignores it).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 16)]
    pub replication_factor: Option<u32>,
    /// RAG abstention bound for this collection.
    #[serde(default)]
    #[schema(minimum = -1, maximum = 1)]
    pub rag_min_score: Option<f32>,
    /// Retrieval mode of text queries that name none (collections with a lexical index).
    #[serde(default)]
    pub search_mode: Option<Mode>,
    /// Fusion settings of this collection's hybrid searches.
    #[serde(default, deserialize_with = "object_only")]
    pub fusion: Option<FusionSettings>,
}

/// One collection of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CollectionSummary {
    /// Collection name.
    pub name: String,
    /// `embedded` or `qdrant` (the first store holding the name).
    pub store: String,
    /// The name also exists in the other store; every route answers 409 for it until one of
    /// the two is deleted or renamed outside this server.
    pub conflict: bool,
}

/// `GET /v1/collections`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CollectionList {
    /// Every collection of the server's stores, by store then name.
    pub collections: Vec<CollectionSummary>,
    /// Stores that could not be listed just now (e.g. `qdrant` while it is unreachable); their
    /// collections are missing from `collections`.
    pub unavailable_stores: Vec<String>,
}

/// `GET /v1/media` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MediaQuery {
    /// The image reference of a hit (`hits[].image`), relative to the server's media root.
    #[param(value_type = NonBlank)]
    pub path: String,
    /// Longest side of the returned PNG thumbnail (default 256).
    #[param(minimum = 16, maximum = 1024)]
    pub max_side: Option<u32>,
}

/// A collection.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CollectionResponse {
    /// Name.
    pub name: String,
    /// `embedded` or `qdrant`.
    pub store: String,
    /// Where.
    pub location: String,
    /// Dimension.
    pub dim: usize,
    /// Model id the collection was built with.
    pub model_id: String,
    /// Its bundle sha256.
    pub bundle_sha256: String,
    /// Live items.
    pub items: u64,
    /// Text vectors.
    pub text_vectors: u64,
    /// Image vectors.
    pub image_vectors: u64,
    /// Deleted vectors still in the graph (embedded).
    pub tombstones: u64,
    /// Committed writes (embedded).
    pub index_version: Option<u64>,
    /// RAG abstention bound that applies.
    pub rag_min_score: f32,
    /// Graph settings.
    pub hnsw: HnswSettings,
    /// The analyzer of the collection's lexical (BM25) index; none when it has none (a Qdrant
    /// collection made before lexical search existed: rebuild it).
    pub lexical_index: Option<String>,
    /// Mode of text queries that name none.
    pub search_mode: Mode,
    /// Fusion settings that apply to hybrid searches.
    pub fusion: FusionSettings,
}

/// An item to upsert; the server embeds its text and/or image.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertItem {
    /// Unique id (replaces an existing item with this id).
    #[schema(min_length = 1, max_length = 512)]
    pub id: String,
    /// Text (caption or report) to embed and store.
    #[serde(default)]
    #[schema(value_type = Option<NonBlank>)]
    pub text: Option<String>,
    /// Image to embed (not stored; see `image_uri`).
    #[serde(default)]
    #[schema(value_type = Option<Image>)]
    pub image: Option<ImageData>,
    /// Reference stored with the item and returned in hits (path or URL of the image).
    #[serde(default)]
    pub image_uri: Option<String>,
    /// Filterable metadata.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Map<String, Value>,
    /// Precomputed vectors (embedded elsewhere with the served model), used instead of embedding
    /// `text` / `image`: `vectors.text` makes `text` stored only; `vectors.image` replaces
    /// `image`, which must then be absent.
    #[serde(default)]
    pub vectors: Option<ItemVectors>,
}

/// How texts are split into passages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChunkMode {
    /// Token windows with overlap.
    Tokens,
    /// Report sections at their headings (`FINDINGS:`, `IMPRESSION:` …), then token windows.
    Sections,
}

impl From<ChunkMode> for mirage_index::passages::Chunking {
    fn from(m: ChunkMode) -> Self {
        match m {
            ChunkMode::Tokens => Self::Tokens,
            ChunkMode::Sections => Self::Sections,
        }
    }
}

/// Splitting of long texts into passages: each passage becomes the item `ID#0`, `ID#1`, …
/// with the payload key `passage` = `{parent, index, count, section, start, end}`; a new version
/// of a document removes its earlier passages.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkingSettings {
    /// `tokens` or `sections`.
    pub mode: ChunkMode,
    /// Content tokens per passage, 1 to the model's limit less its special tokens (the
    /// default).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub tokens: Option<usize>,
    /// Tokens consecutive passages share (default: an eighth of the window). Must be below
    /// `tokens`, or below the default window when `tokens` is left out: a rule between two
    /// fields that JSON Schema cannot state, refused with 422 `invalid-request`.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub overlap: Option<usize>,
}

/// Precomputed vectors of an item: at least one of `text`, `image`, each `embed_dim`
/// (`GET /info`) numbers, not all zero (normalised by the server).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemVectors {
    /// Text (caption/report) vector.
    #[serde(default)]
    pub text: Option<Vec<f64>>,
    /// Image vector.
    #[serde(default)]
    pub image: Option<Vec<f64>>,
}

/// `POST /v1/collections/{name}/items`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertRequest {
    /// Items, with distinct ids; at most `max_inputs_per_request` (`GET /info`).
    #[schema(min_items = 1, max_items = 256)]
    pub items: Vec<UpsertItem>,
    /// Split texts into passages. Without it, a text longer than the model's limit is embedded
    /// up to the limit and reported (`truncated`).
    #[serde(default, deserialize_with = "object_only")]
    pub chunking: Option<ChunkingSettings>,
    /// Frame of multi-frame DICOM images.
    #[serde(default)]
    #[schema(maximum = 65535)]
    pub frame: u16,
}

/// Response of an upsert (sent once the write is durable).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UpsertResponse {
    /// Items of the request written.
    pub upserted: usize,
    /// Items stored: one per unsplit item, one per passage of a split one.
    pub items_written: usize,
    /// Items whose text was longer than the model's limit and was embedded only up to it.
    pub truncated: usize,
    /// Collection version after the write.
    pub index_version: Option<u64>,
    /// Each item of the request, in order.
    pub items: Vec<UpsertedItem>,
}

/// What became of one item of an upsert.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UpsertedItem {
    /// Its id.
    pub id: String,
    /// Passages its text was split into (with `chunking`; absent for an item without text).
    pub passages: Option<usize>,
    /// Its text was cut at the model's token limit (without `chunking`).
    pub truncated: bool,
}

/// `DELETE /v1/collections/{name}/items`: exactly one of `ids` / `filter`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteItemsRequest {
    /// Ids to delete.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 10000)]
    pub ids: Option<Vec<String>>,
    /// Delete every item matching this filter.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
}

/// A snapshot archive in the server's snapshot folder: the collection's name, a dash, the
/// millisecond it was taken, `.mirage-snapshot.tar`.
#[derive(ToSchema)]
#[schema(
    pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,179}\.mirage-snapshot\.tar$",
    example = "reports-1765065600000.mirage-snapshot.tar"
)]
pub struct SnapshotName(pub String);

/// A snapshot archive the server holds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotResponse {
    /// File name in the server's snapshot folder (`GET /v1/snapshots/{snapshot}` downloads it).
    #[schema(value_type = SnapshotName)]
    pub name: String,
    /// `embedded` or `qdrant`: the store it restores into.
    pub store: String,
    /// The collection it was taken of.
    #[schema(value_type = CollectionName)]
    pub collection: String,
    /// Model id of the bundle its vectors come from.
    pub model_id: String,
    /// sha256 of that bundle.
    pub bundle_sha256: String,
    /// Items it holds.
    pub items: u64,
    /// The collection's version it holds (embedded collections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_version: Option<u64>,
    /// Archive size in bytes.
    pub size_bytes: u64,
    /// sha256 of the whole archive, when the server computed it (a new snapshot); a listing
    /// reads only the manifests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Seconds since the Unix epoch when it was taken.
    pub created_unix: u64,
}

/// `GET /v1/snapshots`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    /// Newest first.
    pub snapshots: Vec<SnapshotResponse>,
    /// Files in the snapshot folder that are not readable archives, with the reason.
    pub unreadable: Vec<String>,
}

/// `POST /v1/snapshots/{snapshot}/restore`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Collection name to restore as (default: the name it was taken under). An existing
    /// collection is never replaced (409).
    #[serde(default, rename = "as")]
    #[schema(value_type = Option<CollectionName>)]
    pub as_name: Option<String>,
}

/// Response of a delete.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeleteResponse {
    /// Items deleted.
    pub deleted: u64,
}

/// `GET /health`, `GET /ready`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `pass`, or on `/ready` `warn` when a store other than the default one is down.
    pub status: String,
    /// Served model id.
    pub model_id: String,
    /// On `/ready`: each store and whether it answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreHealth>,
}

/// One store as `/ready` found it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StoreHealth {
    /// `embedded` or `qdrant`.
    pub store: String,
    /// Whether it is the default store (the server is not ready while that one is down).
    pub default: bool,
    /// `pass` or `fail`.
    pub status: String,
    /// What answered (e.g. `qdrant 1.18.3`), or why it is down.
    pub detail: String,
}

/// Limits a client should respect.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    /// Largest body in bytes.
    pub max_body_bytes: usize,
    /// Most inputs (texts, images, items, pairs) per request.
    pub max_inputs_per_request: usize,
    /// Inference queue capacity in items.
    pub max_queue_items: usize,
    /// Items per forward pass.
    pub batch_size: usize,
    /// Request timeout.
    pub request_timeout_secs: u64,
    /// Largest image side in pixels.
    pub max_image_side: u32,
}

/// `GET /info`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InfoResponse {
    /// Server version.
    pub version: String,
    /// Model id.
    pub model_id: String,
    /// The model's identity: sha256 of bundle.json (as it was before ONNX graphs were added).
    pub bundle_sha256: String,
    /// Joint embedding dimension.
    pub embed_dim: usize,
    /// Vision tower.
    pub vision: String,
    /// Where inference runs: `cpu` or `cuda`.
    pub device: String,
    /// The inference engine: `ort` (ONNX Runtime) or `candle`.
    pub engine: String,
    /// Engine, version, device, threads and where its graphs came from, in words.
    pub engine_detail: String,
    /// Image input side.
    pub image_size: usize,
    /// Text token limit.
    pub max_tokens: usize,
    /// Calibration temperature of zero-shot probabilities, if fitted.
    pub calibration_temperature: Option<f32>,
    /// Rows of the exported text bank (audit needs one).
    pub text_bank_size: Option<usize>,
    /// Default store.
    pub store: String,
    /// Whether a Qdrant store is offered.
    pub qdrant: bool,
    /// Whether API keys are required.
    pub auth: bool,
    /// Default RAG abstention bound.
    pub rag_min_score: f32,
    /// Default audit threshold.
    pub audit_threshold: f32,
    /// Whether `GET /v1/media` serves result thumbnails (`--media-root` is set).
    pub media: bool,
    /// The cross-encoder of `POST /v1/rerank` and the `rerank` option (`--reranker`).
    pub reranker: Option<RerankerInfo>,
    /// Every loaded model, the default (described by the fields above) first.
    pub models: Vec<ModelCard>,
    /// Whether `POST /v1/models` may load bundles (`--models-dir` is set).
    pub model_loading: bool,
    /// Limits.
    pub limits: Limits,
}

/// A loaded model (the OpenAI model object, with what a client of this server needs).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    /// The model id requests name (`model`).
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix time it was loaded.
    pub created: u64,
    /// Always `mirage`.
    pub owned_by: String,
    /// Whether requests that name no model get this one.
    pub default: bool,
    /// Its identity, which collections built with it record.
    pub bundle_sha256: String,
    /// Joint embedding dimension.
    pub embed_dim: usize,
    /// Text tower, in words (`bert-l6-h384`, `clip-l12-h512`).
    pub text: String,
    /// Vision tower, in words.
    pub vision: String,
    /// `ort` or `candle`.
    pub engine: String,
    /// Image input side.
    pub image_size: usize,
    /// Text token limit.
    pub max_tokens: usize,
    /// Rows of its text bank (audit needs one).
    pub text_bank_size: Option<usize>,
    /// Bytes of its weights and ONNX graphs on disk: roughly the memory it holds.
    pub weight_bytes: u64,
    /// Items waiting for or in its inference queue.
    pub queue_depth: usize,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The loaded models, the default first.
    pub data: Vec<ModelCard>,
}

/// `POST /v1/models`: load a bundle while the server runs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadModelRequest {
    /// The bundle directory, relative to the server's `--models-dir` (no `..`, not absolute).
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[^/].*$")]
    pub path: String,
}

/// The served cross-encoder.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RerankerInfo {
    /// Its model id (`model` of `POST /v1/rerank`).
    pub model_id: String,
    /// `ort` or `candle`.
    pub engine: String,
    /// Tokens of a query–document pair read at most.
    pub max_tokens: usize,
    /// Classifier outputs.
    pub num_labels: usize,
}
