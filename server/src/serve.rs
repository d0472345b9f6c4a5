//! `mirage serve`: load the bundles, warm each model up, bind, serve until SIGINT/SIGTERM, then
//! drain in-flight requests (bounded by `shutdown_timeout_secs`) and flush the collections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mirage_model::reranker::Reranker;

use crate::app::app;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::models::ServedModel;
use crate::state::AppState;

/// Loads everything and returns the state, ready to serve.
pub async fn build_state(settings: Settings) -> Result<AppState> {
    let metrics = Arc::new(Metrics::default());
    let mut served = Vec::new();
    for dir in &settings.bundle {
        served.push(ServedModel::load(dir, &settings, metrics.clone()).await?);
    }
    let options = settings.engine.options();
    let reranker = match settings.reranker.clone() {
        Some(d) => Some(
            tokio::task::spawn_blocking(move || {
                Reranker::open(&d, &options)
                    .with_context(|| format!("loading reranker {}", d.display()))
            })
            .await??,
        ),
        None => None,
    };
    let state = AppState::new(settings, served, reranker, metrics)?;
    state.set_ready(true);
    Ok(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Serves until a shutdown signal; `on_bound` learns the bound address (port 0 → real port).
pub async fn run(settings: Settings, on_bound: impl FnOnce(SocketAddr)) -> Result<()> {
    tracing::info!(settings = %serde_json::to_string(&settings)?, "effective settings");
    let drain = Duration::from_secs(settings.shutdown_timeout_secs);
    let addr = format!("{}:{}", settings.host, settings.port);
    let state = build_state(settings).await?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let models: Vec<String> = state
        .models
        .all()
        .iter()
        .map(|m| m.model_ref.model_id.clone())
        .collect();
    tracing::info!(%local, models = ?models, "listening");
    on_bound(local);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let signal_state = state.clone();
    let graceful = async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested: draining in-flight requests");
        signal_state.set_ready(false);
        let _ = signalled_tx.send(());
    };
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(graceful);
    let deadline = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server => r.context("serving")?,
        () = deadline => tracing::warn!(seconds = drain.as_secs(), "drain timed out; closing remaining connections"),
    }
    for (name, c) in state.open_collections().await {
        if let Err(e) = c.flush().await {
            tracing::warn!(collection = %name, error = %e, "flush at shutdown failed (the data is safe in the database; the graph is rebuilt on open)");
        }
    }
    tracing::info!("stopped");
    Ok(())
}
