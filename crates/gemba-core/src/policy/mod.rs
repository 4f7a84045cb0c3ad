//! The convergence policy: checks (what the environment should look like),
//! the escalation pattern (how to converge it, most fundamental level
//! first), the escalator's safety settings and where notifications go.
//!
//! Like the rest of the config, every field of the file form is optional
//! and validated in one pass, so `gemba config check` lists every mistake
//! in a policy at once instead of the first one.

mod checks;
mod file;
mod model;
mod validate;

pub use file::*;
pub use model::*;
pub(crate) use validate::{validate, validate_targets};

pub mod defaults {
    pub const CHECK_INTERVAL: &str = "10s";
    pub const CHECK_TIMEOUT: &str = "5s";
    pub const FALL: u32 = 1;
    pub const RISE: u32 = 1;
    pub const FLAP_LOW: f64 = 20.0;
    pub const FLAP_HIGH: f64 = 30.0;
    pub const FLAP_WINDOW: &str = "1h";
    pub const FLAP_CHANGES_HIGH: u32 = 6;
    pub const FLAP_CHANGES_LOW: u32 = 2;
    pub const TLS_WARN_DAYS: u32 = 14;
    pub const TLS_CRIT_DAYS: u32 = 3;
    pub const LEVEL_TIMEOUT: &str = "5m";
    pub const LEVEL_QUIESCE: &str = "30s";
    pub const MODE: &str = "act";
    pub const QUIET_PERIOD: &str = "30s";
    pub const BUDGET: u32 = 2;
    pub const BACKOFF: &str = "1m";
    pub const CLIMB: bool = false;
    pub const MAX_PER_SCOPE_PER_HOUR: u32 = 3;
    pub const MAX_RUNNING: u32 = 2;
    pub const LEASE_TTL: &str = "30s";
    pub const STALE_AFTER_INTERVALS: u32 = 3;
    pub const CRASH_LOOP_FAILURES: u32 = 3;
    pub const CRASH_LOOP_WINDOW: &str = "10m";
    pub const STEP_GRACE: &str = "20s";
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{Config, ConfigError, ConfigFile, Overrides};

    fn load(text: &str) -> Result<Config, ConfigError> {
        let file = ConfigFile::parse(Path::new("p.toml"), text)?;
        Config::from_file(file, &Overrides::default(), "p.toml")
    }

    #[test]
    fn a_setting_of_another_kind_of_check_is_refused_naming_both() {
        let err = load(
            "[[check]]\nname = \"web\"\nkind = \"tcp\"\nport = 80\nurl = \"http://x/\"\n\n[[check]]\nname = \"p\"\nkind = \"process\"\nprocess = \"shop\"\nwarn = 3.0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("check[0].url")
                && err.contains("a tcp check does not use `url`")
                && err.contains("http checks"),
            "{err}"
        );
        assert!(
            err.contains("check[1].warn") && err.contains("metric checks"),
            "{err}"
        );
        // The settings of its own kind are fine.
        assert!(load(
            "[[check]]\nname = \"web\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 80\n"
        )
        .is_ok());
    }

    #[test]
    fn a_valid_pattern_is_ordered_most_fundamental_first() {
        let c = load(
            r#"
[[level]]
level = 6
name = "redeploy"
run = ["/opt/ops/redeploy", "{node}"]
[[level]]
level = 4
name = "vm"
run = ["/opt/ops/create-vm", "{node}"]
timeout = "20m"
quiesce = "2m"
[[check]]
name = "ping"
kind = "mesh-node"
level = 4
[[check]]
name = "web"
kind = "tcp"
tier = "app"
port = 80
level = 6
fall = 2
"#,
        )
        .unwrap();
        let p = &c.policy;
        assert_eq!(p.levels.iter().map(|l| l.level).collect::<Vec<_>>(), [4, 6]);
        assert_eq!(p.chain_from(4), [4, 6]);
        assert_eq!(p.chain_from(5), [6]);
        assert_eq!(p.more_fundamental(6), Some(4));
        assert_eq!(
            p.checks[0].kind,
            super::CheckKind::MeshNode {
                node: "{node}".into()
            }
        );
        assert_eq!(
            p.checks[1].kind,
            super::CheckKind::Tcp {
                host: "{node_addr}".into(),
                port: 80
            }
        );
        assert_eq!(p.levels[0].timeout.as_secs(), 1200);
    }

    #[test]
    fn every_policy_error_is_listed_with_its_key() {
        let err = load(
            r#"
[[level]]
level = 2
name = "a"
run = ["/bin/true", "{nod}"]
[[level]]
level = 2
name = "b"
run = []
[[check]]
name = "x"
kind = "snmp"
[[check]]
name = "y"
kind = "tcp"
scope = "global"
host = "{node}"
port = 1
level = 9
[[check]]
name = "y"
kind = "command"
command = ["/bin/true"]
[escalator]
mode = "yolo"
"#,
        )
        .unwrap_err();
        let ConfigError::Invalid { errors, .. } = &err else {
            panic!("{err}")
        };
        let text = err.to_string();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "level[0].run[1]",
                "level[1].run",
                "level[1].level",
                "check[0].kind",
                "check[1].host",
                "check[1].level",
                "check[2].name",
                "escalator.mode"
            ],
            "{text}"
        );
        assert!(text.contains("bad template variable {nod}"), "{text}");
        assert!(text.contains("has no action"), "{text}");
        assert!(text.contains("duplicate level 2"), "{text}");
        assert!(text.contains("unknown check kind \"snmp\""), "{text}");
        assert!(
            text.contains("unknown level 9; defined levels: 2"),
            "{text}"
        );
    }

    #[test]
    fn flap_and_crash_loop_settings_are_checked() {
        let err = load(
            r#"
[escalator]
crash_loop_failures = 1
crash_loop_window = "10ms"
[[check]]
name = "x"
kind = "command"
command = ["/bin/true"]
flap_window = "2h"
flap_changes_high = 4
flap_changes_low = 4
"#,
        )
        .unwrap_err();
        let ConfigError::Invalid { errors, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "check[0].flap_changes_low",
                "escalator.crash_loop_failures",
                "escalator.crash_loop_window"
            ],
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("must be below flap_changes_high (4)"),
            "{err}"
        );
        let ok = load(
            "[escalator]\ncrash_loop_failures = 4\ncrash_loop_window = \"30m\"\n[[check]]\nname = \"x\"\nkind = \"command\"\ncommand = [\"/bin/true\"]\nflap_window = \"2h\"\n",
        )
        .unwrap();
        assert_eq!(ok.policy.escalator.crash_loop_failures, 4);
        assert_eq!(
            ok.policy.escalator.crash_loop_window,
            Duration::from_secs(1800)
        );
        assert_eq!(ok.policy.checks[0].flap_window, Duration::from_secs(7200));
        assert_eq!(ok.policy.checks[0].flap_changes_high, 6);
    }
}
