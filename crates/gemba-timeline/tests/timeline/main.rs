//! The integration tests of gemba-timeline, one binary: each module was once a
//! file of its own, and linking the dependency tree once per file made
//! the test build the slowest part of a test run.

mod common;

mod ballot_traces;
mod chart;
mod followers;
mod incidents_shared;
mod leak;
mod postmortem;
mod retention;
mod sampler;
