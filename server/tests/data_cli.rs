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
