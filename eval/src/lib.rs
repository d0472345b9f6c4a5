//! # mirage-eval
//!
//! The metrics MIRAGE is judged by — Recall@K in both retrieval directions, AUC of the matching
//! score for injected-noise detection, zero-shot and kNN accuracy, expected calibration error —
//! as plain functions over scores ([`metrics`]), the synthetic-noise plan ([`noise`]), PNG
//! plots ([`plot`]), temperature scaling ([`calibration`]) and paired bootstrap intervals
//! ([`bootstrap`]); the evaluation of a bundle on a labelled dataset ([`runner`], behind
//! `mirage eval`, and [`runner::calibrate`] behind `mirage calibrate`), the corpus audit
//! ([`audit`], behind `mirage audit --out`) and the noise study's tables ([`study`], behind
//! `mirage study-report`); ranked-retrieval measures over BEIR benchmarks ([`retrieval`], behind
//! `mirage eval-retrieval`). The
//! trainer's validation uses the same metrics and noise plan, so both corrupt and report the same
//! way.
#![warn(missing_docs)]

pub mod audit;
pub mod bootstrap;
pub mod calibration;
pub mod metrics;
pub mod noise;
pub mod plot;
pub mod retrieval;
pub mod runner;
pub mod study;
