//! Where gemba's stages meet. Each stage owns its data and knows no other
//! stage; the views that read two of them at once live here, once, below
//! HTTP and above the stages, so the console, the API, the CLI and the
//! server's daily publication all show the same value:
//!
//! - [`edition`]: the morning market (review) with the open action items
//!   of post-mortems (learn);
//! - [`incident`]: an incident's timeline (learn) from the escalator's
//!   journal (converge), state changes and events (learn) and the
//!   market's problems on its nodes (review);
//! - [`escalation`]: an escalation (converge) with the incident that
//!   gathers it and the charts of its metric checks (learn).

pub mod edition;
pub mod escalation;
pub mod incident;

#[cfg(test)]
mod tests;
