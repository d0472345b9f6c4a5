//! Inference towers in candle.

mod dense;
pub mod text;
pub mod vision;
