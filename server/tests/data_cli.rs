//! `mirage data radlabels`: the report corpus, indexed and searched with a label filter.

mod common;

use common::{assets_dir, fail, mirage, ok, require_asset};
use mirage_model::testing::{write_tiny_bundle, TinyVision};

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
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // DATA.md: 1,000 reports, 48 labels, 4,442 present / 461 absent / 146 uncertain.
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
    let hits: Vec<serde_json::Value> = hits
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
    let Some(templates) = require_asset(std::path::PathBuf::from("/usr/share/mricron/templates"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let build = |out: &std::path::Path| {
        ok(mirage(&[
            "data",
            "mri-atlas",
            "--templates",
            templates.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--size",
            "64",
            "--augment",
            "1",
            "--step",
            "2",
        ]))
    };
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
    let read = |split: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(a.join(format!("{split}.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
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
    let labels: std::collections::HashMap<String, serde_json::Value> =
        std::fs::read_to_string(a.join("labels.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["image"].as_str().unwrap().to_owned(), v)
            })
            .collect();
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
