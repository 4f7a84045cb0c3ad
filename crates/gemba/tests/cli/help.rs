//! The help texts a user reads, pinned: a change to a flag or its wording
//! shows up here. Regenerate with `UPDATE_SNAPSHOTS=1 cargo test -p gemba --test help`.

use crate::common;

use std::path::Path;
use std::process::Command;

fn check(args: &[&str], snapshot: &str) {
    let out = Command::new(common::BIN).args(args).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(snapshot);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        text,
        expected,
        "`gemba {}` changed; review and regenerate {}",
        args.join(" "),
        path.display()
    );
}

#[test]
fn top_level_help() {
    check(&["--help"], "help.txt");
}

#[test]
fn run_help() {
    check(&["run", "--help"], "run-help.txt");
}

#[test]
fn demo_help() {
    check(&["demo", "--help"], "demo-help.txt");
}
