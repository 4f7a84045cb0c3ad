//! `[incidents]`: when an escalation opens an incident, how close in time
//! escalations must start to be gathered into one, and how long an
//! incident stays open after its escalations end.

use std::time::Duration;

use serde::Deserialize;

use crate::validate::Checker;

pub mod defaults {
    /// A restart that worked at once pages nobody: only what needs a
    /// human opens an incident.
    pub const OPEN_ON: &str = "hold";
    pub const GROUP_WITHIN: &str = "10m";
    pub const COOL_DOWN: &str = "5m";
    pub const APPROVAL_WAIT: &str = "15m";
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsSection {
    /// `hold` (an escalation held for a human: a crash loop, a rate
    /// limit, a spent budget, an approval waiting longer than
    /// `approval_wait`), `start` (every escalation, when it starts),
    /// `give-up` (only a spent budget) or `never`.
    pub open_on: Option<String>,
    /// An escalation that starts within this long of an open incident's
    /// newest one joins it instead of opening another; one on a scope an
    /// incident covers reopens it within this long of its closing.
    pub group_within: Option<String>,
    /// How long an incident stays open after its escalations end: a new
    /// escalation on its scopes in that time joins it.
    pub cool_down: Option<String>,
    /// How long a level may wait for approval before the wait opens an
    /// incident (with `open_on = "hold"`).
    pub approval_wait: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenOn {
    Hold,
    Start,
    GiveUp,
    Never,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IncidentsConfig {
    pub open_on: OpenOn,
    pub group_within: Duration,
    pub cool_down: Duration,
    pub approval_wait: Duration,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        incidents_config(
            &mut Checker { errors: Vec::new() },
            IncidentsSection::default(),
        )
    }
}

pub(crate) fn incidents_config(c: &mut Checker, s: IncidentsSection) -> IncidentsConfig {
    let open_on = match s.open_on.as_deref().unwrap_or(defaults::OPEN_ON) {
        "hold" => OpenOn::Hold,
        "start" => OpenOn::Start,
        "give-up" => OpenOn::GiveUp,
        "never" => OpenOn::Never,
        other => {
            c.fail(
                "incidents.open_on",
                format!(
                    "{:?}: say hold, start, give-up or never",
                    other.chars().take(40).collect::<String>()
                ),
            );
            OpenOn::Hold
        }
    };
    let group_within = c.duration(
        "incidents.group_within",
        s.group_within.as_deref(),
        defaults::GROUP_WITHIN,
        Duration::ZERO,
    );
    let cool_down = c.duration(
        "incidents.cool_down",
        s.cool_down.as_deref(),
        defaults::COOL_DOWN,
        Duration::ZERO,
    );
    let approval_wait = c.duration(
        "incidents.approval_wait",
        s.approval_wait.as_deref(),
        defaults::APPROVAL_WAIT,
        Duration::ZERO,
    );
    IncidentsConfig {
        open_on,
        group_within,
        cool_down,
        approval_wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_on_is_one_of_three_and_says_so() {
        let mut c = Checker { errors: Vec::new() };
        let d = incidents_config(&mut c, IncidentsSection::default());
        assert_eq!(d.open_on, OpenOn::Hold);
        assert_eq!(d.group_within, Duration::from_secs(600));
        assert_eq!(d.cool_down, Duration::from_secs(300));
        assert_eq!(d.approval_wait, Duration::from_secs(900));
        let g = incidents_config(
            &mut c,
            IncidentsSection {
                open_on: Some("give-up".into()),
                group_within: Some("0s".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            (g.open_on, g.group_within),
            (OpenOn::GiveUp, Duration::ZERO)
        );
        assert!(c.errors.is_empty());
        incidents_config(
            &mut c,
            IncidentsSection {
                open_on: Some("sometimes".into()),
                ..Default::default()
            },
        );
        assert!(c.errors[0].reason.contains("hold, start, give-up or never"));
    }
}
