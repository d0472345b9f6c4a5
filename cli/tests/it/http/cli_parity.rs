//! `mirage rag` and `mirage audit` against `POST /v1/rag/context` and `POST /v1/audit`: the same
//! inputs give the same results, because both sides call the same library functions
//! (`mirage_index::rag`, `mirage_model::matching::audit_pairs`).

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::{json_lines, on_collection};
use crate::http::e2e::REPORTS;
use crate::http::harness::*;

/// Runs the CLI; panics with its stderr unless it succeeds; returns stdout.
fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(args)
        .env_remove("MIRAGE_QDRANT_URL")
        .env_remove("MIRAGE_STORE")
        .output()
        .expect("run mirage");
    assert!(
        out.status.success(),
        "mirage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn close(a: &Value, b: &Value, what: &str) {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => assert!((x - y).abs() < 1e-5, "{what}: {a} vs {b}"),
        _ => assert_eq!(a, b, "{what}"),
    }
}

fn write_corpus(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let (png_a, jpg) = (png(1, 96), jpeg(4, 120));
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::write(dir.join("images/a.png"), &png_a).unwrap();
    std::fs::write(dir.join("images/c.jpg"), &jpg).unwrap();
    let mut rows: Vec<String> = REPORTS
        .iter()
        .map(|(id, text, finding)| {
            json!({"id": id, "text": text, "metadata": {"finding": finding}}).to_string()
        })
        .collect();
    rows.push(
        json!({"id": "img-a", "image": "a.png", "metadata": {"finding": "pneumonia"}}).to_string(),
    );
    rows.push(json!({"id": "img-c", "image": "c.jpg", "text": "ct of the abdomen"}).to_string());
    std::fs::write(dir.join("corpus.jsonl"), rows.join("\n")).unwrap();
    let pairs = [
        json!({"id": "p1", "image": "a.png", "caption": "chest x-ray with pneumonia"}),
        json!({"id": "p2", "image": "c.jpg", "caption": "axial brain mri"}),
        json!({"id": "p3", "image": "a.png", "caption": "coronal knee mri"}),
    ];
    let lines: Vec<String> = pairs.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("pairs.jsonl"), lines.join("\n")).unwrap();
    (png_a, jpg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rag_and_audit_on_the_command_line_equal_the_http_api() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = d.join("bundle");
    crate::http::bundle_with_bank(&bundle);
    let (png_a, jpg) = write_corpus(d);
    let work = d.join("work");
    let store = format!("embedded:{}", work.join("indexes").display());
    let b = bundle.to_str().unwrap();
    let images = d.join("images");
    cli(&[
        "index",
        "build",
        "--bundle",
        b,
        "--store",
        &store,
        "--collection",
        "reports",
        "--corpus",
        d.join("corpus.jsonl").to_str().unwrap(),
        "--format",
        "jsonl",
        "--image-root",
        images.to_str().unwrap(),
        "--progress",
        "quiet",
    ]);
    let image_a = images.join("a.png");
    // (CLI flags, the same request as JSON.)
    let cases: Vec<(Vec<&str>, Value)> = vec![
        (
            vec!["--question", REPORTS[0].1, "--k", "3", "--max-chars", "400"],
            json!({"question": REPORTS[0].1, "k": 3, "max_chars": 400}),
        ),
        (
            vec![
                "--question",
                "effusion",
                "--image",
                image_a.to_str().unwrap(),
                "--min-score",
                "-1",
            ],
            json!({"question": "effusion", "image": b64(&png_a), "min_score": -1.0}),
        ),
        (
            vec![
                "--image",
                image_a.to_str().unwrap(),
                "--target",
                "image",
                "--min-score",
                "-1",
            ],
            json!({"image": b64(&png_a), "target": "image", "min_score": -1.0}),
        ),
        (
            vec![
                "--question",
                "pneumonia",
                "--filter",
                r#"{"must": [{"key": "finding", "match": {"value": "pneumonia"}}]}"#,
                "--dedup-threshold",
                "1",
                "--min-score",
                "-1",
            ],
            json!({"question": "pneumonia", "filter": {"must": [{"key": "finding", "match": {"value": "pneumonia"}}]}, "dedup_threshold": 1.0, "min_score": -1.0}),
        ),
        (
            vec!["--question", "knee", "--min-score", "0.9999"],
            json!({"question": "knee", "min_score": 0.9999}),
        ),
        (
            vec![
                "--question",
                REPORTS[2].1,
                "--max-chars",
                "100",
                "--min-score",
                "-1",
            ],
            json!({"question": REPORTS[2].1, "max_chars": 100, "min_score": -1.0}),
        ),
    ];
    let mut from_cli = Vec::new();
    for (flags, _) in &cases {
        let args = on_collection("rag", b, &store, "reports", flags);
        from_cli.push(serde_json::from_str::<Value>(&cli(&args)).unwrap());
    }
    let audit_lines = json_lines(&cli(&[
        "audit",
        "--bundle",
        b,
        "--corpus",
        d.join("pairs.jsonl").to_str().unwrap(),
        "--image-root",
        images.to_str().unwrap(),
        "--threshold",
        "0.3",
    ]));
    assert_eq!(audit_lines.len(), 3);

    let server = Server::start(&bundle, &work, &[]);
    let api = server.api.clone();
    let rag = "/v1/rag/context";
    let mut abstained = 0;
    for ((_, body), c) in cases.iter().zip(&from_cli) {
        let mut body = body.clone();
        body["collection"] = json!("reports");
        let h = api.post(rag, rag, &body).await.expect(200).body;
        for field in [
            "context",
            "abstained",
            "reason",
            "duplicates_removed",
            "truncated",
        ] {
            assert_eq!(c[field], h[field], "{field} of {body}");
        }
        close(&c["best_score"], &h["best_score"], "best_score");
        close(&c["min_score"], &h["min_score"], "min_score");
        let (cc, hc) = (
            c["citations"].as_array().unwrap(),
            h["citations"].as_array().unwrap(),
        );
        assert_eq!(cc.len(), hc.len(), "{body}");
        for (x, y) in cc.iter().zip(hc) {
            for field in ["rank", "id", "text", "image", "payload"] {
                assert_eq!(x[field], y[field], "citation {field} of {body}");
            }
            close(&x["score"], &y["score"], "citation score");
        }
        // One response type: the same fields, the same context.
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(c), keys(&h), "{body}");
        for field in ["content_parts", "mode"] {
            assert_eq!(c[field], h[field], "{field} of {body}");
        }
        abstained += usize::from(h["abstained"] == true);
    }
    assert_eq!(abstained, 1, "one case abstains, the others cite");

    let a = "/v1/audit";
    let h = api
        .post(
            a,
            a,
            &json!({"threshold": 0.3, "pairs": [
                {"id": "p1", "image": b64(&png_a), "caption": "chest x-ray with pneumonia"},
                {"id": "p2", "image": b64(&jpg), "caption": "axial brain mri"},
                {"id": "p3", "image": b64(&png_a), "caption": "coronal knee mri"},
            ]}),
        )
        .await
        .expect(200)
        .body;
    for (c, h) in audit_lines.iter().zip(h["results"].as_array().unwrap()) {
        for field in ["index", "id", "flagged", "nearest_bank_caption"] {
            assert_eq!(c[field], h[field], "audit {field}");
        }
        for field in ["s", "image_caption_similarity", "nearest_bank_weight"] {
            close(&c[field], &h[field], field);
        }
    }
}

