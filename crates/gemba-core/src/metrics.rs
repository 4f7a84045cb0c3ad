//! `[[process]]` and `[metrics]`: which processes every agent samples from
//! /proc, how often, and how long a server keeps the series.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::validate::Checker;

pub mod defaults {
    pub const INTERVAL: &str = "10s";
    pub const RAW_RETENTION: &str = "2d";
    pub const MINUTE_RETENTION: &str = "30d";
    pub const HOUR_RETENTION: &str = "365d";
    pub const MAX_PROCESSES: u32 = 64;
    pub const MAX_SERIES: u32 = 20_000;
    pub const LOG_LINES: u32 = 500;
}

/// The most log lines an agent keeps in all (each at most 1 KiB).
pub const MAX_LOG_LINES_KEPT: usize = 200_000;

/// The most log files one `[[process]]` may name.
pub const LOGS_PER_PROCESS: usize = 8;

/// The most `[[process]]` entries a config may name.
pub const PROCESS_LIMIT: usize = 256;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// How often agents sample (`10s`).
    pub interval: Option<String>,
    /// Raw samples are kept this long (`2d`)...
    pub raw_retention: Option<String>,
    /// ...1-minute averages this long (`30d`)...
    pub minute_retention: Option<String>,
    /// ...and 1-hour averages this long (`365d`).
    pub hour_retention: Option<String>,
    /// Processes an agent samples at most (the rest are reported, not sampled).
    pub max_processes: Option<u32>,
    /// Series a server stores at most (new ones past it are counted and refused).
    pub max_series: Option<u32>,
    /// Lines an agent keeps of each `[[process]]` log file (the newest).
    pub log_lines: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// The name the process is shown and charted under; without another
    /// selector, also the program name it is found by.
    pub name: Option<String>,
    pub pidfile: Option<String>,
    /// A cgroup (v2) path under /sys/fs/cgroup: every process in it.
    pub cgroup: Option<String>,
    /// A systemd unit (`shop.service`): the processes of its cgroup.
    pub unit: Option<String>,
    /// Log files whose newest lines the agent keeps, to show and send the
    /// lines around an event or an escalation.
    #[serde(default)]
    pub logs: Vec<String>,
}

/// How a process is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every process whose program name (comm or argv[0]) is this.
    Program(String),
    Pidfile(String),
    /// Every process in this cgroup directory (absolute path).
    Cgroup(String),
    Unit(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessDef {
    pub name: String,
    pub selector: Selector,
    pub logs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    pub interval: Duration,
    pub raw_retention: Duration,
    pub minute_retention: Duration,
    pub hour_retention: Duration,
    pub max_processes: u32,
    pub max_series: u32,
    pub log_lines: u32,
    pub processes: Vec<ProcessDef>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        let mut c = Checker { errors: Vec::new() };
        metrics_config(&mut c, MetricsSection::default(), Vec::new())
    }
}

fn safe_path(p: &str) -> bool {
    p.starts_with('/') && !p.split('/').any(|s| s == "..") && !p.contains('\0')
}

