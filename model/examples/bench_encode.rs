//! Encode throughput of the candle towers, the Rust half of `scripts/bench-encode.sh`.
//!
//! `cargo run --release -p mirage-model --example bench_encode -- MINILM_DIR GOLDEN_JSON`
//! prints one JSON object: sentences/s for MiniLM at batch 1, 8, 32 and images/s for ResNet-50
//! (attention pooling, 224 px) at batch 8. Thread count: `RAYON_NUM_THREADS`.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use mirage_model::config::{ResNetConfig, TextPooling, VisionPooling, VisionTower};
use mirage_model::import::{import_hf, ImportOptions};
use mirage_model::MirageModel;

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
    let (minilm, golden) = match args.as_slice() {
        [_, m, g] => (m.clone(), g.clone()),
        _ => anyhow::bail!("usage: bench_encode MINILM_DIR GOLDEN_JSON"),
    };
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden)?)?;
    let texts: Vec<String> = golden["items"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("golden file has no items"))?
        .iter()
        .filter_map(|i| i["text"].as_str().map(str::to_owned))
        .collect();
    let dir = tempfile::tempdir()?;
    import_hf(
        &ImportOptions {
            text_dir: minilm.into(),
            vision_weights: None,
            vision: VisionTower::Resnet(ResNetConfig::standard(50, VisionPooling::Attention)?),
            embed_dim: None,
            pooling: TextPooling::Mean,
            max_length: None,
            seed: 0,
            model_id: "bench".into(),
        },
        dir.path(),
    )?;
    let model = MirageModel::open_cpu(dir.path())?;
    let min_time = Duration::from_secs(3);
    let mut out = serde_json::Map::new();
    for batch in [1usize, 8, 32] {
        let mut cursor = 0usize;
        let rate = measure(batch, min_time, || {
            let chunk: Vec<&str> = (0..batch)
                .map(|i| texts[(cursor + i) % texts.len()].as_str())
                .collect();
            cursor += batch;
            model.embed_texts(&chunk).expect("embed");
        });
        out.insert(format!("text_b{batch}"), rate.into());
    }
    let pixels = Tensor::randn(0f32, 1.0, (8, 3, 224, 224), &Device::Cpu)?;
    let rate = measure(8, min_time, || {
        model.embed_pixels(&pixels).expect("embed images");
    });
    out.insert("image_b8".into(), rate.into());
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
