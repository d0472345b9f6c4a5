//! Encode throughput of both engines, the Rust half of `scripts/bench-encode.sh`.
//!
//! `cargo run --release -p mirage-model --example bench_encode -- MINILM_DIR GOLDEN_JSON OUT_DIR THREADS`
//!
//! Builds a MiniLM + ResNet-50 (attention pooling, 224 px, seeded) bundle with its ONNX graphs in
//! `OUT_DIR/bundle` (unless one is there already: `scripts/bench-clip.sh` puts an imported CLIP
//! there), writes the exact inputs to `OUT_DIR/inputs.json` (so the Python references
//! run on the same texts and graph files), and prints one JSON object: for `ort` and `candle`,
//! items/s per workload. Workloads: MiniLM on short sentences (≤ 32 tokens) and on whole reports
//! (≥ 100 tokens, truncated at 256) at batch 1, 8, 32; ResNet-50 at batch 1 and 8.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use mirage_model::config::{ResNetConfig, TextPooling, VisionPooling, VisionTower};
use mirage_model::import::{import_hf, ImportOptions};
use mirage_model::{add_onnx, EngineChoice, EngineOptions, MirageModel};

/// Runs `f` once to warm up, then until `min_time` has passed (at least 3 times); items/s.
fn measure(items: usize, min_time: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut runs = 0usize;
    while runs < 3 || start.elapsed() < min_time {
        f();
        runs += 1;
    }
    (runs * items) as f64 / start.elapsed().as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, minilm, golden, out, threads] = args.as_slice() else {
        anyhow::bail!("usage: bench_encode MINILM_DIR GOLDEN_JSON OUT_DIR THREADS");
    };
    let threads: usize = threads.parse()?;
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden)?)?;
    let items = golden["items"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("golden file has no items"))?;
    let pick = |keep: &dyn Fn(u64) -> bool| -> Vec<String> {
        items
            .iter()
            .filter(|i| i["tokens"].as_u64().is_some_and(keep))
            .filter_map(|i| i["text"].as_str().map(str::to_owned))
            .collect()
    };
    let short = pick(&|t| t <= 32);
    let reports = pick(&|t| t >= 100);
    let out = std::path::PathBuf::from(out);
    let bundle = out.join("bundle");
    std::fs::create_dir_all(&out)?;
    // Later rounds of the benchmark reuse the bundle (and so the exact graph files).
    if !bundle.join("bundle.json").is_file() {
        write_bench_bundle(minilm, &bundle)?;
    }
    std::fs::write(
        out.join("inputs.json"),
        serde_json::to_vec(&serde_json::json!({"short": short, "reports": reports}))?,
    )?;
    let min_time = Duration::from_secs(3);
    let mut result = serde_json::Map::new();
    // BENCH_ENGINES=ort (or candle) measures one engine only, for quick comparisons.
    let only = std::env::var("BENCH_ENGINES").unwrap_or_default();
    for engine in [EngineChoice::Ort, EngineChoice::Candle] {
        if !only.is_empty() && !only.contains(&format!("{engine:?}").to_lowercase()) {
            continue;
        }
        let options = EngineOptions {
            engine,
            threads,
            ort_library: std::env::var_os("ORT_DYLIB_PATH").map(Into::into),
            assets: std::env::var_os("MIRAGE_ASSETS")
                .map(Into::into)
                .or_else(|| {
                    std::env::var_os("MIRAGE_CACHE")
                        .map(|c| std::path::PathBuf::from(c).join("assets"))
                }),
            ..EngineOptions::default()
        };
        let model = MirageModel::open(&bundle, &options)?;
        eprintln!("{}", model.engine_description());
        let mut rates = serde_json::Map::new();
        // BENCH_IMAGES_ONLY=1 skips the text workloads (quick A/B runs of the vision graph).
        let texts_too = std::env::var_os("BENCH_IMAGES_ONLY").is_none();
        for (name, texts) in [("short", &short), ("reports", &reports)] {
            if !texts_too {
                break;
            }
            for batch in [1usize, 8, 32] {
                let mut cursor = 0usize;
                let rate = measure(batch, min_time, || {
                    let chunk: Vec<&str> = (0..batch)
                        .map(|i| texts[(cursor + i) % texts.len()].as_str())
                        .collect();
                    cursor += batch;
                    model.embed_texts(&chunk).expect("embed");
                });
                rates.insert(format!("text_{name}_b{batch}"), rate.into());
            }
        }
        let size = model.config().preprocess.image_size;
        for batch in [1usize, 8] {
            let pixels = Tensor::randn(0f32, 1.0, (batch * 3 * size * size,), &Device::Cpu)?
                .to_vec1::<f32>()?;
            let rate = measure(batch, min_time, || {
                model
                    .embed_pixel_batch(&pixels, batch)
                    .expect("embed images");
            });
            rates.insert(format!("image_b{batch}"), rate.into());
        }
        result.insert(model.engine().as_str().into(), rates.into());
    }
    println!("{}", serde_json::Value::Object(result));
    Ok(())
}

/// MiniLM with a seeded ResNet-50 attention-pool tower, with its ONNX graphs.
fn write_bench_bundle(minilm: &str, bundle: &std::path::Path) -> anyhow::Result<()> {
    import_hf(
        &ImportOptions {
            text_dir: minilm.into(),
            vision_weights: None,
            vision: VisionTower::Resnet(ResNetConfig::standard(50, VisionPooling::Attention)?),
            embed_dim: None,
            pooling: TextPooling::Mean,
            max_length: None,
            query_text_dir: None,
            query_max_length: None,
            seed: 0,
            model_id: "bench".into(),
        },
        bundle,
    )?;
    add_onnx(bundle)?;
    Ok(())
}
