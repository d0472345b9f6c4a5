//! The `mirage` binary end to end: import a Hugging Face directory, embed, classify, and the
//! errors a user sees for bad input.

use crate::common::{fail, json_lines, mirage, ok};

use std::path::Path;
use std::process::Command;

use mirage_model::testing::write_tiny_hf_dir;

/// A bundle imported from a tiny HF directory, with a seeded ResNet-18 vision tower at 64 px.
fn imported(dir: &Path) -> String {
    let hf = dir.join("hf");
    write_tiny_hf_dir(&hf, 3).unwrap();
    let bundle = dir.join("bundle");
    let stderr = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_mirage"))
            .args([
                "model",
                "import-hf",
                "--text",
                hf.to_str().unwrap(),
                "--vision-arch",
                "resnet18",
                "--vision-pool",
                "mean",
                "--image-size",
                "64",
                "--out",
                bundle.to_str().unwrap(),
            ])
            .output()
            .map(|o| {
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                o.stderr
            })
            .unwrap(),
    )
    .unwrap();
    assert!(stderr.contains("wrote bundle"), "{stderr}");
    bundle.to_str().unwrap().to_owned()
}

#[test]
fn import_embed_and_classify() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = imported(dir.path());
    let info: serde_json::Value =
        serde_json::from_str(&ok(mirage(&["model", "info", "--bundle", &bundle]))).unwrap();
    assert_eq!(info["config"]["provenance"]["vision"]["kind"], "random");
    assert_eq!(info["config"]["provenance"]["text_projection"], "identity");
    assert_eq!(info["config"]["architecture"]["embed_dim"], 16);

    let out = ok(mirage(&[
        "embed",
        "--bundle",
        &bundle,
        "--text",
        "pleural effusion",
        "left lung",
    ]));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["input"], "pleural effusion");
    let e: Vec<f64> = serde_json::from_value(lines[0]["embedding"].clone()).unwrap();
    assert_eq!(e.len(), 16);
    assert!((e.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-5);

    let png = dir.path().join("x.png");
    image::GrayImage::from_fn(30, 20, |x, y| image::Luma([(x * 8 + y) as u8]))
        .save(&png)
        .unwrap();
    let out = ok(mirage(&[
        "embed",
        "--bundle",
        &bundle,
        "--image",
        png.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let arr: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(arr.len(), 1);

    let out = ok(mirage(&[
        "classify",
        "--bundle",
        &bundle,
        "--image",
        png.to_str().unwrap(),
        "--label",
        "edema",
        "--label",
        "normal",
        "--multi-label",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["labels"].as_array().unwrap().len(), 2);
    assert_eq!(v["multi_label"], true);
}

#[test]
fn user_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = imported(dir.path());
    let err = fail(mirage(&[
        "embed",
        "--bundle",
        "/nonexistent/bundle",
        "--text",
        "x",
    ]));
    assert!(
        err.contains("/nonexistent/bundle/bundle.json") && err.contains("missing"),
        "{err}"
    );

    let not_image = dir.path().join("notes.txt");
    std::fs::write(&not_image, "hello").unwrap();
    let err = fail(mirage(&[
        "embed",
        "--bundle",
        &bundle,
        "--image",
        not_image.to_str().unwrap(),
    ]));
    assert!(
        err.contains("notes.txt") && err.contains("unsupported image format"),
        "{err}"
    );

    let png = dir.path().join("x.png");
    image::GrayImage::from_pixel(8, 8, image::Luma([1]))
        .save(&png)
        .unwrap();
    let classify = |extra: &[&str]| {
        let mut args = vec![
            "classify",
            "--bundle",
            &bundle,
            "--image",
            png.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        fail(mirage(&args))
    };
    let err = classify(&["--label", "a", "--template", "no placeholder"]);
    assert!(err.contains("placeholder"), "{err}");
    let err = classify(&["--label", "a", "--label", "a"]);
    assert!(err.contains("twice"), "{err}");
    let err = fail(mirage(&["embed", "--bundle", &bundle]));
    assert!(err.contains("--text") || err.contains("required"), "{err}");

    // An HF directory that is not BERT, or lacks a tensor, is named as such.
    let hf = dir.path().join("hf");
    let cfg_path = hf.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["model_type"] = "gpt2".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = dir.path().join("b2");
    let import_fails = || {
        fail(mirage(&[
            "model",
            "import-hf",
            "--text",
            hf.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    let err = import_fails();
    assert!(err.contains("gpt2"), "{err}");
    cfg["model_type"] = "bert".into();
    cfg["num_hidden_layers"] = 3.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = import_fails();
    assert!(
        err.contains("encoder.layer.2.") && err.contains("model.safetensors"),
        "{err}"
    );
}

fn embedding(out: &str) -> Vec<f64> {
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    v["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn engines_are_chosen_by_flag_and_env_and_agree() {
    let Some(lib) = crate::common::require_asset(assets_dir_lib()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bundle = imported(dir.path());
    // import-hf writes the graphs; export-onnx rewrites them and keeps the identity.
    assert!(Path::new(&bundle).join("text.onnx").is_file());
    let info = |b: &str| -> serde_json::Value {
        serde_json::from_str(&ok(mirage(&["model", "info", "--bundle", b]))).unwrap()
    };
    let before = info(&bundle)["bundle_sha256"].clone();
    let out = mirage(&["model", "export-onnx", "--bundle", &bundle]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unchanged"));
    assert_eq!(info(&bundle)["bundle_sha256"], before);

    let embed = |engine: &str| {
        embedding(&ok(mirage(&[
            "embed",
            "--bundle",
            &bundle,
            "--text",
            "pleural effusion",
            "--engine",
            engine,
            "--threads",
            "1",
            "--ort-library",
            lib.to_str().unwrap(),
        ])))
    };
    let (a, b) = (embed("ort"), embed("candle"));
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!(dot >= 0.9999, "ort vs candle cosine {dot}");

    // The environment variable selects too, and a wrong name is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(["embed", "--bundle", &bundle, "--text", "x"])
        .env("MIRAGE_ENGINE", "tensorflow")
        .output()
        .unwrap();
    let err = fail(out);
    assert!(
        err.contains("tensorflow") && err.contains("auto, ort, candle"),
        "{err}"
    );
    let err = fail(mirage(&[
        "embed",
        "--bundle",
        &bundle,
        "--text",
        "x",
        "--engine",
        "ort",
        "--ort-library",
        "/nonexistent/libonnxruntime.so",
    ]));
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    // auto falls back to candle and says so.
    let out = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args([
            "--log",
            "info",
            "embed",
            "--bundle",
            &bundle,
            "--text",
            "x",
            "--ort-library",
            "/nonexistent/libonnxruntime.so",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("engine: candle"), "{log}");
}

fn assets_dir_lib() -> std::path::PathBuf {
    crate::common::assets_dir().join("onnxruntime/libonnxruntime.so")
}

/// `mirage model import` on a Hugging Face CLIPModel directory (the random one of the parity
/// tests): the bundle embeds a text as transformers does and classifies a real PNG; other
/// directories are sent to the right command or refused with what was found.
#[test]
fn import_recognises_a_clip_checkpoint_and_serves_it() {
    let Some(src) =
        crate::common::require_asset(crate::common::cache_dir().join("parity/clip/hf_safetensors"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("clip");
    let b = bundle.to_str().unwrap();
    let out = mirage(&[
        "model",
        "import",
        "--from",
        src.to_str().unwrap(),
        "--out",
        b,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("text clip-l2-h32") && stderr.contains("embed dim 16"),
        "{stderr}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(mirage(&["model", "info", "--bundle", b]))).unwrap();
    assert_eq!(info["config"]["provenance"]["layout"], "hf-clip");
    assert_eq!(
        info["config"]["preprocess"]["resize"],
        "shorter_side_center_crop"
    );
    assert_eq!(info["config"]["preprocess"]["interpolation"], "bicubic");

    // The first embedded reference sentence is sentence 0.
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(src.parent().unwrap().join("reference.json")).unwrap(),
    )
    .unwrap();
    let sentence = reference["sentences"][0].as_str().unwrap();
    let bytes = std::fs::read(src.parent().unwrap().join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let embeds = st.tensor("text_embeds").unwrap();
    assert_eq!(embeds.dtype(), safetensors::Dtype::F32);
    let want: Vec<f32> = embeds.data()[..embeds.shape()[1] * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let got = embedding(&ok(mirage(&["embed", "--bundle", b, "--text", sentence])));
    let dot: f64 = got.iter().zip(&want).map(|(x, y)| x * f64::from(*y)).sum();
    assert!(dot >= 0.9999, "CLI embedding vs transformers: cosine {dot}");

    let png = dir.path().join("x.png");
    image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    })
    .save(&png)
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(mirage(&[
        "classify",
        "--bundle",
        b,
        "--image",
        png.to_str().unwrap(),
        "--label",
        "pneumonia",
        "--label",
        "normal",
    ])))
    .unwrap();
    assert_eq!(v["labels"].as_array().unwrap().len(), 2);

    let hf = dir.path().join("bert");
    write_tiny_hf_dir(&hf, 3).unwrap();
    let out2 = dir.path().join("b2");
    let err = fail(mirage(&[
        "model",
        "import",
        "--from",
        hf.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]));
    assert!(err.contains("import-hf"), "{err}");
    let err = fail(mirage(&[
        "model",
        "import",
        "--from",
        dir.path().to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]));
    assert!(err.contains("config.json"), "{err}");
    assert!(!out2.exists(), "nothing is written for a refused import");

    // open_clip: the tokenizer is built from CLIP's merge list when asked, else refused.
    let oc = src.parent().unwrap().join("openclip_vit");
    let oc_out = dir.path().join("oc");
    let err = fail(mirage(&[
        "model",
        "import",
        "--from",
        oc.to_str().unwrap(),
        "--out",
        oc_out.to_str().unwrap(),
    ]));
    assert!(
        err.contains("--bpe-vocab") || err.contains("bpe_simple_vocab"),
        "{err}"
    );
    let bpe = crate::common::assets_dir().join("openclip/bpe_simple_vocab_16e6.txt.gz");
    let out = mirage(&[
        "model",
        "import",
        "--from",
        oc.to_str().unwrap(),
        "--bpe-vocab",
        bpe.to_str().unwrap(),
        "--out",
        oc_out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stderr.contains("open_clip"),
        "{stderr}"
    );
    let got = embedding(&ok(mirage(&[
        "embed",
        "--bundle",
        oc_out.to_str().unwrap(),
        "--text",
        "pleural effusion",
    ])));
    assert_eq!(got.len(), 16);
}
