//! `mirage eval` on a real MRI-atlas dataset through the serving code, and `mirage study-report`.

use std::path::{Path, PathBuf};

use crate::common::{
    arg, fail, json_lines, jsonl, mirage, mirage_with, mri_atlas, mri_templates, ok,
};
use mirage_model::testing::{write_tiny_bundle, write_tiny_bundle_with_bank, TinyVision};
use serde_json::{json, Value};

fn atlas(dir: &Path) -> Option<PathBuf> {
    let templates = mri_templates()?;
    let out = dir.join("atlas");
    mri_atlas(&templates, &out, 48, 4);
    Some(out)
}

/// The atlas and a tiny bundle whose text bank holds the three plane captions.
fn atlas_and_bundle_with_bank(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let data = atlas(dir)?;
    let bundle = dir.join("bundle");
    write_tiny_bundle_with_bank(
        &bundle,
        TinyVision::ResNetAttention,
        16,
        3,
        &["axial MRI slice", "coronal MRI slice", "sagittal MRI slice"],
    )
    .unwrap();
    Some((data, bundle))
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

fn eval(bundle: &Path, data: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "eval",
        "--bundle",
        bundle.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let printed: Value = serde_json::from_str(&ok(mirage(&args))).unwrap();
    let saved: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(printed, saved);
    saved
}

fn unit(v: &Value) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"));
    assert!((0.0..=1.0).contains(&x), "{x} is not in [0, 1]");
    x
}

#[test]
fn eval_reports_every_metric_on_the_atlas_through_the_serving_code() {
    let dir = tempfile::tempdir().unwrap();
    let Some((data, bundle)) = atlas_and_bundle_with_bank(dir.path()) else {
        return;
    };
    let r = eval(&bundle, &data, &dir.path().join("e1"), &["--noise", "0.4"]);
    let n_test = lines(&data.join("test.jsonl"));
    assert_eq!(r["retrieval"]["images"], n_test);
    let distinct = r["retrieval"]["distinct_captions"].as_u64().unwrap() as usize;
    assert!(
        distinct >= 2 && distinct < n_test,
        "augmented copies share captions"
    );
    for dir_name in ["image_to_text", "text_to_image"] {
        let rec = &r["retrieval"][dir_name];
        let (r1, r5, r10) = (unit(&rec["r1"]), unit(&rec["r5"]), unit(&rec["r10"]));
        assert!(r1 <= r5 && r5 <= r10, "{rec}");
    }
    let plane = &r["zero_shot"]["plane"];
    unit(&plane["accuracy"]);
    unit(&plane["ece"]);
    // No calibration in the bundle: served = raw logit scale.
    assert_eq!(plane["temperature"], 1.0);
    assert_eq!(plane["uncalibrated"]["ece"], plane["ece"]);
    assert_eq!(plane["uncalibrated"]["nll"], plane["nll"]);
    assert_eq!(plane["classes"], json!(["axial", "coronal", "sagittal"]));
    assert_eq!(plane["images"], n_test);
    assert_eq!(r["knn"]["plane"]["k"], 20);
    assert_eq!(
        r["knn"]["plane"]["reference_images"],
        lines(&data.join("train.jsonl"))
    );
    unit(&r["knn"]["plane"]["accuracy"]);
    let structures = &r["presence"]["structures"];
    assert_eq!(structures["auc"].as_object().unwrap().len(), 7);
    unit(&structures["mean_auc"]);
    let noise = &r["noise_detection"];
    assert_eq!(noise["bank"], "the bundle's text bank");
    assert_eq!(noise["bank_rows"], 3);
    let noisy = noise["noisy_pairs"].as_u64().unwrap() as usize;
    assert!(noisy > 0 && noisy <= n_test * 4 / 10, "{noise}");
    unit(&noise["auc_s"]);
    unit(&noise["auc_cosine"]);
    let per_query: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("e1/per_query.json")).unwrap())
            .unwrap();
    for (key, len) in [
        ("i2t_r1", n_test),
        ("i2t_r5", n_test),
        ("t2i_r1", distinct),
        ("zero_shot_plane", n_test),
        ("knn_plane", n_test),
    ] {
        let v = per_query[key].as_array().unwrap_or_else(|| panic!("{key}"));
        assert_eq!(v.len(), len, "{key}");
        assert!(v.iter().all(|x| x == 0.0 || x == 1.0), "{key}");
    }
    let hits = per_query["zero_shot_plane"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| *x == 1.0)
        .count();
    assert!((hits as f64 / n_test as f64 - plane["accuracy"].as_f64().unwrap()).abs() < 1e-9);
    for png in ["recall.png", "reliability.png"] {
        let bytes = std::fs::read(dir.path().join("e1").join(png)).unwrap();
        assert_eq!(&bytes[..4], b"\x89PNG", "{png}");
    }
    // Deterministic: the same bundle and data give the same numbers.
    let again = eval(&bundle, &data, &dir.path().join("e2"), &["--noise", "0.4"]);
    for key in [
        "retrieval",
        "zero_shot",
        "knn",
        "presence",
        "noise_detection",
    ] {
        assert_eq!(r[key], again[key], "{key}");
    }

    // A bundle without a text bank scores s against the reference split's captions.
    let plain = dir.path().join("plain");
    write_tiny_bundle(&plain, TinyVision::ResNetMean, 16, 4).unwrap();
    let r = eval(&plain, &data, &dir.path().join("e3"), &["--split", "valid"]);
    assert_eq!(r["noise_detection"]["bank"], "reference-split captions");
    assert_eq!(r["retrieval"]["images"], lines(&data.join("valid.jsonl")));

    // Without injected noise there is nothing to detect.
    let r = eval(&plain, &data, &dir.path().join("e4"), &["--noise", "0"]);
    assert!(r["noise_detection"].is_null());
}

