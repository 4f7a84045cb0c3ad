//! What every report target asserts about a document the parsers accept.

use gemba_market::Parsed;

/// A parsed run must hold what the rest of gemba relies on: a node name in
/// the grid's grammar, a key, and counts and lists within their caps. A
/// parser that lets anything else through panics here, and the fuzzer
/// keeps the input.
pub fn check_runs(runs: &[Parsed]) {
    for p in runs {
        match p {
            Parsed::Run(run) => {
                assert!(
                    gemba_core::ids::NodeId::new(&run.node).is_ok(),
                    "node {:?}",
                    run.node
                );
                assert!(!run.key.is_empty() && run.key.len() <= 256, "key {:?}", run.key);
                assert!(run.resources.len() <= gemba_market::run::MAX_RESOURCES);
                assert!(run.logs.len() <= gemba_market::run::MAX_LOGS);
                // What is stored and shown must serialize.
                serde_json::to_string(run).expect("a run serializes");
            }
            Parsed::Start(s) => {
                assert!(gemba_core::ids::NodeId::new(&s.node).is_ok(), "node {:?}", s.node);
            }
        }
    }
}
