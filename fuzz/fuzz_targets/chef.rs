//! chef-client's data-collector messages (run_start, run_converge 1.0.0 and
//! 1.1.0) and the JsonFile handler's document: any bytes as
//! `POST /api/v1/chef/data-collector`.
#![no_main]

use gemba_market::{parse, Expect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, runs)) = parse(data, Expect::Chef) {
        gemba_fuzz::check_runs(&runs);
    }
});
