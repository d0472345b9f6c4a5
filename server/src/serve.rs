//! `mirage serve`: load the bundle, warm the model up, bind, serve until SIGINT/SIGTERM, then
//! drain in-flight requests (bounded by `shutdown_timeout_secs`) and flush the collections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mirage_model::reranker::Reranker;
use mirage_model::{Bundle, MirageModel};

use crate::app::app;
use crate::config::{LogFormat, Settings};
use crate::infer::{Encoder, Input};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Installs the log subscriber (text or JSON on stderr).
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Loads everything and returns the state, ready to serve.
pub async fn build_state(settings: Settings) -> Result<AppState> {
    let dir = settings.bundle.clone();
    let options = settings.engine.options();
    let reranker_dir = settings.reranker.clone();
    let (model, bank, reranker) = tokio::task::spawn_blocking(move || -> Result<_> {
        let bundle =
            Bundle::open(&dir).with_context(|| format!("opening bundle {}", dir.display()))?;
        let model = MirageModel::load(&bundle, &options)?;
        let bank = bundle.text_bank(model.device())?;
        let reranker = reranker_dir
            .map(|d| {
                Reranker::open(&d, &options)
                    .with_context(|| format!("loading reranker {}", d.display()))
            })
            .transpose()?;
        Ok((model, bank, reranker))
    })
    .await??;
    let metrics = Arc::new(Metrics::default());
    let encoder = Encoder::start(
        Arc::new(model),
        settings.batch_size,
        settings.max_queue_items,
        metrics.clone(),
    );
    let state = AppState::new(settings, encoder, bank, reranker, metrics)?;
    // One forward pass through each tower before declaring readiness, so the first user
    // request does not pay for lazy initialisation and a broken model fails here, not later.
    let s = state.encoder.model().config().preprocess.image_size;
    state
        .encoder
        .embed(vec![
            Input::Text("warm-up".into()),
            Input::Pixels(vec![0.0; 3 * s * s]),
        ])
        .await
        .map_err(|e| anyhow::anyhow!("model warm-up failed: {}", e.detail))?;
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
    tracing::info!(%local, model_id = %state.model_ref.model_id, "listening");
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
