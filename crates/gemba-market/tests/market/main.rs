//! The integration tests of gemba-market, one binary: each module was once a
//! file of its own, and linking the dependency tree once per file made
//! the test build the slowest part of a test run.

mod common;

mod bad_day;
mod detectors;
mod golden;
mod kinds;
mod leaving;
mod publish;
mod puppetdb;
mod service;
