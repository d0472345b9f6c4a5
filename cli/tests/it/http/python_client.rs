//! The Python client (`clients/python`) against this server: its pytest suite, with the real
//! `httpx`, `langchain-core` and `llama-index-core` (the pinned venv `scripts/test.sh` makes,
//! named by MIRAGE_CLIENT_PYTHON), runs against a live `mirage serve` with a text bank, a
//! reranker and a media folder.

use std::process::Command;

use crate::http::harness::{png, Server};

#[test]
fn the_python_client_suite_passes_against_a_live_server() {
    let Some(python) = std::env::var_os("MIRAGE_CLIENT_PYTHON") else {
        mirage_model::testing::skip_or_fail(
            "MIRAGE_CLIENT_PYTHON is not set (scripts/test.sh makes the client venv)",
        );
        return;
    };
    let crate::http::Scratch { dir, bundle, .. } = crate::http::scratch(true);
    let reranker = crate::http::tiny_reranker(dir.path());
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("scan.png"), png(5, 32)).unwrap();
    let server = Server::start(
        &bundle,
        &dir.path().join("work"),
        &[
            "--reranker",
            reranker.to_str().unwrap(),
            "--media-root",
            media.to_str().unwrap(),
        ],
    );
    let root =
        mirage_model::testing::package_dir(env!("CARGO_MANIFEST_DIR")).join("../clients/python");
    let out = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&root)
        .env("MIRAGE_URL", &server.api.base)
        .env("MIRAGE_MEDIA_FILE", "scan.png")
        // The source tree, not an installed copy, is what is tested.
        .env("PYTHONPATH", root.join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("running pytest");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest failed:\n{report}");
    assert!(
        !report.contains("skipped"),
        "no client test may skip here:\n{report}"
    );
}
