//! Trace export: a minimal OTLP/HTTP collector in the test receives the server's spans, which
//! continue the caller's W3C trace and carry the request id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::json;

use crate::http::harness::*;

#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attrs: HashMap<String, String>,
    service: String,
}

type Received = Arc<Mutex<Vec<Span>>>;

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// An OTLP/HTTP receiver of protobuf trace exports on 127.0.0.1; returns its base URL.
async fn collector(received: Received) -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                let mut got = received.lock().unwrap();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .map(|a| text(a.value.as_ref()))
                        .unwrap_or_default();
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        got.push(Span {
                            name: span.name,
                            trace: hex::encode(&span.trace_id),
                            id: hex::encode(&span.span_id),
                            parent: hex::encode(&span.parent_span_id),
                            attrs: span
                                .attributes
                                .iter()
                                .map(|a| (a.key.clone(), text(a.value.as_ref())))
                                .collect(),
                            service: service.clone(),
                        });
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_inference_and_store_spans_reach_an_otlp_collector_in_the_callers_trace() {
    let received: Received = Arc::default();
    let endpoint = collector(received.clone()).await;
    let crate::http::Scratch { dir, bundle, .. } = crate::http::scratch(false);
    let server = Server::start(
        &bundle,
        &dir.path().join("work"),
        &["--otlp-endpoint", &endpoint],
    );
    let api = server.api.clone();
    api.put("/v1/collections/{name}", "/v1/collections/t", &json!({}))
        .await
        .expect(201);
    api.post(
        "/v1/collections/{name}/items",
        "/v1/collections/t/items",
        &json!({"items": [{"id": "a", "text": "pleural effusion"}, {"id": "b", "text": "normal chest"}]}),
    )
    .await
    .expect(200);
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let req = api
        .request(reqwest::Method::POST, "/v1/search")
        .header("x-request-id", "trace-me-1")
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(
            &json!({"collection": "t", "query": {"text": "effusion"}, "mode": "dense", "limit": 2}),
        );
    api.send("POST", "/v1/search", req).await.expect(200);
    // A failing request is marked as one.
    api.post(
        "/v1/search",
        "/v1/search",
        &json!({"collection": "missing", "query": {"text": "x"}}),
    )
    .await
    .expect(404);
    // The last spans leave at shutdown.
    assert!(server.terminate().success());
    let spans = received.lock().unwrap().clone();
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);

    let search = named("POST /v1/search")
        .find(|s| s.attrs.get("request_id").map(String::as_str) == Some("trace-me-1"))
        .unwrap_or_else(|| panic!("no search request span in {spans:#?}"));
    assert_eq!(search.trace, trace, "the caller's trace continues");
    assert_eq!(search.parent, caller);
    assert_eq!(search.service, "mirage");
    assert_eq!(search.attrs["http.route"], "/v1/search");
    assert_eq!(search.attrs["http.response.status_code"], "200");
    assert_eq!(search.attrs["http.request.method"], "POST");

    let in_search = |name: &'static str| {
        named(name)
            .find(|s| s.trace == trace)
            .unwrap_or_else(|| panic!("no {name} span in the search's trace: {spans:#?}"))
            .clone()
    };
    let queue = in_search("inference.queue");
    assert_eq!(queue.parent, search.id);
    assert_eq!(queue.attrs["items"], "1");
    let batch = in_search("inference.batch");
    assert_eq!(batch.parent, queue.id);
    let store = in_search("store.search");
    assert_eq!(store.attrs["collection"], "t");
    assert_eq!(store.attrs["store"], "embedded");

    // The write's trace: request, embedding, durable upsert.
    let upsert = named("POST /v1/collections/{name}/items").next().unwrap();
    assert!(named("store.upsert").any(|s| s.trace == upsert.trace));
    let missing = named("POST /v1/search")
        .find(|s| s.attrs["http.response.status_code"] == "404")
        .unwrap();
    assert!(missing.attrs.contains_key("request_id"));
}

#[test]
fn a_bad_otlp_endpoint_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args([
            "serve",
            "--bundle",
            "unused",
            "--otlp-endpoint",
            "collector:4318",
        ])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("otlp_endpoint") && err.contains("http(s) URL"),
        "{err}"
    );
}