pub(crate) fn metrics_config(
    c: &mut Checker,
    m: MetricsSection,
    processes: Vec<ProcessSection>,
) -> MetricsConfig {
    let interval = c.duration(
        "metrics.interval",
        m.interval.as_deref(),
        defaults::INTERVAL,
        Duration::from_secs(1),
    );
    let raw_retention = c.duration(
        "metrics.raw_retention",
        m.raw_retention.as_deref(),
        defaults::RAW_RETENTION,
        Duration::from_secs(3600),
    );
    let minute_retention = c.duration(
        "metrics.minute_retention",
        m.minute_retention.as_deref(),
        defaults::MINUTE_RETENTION,
        Duration::from_secs(3600),
    );
    let hour_retention = c.duration(
        "metrics.hour_retention",
        m.hour_retention.as_deref(),
        defaults::HOUR_RETENTION,
        Duration::from_secs(86_400),
    );
    let max_processes = c.count(
        "metrics.max_processes",
        m.max_processes,
        defaults::MAX_PROCESSES,
        1..=PROCESS_LIMIT as u32,
    );
    let max_series = c.count(
        "metrics.max_series",
        m.max_series,
        defaults::MAX_SERIES,
        10..=1_000_000,
    );
    let log_lines = c.count(
        "metrics.log_lines",
        m.log_lines,
        defaults::LOG_LINES,
        1..=10_000,
    );
    if processes.len() > PROCESS_LIMIT {
        c.fail(
            "process",
            format!(
                "{} [[process]] entries; at most {PROCESS_LIMIT}",
                processes.len()
            ),
        );
    }
    let mut defs: Vec<ProcessDef> = Vec::new();
    for (i, p) in processes.into_iter().enumerate() {
        let key = format!("process[{i}]");
        let Some(name) = p.name else {
            c.fail(
                &format!("{key}.name"),
                "missing: the name the process is shown under",
            );
            continue;
        };
        if !crate::ids::is_name(&name) {
            c.fail(
                &format!("{key}.name"),
                format!("{name:?} is not a name (1-64 letters, digits, '-', '_', '.')"),
            );
            continue;
        }
        if name == "host" {
            c.fail(
                &format!("{key}.name"),
                "\"host\" names the machine's own metrics",
            );
            continue;
        }
        if defs.iter().any(|d| d.name == name) {
            c.fail(&format!("{key}.name"), format!("{name:?} is named twice"));
            continue;
        }
        let given = [&p.pidfile, &p.cgroup, &p.unit]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given > 1 {
            c.fail(&key, "name at most one of pidfile, cgroup and unit");
            continue;
        }
        let selector = if let Some(f) = p.pidfile {
            if !safe_path(&f) {
                c.fail(
                    &format!("{key}.pidfile"),
                    format!("{f:?} is not an absolute path"),
                );
                continue;
            }
            Selector::Pidfile(f)
        } else if let Some(g) = p.cgroup {
            let full = if g.starts_with("/sys/fs/cgroup") {
                g.clone()
            } else {
                format!("/sys/fs/cgroup/{}", g.trim_start_matches('/'))
            };
            if !safe_path(&full) {
                c.fail(
                    &format!("{key}.cgroup"),
                    format!("{g:?} is not a cgroup path"),
                );
                continue;
            }
            Selector::Cgroup(full)
        } else if let Some(u) = p.unit {
            let ok = !u.is_empty()
                && u.len() <= 256
                && u.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ":-_.@\\".contains(ch));
            if !ok {
                c.fail(
                    &format!("{key}.unit"),
                    format!("{u:?} is not a systemd unit name"),
                );
                continue;
            }
            let u = if u.contains('.') {
                u
            } else {
                format!("{u}.service")
            };
            Selector::Unit(u)
        } else {
            Selector::Program(name.clone())
        };
        if p.logs.len() > LOGS_PER_PROCESS {
            c.fail(
                &format!("{key}.logs"),
                format!(
                    "{} log files; at most {LOGS_PER_PROCESS} per process",
                    p.logs.len()
                ),
            );
            continue;
        }
        if let Some(bad) = p.logs.iter().find(|f| !safe_path(f) || f.ends_with('/')) {
            c.fail(
                &format!("{key}.logs"),
                format!("{bad:?} is not an absolute path to a file"),
            );
            continue;
        }
        let mut logs: Vec<String> = Vec::new();
        for f in p.logs {
            if !logs.contains(&f) {
                logs.push(f);
            }
        }
        defs.push(ProcessDef {
            name,
            selector,
            logs,
        });
    }
    // Kept lines live in memory: bound them all (a line is at most 1 KiB).
    let files: usize = defs.iter().map(|d| d.logs.len()).sum();
    if files * log_lines as usize > MAX_LOG_LINES_KEPT {
        c.fail(
            "metrics.log_lines",
            format!(
                "{log_lines} lines of each of {files} log files is over {MAX_LOG_LINES_KEPT} lines kept in memory; keep fewer lines or name fewer files"
            ),
        );
    }
    MetricsConfig {
        interval,
        raw_retention,
        minute_retention,
        hour_retention,
        max_processes,
        max_series,
        log_lines,
        processes: defs,
    }
}