/// `mirage calibrate` fits T on the valid split (the NLL there cannot rise), writes a calibrated
/// copy with the same identity, and `mirage eval` of the copy serves exactly the fitted
/// probabilities (its NLL on the same split is the report's) and still reports the raw ones.
#[test]
fn calibrate_fits_the_temperature_and_eval_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = atlas(dir.path()) else {
        return;
    };
    let bundle = dir.path().join("bundle");
    write_tiny_bundle(&bundle, TinyVision::ResNetAttention, 16, 8).unwrap();
    let out = dir.path().join("calibrated");
    let calibrate = |out: &Path, extra: &[&str]| {
        mirage_with(
            &[
                "calibrate",
                "--bundle",
                arg(&bundle),
                "--data",
                arg(&data),
                "--out",
                arg(out),
            ],
            extra,
        )
    };
    let r: Value = serde_json::from_str(&ok(calibrate(&out, &[]))).unwrap();
    let t = r["temperature"].as_f64().unwrap();
    assert!(t > 0.0, "{r}");
    assert_eq!(r["previous_temperature"], 1.0);
    assert_eq!(r["split"], "valid");
    let (before, after) = (&r["before"], &r["after"]);
    assert!(
        after["nll"].as_f64().unwrap() <= before["nll"].as_f64().unwrap() + 1e-12,
        "{r}"
    );
    unit(&after["ece"]);
    assert_eq!(
        r["tasks"]["plane"]["images"],
        lines(&data.join("valid.jsonl"))
    );

    let info = |b: &Path| -> Value {
        serde_json::from_str(&ok(mirage(&[
            "model",
            "info",
            "--bundle",
            b.to_str().unwrap(),
        ])))
        .unwrap()
    };
    let (raw, cal) = (info(&bundle), info(&out));
    assert_eq!(raw["bundle_sha256"], cal["bundle_sha256"], "same identity");
    assert!(
        (cal["config"]["calibration"]["temperature"]
            .as_f64()
            .unwrap()
            - t)
            .abs()
            < 1e-5 * t
    );

    let e = eval(&out, &data, &dir.path().join("ev"), &["--split", "valid"]);
    let plane = &e["zero_shot"]["plane"];
    assert!((plane["temperature"].as_f64().unwrap() - t).abs() < 1e-5 * t);
    let nll = plane["nll"].as_f64().unwrap();
    let fitted = r["tasks"]["plane"]["after"]["nll"].as_f64().unwrap();
    assert!((nll - fitted).abs() < 1e-4, "eval {nll} vs fit {fitted}");
    let raw_eval = eval(
        &bundle,
        &data,
        &dir.path().join("er"),
        &["--split", "valid"],
    );
    assert_eq!(
        plane["uncalibrated"],
        raw_eval["zero_shot"]["plane"]["uncalibrated"]
    );
    assert_eq!(
        plane["accuracy"],
        raw_eval["zero_shot"]["plane"]["accuracy"]
    );

    // The target must be new; a dataset needs a single-label task.
    let err = fail(calibrate(&out, &[]));
    assert!(err.contains("not empty"), "{err}");
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(plain.join("images")).unwrap();
    for name in ["a.png", "b.png"] {
        std::fs::copy(
            data.join("images").join(
                std::fs::read_dir(data.join("images"))
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .file_name(),
            ),
            plain.join("images").join(name),
        )
        .unwrap();
    }
    std::fs::write(
        plain.join("valid.jsonl"),
        "{\"image\": \"a.png\", \"caption\": \"x\"}\n{\"image\": \"b.png\", \"caption\": \"y\"}\n",
    )
    .unwrap();
    let err = fail(mirage(&[
        "calibrate",
        "--bundle",
        bundle.to_str().unwrap(),
        "--data",
        plain.to_str().unwrap(),
        "--out",
        dir.path().join("c2").to_str().unwrap(),
    ]));
    assert!(err.contains("no single-label task"), "{err}");
    assert!(!dir.path().join("c2").join("bundle.json").exists());
}

