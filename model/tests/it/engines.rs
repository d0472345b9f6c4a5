//! The engine seam: ONNX Runtime over graphs written from the bundle's tensors against the candle
//! towers (and, in `parity.rs`, both against PyTorch), on every tiny architecture; batch and
//! padding invariance; `mirage model export-onnx`'s files, and every way a bundle's graphs or the
//! library can be wrong.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mirage_model::testing::{embed_pixel_tensor, write_tiny_bundle, TinyVision};
use mirage_model::{
    add_onnx, Bundle, DeviceChoice, EngineChoice, EngineKind, EngineOptions, Error, MirageModel,
};

/// The ONNX Runtime library, or `None` (skip locally, fail under CI) when it was not fetched.
fn ort_library() -> Option<PathBuf> {
    crate::common::require(
        crate::common::assets_dir().join("onnxruntime/libonnxruntime.so"),
        "scripts/fetch-assets.sh",
    )
}

fn options(engine: EngineChoice, library: Option<PathBuf>) -> EngineOptions {
    EngineOptions {
        engine,
        device: DeviceChoice::Cpu,
        threads: 2,
        ort_library: library,
        assets: None,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn assert_close(what: &str, a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len(), "{what}: row counts");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let c = cosine(x, y);
        assert!(c >= 0.9999, "{what}: row {i} cosine {c} < 0.9999");
    }
}

const TEXTS: [&str; 7] = [
    "lung",
    "a scan showing edema of the left lung",
    "brain mri",
    "pleural effusion with atelectasis and a small pneumothorax on the right",
    "x",
    "normal chest",
    "axial slice of the brain showing the hippocampus",
];

fn pixels(n: usize, size: usize, seed: u64) -> Tensor {
    let t = Tensor::randn(0f32, 1.0, (n, 3, size, size), &Device::Cpu).unwrap();
    // Different seeds give different images without a seeded RNG in candle: shift by the seed.
    (t + seed as f64 * 0.01).unwrap()
}

fn both(dir: &Path) -> Option<(MirageModel, MirageModel)> {
    let lib = ort_library()?;
    let ort = MirageModel::open(dir, &options(EngineChoice::Ort, Some(lib))).unwrap();
    let candle = MirageModel::open(dir, &options(EngineChoice::Candle, None)).unwrap();
    assert_eq!(ort.engine(), EngineKind::Ort);
    assert_eq!(candle.engine(), EngineKind::Candle);
    Some((ort, candle))
}

#[test]
fn ort_equals_candle_on_every_tiny_architecture_and_batch_size() {
    for vision in TinyVision::ALL {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bundle(dir.path(), vision, 24, 3).unwrap();
        let Some((ort, candle)) = both(dir.path()) else {
            return;
        };
        let texts: Vec<&str> = TEXTS.iter().cycle().take(32).copied().collect();
        for batch in [1usize, 7, 32] {
            let t = &texts[..batch];
            let a = ort.embed_texts(t).unwrap();
            let b = candle.embed_texts(t).unwrap();
            assert_close(&format!("{vision:?} text batch {batch}"), &a, &b);
            let px = pixels(batch, 64, batch as u64);
            let a = embed_pixel_tensor(&ort, &px).unwrap();
            let b = embed_pixel_tensor(&candle, &px).unwrap();
            assert_close(&format!("{vision:?} image batch {batch}"), &a, &b);
            for row in &a {
                let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-4, "unit norm, got {norm}");
            }
        }
    }
}

#[test]
fn batch_and_padding_never_change_a_vector() {
    // The CLIP text tower takes no padding mask (causality keeps padding away from the
    // end-of-text token), so it is checked here as well as BERT's masked attention.
    for vision in [TinyVision::ResNetAttention, TinyVision::Clip] {
        batch_and_padding_invariance(vision);
    }
}

