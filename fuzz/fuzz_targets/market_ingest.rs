//! The whole review path for one document: any bytes read as `gemba import`
//! reads them, the runs folded into the detectors twice (a re-send), time
//! moved on, and the morning market written out. Whatever a report holds
//! must not panic the market task, which owns every problem.
#![no_main]

use gemba_market::detect::{Detector, Thresholds};
use gemba_market::market::{Market, RunStats};
use gemba_market::{parse, Expect, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((_, docs)) = parse(data, Expect::Any) else {
        return;
    };
    gemba_fuzz::check_runs(&docs);
    let mut d = Detector::new(Thresholds::default());
    let mut last = 0u64;
    for _ in 0..2 {
        for p in &docs {
            if let Parsed::Run(run) = p {
                d.apply(run);
                last = last.max(run.started_ms);
            }
        }
    }
    d.tick(last.saturating_add(30 * 86_400_000));
    let m = Market::build(d.problems(), 0, u64::MAX, RunStats::default());
    let _ = m.to_text();
    let _ = m.to_markdown();
    for p in d.problems() {
        serde_json::to_string(p).expect("a problem serializes");
    }
});
