//! The integration tests of gemba-node, one binary: each module was once a
//! file of its own, and linking the dependency tree once per file made
//! the test build the slowest part of a test run.

mod common;

mod address_proof;
mod budgets;
mod incidents;
mod logs;
mod node;
mod output_rule;
mod postgres;
mod postmortem;
mod tokens;
mod trust;
