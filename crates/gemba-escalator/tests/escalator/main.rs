//! The integration tests of gemba-escalator, one binary: each module was once a
//! file of its own, and linking the dependency tree once per file made
//! the test build the slowest part of a test run.

mod crash_loop;
mod engine;
mod notify;
mod outbox;
mod service;
