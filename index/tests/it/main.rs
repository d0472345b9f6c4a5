//! Integration tests of mirage-index: one binary (link once), one module per area.

mod common;
mod engine;
mod lexical;
mod passages;
mod persistence;
mod pipeline;
mod recall;
mod semantics;
mod snapshots;