#[test]
fn bad_rag_and_audit_arguments_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = d.join("bundle");
    crate::http::bundle_without_bank(&bundle);
    write_corpus(d);
    let b = bundle.to_str().unwrap();
    let store = format!("embedded:{}", d.join("indexes").display());
    let fails = |args: &[&str], needle: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_mirage"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    };
    let rag = [
        "rag",
        "--bundle",
        b,
        "--store",
        &store,
        "--collection",
        "reports",
    ];
    fails(
        &[&rag[..], &["--question", "x", "--k", "0"]].concat(),
        "k must be 1–100",
    );
    fails(
        &[&rag[..], &["--question", "x", "--max-chars", "10"]].concat(),
        "max_chars",
    );
    fails(
        &[&rag[..], &["--question", "x", "--min-score", "2"]].concat(),
        "min_score",
    );
    fails(&[&rag[..], &["--question", "x"]].concat(), "reports");
    fails(&rag, "--question");
    let corpus = d.join("pairs.jsonl");
    let audit = ["audit", "--bundle", b, "--corpus", corpus.to_str().unwrap()];
    fails(
        &[
            &audit[..],
            &["--image-root", d.join("images").to_str().unwrap()],
        ]
        .concat(),
        "no text bank",
    );
    fails(&[&audit[..], &["--threshold", "3"]].concat(), "--threshold");
    fails(
        &[&audit[..], &["--format", "csv"]].concat(),
        "unknown corpus format",
    );
    std::fs::write(
        d.join("escape.jsonl"),
        r#"{"image": "../../etc/passwd", "caption": "x"}"#,
    )
    .unwrap();
    fails(
        &[
            "audit",
            "--bundle",
            b,
            "--corpus",
            d.join("escape.jsonl").to_str().unwrap(),
        ],
        "escapes",
    );
}
