//! # mirage-data
//!
//! Everything that turns files on disk into image–caption pairs and report corpora, in one place
//! for the indexer, the trainer and the evaluator:
//!
//! - [`corpus`]: the corpus reader (PMC-OA, ROCO, MIMIC, JSONL) that streams records and keeps
//!   image references inside the image root;
//! - [`pairs`]: image–caption pairs for training and evaluation, read through [`corpus`] so they
//!   obey the same formats and the same containment check;
//! - [`mri_atlas`], [`digits`] and [`radlabels`]: the offline datasets behind `mirage data …`
//!   (brain-MRI slices with atlas captions; scanned handwritten digits with captions measured on
//!   the pixels; chest-radiograph reports with finding labels), the image datasets written in
//!   one layout (`splits`).
#![warn(missing_docs)]

pub mod corpus;
pub mod digits;
pub mod mri_atlas;
pub mod pairs;
pub mod radlabels;
mod splits;
