//! Running the `mirage` binary from tests, and where the fetched assets live.
#![allow(dead_code)]

use std::process::{Command, Output};

pub(crate) fn mirage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(args)
        .output()
        .expect("run mirage")
}

/// `base` and then `extra`: a command a test runs many times with the same start.
pub(crate) fn mirage_with(base: &[&str], extra: &[&str]) -> Output {
    mirage(&[base, extra].concat())
}

/// The values of a JSONL text (a command's stdout, one JSON value a line).
pub(crate) fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The rows of a JSONL file.
pub(crate) fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    json_lines(&std::fs::read_to_string(path).unwrap())
}

/// A test path as an argument.
pub(crate) fn arg(path: &std::path::Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Stdout of a run that must succeed (its stderr in the failure message otherwise).
/// `COMMAND --bundle B --store S --collection C` and then `rest`: how every command over a
/// collection (`search`, `rag`) starts.
pub(crate) fn on_collection<'a>(
    command: &'a str,
    bundle: &'a str,
    store: &'a str,
    collection: &'a str,
    rest: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        command,
        "--bundle",
        bundle,
        "--store",
        store,
        "--collection",
        collection,
    ];
    args.extend_from_slice(rest);
    args
}

pub(crate) fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "mirage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stderr of a run that must fail.
pub(crate) fn fail(out: Output) -> String {
    assert!(!out.status.success(), "mirage should have failed");
    String::from_utf8(out.stderr).unwrap()
}

/// The cache (`MIRAGE_CACHE`, default `~/.cache/mirage`) where scripts keep assets and venvs.
pub(crate) fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_CACHE").map_or_else(
        || {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/mirage")
        },
        std::path::PathBuf::from,
    )
}

/// The asset directory (`MIRAGE_ASSETS`, default `$MIRAGE_CACHE/assets`), filled by
/// `scripts/fetch-assets.sh`.
pub(crate) fn assets_dir() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_ASSETS")
        .map_or_else(|| cache_dir().join("assets"), std::path::PathBuf::from)
}

/// `path` if it exists; otherwise a failure under CI and a printed skip (`None`) elsewhere.
pub(crate) fn require_asset(path: std::path::PathBuf) -> Option<std::path::PathBuf> {
    if path.exists() {
        return Some(path);
    }
    mirage_model::testing::skip_or_fail(&format!(
        "missing {} — run `scripts/fetch-assets.sh`",
        path.display()
    ));
    None
}

/// mricron's brain templates (Debian `mricron-data`), or `None` (skipped, or a failure under CI).
pub(crate) fn mri_templates() -> Option<std::path::PathBuf> {
    require_asset(std::path::PathBuf::from("/usr/share/mricron/templates"))
}

/// `mirage data mri-atlas` from `templates` into `out`: slices of `size` pixels every `step`,
/// one augmentation; its stdout (the summary).
pub(crate) fn mri_atlas(
    templates: &std::path::Path,
    out: &std::path::Path,
    size: u32,
    step: u32,
) -> String {
    let (size, step) = (size.to_string(), step.to_string());
    ok(mirage(&[
        "data",
        "mri-atlas",
        "--templates",
        templates.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--size",
        &size,
        "--augment",
        "1",
        "--step",
        &step,
    ]))
}

/// A tiny bundle (ResNet, mean pooling, 16 dimensions, 32 tokens) written to `dir/bundle`
/// from `seed`; its path as a CLI argument.
pub(crate) fn tiny_bundle(dir: &std::path::Path, seed: u64) -> String {
    let bundle = dir.join("bundle");
    mirage_model::testing::write_tiny_bundle(
        &bundle,
        mirage_model::testing::TinyVision::ResNetMean,
        16,
        seed,
    )
    .unwrap();
    bundle.to_str().unwrap().to_owned()
}
