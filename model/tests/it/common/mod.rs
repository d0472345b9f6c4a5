//! Shared helpers of the integration tests: where the fetched assets live, and the rule that a
//! missing asset skips a test locally but fails it in CI (where `.ci/run` fetches everything).
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

/// The cache root (`MIRAGE_CACHE`, default `~/.cache/mirage`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MIRAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/mirage")
        })
}

/// The asset directory (`MIRAGE_ASSETS`, default `$MIRAGE_CACHE/assets`).
pub fn assets_dir() -> PathBuf {
    std::env::var_os("MIRAGE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("assets"))
}

/// Returns `path` if it exists. Otherwise fails under CI and returns `None` (skip) elsewhere,
/// printing how to get it.
pub fn require(path: PathBuf, how: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    mirage_model::testing::skip_or_fail(&format!("missing {} — run `{how}`", path.display()));
    None
}

/// Rewrites `dir/bundle.json` with `f` applied (to break a bundle in one precise way).
pub fn edit_bundle_json(dir: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("bundle.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Lower-case hex sha256, as `bundle.json` records checksums.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
