//! Zero-shot classification and image input through a tiny bundle, on real PNG/JPEG files.

use std::path::Path;

use mirage_model::config::PromptTemplates;
use mirage_model::image_input::{decode_image, load_image, DecodeOptions, ImageFormat};
use mirage_model::testing::{write_tiny_bundle, TinyVision};
use mirage_model::zeroshot::{classify, prototypes, ClassifyMode};
use mirage_model::{Error, MirageModel};

fn model() -> (tempfile::TempDir, MirageModel) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bundle(dir.path(), TinyVision::ResNetAttention, 8, 11).unwrap();
    let m = MirageModel::open_cpu(dir.path()).unwrap();
    (dir, m)
}

fn write_images(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let gray =
        image::GrayImage::from_fn(40, 30, |x, y| image::Luma([((x * 6 + y * 2) % 256) as u8]));
    let png = dir.join("slice.png");
    gray.save(&png).unwrap();
    let rgb = image::RgbImage::from_fn(50, 70, |x, y| image::Rgb([x as u8 * 5, y as u8 * 3, 128]));
    let jpg = dir.join("photo.jpg");
    rgb.save(&jpg).unwrap();
    let png16 = dir.join("deep.png");
    image::ImageBuffer::<image::Luma<u16>, _>::from_fn(20, 20, |x, _| {
        image::Luma([x as u16 * 3000])
    })
    .save(&png16)
    .unwrap();
    (png, jpg, png16)
}

#[test]
fn png_jpeg_and_16_bit_png_embed() {
    let (_d, m) = model();
    let dir = tempfile::tempdir().unwrap();
    let (png, jpg, png16) = write_images(dir.path());
    let imgs: Vec<_> = [&png, &jpg, &png16]
        .iter()
        .map(|p| load_image(p, DecodeOptions::default()).unwrap())
        .collect();
    assert_eq!(imgs[0].format, ImageFormat::Png);
    assert_eq!(imgs[1].format, ImageFormat::Jpeg);
    assert_eq!((imgs[1].width(), imgs[1].height()), (50, 70));
    // grayscale becomes three equal channels
    assert!(imgs[0].rgb.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    let emb = m.embed_images(&imgs).unwrap();
    assert_eq!(emb.len(), 3);
    assert!(emb
        .iter()
        .all(|e| e.len() == 8 && e.iter().all(|v| v.is_finite())));
}

#[test]
fn truncated_and_mislabelled_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (png, jpg, _) = write_images(dir.path());
    let bytes = std::fs::read(&jpg).unwrap();
    let e = decode_image(
        &bytes[..bytes.len() / 3],
        "cut.jpg",
        DecodeOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ImageDecode { .. }), "{e}");
    assert!(e.to_string().contains("cut.jpg"));
    // A PNG named .dcm is still read as what its bytes say.
    let renamed = dir.path().join("really_png.dcm");
    std::fs::copy(&png, &renamed).unwrap();
    assert_eq!(
        load_image(&renamed, DecodeOptions::default())
            .unwrap()
            .format,
        ImageFormat::Png
    );
    let e = load_image(&dir.path().join("absent.png"), DecodeOptions::default()).unwrap_err();
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
}

/// Embeddings of `n` random 64 px pixel batches.
fn random_images(m: &MirageModel, n: usize) -> mirage_model::Embeddings {
    let pixels =
        candle_core::Tensor::randn(0f32, 1.0, (n * 3 * 64 * 64,), &candle_core::Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
    m.embed_pixel_batch(&pixels, n).unwrap()
}

#[test]
fn single_label_probabilities_sum_to_one_and_follow_scores() {
    let (_d, m) = model();
    let labels: Vec<String> = ["pneumonia", "pleural effusion", "normal"]
        .map(String::from)
        .to_vec();
    let imgs = random_images(&m, 2);
    let out = classify(&m, &imgs, &labels, None, ClassifyMode::SingleLabel, None).unwrap();
    assert_eq!(out.len(), 2);
    for scores in &out {
        let total: f32 = scores.iter().map(|s| s.probability).sum();
        assert!((total - 1.0).abs() < 1e-5);
        let best_p = scores
            .iter()
            .max_by(|a, b| a.probability.total_cmp(&b.probability))
            .unwrap();
        let best_s = scores
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .unwrap();
        assert_eq!(best_p.label, best_s.label);
    }
    // A higher temperature flattens the distribution.
    let hot = classify(
        &m,
        &imgs,
        &labels,
        None,
        ClassifyMode::SingleLabel,
        Some(100.0),
    )
    .unwrap();
    let spread = |s: &[mirage_model::zeroshot::LabelScore]| {
        let p: Vec<f32> = s.iter().map(|x| x.probability).collect();
        p.iter().cloned().fold(0.0, f32::max) - p.iter().cloned().fold(1.0, f32::min)
    };
    assert!(spread(&hot[0]) < spread(&out[0]));
}

#[test]
fn prototypes_are_the_renormalised_template_mean() {
    let (_d, m) = model();
    let templates = vec!["a scan showing {}".to_owned(), "{}".to_owned()];
    let p = prototypes(&m, &["edema".to_owned()], &templates)
        .unwrap()
        .to_rows();
    let e = m.embed_texts(&["a scan showing edema", "edema"]).unwrap();
    let mean: Vec<f32> = e[0].iter().zip(&e[1]).map(|(a, b)| (a + b) / 2.0).collect();
    let n = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    for (a, b) in p[0].iter().zip(&mean) {
        assert!((a - b / n).abs() < 1e-5);
    }
}

#[test]
fn multi_label_scores_each_label_against_its_negation() {
    let (_d, m) = model();
    let labels: Vec<String> = ["edema", "cardiomegaly"].map(String::from).to_vec();
    let t = PromptTemplates {
        positive: vec!["{}".into()],
        negative: vec!["no {}".into()],
    };
    let img = random_images(&m, 1);
    let out = classify(&m, &img, &labels, Some(&t), ClassifyMode::MultiLabel, None).unwrap();
    let pos = prototypes(&m, &labels, &t.positive).unwrap();
    let neg = prototypes(&m, &labels, &t.negative).unwrap();
    let cp = img.similarities(&pos).unwrap();
    let cn = img.similarities(&neg).unwrap();
    for (i, s) in out[0].iter().enumerate() {
        let expected = 1.0 / (1.0 + (-(m.logit_scale() * (cp[i] - cn[i]))).exp());
        assert!(
            (s.probability - expected).abs() < 1e-5,
            "{} vs {expected}",
            s.probability
        );
    }
}

#[test]
fn bad_label_lists_are_refused() {
    let (_d, m) = model();
    let img = m.embed_pixel_batch(&[0f32; 3 * 64 * 64], 1).unwrap();
    for (labels, needle) in [
        (vec![], "empty"),
        (vec!["a".to_owned(), "a".to_owned()], "twice"),
        (vec![" ".to_owned()], "empty"),
    ] {
        let e = classify(&m, &img, &labels, None, ClassifyMode::SingleLabel, None).unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput(_)) && e.to_string().contains(needle),
            "{e}"
        );
    }
    let e = classify(
        &m,
        &img,
        &["a".to_owned()],
        None,
        ClassifyMode::SingleLabel,
        Some(0.0),
    )
    .unwrap_err();
    assert!(e.to_string().contains("temperature"), "{e}");
}
