//! Bundle writing, loading and every way a bundle can be broken.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use mirage_model::config::{BUNDLE_JSON, MODEL_SAFETENSORS};
use mirage_model::testing::{tiny_config, write_tiny_bundle, TinyVision, TINY_TOKENIZER_JSON};
use mirage_model::{write_bundle, Bundle, BundleContents, Error, MirageModel, TextBank};

use crate::common::{edit_bundle_json, sha256_hex};

/// Rewrites model.safetensors with `edit` applied to its tensors and fixes the recorded checksum,
/// so only the tensor problem remains.
fn edit_tensors(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join(MODEL_SAFETENSORS);
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let sha = sha256_hex(&std::fs::read(&path).unwrap());
    edit_bundle_json(dir, |v| {
        v["files"][MODEL_SAFETENSORS] = serde_json::Value::String(sha)
    });
}

#[test]
fn tiny_bundles_round_trip_and_embed() {
    for vision in TinyVision::ALL {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bundle(dir.path(), vision, 8, 1).unwrap();
        let model = MirageModel::open_cpu(dir.path()).unwrap();
        assert_eq!(model.dim(), 8);
        let texts = model
            .embed_texts(&[
                "pleural effusion",
                "a chest radiograph showing no pneumothorax",
            ])
            .unwrap();
        assert_eq!(texts.len(), 2);
        for e in &texts {
            let n: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5, "{vision:?}: norm {n}");
        }
        assert_ne!(texts[0], texts[1]);
        let pixels = Tensor::randn(0f32, 1.0, (3, 3, 64, 64), &Device::Cpu).unwrap();
        let imgs = mirage_model::testing::embed_pixel_tensor(&model, &pixels).unwrap();
        assert_eq!((imgs.len(), imgs[0].len()), (3, 8));
        // Deterministic: a second load gives bit-identical embeddings.
        let again = MirageModel::open_cpu(dir.path()).unwrap();
        assert_eq!(
            again.embed_texts(&["pleural effusion"]).unwrap()[0],
            texts[0]
        );
    }
}

#[test]
fn padding_does_not_change_an_embedding() {
    // MiniLM's tokenizer.json pads to a fixed length; so does the fixture. If the mask were
    // ignored, an item's embedding would depend on what it is batched with.
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bundle(dir.path(), TinyVision::ResNetMean, 8, 2).unwrap();
    let model = MirageModel::open_cpu(dir.path()).unwrap();
    let alone = model.embed_texts(&["lung"]).unwrap();
    let batched = model
        .embed_texts(&[
            "lung",
            "axial mri slice through the left hippocampus and thalamus with evidence of edema",
        ])
        .unwrap();
    let diff: f32 = alone[0]
        .iter()
        .zip(&batched[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-5, "padding changed the embedding by {diff}");
    let batch = model
        .tokenizer()
        .encode_batch(&["lung", "left lung"], &Device::Cpu)
        .unwrap();
    assert_eq!(
        batch.ids.dims(),
        &[2, 4],
        "padded to the longest item, not to the file's fixed 32"
    );
}

#[test]
fn truncation_respects_max_length() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bundle(dir.path(), TinyVision::ResNetMean, 8, 2).unwrap();
    let model = MirageModel::open_cpu(dir.path()).unwrap();
    let long = "lung ".repeat(500);
    let batch = model
        .tokenizer()
        .encode_batch(&[&long], &Device::Cpu)
        .unwrap();
    assert_eq!(batch.ids.dims(), &[1, 32]);
    assert_eq!(model.embed_texts(&[&long]).unwrap().len(), 1);
}

#[test]
fn text_bank_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(TinyVision::ResNetMean, 4);
    let tensors = mirage_model::init::random_tensors(
        &mirage_model::names::model_tensors(&config.architecture),
        3,
        &Device::Cpu,
    )
    .unwrap();
    let bank = TextBank {
        embeddings: mirage_model::Embeddings::new(vec![1., 0., 0., 0., 0., 1., 0., 0.], 4).unwrap(),
        captions: vec!["axial slice".into(), "line \"two\"\nwith newline".into()],
    };
    write_bundle(
        dir.path(),
        BundleContents {
            config,
            tensors: &tensors,
            tokenizer_json: TINY_TOKENIZER_JSON,
            text_bank: Some(&bank),
        },
    )
    .unwrap();
    let b = Bundle::open(dir.path()).unwrap();
    let got = b.text_bank().unwrap().unwrap();
    assert_eq!(got.captions, bank.captions);
    assert_eq!(got.embeddings, bank.embeddings);
}

fn tiny() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bundle(dir.path(), TinyVision::ResNetAttention, 8, 5).unwrap();
    dir
}

