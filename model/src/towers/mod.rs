//! Inference towers in candle.

pub mod text;
pub mod vision;
