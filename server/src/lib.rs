//! # mirage-server
//!
//! The HTTP product of MIRAGE-RS: an axum service for zero-shot classification, cross-modal
//! retrieval, MM-RAG context and caption audit over a MIRAGE bundle and its collections.
//! [`app::app`] builds the router from an [`state::AppState`] without binding anything;
//! [`serve::run`] loads, binds and serves with graceful shutdown.
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod config;
pub mod dto;
pub mod error;
pub mod extract;
pub mod infer;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod state;
pub mod telemetry;
