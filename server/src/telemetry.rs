//! Logs and traces. Logs go to stderr (text or JSON). With an OTLP endpoint, every span —
//! requests, inference-queue waits and batches, store calls — is also exported over OTLP/HTTP
//! (protobuf) to a collector (the OpenTelemetry Collector, Jaeger, Tempo, …), and a request
//! carrying a W3C `traceparent` header continues the caller's trace.

use anyhow::{Context, Result};
use axum::http::HeaderMap;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogFormat;

/// The service name spans carry unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "mirage";

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "dropping it without shutdown loses the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the buffered spans and stops the exporter. Call it outside any async runtime:
    /// the exporter's HTTP client blocks.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: exporting the last spans failed: {e}");
            }
        }
    }
}

/// The traces URL of an OTLP/HTTP endpoint: a base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT` gives
/// one, e.g. `http://collector:4318`) gets the signal path `/v1/traces`; a URL that already ends
/// in it is used as it is.
pub fn traces_url(endpoint: &str) -> Result<String> {
    let base = endpoint.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        anyhow::bail!(
            "the OTLP endpoint {endpoint:?} must be an http(s) URL of an OTLP/HTTP receiver, e.g. http://localhost:4318"
        );
    }
    Ok(if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    })
}

/// Installs the log subscriber and, with `otlp` (an OTLP/HTTP endpoint), the trace exporter.
/// Call it before starting an async runtime.
pub fn init(filter: &str, format: LogFormat, otlp: Option<&str>) -> Result<Telemetry> {
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (traces, provider) = match otlp {
        Some(endpoint) => {
            let url = traces_url(endpoint)?;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url.clone())
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
                .with_context(|| format!("the OTLP exporter for {url}"))?;
            let service =
                std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| SERVICE_NAME.to_owned());
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service)
                        .with_attribute(opentelemetry::KeyValue::new(
                            "service.version",
                            env!("CARGO_PKG_VERSION"),
                        ))
                        .build(),
                )
                .build();
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            // Spans go to the collector whatever the log filter says (MIRAGE_LOG=warn must not
            // silence traces); ONNX Runtime's session-building events would only be noise there.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE_NAME))
                .with_filter(tracing_subscriber::EnvFilter::new("info,ort=warn"));
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    // Another subscriber may already be installed (tests run servers in one process).
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(tracing_subscriber::EnvFilter::new(filter)))
        .with(traces)
        .try_init();
    Ok(Telemetry { provider })
}

/// Reads W3C trace context from request headers.
struct Headers<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` continue the trace named by the request's `traceparent` header, if any (a no-op
/// unless the exporter is on).
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if headers.contains_key("traceparent") {
        let parent =
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
        span.set_parent(parent);
    }
}
