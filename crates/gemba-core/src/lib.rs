//! Shared vocabulary of gemba: node identities, durations written the way
//! operators write them, and the configuration model with its validation.
//!
//! Everything here is plain data; no I/O beyond reading a config file, so
//! every stage crate can depend on it without pulling a runtime.

pub mod config;
pub mod duration;
pub mod example;
pub mod graph;
pub mod ids;
pub mod incidents;
pub mod journal;
pub mod markdown;
pub mod market;
pub mod metrics;
pub mod policy;
pub mod scope;
pub mod secret;
pub mod template;
mod validate;

pub use config::{
    Config, ConfigError, ConfigFile, Invalid, Overrides, RoleOrigin, StoreConfig, StoreLocation,
    Topology,
};
pub use duration::HumanDuration;
pub use ids::{NodeId, SiteName};
pub use policy::{CheckDef, CheckKind, LevelDef, Mode, Policy, ScopeRule};
pub use scope::Scope;
