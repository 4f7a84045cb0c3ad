//! gemba's learn stage: change events and the followers that turn other
//! stages' records (escalation steps, configuration runs) into events.

pub mod agent;
pub mod changes;
pub mod chart;
pub mod event;
pub mod incident;
pub mod logs;
pub mod postmortem;
pub mod postmortem_export;
pub mod sample;
pub mod series;
pub mod service;
pub mod trend;

pub use event::{EventError, NewEvent, Source};
pub use service::{Query, TimelineError, TimelineHandle};
