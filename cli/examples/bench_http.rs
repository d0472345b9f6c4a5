//! HTTP overhead benchmark: throughput and p50/p99 latency of `POST /v1/search` (text query) and
//! `POST /v1/embeddings` over real HTTP on loopback, next to the same work called in-process on
//! the same state (same encoder queue, same collection), at each concurrency, in one run.
//!
//!   cargo run --release -p mirage-cli --example bench_http -- BUNDLE REPORTS_DIR WORK_DIR \
//!       [--seconds 30] [--concurrency 16,64] [--store SPEC] [--create JSON] [--search-only]
//!
//! `--store` puts the collection in another store (e.g. `qdrant:http://127.0.0.1:6334`),
//! `--create` is the body of its `PUT /v1/collections/reports` (e.g. shards and replicas), and
//! `--search-only` measures only `/v1/search` over HTTP (`scripts/bench-stores.sh` compares
//! stores that way).
//!
//! BUNDLE `tiny` writes a tiny seeded bundle instead, so inference is nearly free and what is left
//! is the cost of HTTP, JSON and the queue. `scripts/bench-http.sh` runs both, on the radlabels
//! reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mirage_index::{SearchRequest, VectorName};
use mirage_server::config::Settings;
use mirage_server::infer::Input;
use mirage_server::state::AppState;
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Endpoint {
    Search,
    Embeddings,
}

#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

impl Run {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i].as_secs_f64() * 1e3
    }
}

async fn load<F, Fut>(concurrency: usize, seconds: u64, work: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let work = Arc::new(work);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut i = worker;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = work(i).await;
                if ok {
                    run.latencies.push(t.elapsed());
                } else {
                    run.errors += 1;
                }
                i += concurrency;
            }
            run
        }));
    }
    let mut total = Run::default();
    for t in tasks {
        let r = t.await.expect("load task");
        total.latencies.extend(r.latencies);
        total.errors += r.errors;
    }
    total.elapsed = start.elapsed();
    total
}