#[test]
fn wrong_format_version_is_named() {
    let dir = tiny();
    edit_bundle_json(dir.path(), |v| v["format_version"] = 99.into());
    let e = Bundle::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedFormatVersion {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("bundle.json"), "{e}");
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let dir = tiny();
    edit_tensors(dir.path(), |t| {
        t.remove("vision.attnpool.q_proj.weight");
    });
    let e = Bundle::open(dir.path()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains("model.safetensors") && msg.contains("vision.attnpool.q_proj.weight"),
        "{msg}"
    );
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let dir = tiny();
    edit_tensors(dir.path(), |t| {
        t.insert(
            "text_proj.weight".into(),
            Tensor::zeros((8, 15), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let e = Bundle::open(dir.path()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::TensorShape { .. }), "{msg}");
    assert!(
        msg.contains("text_proj.weight") && msg.contains("[8, 15]") && msg.contains("[8, 16]"),
        "{msg}"
    );
}

#[test]
fn checksum_mismatch_names_the_file() {
    let dir = tiny();
    let p = dir.path().join("tokenizer.json");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.push(b' ');
    std::fs::write(&p, bytes).unwrap();
    let e = Bundle::open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn missing_file_and_bad_json_are_typed() {
    let dir = tiny();
    std::fs::remove_file(dir.path().join(MODEL_SAFETENSORS)).unwrap();
    let e = Bundle::open(dir.path()).unwrap_err();
    assert!(
        matches!(e, Error::MissingFile { .. }) && e.to_string().contains("model.safetensors"),
        "{e}"
    );

    let dir = tiny();
    std::fs::write(dir.path().join(BUNDLE_JSON), b"{ not json").unwrap();
    assert!(matches!(
        Bundle::open(dir.path()).unwrap_err(),
        Error::Json { .. }
    ));

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Bundle::open(empty.path()).unwrap_err(),
        Error::MissingFile { .. }
    ));
}

#[test]
fn inconsistent_config_reports_every_problem() {
    let dir = tiny();
    edit_bundle_json(dir.path(), |v| {
        v["preprocess"]["image_size"] = 32.into();
        v["architecture"]["text"]["bert"]["num_attention_heads"] = 3.into();
    });
    let msg = Bundle::open(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("preprocess.image_size 32") && msg.contains("num_attention_heads 3"),
        "{msg}"
    );
}

#[test]
fn unknown_field_is_refused() {
    let dir = tiny();
    edit_bundle_json(dir.path(), |v| v["surprise"] = 1.into());
    let msg = Bundle::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("surprise"), "{msg}");
}

#[test]
fn corrupt_safetensors_is_typed() {
    let dir = tiny();
    let p = dir.path().join(MODEL_SAFETENSORS);
    std::fs::write(&p, b"garbage").unwrap();
    edit_bundle_json(dir.path(), |v| {
        v["files"][MODEL_SAFETENSORS] = sha256_hex(b"garbage").into()
    });
    let e = Bundle::open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Safetensors { .. }), "{e}");
}

#[test]
fn writer_refuses_foreign_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(TinyVision::Vit, 4);
    let mut tensors = mirage_model::init::random_tensors(
        &mirage_model::names::model_tensors(&config.architecture),
        3,
        &Device::Cpu,
    )
    .unwrap();
    tensors.insert(
        "vision.fc.weight".into(),
        Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let e = write_bundle(
        dir.path(),
        BundleContents {
            config,
            tensors: &tensors,
            tokenizer_json: TINY_TOKENIZER_JSON,
            text_bank: None,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("vision.fc.weight"), "{e}");
    assert!(
        !dir.path().join(BUNDLE_JSON).exists(),
        "no bundle.json for a refused bundle"
    );
}

/// A calibrated copy keeps the model's identity and id (collections built with the raw bundle
/// accept it), carries the temperature, and survives ONNX export; a non-empty target, a bad
/// temperature and a tampered source are refused.
#[test]
fn calibrated_copy_keeps_the_identity_and_refuses_bad_targets() {
    use mirage_model::config::Calibration;
    use mirage_model::write_calibrated;
    let src = tiny();
    let raw = Bundle::open(src.path()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("calibrated");
    let cal = Calibration {
        temperature: 1.7,
        fitted_on: "valid".into(),
    };
    let calibrated = write_calibrated(&raw, &dst, cal.clone()).unwrap();
    assert_eq!(calibrated.sha256(), raw.sha256());
    assert_eq!(calibrated.config().model_id, raw.config().model_id);
    assert_eq!(calibrated.config().calibration, Some(cal.clone()));
    assert_ne!(
        std::fs::read(dst.join(BUNDLE_JSON)).unwrap(),
        std::fs::read(src.path().join(BUNDLE_JSON)).unwrap()
    );
    let model = MirageModel::open_cpu(&dst).unwrap();
    assert_eq!(
        model.embed_texts(&["effusion"]).unwrap(),
        MirageModel::open_cpu(src.path())
            .unwrap()
            .embed_texts(&["effusion"])
            .unwrap()
    );
    // Recalibrating the copy and exporting graphs still name the first identity.
    let again = write_calibrated(&calibrated, &out.path().join("again"), cal.clone()).unwrap();
    assert_eq!(again.sha256(), raw.sha256());
    assert_eq!(mirage_model::add_onnx(&dst).unwrap().sha256(), raw.sha256());

    let e = write_calibrated(&raw, &dst, cal.clone()).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    let e = write_calibrated(
        &raw,
        &out.path().join("bad"),
        Calibration {
            temperature: -1.0,
            fitted_on: String::new(),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("must be positive"), "{e}");
    std::fs::write(src.path().join(MODEL_SAFETENSORS), b"tampered").unwrap();
    let e = write_calibrated(&raw, &out.path().join("t"), cal).unwrap_err();
    assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
    // An identity that is not a sha256 is refused at open.
    edit_bundle_json(&dst, |v| v["model_sha256"] = "nope".into());
    let e = Bundle::open(&dst).unwrap_err();
    assert!(e.to_string().contains("not a sha256"), "{e}");
}
