//! `--input FILE|-` of `mirage embed`, `classify`, `search` and `rag`: inputs read line by line
//! from a file or standard input, answered in order with their line numbers, bad lines reported
//! by number; and texts after `--` that start with "-".

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{fail, json_lines, mirage, ok};
use serde_json::Value;

/// `mirage ARGS` with `stdin` on its standard input.
fn mirage_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Two rows' embeddings agree (batches of other sizes pad differently, within float error).
fn assert_close(a: &Value, b: &Value) {
    let (a, b) = (
        a["embedding"].as_array().unwrap(),
        b["embedding"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "{worst}");
}

fn png(path: &Path, seed: u8) {
    image::RgbImage::from_fn(20, 20, |x, y| {
        image::Rgb([(x as u8).wrapping_mul(seed), (y * 7) as u8, seed])
    })
    .save(path)
    .unwrap();
}

#[test]
fn embed_and_classify_read_lines_from_a_file_or_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = &crate::common::tiny_bundle(d, 3);
    png(&d.join("a.png"), 3);
    png(&d.join("b.png"), 9);
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let input = format!(
        "left pleural effusion\n\n{{\"image\": \"{a}\"}}\n{{not json\n-5 mm nodule\n{{\"image\": \"{}\"}}\n{{\"text\": \"edema\", \"image\": \"{b}\"}}\n{{\"text\": \"no edema\"}}\n",
        d.join("missing.png").display()
    );
    let file = d.join("inputs.txt");
    std::fs::write(&file, &input).unwrap();

    // The same rows from a file and from stdin, in input order, batches of 2; bad lines are
    // reported by number and make the status non-zero after everything else was answered.
    let args = |source: &str| -> Vec<String> {
        [
            "embed",
            "--bundle",
            bundle,
            "--batch-size",
            "2",
            "--input",
            source,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let a_file: Vec<String> = args(file.to_str().unwrap());
    let from_file = mirage(&a_file.iter().map(String::as_str).collect::<Vec<_>>());
    let a_stdin = args("-");
    let from_stdin = mirage_stdin(
        &a_stdin.iter().map(String::as_str).collect::<Vec<_>>(),
        &input,
    );
    for out in [&from_file, &from_stdin] {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("line 4: not a JSON object"), "{stderr}");
        assert!(
            stderr.contains("line 6: ") && stderr.contains("missing.png"),
            "{stderr}"
        );
        assert!(
            stderr.contains("line 7: give \"text\" or \"image\", not both"),
            "{stderr}"
        );
        assert!(stderr.contains("3 of 7 input lines"), "{stderr}");
    }
    let got = json_lines(&String::from_utf8(from_file.stdout).unwrap());
    assert_eq!(
        got,
        json_lines(&String::from_utf8(from_stdin.stdout).unwrap())
    );
    let lines: Vec<u64> = got.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 3, 5, 8]);
    assert_eq!(got[0]["input"], "left pleural effusion");
    assert_eq!(got[1]["input"], a);
    assert_eq!(got[2]["input"], "-5 mm nodule");
    assert_eq!(got[3]["input"], "no edema");
    // Each vector is what a single call gives.
    let single = json_lines(&ok(mirage(&[
        "embed",
        "--bundle",
        bundle,
        "--text",
        "left pleural effusion",
        "no edema",
    ])));
    for (g, s) in [(&got[0], &single[0]), (&got[3], &single[1])] {
        assert_close(g, s);
    }
    let image = json_lines(&ok(mirage(&["embed", "--bundle", bundle, "--image", a])));
    assert_close(&got[1], &image[0]);

    // Texts after `--` may start with "-"; --input-format text reads a `{` line as a text.
    let dashed = json_lines(&ok(mirage(&[
        "embed",
        "--bundle",
        bundle,
        "--",
        "-5 mm nodule",
        "--text",
    ])));
    assert_eq!(dashed.len(), 2);
    assert_eq!(dashed[0]["input"], "-5 mm nodule");
    assert_close(&dashed[0], &got[2]);
    assert_eq!(dashed[1]["input"], "--text");
    let raw = mirage_stdin(
        &[
            "embed",
            "--bundle",
            bundle,
            "--input",
            "-",
            "--input-format",
            "text",
        ],
        "{not json\n",
    );
    let raw = json_lines(&ok(raw));
    assert_eq!(raw[0]["input"], "{not json");
    // Every good line answered: status 0; JSON output collects them into one array.
    let clean = mirage_stdin(
        &[
            "embed", "--bundle", bundle, "--input", "-", "--format", "json",
        ],
        "edema\neffusion\n",
    );
    let all: Value = serde_json::from_str(&ok(clean)).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);

    // Classify: a line is an image path, or JSON with "image".
    let out = mirage_stdin(
        &[
            "classify", "--bundle", bundle, "--label", "effusion", "edema", "--input", "-",
        ],
        &format!(
            "{a}\n{{\"image\": \"{b}\"}}\n{}\n",
            d.join("missing.png").display()
        ),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3: ") && stderr.contains("missing.png"),
        "{stderr}"
    );
    let classified = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(classified.len(), 2);
    assert_eq!(classified[1]["line"], 2);
    assert_eq!(classified[1]["image"], b);
    let single: Value = serde_json::from_str(&ok(mirage(&[
        "classify", "--bundle", bundle, "--label", "effusion", "edema", "--image", b,
    ])))
    .unwrap();
    assert_eq!(classified[1]["labels"], single["labels"]);

    // Bad use of the flags.
    let e = fail(mirage(&[
        "embed", "--bundle", bundle, "--input", "-", "--text", "x",
    ]));
    assert!(e.contains("--input") && e.contains("--text"), "{e}");
    let e = fail(mirage(&[
        "embed",
        "--bundle",
        bundle,
        "--input",
        d.join("nope.txt").to_str().unwrap(),
    ]));
    assert!(e.contains("nope.txt"), "{e}");
}

