//! Running the `mirage` binary from tests.

use std::process::{Command, Output};

pub(crate) fn mirage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(args)
        .output()
        .expect("run mirage")
}

/// Stdout of a run that must succeed (its stderr in the failure message otherwise).
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
