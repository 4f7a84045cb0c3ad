//! PuppetDB's wire/export format and v4 query answers (lists of reports):
//! any bytes as `POST /api/v1/reports/puppetdb` or a pull source's answer.
#![no_main]

use gemba_market::{parse, Expect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, runs)) = parse(data, Expect::PuppetDb) {
        gemba_fuzz::check_runs(&runs);
    }
});