#[test]
fn search_and_rag_answer_one_query_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = &crate::common::tiny_bundle(d, 4);
    let findings = ["effusion", "edema", "pneumothorax", "cardiomegaly"];
    let corpus: Vec<String> = (0..12)
        .map(|i| {
            serde_json::json!({"id": format!("r{i:02}"),
                "text": format!("chest radiograph {i} showing {}", findings[i % 4])})
            .to_string()
        })
        .collect();
    let corpus_path = d.join("corpus.jsonl");
    std::fs::write(&corpus_path, corpus.join("\n") + "\n").unwrap();
    let store = format!("embedded:{}", d.join("indexes").display());
    ok(mirage(&[
        "index",
        "build",
        "--bundle",
        bundle,
        "--corpus",
        corpus_path.to_str().unwrap(),
        "--format",
        "jsonl",
        "--store",
        &store,
        "--collection",
        "reports",
        "--progress",
        "quiet",
    ]));
    let base = [
        "--bundle",
        bundle,
        "--store",
        &store,
        "--collection",
        "reports",
    ];
    let single = |query: &str| -> Vec<Value> {
        let mut a = vec!["search"];
        a.extend(base);
        a.extend(["--k", "3", "--text", query]);
        json_lines(&ok(mirage(&a)))
    };
    let mut a = vec!["search"];
    a.extend(base);
    a.extend(["--k", "3", "--input", "-"]);
    let out = mirage_stdin(
        &a,
        "pneumothorax\n{\"text\": \"edema\", \"image\": \"x.png\"}\n{\"text\": \"cardiomegaly\"}\n",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2: give \"text\" or \"image\", not both"),
        "{stderr}"
    );
    let got = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(got.len(), 6);
    for (line, query, hits) in [
        (1, "pneumothorax", &got[..3]),
        (3, "cardiomegaly", &got[3..]),
    ] {
        let want = single(query);
        for (h, w) in hits.iter().zip(&want) {
            assert_eq!(h["line"], line);
            assert_eq!((&h["id"], &h["rank"]), (&w["id"], &w["rank"]));
        }
    }

    // A single query may start with "-".
    let dashed = single("-5 mm pneumothorax");
    assert_eq!(dashed.len(), 3);
    let mut a = vec!["rag"];
    a.extend(base);
    a.extend(["--question", "-5 mm effusion", "--min-score", "-1"]);
    let context: Value = serde_json::from_str(&ok(mirage(&a))).unwrap();
    assert!(
        !context["citations"].as_array().unwrap().is_empty(),
        "{context}"
    );

    let mut a = vec!["rag"];
    a.extend(base);
    a.extend(["--k", "2", "--min-score", "-1", "--input", "-"]);
    let out = mirage_stdin(&a, "edema of the lung\n   \n{\"text\": \"effusion\"}\n");
    let contexts = json_lines(&ok(out));
    assert_eq!(contexts.len(), 2);
    assert_eq!(contexts[0]["line"], 1);
    assert_eq!(contexts[1]["line"], 3);
    for c in &contexts {
        assert_eq!(c["citations"].as_array().unwrap().len(), 2, "{c}");
    }
}
