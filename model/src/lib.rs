//! # mirage-model
//!
//! What a MIRAGE embedding is and how to compute it: the model bundle (the one contract between
//! the trainer and everything else), tokenisation, image decoding (PNG, JPEG, DICOM) and
//! preprocessing, the engine seam with its two engines (ONNX Runtime over ONNX graphs written from
//! the bundle's tensors, and, with the feature `candle`, the candle towers: BERT or CLIP text
//! tower; ResNet with CLIP attention pooling or ViT vision tower), the importers of Hugging Face
//! BERT and CLIP checkpoints (feature `candle`), and zero-shot classification with prompt
//! ensembles.
#![warn(missing_docs)]

pub mod bundle;
pub mod clip_tokenizer;
pub mod config;
pub mod embeddings;
pub mod engine;
mod error;
pub mod image_input;
#[cfg(feature = "candle")]
pub mod import;
#[cfg(feature = "candle")]
pub mod import_clip;
#[cfg(feature = "candle")]
pub mod init;
pub mod kernels;
pub mod matching;
pub mod model;
pub mod names;
pub mod onnx;
pub mod reranker;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tokenize;
#[cfg(feature = "candle")]
pub mod towers;
pub mod weights;
pub mod zeroshot;

pub use bundle::{add_onnx, write_calibrated, Bundle, TextBank};
#[cfg(feature = "candle")]
pub use bundle::{write_bundle, BundleContents};
pub use embeddings::Embeddings;
pub use engine::{DeviceChoice, EngineChoice, EngineKind, EngineOptions, TextRole};
pub use error::{Error, Result};
pub use model::MirageModel;
