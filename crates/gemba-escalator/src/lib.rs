//! The escalator: converges the environment from what checks see.
//!
//! [`engine`] decides (pure, virtual-time testable); the service wires it
//! to the store, runs the steps and sends notifications.

pub mod engine;
pub mod simulate;

pub use engine::{Effect, Engine, Escalation, Phase, Plan, StepOutcome};
