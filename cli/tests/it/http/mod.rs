//! End-to-end tests of the HTTP service: the real `mirage serve` binary on 127.0.0.1:0, real
//! HTTP, real images, every response checked against the committed OpenAPI document.

mod cli_parity;
mod e2e;
mod errors;
mod fuzz;
mod harness;
mod models;
mod openapi_drift;
mod passages;
mod protection;
mod python_client;
#[cfg(feature = "qdrant")]
mod qdrant;
mod retrieval;
mod snapshots;
mod traces;
mod web_ui;

use std::path::Path;

use mirage_model::testing::{write_tiny_bundle, write_tiny_bundle_with_bank, TinyVision};

/// Captions of the tiny bundle's text bank.
pub const BANK: &[&str] = &[
    "axial brain mri",
    "chest x-ray with pneumonia",
    "normal chest radiograph",
    "ct of the abdomen",
    "coronal knee mri",
    "pleural effusion on the left",
];

/// A tiny bundle with a text bank in `dir`.
pub fn bundle_with_bank(dir: &Path) {
    write_tiny_bundle_with_bank(dir, TinyVision::ResNetAttention, 16, 7, BANK).unwrap();
}

/// A tiny randomly initialised cross-encoder imported as a reranker bundle `dir/reranker`
/// (model id `tiny-ce`); returns its path.
pub fn tiny_reranker(dir: &Path) -> std::path::PathBuf {
    let hf = dir.join("cross-encoder-hf");
    mirage_model::testing::write_tiny_cross_encoder_dir(&hf, 3).unwrap();
    let reranker = dir.join("reranker");
    mirage_model::reranker::import_cross_encoder(&hf, &reranker, Some("tiny-ce".into()), None)
        .unwrap();
    reranker
}

/// The collection name and store of a suite that runs once per store. A shared Qdrant server
/// outlives the test, so there the name gets the process id and runs never meet.
pub fn suite_collection(base: &str, qdrant: Option<&str>) -> (String, &'static str) {
    match qdrant {
        None => (base.to_owned(), "embedded"),
        Some(_) => (format!("{base}-{}", std::process::id()), "qdrant"),
    }
}

/// A tiny bundle without a bank.
pub fn bundle_without_bank(dir: &Path) {
    write_tiny_bundle(dir, TinyVision::ResNetMean, 16, 8).unwrap();
}