fn batch_and_padding_invariance(vision: TinyVision) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bundle(dir.path(), vision, 24, 5).unwrap();
    let Some((ort, candle)) = both(dir.path()) else {
        return;
    };
    for model in [&ort, &candle] {
        let alone = model.embed_texts(&["lung"]).unwrap();
        // In a batch with a long text, "lung" is padded to the long text's length.
        for batch in [1usize, 7, 32] {
            let mut texts = vec!["lung"];
            texts.extend(TEXTS.iter().cycle().skip(3).take(batch - 1));
            let got = model.embed_texts(&texts).unwrap();
            assert_close(
                &format!("{:?}: padded in batch {batch}", model.engine()),
                &alone,
                &got[..1],
            );
        }
        let px = pixels(32, 64, 9);
        let all = embed_pixel_tensor(model, &px).unwrap();
        for batch in [1usize, 7] {
            let part = embed_pixel_tensor(model, &px.narrow(0, 0, batch).unwrap()).unwrap();
            assert_close(
                &format!("{:?}: image batch {batch}", model.engine()),
                &all[..batch],
                &part,
            );
        }
    }
}

#[test]
fn export_onnx_writes_verified_graphs_and_keeps_the_model_identity() {
    let Some(lib) = ort_library() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let before = write_tiny_bundle(dir.path(), TinyVision::Vit, 24, 11).unwrap();
    let identity = before.sha256().to_owned();
    let built_at_load =
        MirageModel::open(dir.path(), &options(EngineChoice::Ort, Some(lib.clone())))
            .unwrap()
            .embed_texts(&TEXTS)
            .unwrap();
    let after = add_onnx(dir.path()).unwrap();
    assert_eq!(after.sha256(), identity, "adding graphs keeps the identity");
    let onnx = after.config().onnx.clone().unwrap();
    assert_eq!(onnx.opset, 17);
    for file in ["text.onnx", "vision.onnx"] {
        assert!(dir.path().join(file).is_file());
        assert!(
            after.config().files.contains_key(file),
            "{file} has a checksum"
        );
    }
    let model = MirageModel::open(dir.path(), &options(EngineChoice::Ort, Some(lib))).unwrap();
    assert!(
        model.engine_description().contains("graphs bundle"),
        "{}",
        model.engine_description()
    );
    assert_close(
        "graphs from files",
        &model.embed_texts(&TEXTS).unwrap(),
        &built_at_load,
    );
    // Again: replaces the graphs, identity still the same.
    assert_eq!(add_onnx(dir.path()).unwrap().sha256(), identity);
}

use crate::common::{edit_bundle_json, sha256_hex};

fn exported() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bundle(dir.path(), TinyVision::ResNetMean, 24, 13).unwrap();
    add_onnx(dir.path()).unwrap();
    dir
}

