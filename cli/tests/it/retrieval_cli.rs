//! Passages, grouping, rerank and `mirage eval-retrieval` from the shell: what a user runs, on a
//! tiny bundle (32 tokens at most, so ordinary reports are "long") and a tiny random
//! cross-encoder imported with `mirage model import-reranker`.

use std::path::Path;

use crate::common::{fail, json_lines, mirage, ok, on_collection};
use serde_json::{json, Value};

const FINDINGS: [&str; 4] = ["effusion", "edema", "pneumothorax", "cardiomegaly"];

/// Report `i`: a FINDINGS and an IMPRESSION section, over 32 tokens in all.
fn report(i: usize) -> String {
    let f = FINDINGS[i % FINDINGS.len()];
    format!(
        "FINDINGS: chest radiograph {i} showing the left lung and the right lung with {f}. \
         the heart and the lung are consistent with {f} on the left.\n\
         IMPRESSION: {f} of the {} lung, no pneumonia.",
        if i.is_multiple_of(2) { "left" } else { "right" }
    )
}

/// A tiny bundle, a tiny reranker and a 12-report corpus under `dir`.
fn fixture(dir: &Path) -> (String, String, String) {
    let bundle = crate::common::tiny_bundle(dir, 5);
    let hf = dir.join("ce-hf");
    mirage_model::testing::write_tiny_cross_encoder_dir(&hf, 4).unwrap();
    let reranker = dir.join("reranker");
    let out = ok(mirage(&[
        "model",
        "import-reranker",
        "--hf",
        hf.to_str().unwrap(),
        "--out",
        reranker.to_str().unwrap(),
        "--model-id",
        "tiny-ce",
    ]));
    assert!(out.is_empty() || out.contains("tiny-ce"), "{out}");
    let corpus = dir.join("reports.jsonl");
    let rows: Vec<String> = (0..12)
        .map(|i| {
            json!({"id": format!("r{i:02}"), "text": report(i),
                   "metadata": {"finding": FINDINGS[i % FINDINGS.len()]}})
            .to_string()
        })
        .collect();
    std::fs::write(&corpus, rows.join("\n") + "\n").unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    (bundle, s(&reranker), s(&corpus))
}

