//! `mirage data radlabels`: the report corpus, indexed and searched with a label filter.

use crate::common::{
    assets_dir, fail, json_lines, jsonl, mirage, mri_atlas, mri_templates, ok, require_asset,
};
use mirage_model::testing::{write_tiny_bundle, TinyVision};

/// A dataset's `labels.jsonl` rows by image file name.
fn labels_by_image(
    dataset: &std::path::Path,
) -> std::collections::HashMap<String, serde_json::Value> {
    jsonl(&dataset.join("labels.jsonl"))
        .into_iter()
        .map(|v| (v["image"].as_str().unwrap().to_owned(), v))
        .collect()
}

#[test]
fn radlabels_corpus_indexes_and_filters_by_finding() {
    let Some(src) = require_asset(assets_dir().join("radlabels")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("corpus/radlabels.jsonl");
    ok(mirage(&[
        "data",
        "radlabels",
        "--radlabels",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let rows: Vec<serde_json::Value> = jsonl(&out);
    // docs/DATA.md: 1,000 reports, 48 labels, 4,442 present / 461 absent / 146 uncertain.
    assert_eq!(rows.len(), 1000);
    let count = |k: &str| -> usize {
        rows.iter()
            .map(|r| r["metadata"][k].as_array().unwrap().len())
            .sum()
    };
    assert_eq!(
        (count("present"), count("absent"), count("uncertain")),
        (4442, 461, 146)
    );
    let labels: std::collections::BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r["metadata"]["findings"].as_object().unwrap().keys())
        .map(String::as_str)
        .collect();
    assert_eq!(labels.len(), 48);
    assert_eq!(rows[0]["id"], "synth_0001");
    assert!(rows[0]["text"].as_str().unwrap().contains("FINDINGS"));

    // The corpus is what `index build --format jsonl` reads; the labels filter.
    let bundle = dir.path().join("bundle");
    write_tiny_bundle(&bundle, TinyVision::ResNetMean, 16, 3).unwrap();
    let store = format!("embedded:{}", dir.path().join("indexes").display());
    let b = bundle.to_str().unwrap();
    ok(mirage(&[
        "index",
        "build",
        "--bundle",
        b,
        "--corpus",
        out.to_str().unwrap(),
        "--format",
        "jsonl",
        "--collection",
        "reports",
        "--store",
        &store,
        "--progress",
        "quiet",
    ]));
    let filter = r#"{"must": [{"key": "present", "match": {"value": "pleural_effusion"}}]}"#;
    let hits = ok(mirage(&[
        "search",
        "--bundle",
        b,
        "--collection",
        "reports",
        "--store",
        &store,
        "--text",
        "pleural effusion",
        "--k",
        "20",
        "--filter",
        filter,
    ]));
    let hits = json_lines(&hits);
    assert_eq!(hits.len(), 20);
    for h in &hits {
        let present = h["payload"]["present"].as_array().unwrap();
        assert!(present.iter().any(|p| p == "pleural_effusion"), "{h}");
    }

    // A folder that is not radlabels is named in the error.
    let err = fail(mirage(&[
        "data",
        "radlabels",
        "--radlabels",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("not an unpacked radlabels package"), "{err}");
}

#[test]
fn mri_atlas_dataset_is_deterministic_split_with_gaps_and_captioned_from_the_atlas() {
    let Some(templates) = mri_templates() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let build = |out: &std::path::Path| mri_atlas(&templates, out, 64, 2);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let summary: serde_json::Value = serde_json::from_str(build(&a).trim()).unwrap();
    build(&b);
    for f in ["train.jsonl", "valid.jsonl", "test.jsonl", "labels.jsonl"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let read = |split: &str| jsonl(&a.join(format!("{split}.jsonl")));
    let (train, valid, test) = (read("train"), read("valid"), read("test"));
    assert_eq!(
        summary["images"]["train"].as_u64().unwrap() as usize,
        train.len()
    );
    assert!(
        train.len() > 150 && valid.len() > 20 && test.len() > 20,
        "{summary}"
    );
    // An augmented copy of the same slice is identical in bytes to the other build's.
    let first = train.iter().find(|r| r["augmented"] == true).unwrap();
    let img = first["image"].as_str().unwrap();
    assert_eq!(
        std::fs::read(a.join("images").join(img)).unwrap(),
        std::fs::read(b.join("images").join(img)).unwrap()
    );
    let decoded = image::open(a.join("images").join(img)).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (64, 64));
    // No held-out slice lies within 3 slices (--gap) of a train slice of the same plane.
    for held in valid.iter().chain(&test) {
        let (plane, slice) = (
            held["plane"].as_str().unwrap(),
            held["slice"].as_i64().unwrap(),
        );
        assert!(
            train.iter().all(
                |t| t["plane"] != plane || (t["slice"].as_i64().unwrap() - slice).abs() > 3 * 2
            ),
            "{held} neighbours a train slice"
        );
    }
    // Captions name the plane and the atlas regions; labels agree with them.
    let planes: std::collections::BTreeSet<&str> =
        train.iter().map(|r| r["plane"].as_str().unwrap()).collect();
    assert_eq!(planes.len(), 3);
    let labels = labels_by_image(&a);
    let mut mentioned: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &train {
        let c = r["caption"].as_str().unwrap();
        assert!(
            c.starts_with(&format!(
                "{} MRI slice through the ",
                r["plane"].as_str().unwrap()
            )),
            "{c}"
        );
        for structure in ["hippocampus", "thalamus", "insula", "putamen"] {
            if c.contains(structure) {
                *mentioned.entry(structure).or_insert(0) += 1;
                assert_eq!(
                    labels[r["image"].as_str().unwrap()]["structures"][structure],
                    true,
                    "{c}"
                );
            }
        }
        if r["plane"] == "sagittal" && r["hemisphere"] == "left" {
            assert!(
                !c.contains("the right "),
                "a left sagittal slice shows no right region: {c}"
            );
        }
    }
    assert!(
        mentioned.get("thalamus").copied().unwrap_or(0) > 0,
        "deep structures are named in captions: {mentioned:?}"
    );

    let err = fail(mirage(&[
        "data",
        "mri-atlas",
        "--templates",
        "/nonexistent",
        "--out",
        dir.path().join("c").to_str().unwrap(),
    ]));
    assert!(err.contains("mricron-data"), "{err}");
}

#[test]
fn digits_dataset_is_stratified_deterministic_and_captioned_from_the_pixels() {
    let Some(source) = require_asset(assets_dir().join("sklearn/digits.csv.gz")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let build = |out: &std::path::Path, seed: &str| {
        ok(mirage(&[
            "data",
            "digits",
            "--source",
            source.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--size",
            "16",
            "--seed",
            seed,
        ]))
    };
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let summary: serde_json::Value = serde_json::from_str(build(&a, "0").trim()).unwrap();
    build(&b, "0");
    build(&c, "1");
    for f in [
        "train.jsonl",
        "valid.jsonl",
        "test.jsonl",
        "labels.jsonl",
        "dataset.json",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    assert_ne!(
        std::fs::read(a.join("test.jsonl")).unwrap(),
        std::fs::read(c.join("test.jsonl")).unwrap(),
        "another seed draws another split"
    );
    let read = |split: &str| jsonl(&a.join(format!("{split}.jsonl")));
    let splits = [read("train"), read("valid"), read("test")];
    // 1,797 images, each in one split, every digit in every split at about 70 / 15 / 15.
    assert_eq!(splits.iter().map(Vec::len).sum::<usize>(), 1797);
    assert_eq!(summary["images"]["test"], splits[2].len());
    for (rows, share) in splits.iter().zip([0.70, 0.15, 0.15]) {
        for digit in mirage_data::digits::DIGIT_WORDS {
            let n = rows.iter().filter(|r| r["digit"] == digit).count() as f64;
            let of_digit = splits
                .iter()
                .flatten()
                .filter(|r| r["digit"] == digit)
                .count() as f64;
            assert!(
                (n / of_digit - share).abs() < 0.02,
                "{digit}: {n} of {of_digit}"
            );
        }
    }
    let labels = labels_by_image(&a);
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for (rows, split) in splits.iter().zip(["train", "valid", "test"]) {
        for r in rows {
            let image = r["image"].as_str().unwrap();
            let l = &labels[image];
            assert_eq!(l["split"], split);
            let (digit, stroke, slant) = (
                l["digit"].as_str().unwrap(),
                l["stroke"].as_str().unwrap(),
                l["slant"].as_str().unwrap(),
            );
            assert_eq!(
                r["caption"],
                format!("a handwritten {digit} with {stroke} strokes, {slant}")
            );
            *counts.entry(format!("stroke {stroke}")).or_default() += 1;
            *counts.entry(format!("slant {slant}")).or_default() += 1;
        }
    }
    // Thirds: each stroke and slant class holds about a third of the images.
    for (class, n) in &counts {
        assert!((500..700).contains(n), "{class}: {n} ({counts:?})");
    }
    // The first source row is a zero; its PNG is the 8 x 8 grid scaled to --size.
    let first = image::open(a.join("images/digit_0000.png"))
        .unwrap()
        .to_luma8();
    assert_eq!(first.dimensions(), (16, 16));
    assert_eq!(labels["digit_0000.png"]["digit"], "zero");
    assert!(first.pixels().any(|p| p[0] > 200) && first.get_pixel(0, 0)[0] == 0);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(
        meta["tasks"]["digit"]["classes"].as_array().unwrap().len(),
        10
    );

    let err = fail(mirage(&[
        "data",
        "digits",
        "--source",
        "/nonexistent/digits.csv.gz",
        "--out",
        dir.path().join("d").to_str().unwrap(),
    ]));
    assert!(err.contains("fetch-assets.sh sklearn"), "{err}");
    let err = fail(mirage(&[
        "data",
        "digits",
        "--source",
        source.to_str().unwrap(),
        "--out",
        dir.path().join("e").to_str().unwrap(),
        "--size",
        "4",
    ]));
    assert!(err.contains("--size must be at least 8"), "{err}");
}
