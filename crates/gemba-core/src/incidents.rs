//! `[incidents]`: when an escalation opens an incident, and how close in
//! time escalations must start to be gathered into one.

use std::time::Duration;

use serde::Deserialize;

use crate::validate::Checker;

pub mod defaults {
    pub const OPEN_ON: &str = "start";
    pub const GROUP_WITHIN: &str = "10m";
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsSection {
    /// `start` (an escalation opens one when it starts), `give-up` (when
    /// the escalator gives up and a human must act) or `never`.
    pub open_on: Option<String>,
    /// An escalation that starts within this long of an open incident's
    /// newest one joins it instead of opening another.
    pub group_within: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenOn {
    Start,
    GiveUp,
    Never,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IncidentsConfig {
    pub open_on: OpenOn,
    pub group_within: Duration,
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
        "start" => OpenOn::Start,
        "give-up" => OpenOn::GiveUp,
        "never" => OpenOn::Never,
        other => {
            c.fail(
                "incidents.open_on",
                format!(
                    "{:?}: say start, give-up or never",
                    other.chars().take(40).collect::<String>()
                ),
            );
            OpenOn::Start
        }
    };
    let group_within = c.duration(
        "incidents.group_within",
        s.group_within.as_deref(),
        defaults::GROUP_WITHIN,
        Duration::ZERO,
    );
    IncidentsConfig {
        open_on,
        group_within,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_on_is_one_of_three_and_says_so() {
        let mut c = Checker { errors: Vec::new() };
        let d = incidents_config(&mut c, IncidentsSection::default());
        assert_eq!(d.open_on, OpenOn::Start);
        assert_eq!(d.group_within, Duration::from_secs(600));
        let g = incidents_config(
            &mut c,
            IncidentsSection {
                open_on: Some("give-up".into()),
                group_within: Some("0s".into()),
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
                group_within: None,
            },
        );
        assert!(c.errors[0].reason.contains("start, give-up or never"));
    }
}
