use mirage_index::{
    CollectionConfig, EmbeddedCollection, Filter, Item, ModelRef, SearchMode, SearchRequest,
    VectorName,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::{Map, Value};

pub(crate) fn model_ref() -> ModelRef {
    ModelRef {
        model_id: "test-model".into(),
        sha256: "00".repeat(32),
    }
}

pub(crate) fn config(dim: usize) -> CollectionConfig {
    CollectionConfig::new(dim, model_ref())
}

pub(crate) fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// `n` seeded unit vectors of dimension `dim` (isotropic Gaussian directions: the hardest case
/// for a graph index, as no cluster structure helps it).
pub(crate) fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    (0..n)
        .map(|_| unit((0..dim).map(|_| normal.sample(&mut rng)).collect()))
        .collect()
}

pub(crate) fn payload(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

pub(crate) fn text_item(id: &str, v: Vec<f32>, p: Value) -> Item {
    Item {
        id: id.into(),
        text: Some(format!("report {id}")),
        image: None,
        payload: payload(p),
        text_vector: Some(v),
        image_vector: None,
    }
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Exact top-k ids by inner product among `(id, vector)` pairs passing `keep`.
pub(crate) fn brute_force<'a>(
    query: &[f32],
    items: impl Iterator<Item = (&'a str, &'a [f32])>,
    k: usize,
) -> Vec<(String, f32)> {
    let mut scored: Vec<(String, f32)> = items
        .map(|(id, v)| (id.to_string(), dot(query, v)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The top 10 (id, score) of a text-vector search of `c`, with an optional filter.
pub(crate) fn search(
    c: &EmbeddedCollection,
    q: &[f32],
    filter: Option<&Filter>,
    mode: SearchMode,
) -> Vec<(String, f32)> {
    let mut r = SearchRequest::new(q.to_vec(), VectorName::Text, 10);
    r.filter = filter.cloned();
    r.mode = mode;
    c.search(&r)
        .unwrap()
        .into_iter()
        .map(|h| (h.id, h.score))
        .collect()
}
