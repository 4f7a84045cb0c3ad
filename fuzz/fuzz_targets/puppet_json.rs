//! A Puppet report as JSON: any bytes that start as a JSON object, through
//! the same endpoint as the YAML.
#![no_main]

use gemba_market::{parse, Expect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Keep the fuzzer on the JSON reader: bodies that do not open an object
    // are the YAML target's.
    if data.first() != Some(&b'{') {
        return;
    }
    if let Ok((_, runs)) = parse(data, Expect::Puppet) {
        gemba_fuzz::check_runs(&runs);
    }
});