/// Every metric a process sample may carry.
pub const PROCESS_METRICS: &[&str] = &[
    "up",
    "processes",
    "rss_bytes",
    "fds",
    "fd_limit",
    "threads",
    "cpu_percent",
    "ctx_voluntary_per_s",
    "ctx_involuntary_per_s",
    "restarts",
    "cpu_seconds",
    "ctx_voluntary",
    "ctx_involuntary",
    "ephemeral_ports",
    "tcp_established",
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_fin_wait1",
    "tcp_fin_wait2",
    "tcp_time_wait",
    "tcp_close",
    "tcp_close_wait",
    "tcp_last_ack",
    "tcp_listen",
    "tcp_closing",
];

/// Every metric the host sample may carry.
pub const HOST_METRICS: &[&str] = &[
    "load1",
    "load5",
    "load15",
    "mem_total_bytes",
    "mem_available_bytes",
    "swap_total_bytes",
    "swap_used_bytes",
    "file_handles",
    "file_handles_max",
    "ephemeral_ports",
    "ephemeral_range",
    "tcp_established",
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_fin_wait1",
    "tcp_fin_wait2",
    "tcp_time_wait",
    "tcp_close",
    "tcp_close_wait",
    "tcp_last_ack",
    "tcp_listen",
    "tcp_closing",
];

/// The name host samples go under (a `[[process]]` may not take it).
pub const HOST: &str = "host";

/// One of this node's recent samples, as metric checks read them.
#[derive(Clone, Debug, PartialEq)]
pub struct RecentSample {
    pub at_ms: u64,
    pub values: BTreeMap<String, f64>,
    pub unavailable: Option<String>,
}

/// This node's samples of the last hour, per process (and `host`): what
/// the agent's sampler wrote and metric checks read. Bounded: an hour or
/// [`RecentSamples::KEEP`] samples per name, whichever is fewer.
#[derive(Clone, Default, Debug)]
pub struct RecentSamples(Arc<Mutex<HashMap<String, VecDeque<RecentSample>>>>);

impl RecentSamples {
    pub const KEEP: usize = 3600;
    const HOUR_MS: u64 = 3_600_000;

    pub fn push(&self, name: &str, sample: RecentSample) {
        let Ok(mut m) = self.0.lock() else { return };
        let q = m.entry(name.to_string()).or_default();
        let at = sample.at_ms;
        q.push_back(sample);
        while q.len() > Self::KEEP || q.front().is_some_and(|f| f.at_ms + Self::HOUR_MS < at) {
            q.pop_front();
        }
    }

    /// The samples of `name` at or after `since_ms`, oldest first, and the
    /// oldest one before that (to tell whether a window is covered).
    pub fn since(&self, name: &str, since_ms: u64) -> (Option<RecentSample>, Vec<RecentSample>) {
        let Ok(m) = self.0.lock() else {
            return (None, Vec::new());
        };
        let Some(q) = m.get(name) else {
            return (None, Vec::new());
        };
        let before = q.iter().rev().find(|s| s.at_ms < since_ms).cloned();
        (
            before,
            q.iter().filter(|s| s.at_ms >= since_ms).cloned().collect(),
        )
    }

