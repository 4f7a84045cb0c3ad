//! Puppet's `http` report processor: any bytes as the YAML body of
//! `POST /api/v1/reports/puppet` (Ruby tags, anchors, aliases, symbols).
#![no_main]

use gemba_market::{parse, Expect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The endpoint reads the body as Puppet's; whatever comes back must be a
    // well-formed run or a named error.
    if let Ok((_, runs)) = parse(data, Expect::Puppet) {
        gemba_fuzz::check_runs(&runs);
    }
});
