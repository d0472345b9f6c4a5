//! The embedding pipeline on a generated PMC-OA-style corpus with real PNG files and a tiny
//! bundle: what gets indexed, what is reported, and resuming.

use std::path::Path;

use mirage_data::corpus::{read_corpus, CorpusFormat, CorpusOptions};
use mirage_index::pipeline::{index_records, model_ref, PipelineOptions, ProgressMode};
use mirage_index::{
    Collection, CollectionConfig, SearchMode, SearchRequest, StoreSpec, VectorName,
};
use mirage_model::testing::{write_tiny_bundle, TinyVision};
use mirage_model::MirageModel;

use crate::common::runtime;

fn write_png(path: &Path, seed: u32) {
    let img = image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([
            (x * 5 + seed * 37) as u8,
            (y * 7 + seed * 11) as u8,
            (seed * 53) as u8,
        ])
    });
    img.save(path).unwrap();
}

fn corpus(dir: &Path, n: usize) -> std::path::PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut lines = Vec::new();
    for i in 0..n {
        write_png(&images.join(format!("fig{i}.png")), i as u32);
        lines.push(
            serde_json::json!({
                "image": format!("fig{i}.png"),
                "caption": format!("axial CT slice number {i} showing finding {}", i % 5),
                "pmcid": format!("PMC{}", 1000 + i),
            })
            .to_string(),
        );
    }
    lines.insert(3, "{not json".to_string()); // line 4
    lines.push(r#"{"image": "missing.png", "caption": "the file is gone"}"#.to_string());
    lines.push(r#"{"image": "../../etc/passwd", "caption": "escapes the root"}"#.to_string());
    let path = dir.join("corpus.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn pmcoa_corpus_is_indexed_reported_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let bundle_dir = dir.path().join("bundle");
    write_tiny_bundle(&bundle_dir, TinyVision::ResNetMean, 16, 5).unwrap();
    let model = MirageModel::open_cpu(&bundle_dir).unwrap();
    let corpus_path = corpus(dir.path(), 40);
    let rt = runtime();
    let spec = StoreSpec::Embedded(dir.path().join("indexes"));
    let cfg = CollectionConfig::new(model.dim(), model_ref(&model));
    let collection = rt
        .block_on(Collection::create_or_open(&spec, "figs", &cfg))
        .unwrap();
    let mut options = CorpusOptions::new(CorpusFormat::PmcOa);
    options.image_root = Some(dir.path().join("images"));
    let pipeline = PipelineOptions {
        batch_size: 8,
        decode_threads: 2,
        progress: ProgressMode::Quiet,
        ..Default::default()
    };

    let records = read_corpus(&corpus_path, &options).unwrap();
    let summary = index_records(&model, &collection, rt.handle(), records, &pipeline).unwrap();
    assert_eq!(summary.indexed, 40);
    assert_eq!(summary.already_present, 0);
    assert_eq!(summary.read, 43);
    assert_eq!(summary.bad_rows.len(), 2, "{:?}", summary.bad_rows);
    assert_eq!(summary.bad_rows[0].line, 4);
    assert!(
        summary.bad_rows[1].reason.contains("escapes"),
        "{:?}",
        summary.bad_rows
    );
    assert_eq!(summary.failed.len(), 1);
    assert_eq!(summary.failed[0].id, "missing.png");
    assert_eq!(summary.failed[0].line, 42);

    // Both vectors of an item are the model's embeddings of its caption and image.
    let caption = "axial CT slice number 7 showing finding 2";
    let q = model.embed_texts(&[caption]).unwrap().remove(0);
    let mut req = SearchRequest::new(q, VectorName::Text, 1);
    req.mode = SearchMode::Exact;
    let hits = rt.block_on(collection.search(req)).unwrap();
    assert_eq!(hits[0].id, "fig7.png");
    assert!((hits[0].score - 1.0).abs() < 1e-4);
    assert_eq!(hits[0].text.as_deref(), Some(caption));
    assert_eq!(hits[0].image.as_deref(), Some("fig7.png"));
    assert_eq!(hits[0].payload["pmcid"], "PMC1007");
    let img = mirage_model::image_input::load_image(
        &dir.path().join("images/fig7.png"),
        Default::default(),
    )
    .unwrap();
    let q = model.embed_images(&[img]).unwrap().remove(0);
    let mut req = SearchRequest::new(q, VectorName::Image, 1);
    req.mode = SearchMode::Exact;
    let hits = rt.block_on(collection.search(req)).unwrap();
    assert_eq!(hits[0].id, "fig7.png");
    assert!((hits[0].score - 1.0).abs() < 1e-4);

    // A second run finds everything in place and embeds nothing.
    let records = read_corpus(&corpus_path, &options).unwrap();
    let again = index_records(&model, &collection, rt.handle(), records, &pipeline).unwrap();
    assert_eq!(again.indexed, 0);
    assert_eq!(again.already_present, 40);
    assert_eq!(rt.block_on(collection.count(None)).unwrap(), 40);

    // Strict mode stops at the first bad row.
    let records = read_corpus(&corpus_path, &options).unwrap();
    let strict = PipelineOptions {
        strict: true,
        ..pipeline.clone()
    };
    let err = index_records(&model, &collection, rt.handle(), records, &strict).unwrap_err();
    assert!(err.to_string().contains("line 4"), "{err}");

    // Another bundle is refused before anything is embedded.
    let other_dir = dir.path().join("other");
    write_tiny_bundle(&other_dir, TinyVision::ResNetMean, 16, 6).unwrap();
    let other = MirageModel::open_cpu(&other_dir).unwrap();
    let records = read_corpus(&corpus_path, &options).unwrap();
    let err = index_records(&other, &collection, rt.handle(), records, &pipeline).unwrap_err();
    assert!(err.to_string().contains("was built with model"), "{err}");
}
