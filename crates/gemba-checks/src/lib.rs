//! Checks: what gemba observes about the services it converges.
//!
//! Kinds (`tcp`, `http`, `command` for any Nagios plugin, `process`,
//! `mesh-node`, `mesh-link`), the safe program runner they and escalation
//! actions share, fall/rise and flap detection, and the runner that keeps
//! a set of instances on their intervals.

pub mod http;
pub mod kinds;
pub mod metric;
pub mod nagios;
pub mod pipeline;
pub mod placement;
pub mod process;
pub mod result;
pub mod runner;
pub mod tracker;

pub use gemba_exec as exec;
pub use kinds::{Instance, MeshView, Observation, Vars};
pub use nagios::{Perf, Status};
pub use result::CheckResult;
pub use runner::{Clock, MeshSource, Report, Runner};
pub use tracker::{CheckTracker, HardState};