/// `mirage audit --out` on the atlas: a ranked JSONL and CSV (most suspicious first), a summary
/// that agrees with the rows, the figures, and the same scores as the stdout lines; with the
/// trainer's noise log, the swapped captions are audited and their detection measured.
#[test]
fn audit_ranks_a_corpus_writes_figures_and_measures_a_noise_log() {
    let dir = tempfile::tempdir().unwrap();
    let Some((data, bundle)) = atlas_and_bundle_with_bank(dir.path()) else {
        return;
    };
    let corpus = data.join("valid.jsonl");
    let images = data.join("images");
    let audit = |extra: &[&str]| {
        mirage_with(
            &[
                "audit",
                "--bundle",
                arg(&bundle),
                "--corpus",
                arg(&corpus),
                "--image-root",
                arg(&images),
            ],
            extra,
        )
    };
    let n = lines(&corpus);
    let out = dir.path().join("audit");
    let summary: Value =
        serde_json::from_str(&ok(audit(&["--out", out.to_str().unwrap()]))).unwrap();
    assert_eq!(summary["pairs"], n);
    assert!(summary.get("injected").is_none());
    let ranked: Vec<Value> = jsonl(&out.join("audit.jsonl"));
    assert_eq!(ranked.len(), n);
    let s: Vec<f64> = ranked.iter().map(|r| r["s"].as_f64().unwrap()).collect();
    assert!(s.windows(2).all(|w| w[0] <= w[1]), "most suspicious first");
    for (i, r) in ranked.iter().enumerate() {
        assert_eq!(r["rank"], i + 1);
        assert_eq!(r["flagged"], r["s"].as_f64().unwrap() < 0.5);
    }
    let flagged = ranked.iter().filter(|r| r["flagged"] == true).count();
    assert_eq!(summary["flagged"], flagged);
    let mean_s = s.iter().sum::<f64>() / n as f64;
    assert!((summary["mean_s"].as_f64().unwrap() - mean_s).abs() < 1e-5);
    let csv = std::fs::read_to_string(out.join("audit.csv")).unwrap();
    assert!(csv.starts_with("rank,index,id,image,s,flagged,"), "{csv}");
    assert_eq!(csv.lines().count(), n + 1);
    for png in [
        "hist-s.png",
        "hist-cosine.png",
        "scatter.png",
        "gallery.png",
    ] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert_eq!(&bytes[..4], b"\x89PNG", "{png}");
    }
    let saved: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(saved["flagged"], summary["flagged"]);

    // The stdout lines (file order) carry the same scores.
    let plain = json_lines(&ok(audit(&[])));
    assert_eq!(plain.len(), n);
    for r in &ranked {
        let p = &plain[r["index"].as_u64().unwrap() as usize];
        assert_eq!((&p["id"], &p["s"]), (&r["id"], &r["s"]));
    }

    // The trainer's noise log: pair 0 trained with pair k's caption and back (k: the first pair
    // whose caption differs).
    let captions: Vec<String> = plain
        .iter()
        .map(|r| r["caption"].as_str().unwrap().to_owned())
        .collect();
    let k = captions.iter().position(|c| *c != captions[0]).unwrap();
    let log = dir.path().join("noise.jsonl");
    std::fs::write(
        &log,
        format!(
            "{{\"index\": 0, \"caption_from\": {k}}}\n{{\"index\": {k}, \"caption_from\": 0}}\n"
        ),
    )
    .unwrap();
    let noisy_out = dir.path().join("audit-noise");
    let summary: Value = serde_json::from_str(&ok(audit(&[
        "--out",
        noisy_out.to_str().unwrap(),
        "--noise-log",
        log.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(summary["injected"]["pairs"], 2);
    for key in ["auc_s", "auc_cosine"] {
        unit(&summary["injected"][key]);
    }
    let rows: Vec<Value> = jsonl(&noisy_out.join("audit.jsonl"));
    let first = rows.iter().find(|r| r["index"] == 0).unwrap();
    assert_eq!(first["caption"], captions[k].as_str());
    assert_eq!(first["injected"], true);
    assert_eq!(rows.iter().filter(|r| r["injected"] == true).count(), 2);

    // Against the corpus's own captions (a bundle without a bank works too).
    let plain = dir.path().join("plain");
    write_tiny_bundle(&plain, TinyVision::ResNetMean, 16, 4).unwrap();
    let plain_args = |extra: &[&str]| {
        mirage_with(
            &[
                "audit",
                "--bundle",
                arg(&plain),
                "--corpus",
                arg(&corpus),
                "--image-root",
                arg(&images),
            ],
            extra,
        )
    };
    let err = fail(plain_args(&[]));
    assert!(err.contains("--bank corpus"), "{err}");
    let corpus_out = dir.path().join("audit-corpus");
    let summary: Value = serde_json::from_str(&ok(plain_args(&[
        "--bank",
        "corpus",
        "--out",
        corpus_out.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(summary["bank"], "corpus");
    let distinct: std::collections::BTreeSet<&String> = captions.iter().collect();
    assert_eq!(summary["bank_size"], distinct.len());
    // The method's variants of s: hard nearest neighbour, another σ_q.
    let variant: Value = serde_json::from_str(&ok(plain_args(&[
        "--bank",
        "corpus",
        "--nn",
        "hard",
        "--nn-scale",
        "7",
        "--out",
        dir.path().join("audit-hard").to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(
        (&variant["nn_hard"], &variant["nn_scale"]),
        (&json!(true), &json!(7.0))
    );
    assert_eq!(summary["nn_hard"], false);
    let err = fail(plain_args(&["--bank", "corpus", "--nn-scale", "0"]));
    assert!(err.contains("σ_q"), "{err}");

    // Bad input: a log of another corpus, a row that is not a swap, a threshold out of range.
    std::fs::write(&log, format!("{{\"index\": {n}, \"caption_from\": 0}}\n")).unwrap();
    let err = fail(audit(&["--noise-log", log.to_str().unwrap()]));
    assert!(
        err.contains("noise.jsonl:1") && err.contains("outside the corpus"),
        "{err}"
    );
    std::fs::write(&log, "{\"index\": \"zero\"}\n").unwrap();
    let err = fail(audit(&["--noise-log", log.to_str().unwrap()]));
    assert!(err.contains("not a noise row"), "{err}");
    let err = fail(audit(&["--threshold", "2"]));
    assert!(err.contains("--threshold"), "{err}");
}

#[test]
fn eval_explains_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    write_tiny_bundle(&bundle, TinyVision::ResNetMean, 16, 5).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    let png = |name: &str, shade: u8| {
        image::GrayImage::from_pixel(32, 32, image::Luma([shade]))
            .save(data.join("images").join(name))
            .unwrap();
    };
    png("a.png", 10);
    png("b.png", 200);
    let run = |extra: &[&str]| {
        mirage_with(
            &["eval", "--bundle", arg(&bundle), "--data", arg(&data)],
            extra,
        )
    };
    // No split file.
    let err = fail(run(&[]));
    assert!(err.contains("test.jsonl"), "{err}");
    // A malformed row names the file and line.
    std::fs::write(data.join("test.jsonl"), "{\"image\": \"a.png\"}\n").unwrap();
    let err = fail(run(&[]));
    assert!(
        err.contains("test.jsonl:1") && err.contains("caption"),
        "{err}"
    );
    // A missing image names the file.
    std::fs::write(
        data.join("test.jsonl"),
        "{\"image\": \"a.png\", \"caption\": \"dark\"}\n{\"image\": \"gone.png\", \"caption\": \"bright\"}\n",
    )
    .unwrap();
    let err = fail(run(&[]));
    assert!(err.contains("gone.png"), "{err}");
    assert!(
        !err.contains("bundle file"),
        "an image is not a bundle file: {err}"
    );
    // A plain pair file without labels or tasks: retrieval and noise detection only.
    std::fs::write(
        data.join("test.jsonl"),
        "{\"image\": \"a.png\", \"caption\": \"dark\"}\n{\"image\": \"b.png\", \"caption\": \"bright\"}\n",
    )
    .unwrap();
    std::fs::copy(data.join("test.jsonl"), data.join("train.jsonl")).unwrap();
    let report: Value = serde_json::from_str(&ok(run(&["--noise", "0.5"]))).unwrap();
    assert_eq!(report["retrieval"]["images"], 2);
    assert_eq!(report["zero_shot"], json!({}));
    // Out-of-range options.
    let err = fail(run(&["--noise", "1.5"]));
    assert!(err.contains("--noise"), "{err}");
    let err = fail(run(&["--k", "0"]));
    assert!(err.contains("--k"), "{err}");
    let err = fail(run(&["--nn-scale", "nan"]));
    assert!(err.contains("σ_q"), "{err}");
    let hard: Value = serde_json::from_str(&ok(run(&["--noise", "0.5", "--nn", "hard"]))).unwrap();
    assert_eq!(hard["noise_detection"]["nn_hard"], true);
    // A task whose labels are missing or name an unknown class.
    std::fs::write(
        data.join("dataset.json"),
        r#"{"tasks": {"plane": {"classes": ["axial", "coronal"], "prompts": ["{} slice"]}}}"#,
    )
    .unwrap();
    let err = fail(run(&[]));
    assert!(
        err.contains("labels.jsonl") && err.contains("plane"),
        "{err}"
    );
    std::fs::write(
        data.join("labels.jsonl"),
        "{\"image\": \"a.png\", \"plane\": \"axial\"}\n{\"image\": \"b.png\", \"plane\": \"oblique\"}\n",
    )
    .unwrap();
    let err = fail(run(&[]));
    assert!(err.contains("oblique"), "{err}");
    std::fs::write(data.join("dataset.json"), r#"{"tasks": {"plane": {}}}"#).unwrap();
    let err = fail(run(&[]));
    assert!(err.contains("prompts"), "{err}");
}

#[test]
fn study_report_tabulates_mean_and_spread_per_method_and_noise_rate() {
    let dir = tempfile::tempdir().unwrap();
    let report = |i2t_r1: f64, auc_s: f64| {
        json!({
            "retrieval": {
                "image_to_text": {"r1": i2t_r1, "r5": 0.9, "r10": 1.0},
                "text_to_image": {"r1": 0.4, "r5": 0.8, "r10": 0.9}
            },
            "zero_shot": {"plane": {"accuracy": 0.7}},
            "knn": {"plane": {"accuracy": 0.95}},
            "noise_detection": {"auc_s": auc_s, "auc_cosine": 0.8}
        })
    };
    let runs = [
        ("mirage", 0.2, 0, 0.5, 0.9),
        ("mirage", 0.2, 1, 0.6, 0.92),
        ("clip", 0.2, 0, 0.3, 0.7),
        ("clip", 0.2, 1, 0.3, 0.72),
        ("clip", 0.0, 0, 0.8, 0.6),
    ];
    for (method, eta, seed, r1, auc) in runs {
        let run = dir.path().join(format!("{method}-eta{eta}-seed{seed}"));
        std::fs::create_dir_all(run.join("eval-test")).unwrap();
        std::fs::write(
            run.join("run.json"),
            json!({"method": method, "eta": eta, "seed": seed}).to_string(),
        )
        .unwrap();
        std::fs::write(
            run.join("eval-test/report.json"),
            report(r1, auc).to_string(),
        )
        .unwrap();
        // Per-query outcomes at η 0.2: MIRAGE hits every I→T query CLIP misses; zero-shot the
        // same answers.
        if eta > 0.0 {
            let hit = if method == "mirage" { 1.0 } else { 0.0 };
            std::fs::write(
                run.join("eval-test/per_query.json"),
                json!({"i2t_r1": vec![hit; 4], "zero_shot_plane": [1.0, 0.0, 1.0, 1.0]})
                    .to_string(),
            )
            .unwrap();
        }
    }
    // One run audited its training corpus: the study gains the train-corpus columns.
    let audited = dir.path().join("mirage-eta0.2-seed0/audit-train");
    std::fs::create_dir_all(&audited).unwrap();
    std::fs::write(
        audited.join("summary.json"),
        json!({"injected": {"auc_s": 0.93, "auc_cosine": 0.94}}).to_string(),
    )
    .unwrap();
    // A run of another dataset, whose task is not "plane", gets columns of its own.
    let other = dir.path().join("clip-eta0.6-seed0");
    std::fs::create_dir_all(other.join("eval-test")).unwrap();
    std::fs::write(
        other.join("run.json"),
        json!({"method": "clip", "eta": 0.6, "seed": 0}).to_string(),
    )
    .unwrap();
    std::fs::write(
        other.join("eval-test/report.json"),
        json!({"zero_shot": {"view": {"accuracy": 0.25, "ece": 0.1,
                                       "uncalibrated": {"ece": 0.3, "nll": 1.0}}}})
        .to_string(),
    )
    .unwrap();
    // An unfinished run (no report yet) is left out.
    std::fs::create_dir_all(dir.path().join("mirage-eta0.4-seed0")).unwrap();
    std::fs::write(
        dir.path().join("mirage-eta0.4-seed0/run.json"),
        r#"{"method": "mirage", "eta": 0.4, "seed": 0}"#,
    )
    .unwrap();
    let md = ok(mirage(&[
        "study-report",
        "--dir",
        dir.path().to_str().unwrap(),
    ]));
    // mean 0.55, sample sd of {0.5, 0.6} = 0.0707.
    assert!(md.contains("| mirage | 0.2 | 2 | 0.550 ± 0.071 |"), "{md}");
    assert!(md.contains("| clip | 0.2 | 2 | 0.300 ± 0.000 |"), "{md}");
    assert!(md.contains("| clip | 0.0 | 1 | 0.800 ± 0.000 |"), "{md}");
    assert!(!md.contains("| mirage | 0.4 |"), "{md}");
    assert!(
        md.contains("zero-shot plane acc") && md.contains("zero-shot view acc"),
        "{md}"
    );
    assert!(md.contains("view ECE at T = 1"), "{md}");
    assert!(md.contains("train-corpus AUC of s"), "{md}");
    let row = md
        .lines()
        .find(|l| l.starts_with("| mirage | 0.2 |"))
        .unwrap();
    assert!(row.ends_with(" 0.930 ± 0.000 | 0.940 ± 0.000 |"), "{row}");
    let view_row = md
        .lines()
        .find(|l| l.starts_with("| clip | 0.6 |"))
        .unwrap();
    assert!(
        view_row.contains("0.250 ± 0.000") && view_row.contains("0.300 ± 0.000"),
        "{view_row}"
    );
    // Paired differences: a constant gain of 1 is a point interval that excludes 0 (bold);
    // equal answers give 0 (not bold).
    let diff_row = md
        .lines()
        .find(|l| l.starts_with("| mirage − clip | 0.2 | 2 |"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(
        diff_row.contains("**+1.000 [+1.000, +1.000]**"),
        "{diff_row}"
    );
    assert!(
        diff_row.contains(" +0.000 [+0.000, +0.000] |"),
        "{diff_row}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("study.md")).unwrap(),
        md
    );
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("study.json")).unwrap()).unwrap();
    let cell = json["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "mirage" && c["eta"] == 0.2)
        .unwrap();
    assert!((cell["test"]["auc_s"]["mean"].as_f64().unwrap() - 0.91).abs() < 1e-9);
    assert_eq!(cell["seeds"], json!([0, 1]));
    let d = &json["differences"][0];
    assert_eq!(
        (d["method"].as_str(), d["eta"].as_f64()),
        (Some("mirage"), Some(0.2))
    );
    assert_eq!(d["test"]["i2t_r1"]["estimate"], 1.0);
    for metric in ["i2t_r1", "auc_s", "zero_shot_plane", "zero_shot_view"] {
        let png = std::fs::read(dir.path().join(format!("study-{metric}.png"))).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
    }
    // The forest plot of the differences, and another baseline (the ablation's `default`).
    assert_eq!(
        &std::fs::read(dir.path().join("difference-i2t_r1.png")).unwrap()[..4],
        b"\x89PNG"
    );
    let md = ok(mirage(&[
        "study-report",
        "--dir",
        dir.path().to_str().unwrap(),
        "--baseline",
        "mirage",
    ]));
    assert!(
        md.contains("| clip − mirage | 0.2 | 2 | **-1.000 [-1.000, -1.000]** |"),
        "{md}"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = fail(mirage(&[
        "study-report",
        "--dir",
        empty.path().to_str().unwrap(),
    ]));
    assert!(err.contains("no finished run"), "{err}");
}
