//! The integration tests of gemba-api, one binary: each module was once a
//! file of its own, and linking the dependency tree once per file made
//! the test build the slowest part of a test run.

mod common;

mod api;
mod converge_api;
mod events_api;
mod market_api;
mod sites_api;
