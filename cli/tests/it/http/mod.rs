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

use std::path::{Path, PathBuf};

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

/// A temporary directory holding a tiny bundle (`bundle`, with the [`BANK`] text bank when asked)
/// and the path of a server's data directory (`work`).
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub bundle: PathBuf,
    pub work: PathBuf,
}

/// See [`Scratch`].
pub fn scratch(bank: bool) -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    if bank {
        bundle_with_bank(&bundle);
    } else {
        bundle_without_bank(&bundle);
    }
    let work = dir.path().join("work");
    Scratch { dir, bundle, work }
}

/// What a suite that runs once per store starts from: a temporary directory holding a tiny
/// bundle with a bank (`bundle`) and the server's data directory (`work`), and the suite's
/// collection name and store. A shared Qdrant server outlives the test, so there the name gets
/// the process id and runs never meet.
pub struct Suite {
    pub dir: tempfile::TempDir,
    pub bundle: PathBuf,
    pub work: PathBuf,
    pub name: String,
    pub store: &'static str,
    qdrant: Option<String>,
}

impl Suite {
    /// `base` names the collection; `qdrant` is the gRPC URL of the Qdrant run, if it is one.
    pub fn new(base: &str, qdrant: Option<&str>) -> Self {
        let Scratch { dir, bundle, work } = scratch(true);
        let (name, store) = match qdrant {
            None => (base.to_owned(), "embedded"),
            Some(_) => (format!("{base}-{}", std::process::id()), "qdrant"),
        };
        Self {
            dir,
            bundle,
            work,
            name,
            store,
            qdrant: qdrant.map(str::to_owned),
        }
    }

    /// `mirage serve` on the suite's bundle and data directory, with Qdrant as its second store
    /// in a Qdrant run, and `flags`.
    pub fn serve(&self, flags: &[&str]) -> harness::Server {
        let mut all = flags.to_vec();
        if let Some(url) = &self.qdrant {
            all.extend(["--qdrant-url", url]);
        }
        harness::Server::start(&self.bundle, &self.work, &all)
    }
}

/// A tiny bundle without a bank.
pub fn bundle_without_bank(dir: &Path) {
    write_tiny_bundle(dir, TinyVision::ResNetMean, 16, 8).unwrap();
}
