//! The integration tests of gemba, one binary: each module was once a
//! file of its own, and linking the dependency tree once per file made
//! the test build the slowest part of a test run.

mod common;

mod cli;
mod console_browser;
mod crash_loop;
mod ecmp_nft;
mod escalator;
mod help;
mod import;
mod impostor;
mod market_durability;
mod partition_netns;
mod postmortem_browser;
mod processes;
mod puppet_real;
mod store_cmd;