fn queries(reports: &[String]) -> Vec<String> {
    // The findings sentence of each report: what a clinician would type or an MLLM would ask.
    reports
        .iter()
        .filter_map(|r| {
            let f = r.split("FINDINGS:").nth(1)?;
            let s = f.split('.').next()?.trim();
            (!s.is_empty()).then(|| s.to_owned())
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: bench_http BUNDLE REPORTS_DIR WORK_DIR [--seconds 30] [--concurrency 16,64]");
    }
    let (bundle, reports_dir, work) = (
        PathBuf::from(&args[0]),
        PathBuf::from(&args[1]),
        PathBuf::from(&args[2]),
    );
    let mut seconds = 30u64;
    let mut concurrency = vec![16usize, 64];
    let mut store = format!("embedded:{}", work.join("indexes").display());
    let mut create = json!({});
    let mut search_only = false;
    let mut it = args[3..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = it.next().context("--seconds N")?.parse()?,
            "--store" => store = it.next().context("--store SPEC")?.clone(),
            "--create" => create = serde_json::from_str(it.next().context("--create JSON")?)?,
            "--search-only" => search_only = true,
            "--concurrency" => {
                concurrency = it
                    .next()
                    .context("--concurrency A,B")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let bundle = if bundle.as_os_str() == "tiny" {
        let dir = work.join("tiny-bundle");
        mirage_model::testing::write_tiny_bundle(
            &dir,
            mirage_model::testing::TinyVision::ResNetMean,
            16,
            1,
        )?;
        dir
    } else {
        bundle
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&reports_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    let reports: Vec<String> = paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .map(std::fs::read_to_string)
        .collect::<Result<_, _>>()?;
    let queries = Arc::new(queries(&reports));
    eprintln!("{} reports, {} queries", reports.len(), queries.len());

    let max_c = concurrency.iter().copied().max().unwrap_or(1);
    let mut settings = Settings {
        bundle: vec![bundle.clone()],
        port: 0,
        store,
        data_dir: work.join("data"),
        // Large enough that the benchmark measures latency, not admission control.
        max_queue_items: 64 * max_c,
        max_inputs_per_request: 64,
        ..Settings::default()
    };
    // MIRAGE_ENGINE=candle measures the pure-Rust engine instead.
    if let Ok(engine) = std::env::var("MIRAGE_ENGINE") {
        settings.engine.engine = engine.parse()?;
    }
    let state: AppState = mirage_server::serve::build_state(settings).await?;
    eprintln!(
        "engine: {}",
        state.models.default_model().model().engine_description()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = mirage_server::app::app(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(max_c)
        .build()?;

    // Index the reports through the API.
    let t = Instant::now();
    let r = http
        .put(format!("{base}/v1/collections/reports"))
        .json(&create)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("create: {}", r.text().await?);
    }
    for (chunk_i, chunk) in reports.chunks(64).enumerate() {
        let items: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, text)| json!({"id": format!("r{}", chunk_i * 64 + i), "text": text}))
            .collect();
        let r = http
            .post(format!("{base}/v1/collections/reports/items"))
            .json(&json!({"items": items}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("upsert: {}", r.text().await?);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::fs::write(
        work.join("indexing.json"),
        serde_json::to_vec_pretty(&json!({
            "items": reports.len(), "seconds": secs, "items_per_second": reports.len() as f64 / secs,
        }))?,
    )?;
    eprintln!(
        "indexed {} reports in {secs:.1} s ({:.1} items/s through POST /v1/collections/reports/items)",
        reports.len(),
        reports.len() as f64 / secs
    );
    let collection = state
        .collection("reports")
        .await
        .map_err(|e| anyhow::anyhow!(e.detail))?;

    println!(
        "| endpoint | concurrency | path | requests | errors | req/s | p50 ms | p99 ms | in-process/HTTP req/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut report = Vec::new();
    let endpoints: &[Endpoint] = if search_only {
        &[Endpoint::Search]
    } else {
        &[Endpoint::Search, Endpoint::Embeddings]
    };
    for &endpoint in endpoints {
        for &c in &concurrency {
            let (q, client, b) = (queries.clone(), http.clone(), base.clone());
            let over_http = load(c, seconds, move |i| {
                let (q, client, b) = (q.clone(), client.clone(), b.clone());
                async move {
                    let text = &q[i % q.len()];
                    let req = match endpoint {
                        Endpoint::Search => client.post(format!("{b}/v1/search")).json(
                            &json!({"collection": "reports", "query": {"text": text}, "limit": 10}),
                        ),
                        Endpoint::Embeddings => client
                            .post(format!("{b}/v1/embeddings"))
                            .json(&json!({"input": text})),
                    };
                    match req.send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await;
            let (q, st, coll) = (queries.clone(), state.clone(), collection.clone());
            let in_process = if search_only {
                Run::default()
            } else {
                load(c, seconds, move |i| {
                    let (q, st, coll) = (q.clone(), st.clone(), coll.clone());
                    async move {
                        let text = q[i % q.len()].clone();
                        let Ok(mut v) = st
                            .models
                            .default_model()
                            .encoder
                            .embed(vec![Input::Text(text)])
                            .await
                        else {
                            return false;
                        };
                        match endpoint {
                            Endpoint::Search => {
                                let req = SearchRequest::new(
                                    v.pop().unwrap_or_default(),
                                    VectorName::Text,
                                    10,
                                );
                                coll.search(req).await.is_ok()
                            }
                            Endpoint::Embeddings => !v.is_empty(),
                        }
                    }
                })
                .await
            };
            let ratio = in_process.rps() / over_http.rps();
            let paths: &[(&str, &Run)] = if search_only {
                &[("HTTP", &over_http)]
            } else {
                &[("HTTP", &over_http), ("in-process", &in_process)]
            };
            for &(name, r) in paths {
                println!(
                    "| {endpoint:?} | {c} | {name} | {} | {} | {:.1} | {:.2} | {:.2} | {} |",
                    r.latencies.len(),
                    r.errors,
                    r.rps(),
                    r.pct(0.5),
                    r.pct(0.99),
                    if name == "HTTP" && !search_only {
                        format!("{ratio:.3}")
                    } else {
                        String::new()
                    }
                );
            }
            report.push(json!({
                "endpoint": format!("{endpoint:?}"), "concurrency": c, "seconds": seconds,
                "http": {"requests": over_http.latencies.len(), "errors": over_http.errors, "rps": over_http.rps(), "p50_ms": over_http.pct(0.5), "p99_ms": over_http.pct(0.99)},
                "in_process": {"requests": in_process.latencies.len(), "errors": in_process.errors, "rps": in_process.rps(), "p50_ms": in_process.pct(0.5), "p99_ms": in_process.pct(0.99)},
                "in_process_over_http_rps": ratio,
            }));
            if over_http.errors > 0 || in_process.errors > 0 {
                eprintln!("warning: errors during the {endpoint:?} c={c} run");
            }
        }
    }
    std::fs::write(
        work.join("bench-http.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    eprintln!("wrote {}", work.join("bench-http.json").display());
    Ok(())
}
