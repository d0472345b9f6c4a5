//! Schema fuzzing: schemathesis, driven by the server's own `/openapi.json`, against the real
//! `mirage serve` over real HTTP: every operation, every check (no server errors, responses
//! conform to the schema, status codes and content types documented, schema-valid requests
//! accepted, schema-invalid ones rejected), its stateful phase over the collection and item
//! routes, with authentication off and on, and with collections in Qdrant. Seeded, so a failure
//! reproduces; bounded in time. Needs schemathesis from `scripts/venv.sh fuzz …` (scripts/test.sh
//! makes it): `MIRAGE_SCHEMATHESIS` or `$MIRAGE_CACHE/venv-fuzz/bin/st`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::http::harness::Server;

/// The fuzzer's seed: a failure message names it, and rerunning with it repeats the run.
const SEED: &str = "20261203";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "25";

fn schemathesis() -> Option<PathBuf> {
    let st = std::env::var_os("MIRAGE_SCHEMATHESIS").map_or_else(
        || crate::common::cache_dir().join("venv-fuzz/bin/st"),
        PathBuf::from,
    );
    if st.is_file() {
        return Some(st);
    }
    mirage_model::testing::skip_or_fail(&format!(
        "no schemathesis at {} (scripts/test.sh installs it; or set MIRAGE_SCHEMATHESIS)",
        st.display()
    ));
    None
}

/// Runs schemathesis against `server`; panics with its report when any check fails.
fn fuzz(st: &Path, server: &Server, label: &str, key: Option<&str>, report: &Path) {
    let hooks = mirage_model::testing::package_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut cmd = Command::new(st);
    cmd.arg("run")
        .arg(format!("{}/openapi.json", server.api.base))
        .args([
            "--checks",
            "all",
            "--seed",
            SEED,
            "--max-examples",
            MAX_EXAMPLES,
        ])
        .args(["--workers", "1", "--request-timeout", "30", "--no-shrink"])
        .args(["--warnings", "off"])
        .arg("--report-junit-path")
        .arg(report.join(format!("{label}.xml")))
        .args(["--report", "junit", "--output-truncate", "false"])
        .env("SCHEMATHESIS_HOOKS", "mirage_hooks")
        .env("PYTHONPATH", &hooks)
        .env("NO_COLOR", "1")
        .current_dir(&hooks);
    if let Some(k) = key {
        cmd.args(["--header", &format!("Authorization: Bearer {k}")]);
    }
    let out = cmd.output().expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" in ") && (l.contains("passed") || l.contains("failed")))
        .unwrap_or("(no summary line)");
    println!("schemathesis [{label}] seed {SEED}: {summary}");
    assert!(
        out.status.success(),
        "schemathesis [{label}] found failures (seed {SEED}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tiny bundle with a text bank (so `/v1/audit` answers) and a server over it; with
/// `reranker`, a tiny cross-encoder too (so rerank answers; without one it is refused, 409).
fn serve(dir: &Path, reranker: bool, extra: &[&str]) -> Server {
    let bundle = dir.join("bundle");
    crate::http::bundle_with_bank(&bundle);
    let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    if reranker {
        let path = crate::http::tiny_reranker(dir);
        args.extend(["--reranker".to_owned(), path.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&bundle, &dir.join("work"), &args)
}

#[test]
fn the_served_api_meets_its_openapi_document_under_schema_fuzzing() {
    let Some(st) = schemathesis() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), true, &[]);
    fuzz(&st, &server, "auth-off", None, dir.path());
}

#[test]
fn with_api_keys_the_served_api_meets_its_openapi_document_under_schema_fuzzing() {
    let Some(st) = schemathesis() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        false,
        &["--api-keys", "fuzz-read", "--admin-keys", "fuzz-admin"],
    );
    fuzz(&st, &server, "auth-on", Some("fuzz-admin"), dir.path());
}

/// Collections created in Qdrant by default: the same contract over the other store.
#[test]
fn over_qdrant_the_served_api_meets_its_openapi_document_under_schema_fuzzing() {
    let Some(st) = schemathesis() else {
        return;
    };
    let Some(url) = mirage_index::testing::qdrant_test_url("the schema fuzzing over Qdrant") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), true, &["--store", &format!("qdrant:{url}")]);
    fuzz(&st, &server, "qdrant", None, dir.path());
}
