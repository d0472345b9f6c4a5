//! # mirage-trainer
//!
//! MIRAGE pre-training on libtorch (docs/METHOD.md): tch towers over `mirage-model`'s tensor names,
//! the three-term objective with the soft nearest-neighbour text from a FIFO memory queue,
//! data loading with synthetic noise, AdamW with warm-up + cosine, checkpoints with exact
//! resume, and export to a serving bundle.
#![warn(missing_docs)]

pub mod bank;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod export;
pub mod init;
pub mod loss;
pub mod optim;
pub mod probe;
pub mod towers;
pub mod train;
