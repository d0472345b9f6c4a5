//! Integration tests of mirage-index: one binary (link once), one module per area.

mod common;
mod persistence;
mod pipeline;
mod recall;
mod semantics;