fn open_err(dir: &Path) -> String {
    match Bundle::open(dir) {
        Ok(_) => panic!("a broken bundle opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_graphs_are_refused_at_open_naming_the_file() {
    // Missing.
    let dir = exported();
    std::fs::remove_file(dir.path().join("text.onnx")).unwrap();
    let e = open_err(dir.path());
    assert!(e.contains("text.onnx") && e.contains("missing"), "{e}");

    // Corrupt, with a matching checksum (so the parser, not the checksum, catches it).
    let dir = exported();
    let garbage = b"\x0a\xff\xff\xff\xff\x0f not onnx".to_vec();
    std::fs::write(dir.path().join("vision.onnx"), &garbage).unwrap();
    edit_bundle_json(dir.path(), |v| {
        v["files"]["vision.onnx"] = sha256_hex(&garbage).into();
    });
    let e = open_err(dir.path());
    assert!(
        e.contains("vision.onnx") && e.contains("not a readable ONNX"),
        "{e}"
    );

    // Checksum differs.
    let dir = exported();
    edit_bundle_json(dir.path(), |v| {
        v["files"]["text.onnx"] = "00".repeat(32).into();
    });
    let e = open_err(dir.path());
    assert!(e.contains("text.onnx") && e.contains("sha256"), "{e}");

    // Another opset recorded than the file imports.
    let dir = exported();
    edit_bundle_json(dir.path(), |v| v["onnx"]["opset"] = 18.into());
    let e = open_err(dir.path());
    assert!(
        e.contains("text.onnx") && e.contains("opset 17") && e.contains("18"),
        "{e}"
    );

    // Input names that are not the graph's.
    let dir = exported();
    edit_bundle_json(dir.path(), |v| {
        v["onnx"]["text"]["inputs"][0]["name"] = "ids".into();
    });
    let e = open_err(dir.path());
    assert!(
        e.contains("text.onnx") && e.contains("input_ids") && e.contains("ids"),
        "{e}"
    );

    // An output shape that is not the graph's.
    let dir = exported();
    edit_bundle_json(dir.path(), |v| {
        v["onnx"]["vision"]["outputs"][0]["shape"][1] = 7.into();
    });
    let e = open_err(dir.path());
    assert!(e.contains("vision.onnx") && e.contains("outputs"), "{e}");

    // A graph file listed without its description, and the other way round.
    let dir = exported();
    edit_bundle_json(dir.path(), |v| {
        v.as_object_mut().unwrap().remove("onnx");
    });
    let e = open_err(dir.path());
    assert!(
        e.contains(".onnx") && e.contains("does not describe"),
        "{e}"
    );
    let dir = exported();
    edit_bundle_json(dir.path(), |v| {
        v["files"].as_object_mut().unwrap().remove("vision.onnx");
    });
    let e = open_err(dir.path());
    assert!(
        e.contains("vision.onnx") && e.contains("no checksum"),
        "{e}"
    );
}

#[test]
fn a_missing_library_is_an_error_under_ort_and_candle_under_auto() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bundle(dir.path(), TinyVision::ResNetMean, 24, 17).unwrap();
    let nowhere = PathBuf::from("/nonexistent/libonnxruntime.so");
    let err = MirageModel::open(
        dir.path(),
        &options(EngineChoice::Ort, Some(nowhere.clone())),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Engine(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/libonnxruntime.so") && msg.contains("fetch-assets"),
        "{msg}"
    );
    let auto = MirageModel::open(dir.path(), &options(EngineChoice::Auto, Some(nowhere))).unwrap();
    assert_eq!(auto.engine(), EngineKind::Candle);
    assert_eq!(auto.embed_texts(&["lung"]).unwrap().len(), 1);
}

#[test]
fn cuda_without_a_gpu_build_is_a_clear_error() {
    let Some(lib) = ort_library() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bundle(dir.path(), TinyVision::ResNetMean, 24, 19).unwrap();
    let mut o = options(EngineChoice::Ort, Some(lib));
    o.device = DeviceChoice::Cuda;
    let msg = MirageModel::open(dir.path(), &o).unwrap_err().to_string();
    assert!(
        msg.contains("CUDA") && msg.contains("onnxruntime-gpu"),
        "{msg}"
    );
    o.engine = EngineChoice::Candle;
    let msg = MirageModel::open(dir.path(), &o).unwrap_err().to_string();
    assert!(msg.contains("candle") && msg.contains("CPU"), "{msg}");
}

#[test]
fn a_thread_count_past_the_limit_is_refused_before_any_engine_starts() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bundle(dir.path(), TinyVision::ResNetMean, 24, 23).unwrap();
    for engine in [EngineChoice::Ort, EngineChoice::Candle, EngineChoice::Auto] {
        let mut o = options(engine, None);
        o.threads = mirage_model::engine::MAX_THREADS + 1;
        let msg = MirageModel::open(dir.path(), &o).unwrap_err().to_string();
        assert!(
            msg.contains("threads 1025") && msg.contains("0..=1024"),
            "{msg}"
        );
    }
    let mut o = options(EngineChoice::Candle, None);
    o.threads = mirage_model::engine::MAX_THREADS;
    assert!(
        MirageModel::open(dir.path(), &o).is_ok(),
        "the limit itself is accepted"
    );
}

/// `dir/doc` and `dir/query`: two tiny Hugging Face BERT directories with the same tokenizer and
/// different weights, and a bundle at `dir/asym` with the second as its query tower.
fn asymmetric_bundle(dir: &Path, query_max_length: Option<usize>) -> PathBuf {
    use mirage_model::config::{TextPooling, VisionPooling, VisionTower};
    use mirage_model::import::{import_hf, ImportOptions};
    mirage_model::testing::write_tiny_hf_dir(&dir.join("doc"), 3).unwrap();
    mirage_model::testing::write_tiny_hf_dir(&dir.join("query"), 4).unwrap();
    let opts = |text: &str, query: Option<&str>, max_length: Option<usize>| ImportOptions {
        text_dir: dir.join(text),
        vision_weights: None,
        vision: VisionTower::Resnet(mirage_model::config::ResNetConfig {
            attention_heads: 1,
            ..mirage_model::testing::tiny_resnet(false, VisionPooling::Mean)
        }),
        embed_dim: None,
        pooling: TextPooling::Cls,
        max_length,
        query_text_dir: query.map(|q| dir.join(q)),
        query_max_length,
        seed: 1,
        model_id: format!("{text}-{query:?}"),
    };
    import_hf(&opts("doc", Some("query"), None), &dir.join("asym")).unwrap();
    import_hf(&opts("doc", None, None), &dir.join("doc-only")).unwrap();
    // The query tower alone, cut where the asymmetric bundle cuts queries.
    import_hf(
        &opts("query", None, query_max_length),
        &dir.join("query-only"),
    )
    .unwrap();
    dir.join("asym")
}

#[test]
fn an_asymmetric_bundle_embeds_queries_with_its_query_tower_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let asym = asymmetric_bundle(dir.path(), Some(8));
    let Some(lib) = ort_library() else {
        return;
    };
    let texts = ["pleural effusion on the left", "normal chest radiograph"];
    for (engine, library) in [(EngineChoice::Ort, Some(lib)), (EngineChoice::Candle, None)] {
        let open = |p: &Path| MirageModel::open(p, &options(engine, library.clone())).unwrap();
        let (m, doc, query) = (
            open(&asym),
            open(&dir.path().join("doc-only")),
            open(&dir.path().join("query-only")),
        );
        assert!(m.has_query_tower() && !doc.has_query_tower());
        assert_close(
            &format!("{engine:?} documents"),
            &m.embed_texts(&texts).unwrap(),
            &doc.embed_texts(&texts).unwrap(),
        );
        // Queries are cut at the query limit (8 tokens) before the query tower reads them.
        assert_eq!(
            m.tokenizer_for(mirage_model::TextRole::Query).max_length(),
            8
        );
        assert_eq!(m.tokenizer().max_length(), 64);
        assert_close(
            &format!("{engine:?} queries"),
            &m.embed_queries(&texts).unwrap(),
            &query.embed_texts(&texts).unwrap(),
        );
        let (q, d) = (
            m.embed_queries(&texts[..1]).unwrap(),
            m.embed_texts(&texts[..1]).unwrap(),
        );
        assert!(cosine(&q[0], &d[0]) < 0.99, "the two towers differ");
    }
}

#[test]
fn a_query_tower_with_another_tokenizer_is_refused() {
    use mirage_model::config::VisionTower;
    use mirage_model::import::{import_hf, ImportOptions};
    let dir = tempfile::tempdir().unwrap();
    mirage_model::testing::write_tiny_hf_dir(&dir.path().join("doc"), 3).unwrap();
    mirage_model::testing::write_tiny_hf_dir(&dir.path().join("query"), 4).unwrap();
    let tok = dir.path().join("query/tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
    v["model"]["vocab"]["lung"] = 200.into();
    std::fs::write(&tok, v.to_string()).unwrap();
    let opts = ImportOptions {
        text_dir: dir.path().join("doc"),
        vision_weights: None,
        vision: VisionTower::Vit(mirage_model::testing::tiny_vit()),
        embed_dim: None,
        pooling: mirage_model::config::TextPooling::Cls,
        max_length: None,
        query_text_dir: Some(dir.path().join("query")),
        query_max_length: None,
        seed: 1,
        model_id: "x".into(),
    };
    let msg = import_hf(&opts, &dir.path().join("out"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("share one tokenizer"), "{msg}");
}
