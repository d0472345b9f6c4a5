//! # mirage-index
//!
//! Collections of report/caption items with text and image vectors in the joint space of one
//! MIRAGE bundle: the embedding pipeline (over `mirage-data`'s corpus reader), and two stores with one semantics — the
//! embedded store (HNSW graphs + SQLite, one directory per collection) and Qdrant (feature
//! `qdrant`).
#![warn(missing_docs)]

pub mod embedded;
mod error;
pub mod filter;
mod flat;
pub mod graph;
mod hnsw;
pub mod hybrid;
pub mod lexical;
pub mod manifest;
pub mod npy;
pub mod passages;
pub mod pipeline;
#[cfg(feature = "qdrant")]
pub mod qdrant;
pub mod rag;
pub mod rerank;
pub mod snapshot;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod types;

pub use embedded::EmbeddedCollection;
pub use error::{IndexError, Result, StoreFailure};
pub use filter::Filter;
pub use graph::GraphEngine;
pub use hnsw::{BareGraph, HnswGraph};
pub use mirage_model::kernels::dot;
pub use store::{
    create_unique, drop_collection, list_collections, locate, probe, restore, Collection, StoreSpec,
};
pub use types::{
    CollectionConfig, CollectionInfo, Hit, HnswParams, Item, LegHit, Legs, LexicalRequest,
    ModelRef, Quantization, SearchMode, SearchRequest, StoredItem, VectorName,
};
