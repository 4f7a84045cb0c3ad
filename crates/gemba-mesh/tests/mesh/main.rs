//! The integration tests of gemba-mesh, one binary: each module was once a
//! file of its own, and linking the dependency tree once per file made
//! the test build the slowest part of a test run.

mod cluster;
mod departure;
mod hostile_gossip;
mod probe_path;
mod sites;
