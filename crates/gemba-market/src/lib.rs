//! gemba's review stage: configuration-management runs in, lasting
//! problems and a daily morning market out.
//!
//! - [`format`] reads Puppet reports (the `http` processor's YAML, JSON,
//!   PuppetDB's formats) and Chef runs (data-collector messages, the
//!   JsonFile handler) into one [`run::Run`] shape.
//! - [`signature`] reduces an error message to what stays the same when
//!   the same fault happens again elsewhere.
//! - [`detect`] turns runs into [`problem::Problem`]s: failures by
//!   signature (and whether they are bootstrap-only, intermittent or an
//!   outage of something outside), non-idempotent resources, slow runs,
//!   nodes that stopped reporting.
//! - [`market`] is the morning market: what is new, regressed, still open
//!   and resolved since the previous one, most severe first.
//! - [`service`] runs it on a server: parsed runs are committed to the
//!   store with the problems they changed before they are acknowledged.

pub mod chef;
pub mod detect;
pub mod format;
pub mod market;
pub mod problem;
pub mod publish;
pub mod puppet;
pub mod puppetdb;
pub mod run;
pub mod service;
pub mod signature;
pub mod time;
mod value;

pub use format::{parse, Expect, Format, ParseError, Parsed};
pub use run::Run;
pub use value::yaml_to_json;

/// Node names of runs follow the grid's one name grammar: they end up in
/// URLs, problem lists and, through actions, program arguments.
pub(crate) fn check_node(node: &str) -> Result<(), String> {
    gemba_core::ids::NodeId::new(node)
        .map(|_| ())
        .map_err(|e| format!("node name: {e}"))
}

/// FNV-1a over parts, separated: a stable short digest (not a security
/// measure) for ids derived from content.
pub(crate) fn fnv64<'a>(parts: impl Iterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}
