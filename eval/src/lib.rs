//! # mirage-eval
//!
//! The metrics MIRAGE is judged by — Recall@K in both retrieval directions, AUC of the matching
//! score for injected-noise detection, zero-shot and kNN accuracy, expected calibration error —
//! as plain functions over scores, the synthetic-noise plan, and PNG line plots. Shared by the
//! trainer's validation and by `mirage eval`, so both corrupt and report the same way.
#![warn(missing_docs)]

pub mod metrics;
pub mod noise;
pub mod plot;