    /// The newest sample of `name`.
    pub fn latest(&self, name: &str) -> Option<RecentSample> {
        self.0.lock().ok()?.get(name)?.back().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MetricsConfig, Vec<String>> {
        #[derive(Deserialize)]
        struct F {
            metrics: Option<MetricsSection>,
            #[serde(default)]
            process: Vec<ProcessSection>,
        }
        let f: F = toml::from_str(text).unwrap();
        let mut c = Checker { errors: Vec::new() };
        let m = metrics_config(&mut c, f.metrics.unwrap_or_default(), f.process);
        if c.errors.is_empty() {
            Ok(m)
        } else {
            Err(c
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.key, e.reason))
                .collect())
        }
    }

    #[test]
    fn processes_are_found_one_way_each_and_named_once() {
        let m = parse(
            "[[process]]\nname = \"shop\"\nunit = \"shop\"\n[[process]]\nname = \"nginx\"\n[[process]]\nname = \"db\"\ncgroup = \"system.slice/db.service\"",
        )
        .unwrap();
        assert_eq!(
            m.processes[0].selector,
            Selector::Unit("shop.service".into())
        );
        assert_eq!(m.processes[1].selector, Selector::Program("nginx".into()));
        assert_eq!(m.log_lines, 500);
        let with_logs = parse(
            "[metrics]\nlog_lines = 50\n[[process]]\nname = \"shop\"\nlogs = [\"/var/log/shop.log\", \"/var/log/shop.err\", \"/var/log/shop.log\"]",
        )
        .unwrap();
        assert_eq!(with_logs.log_lines, 50);
        assert_eq!(
            with_logs.processes[0].logs,
            ["/var/log/shop.log", "/var/log/shop.err"],
            "a file named twice is kept once"
        );
        assert_eq!(
            m.processes[2].selector,
            Selector::Cgroup("/sys/fs/cgroup/system.slice/db.service".into())
        );
        for (text, why) in [
            (
                "[[process]]\nname = \"a\"\npidfile = \"/run/a.pid\"\nunit = \"a\"",
                "at most one",
            ),
            ("[[process]]\nname = \"host\"", "machine's own"),
            ("[[process]]\nname = \"a b\"", "not a name"),
            (
                "[[process]]\nname = \"a\"\n[[process]]\nname = \"a\"",
                "named twice",
            ),
            (
                "[[process]]\nname = \"a\"\npidfile = \"run/a.pid\"",
                "absolute",
            ),
            (
                "[[process]]\nname = \"a\"\ncgroup = \"../../etc\"",
                "cgroup path",
            ),
            (
                "[[process]]\nname = \"a\"\nlogs = [\"var/log/a.log\"]",
                "not an absolute path",
            ),
            (
                "[[process]]\nname = \"a\"\nlogs = [\"/var/log/../../etc/shadow\"]",
                "not an absolute path",
            ),
            ("[metrics]\nlog_lines = 0", "log_lines"),
            ("[metrics]\ninterval = \"100ms\"", "too short"),
        ] {
            let e = parse(text).unwrap_err().join("; ");
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn log_lines_kept_in_all_are_bounded() {
        let mut text = String::from("[metrics]\nlog_lines = 10000\n");
        for p in 0..3 {
            text.push_str(&format!("[[process]]\nname = \"p{p}\"\nlogs = ["));
            for f in 0..7 {
                text.push_str(&format!("\"/var/log/{p}-{f}.log\", "));
            }
            text.push_str("]\n");
        }
        let e = parse(&text).unwrap_err().join("; ");
        assert!(e.contains("over 200000 lines kept"), "{e}");
        assert!(
            parse(&text.replace("10000", "9000")).is_ok(),
            "189,000 lines fit"
        );
    }

    #[test]
    fn recent_samples_keep_an_hour() {
        let r = RecentSamples::default();
        for i in 0..800u64 {
            r.push(
                "shop",
                RecentSample {
                    at_ms: i * 10_000,
                    values: BTreeMap::new(),
                    unavailable: None,
                },
            );
        }
        let (before, inside) = r.since("shop", 0);
        assert!(before.is_none());
        assert_eq!(inside.len(), 361, "an hour at 10 s, both ends");
        assert_eq!(r.latest("shop").unwrap().at_ms, 7_990_000);
    }
}
