//! The model crate's integration tests, one test binary: bundles, DICOM, the engines, PyTorch
//! parity, zero-shot and image input.

mod bundle;
mod common;
mod dicom;
mod dicom_synthetic;
mod engines;
mod parity;
mod zeroshot_and_images;