#[test]
fn passages_grouping_and_rerank_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, reranker, corpus) = fixture(dir.path());
    let store = format!("embedded:{}", dir.path().join("indexes").display());
    let build_run = |collection: &str, extra: &[&str]| {
        let mut args = vec![
            "index",
            "build",
            "--bundle",
            &bundle,
            "--corpus",
            &corpus,
            "--format",
            "jsonl",
            "--store",
            &store,
            "--collection",
            collection,
            "--progress",
            "quiet",
        ];
        args.extend(extra);
        mirage(&args)
    };
    let build = |collection: &str, extra: &[&str]| -> Value {
        let out = ok(build_run(collection, extra));
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };

    // Unsplit, every report is over the limit: counted and listed, never silently cut.
    let whole = build("whole", &[]);
    assert_eq!(whole["indexed"], 12);
    assert_eq!(whole["truncated"], 12, "{whole}");
    let first = &whole["truncated_items"][0];
    assert_eq!(first["id"], "r00");
    assert!(first["tokens"].as_u64().unwrap() > first["limit"].as_u64().unwrap());

    // Sections: every passage inside the limit, FINDINGS / IMPRESSION named in the payload.
    let split = build("split", &["--chunk", "sections"]);
    assert_eq!(split["indexed"], 12);
    assert_eq!(split["truncated"], 0, "{split}");
    let search = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec![
            "search",
            "--bundle",
            &bundle,
            "--store",
            &store,
            "--collection",
            "split",
            "--text",
            "pneumothorax of the left lung",
        ];
        args.extend(extra);
        json_lines(&ok(mirage(&args)))
    };
    let hits = search(&["--k", "50", "--mode", "lexical"]);
    assert!(
        hits.len() > 12,
        "more passages than reports: {}",
        hits.len()
    );
    let mut sections = std::collections::HashSet::new();
    for h in &hits {
        let p = &h["payload"]["passage"];
        let parent = p["parent"].as_str().unwrap();
        assert_eq!(
            h["id"].as_str().unwrap(),
            format!("{parent}#{}", p["index"])
        );
        let text: String = report(parent[1..].parse().unwrap())
            .chars()
            .skip(p["start"].as_u64().unwrap() as usize)
            .take((p["end"].as_u64().unwrap() - p["start"].as_u64().unwrap()) as usize)
            .collect();
        assert_eq!(h["text"].as_str().unwrap(), text, "the span is the text");
        sections.insert(p["section"].as_str().unwrap_or("").to_owned());
    }
    assert!(
        sections.contains("FINDINGS") && sections.contains("IMPRESSION"),
        "{sections:?}"
    );

    // Grouped: one hit per report, its passages best first, the page counted in reports.
    let groups = search(&["--k", "5", "--group-by-parent", "--group-size", "2"]);
    assert_eq!(groups.len(), 5);
    let parents: std::collections::HashSet<&str> = groups
        .iter()
        .map(|g| g["parent"].as_str().unwrap())
        .collect();
    assert_eq!(parents.len(), 5, "one hit per report");
    for g in &groups {
        let ps = g["passages"].as_array().unwrap();
        assert!((1..=2).contains(&ps.len()), "{g}");
        assert_eq!(ps[0]["id"], g["id"]);
        let scores: Vec<f64> = ps.iter().map(|p| p["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    }
    let page2 = search(&[
        "--k",
        "5",
        "--offset",
        "5",
        "--group-by-parent",
        "--group-size",
        "2",
    ]);
    assert!(page2
        .iter()
        .all(|g| !parents.contains(g["parent"].as_str().unwrap())));

    // Reranked: the scores are the cross-encoder's relevances, best first, each hit's rank in it.
    let reranked = search(&[
        "--k",
        "6",
        "--reranker",
        &reranker,
        "--rerank-candidates",
        "20",
    ]);
    assert_eq!(reranked.len(), 6);
    for (i, h) in reranked.iter().enumerate() {
        assert_eq!(h["legs"]["rerank"]["rank"], i + 1, "{h}");
        let s = h["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s), "a sigmoid relevance: {s}");
    }
    let scores: Vec<f64> = reranked
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // RAG cites passages by report and span, reranked.
    let rag: Value = serde_json::from_str(&ok(mirage(&on_collection(
        "rag",
        &bundle,
        &store,
        "split",
        &[
            "--question",
            "edema of the right lung",
            "--k",
            "3",
            "--min-score",
            "-1",
            "--reranker",
            &reranker,
        ],
    ))))
    .unwrap();
    let citations = rag["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{rag}");
    let context = rag["context"].as_str().unwrap();
    for c in citations {
        let parent = c["passage"]["parent"]
            .as_str()
            .unwrap_or_else(|| panic!("{c}"));
        assert!(context.contains(&format!("split/{parent}")), "{context}");
        assert!(context.contains("characters"), "{context}");
    }

    // Bad input names the fix.
    let e = fail(build_run(
        "bad",
        &[
            "--chunk",
            "tokens",
            "--chunk-tokens",
            "8",
            "--chunk-overlap",
            "8",
        ],
    ));
    assert!(
        e.contains("chunk overlap must be smaller than the window"),
        "{e}"
    );
    let e = fail(build_run(
        "bad",
        &["--chunk", "tokens", "--chunk-tokens", "31"],
    ));
    assert!(e.contains("chunk tokens must be 1–30"), "{e}");
    let e = fail(mirage(&on_collection(
        "search",
        &bundle,
        &store,
        "split",
        &["--text", "edema", "--rerank-candidates", "5"],
    )));
    assert!(e.contains("--reranker"), "{e}");
    let e = fail(mirage(&[
        "model",
        "import-reranker",
        "--hf",
        &bundle,
        "--out",
        dir.path().join("not-a-reranker").to_str().unwrap(),
    ]));
    assert!(
        e.contains("config.json") || e.contains("cross-encoder"),
        "{e}"
    );
}

#[test]
fn eval_retrieval_runs_every_mode_with_passages_and_rerank() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, reranker, _) = fixture(dir.path());
    let beir = dir.path().join("beir");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    let corpus: Vec<String> = (0..12)
        .map(|i| {
            json!({"_id": format!("r{i:02}"), "text": report(i),
                   "metadata": {"finding": FINDINGS[i % FINDINGS.len()]}})
            .to_string()
        })
        .collect();
    std::fs::write(beir.join("corpus.jsonl"), corpus.join("\n") + "\n").unwrap();
    let mut queries = Vec::new();
    let mut qrels = vec!["query-id\tcorpus-id\tscore".to_owned()];
    for (q, f) in FINDINGS.iter().enumerate() {
        for (kind, text) in [("exact", (*f).to_owned()), ("other", format!("the {f}"))] {
            let id = format!("q{q}-{kind}");
            queries.push(json!({"_id": id, "text": text, "metadata": {"kind": kind}}).to_string());
            for d in (q..12).step_by(FINDINGS.len()) {
                qrels.push(format!("{id}\tr{d:02}\t1"));
            }
        }
    }
    std::fs::write(beir.join("queries.jsonl"), queries.join("\n") + "\n").unwrap();
    std::fs::write(beir.join("qrels/test.tsv"), qrels.join("\n") + "\n").unwrap();
    let store = format!("embedded:{}", dir.path().join("indexes").display());
    let eval = |collection: &str, out: &str, extra: &[&str]| -> (Value, String) {
        let out_dir = dir.path().join(out);
        let mut args = vec![
            "eval-retrieval",
            "--bundle",
            &bundle,
            "--data",
            beir.to_str().unwrap(),
            "--store",
            &store,
            "--collection",
            collection,
            "--group-by",
            "kind",
            "--label-field",
            "finding",
            "--fusions",
            "rrf,weighted",
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = mirage(&args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let table = ok(o);
        assert!(table.contains("| group | mode |"), "{table}");
        assert!(out_dir.join("recall.png").is_file());
        let results =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
                .unwrap();
        (results, stderr)
    };
    let mean = |r: &Value, group: &str, mode: &str, m: &str| -> f64 {
        r["means"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["group"] == group && row["mode"] == mode)
            .unwrap_or_else(|| panic!("no {group}/{mode} in {}", r["means"]))["means"][m]
            .as_f64()
            .unwrap()
    };

    let (whole, stderr) = eval("whole", "whole", &[]);
    assert_eq!(whole["truncated_documents"], 12, "{whole}");
    assert!(stderr.contains("12 documents are longer"), "{stderr}");
    let (split, _) = eval(
        "split",
        "split",
        &[
            "--chunk",
            "tokens",
            "--chunk-tokens",
            "12",
            "--chunk-overlap",
            "2",
            "--reranker",
            &reranker,
        ],
    );
    assert_eq!(split["truncated_documents"], 0);
    assert!(split["indexed_items"].as_u64().unwrap() > 24, "{split}");
    assert_eq!(split["chunking"]["tokens"], 12);
    let variants: Vec<&str> = split["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for v in [
        "dense",
        "lexical",
        "hybrid-rrf",
        "hybrid-weighted",
        "hybrid-rrf+rerank",
        "hybrid-weighted+rerank",
    ] {
        assert!(variants.contains(&v), "{v} not in {variants:?}");
        for g in ["all", "exact", "other"] {
            for m in ["ndcg", "recall", "mrr"] {
                let x = mean(&split, g, v, m);
                assert!((0.0..=1.0).contains(&x), "{g}/{v}/{m} = {x}");
            }
        }
    }
    // The finding's own word is in exactly its reports: BM25 puts them first, so every
    // relevant report is in the top 10 of 12 (depth 100 holds all).
    for r in [&whole, &split] {
        assert!(mean(r, "exact", "lexical", "ndcg") > 0.99, "{}", r["means"]);
        assert!((mean(r, "all", "lexical", "recall") - 1.0).abs() < 1e-9);
    }
    let paired = split["paired"].as_array().unwrap();
    assert!(
        paired.iter().any(|p| p["a"] == "hybrid-rrf+rerank"),
        "rerank is compared with the others"
    );
    assert!(split["hellinger"]["lexical"].as_f64().is_some(), "{split}");

    // Bad input names the fix.
    let bad = |data: &Path, extra: &[&str]| {
        let (data, out) = (data.to_str().unwrap(), dir.path().join("x"));
        let mut args = vec!["eval-retrieval", "--bundle", &bundle, "--data", data];
        args.extend(["--store", &store, "--collection", "x"]);
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(extra);
        fail(mirage(&args))
    };
    let e = bad(&dir.path().join("nowhere"), &[]);
    assert!(e.contains("corpus.jsonl"), "{e}");
    let e = bad(&beir, &["--rerank-candidates", "5"]);
    assert!(e.contains("--reranker"), "{e}");
}
