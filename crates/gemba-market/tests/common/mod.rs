//! Where the shared report fixtures are: `$GEMBA_FIXTURES`, or
//! `../shared/fixtures` beside the repository.

#![allow(dead_code)]

use std::path::PathBuf;

pub fn fixtures() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GEMBA_FIXTURES") {
        return Some(PathBuf::from(p));
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let p = here.join("../../../shared/fixtures");
    if p.join("SOURCES.txt").exists() {
        return Some(p);
    }
    eprintln!(
        "SKIPPED: the report fixtures are not at {} (set GEMBA_FIXTURES)",
        p.display()
    );
    None
}

pub fn read(rel: &str) -> Vec<u8> {
    let root = fixtures().expect("fixtures");
    std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn run(rel: &str) -> gemba_market::Run {
    let (_, mut docs) = gemba_market::parse(&read(rel), gemba_market::Expect::Any)
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    match docs.remove(0) {
        gemba_market::Parsed::Run(r) => *r,
        other => panic!("{rel}: not a run: {other:?}"),
    }
}
