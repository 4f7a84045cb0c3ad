//! The escalator: converges the environment from what checks see.
//!
//! [`engine`] decides (pure, virtual-time testable); [`service`] wires it
//! to the store and runs the steps; [`outbox`] stores notices and delivers
//! them through [`notify`] until they arrive; [`simulate`] replays
//! recorded results through the same engine.

pub mod engine;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod service;
pub mod simulate;

pub use engine::{Effect, Engine, Escalation, Phase, Plan, StepOutcome};
/// The results the handle returns.
pub use gemba_checks::CheckResult;
pub use service::{
    spawn, spawn_with, Directory, EscalationView, EscalatorError, EscalatorHandle, NodeInfo,
    ServiceConfig, StepRunner,
};
