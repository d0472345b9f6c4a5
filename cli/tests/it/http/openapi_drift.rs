//! The committed OpenAPI document is exactly what the code generates.

#[test]
fn committed_openapi_matches_the_code() {
    let generated = mirage_server::app::openapi();
    assert!(
        &generated == crate::http::harness::spec(),
        "openapi/openapi.json is out of date; regenerate it with\n    cargo run -p mirage-cli -- openapi > openapi/openapi.json"
    );
}

#[test]
fn the_served_spec_is_the_committed_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirage"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(&printed == crate::http::harness::spec());
}
