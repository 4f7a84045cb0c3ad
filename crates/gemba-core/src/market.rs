//! `[market]`: how the review stage takes reports and judges runs.

use std::time::Duration;

use serde::Deserialize;

use crate::validate::Checker;

pub mod defaults {
    pub const MAX_REPORT_SIZE: &str = "16MiB";
    pub const MARKET_AT: &str = "08:00";
    pub const TIMEZONE: &str = "UTC";
    pub const CLEAN_RUNS: u32 = 3;
    pub const RUN_RETENTION: &str = "30d";
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSection {
    /// Largest report body accepted (`16MiB`, `512KiB`, bytes).
    pub max_report_size: Option<String>,
    /// When the daily market is cut, local time `HH:MM`.
    pub market_at: Option<String>,
    /// The time zone of `market_at` (`Europe/Berlin`); UTC by default.
    pub timezone: Option<String>,
    /// Environments that count as production.
    pub production: Option<Vec<String>>,
    /// Runs without recurrence that resolve a problem.
    pub clean_runs: Option<u32>,
    /// Stored runs older than this are removed.
    pub run_retention: Option<String>,
    /// The console's address as readers reach it
    /// (`https://gemba.example.net`): the links of an exported market.
    pub base_url: Option<String>,
    #[serde(default)]
    pub rule: Vec<RuleSection>,
    /// Where the market goes every day at `market_at`: targets shaped as
    /// `[[notify]]` (webhook, smtp, command).
    #[serde(default)]
    pub publish: Vec<crate::policy::NotifySection>,
    /// Where runs are pulled from (`kind = "puppetdb"`).
    #[serde(default)]
    pub source: Vec<SourceSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub kind: Option<String>,
    /// PuppetDB's base URL, `http://puppetdb.example.net:8080`.
    pub url: Option<String>,
    /// How often to ask for new reports (`60s`).
    pub interval: Option<String>,
    /// Reports per request (100).
    pub page: Option<u32>,
}

/// A place runs are pulled from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceDef {
    /// PuppetDB's v4 query API: `/pdb/query/v4/reports`, newest first
    /// by `receive_time` after the stored cursor.
    PuppetDb {
        url: String,
        interval: Duration,
        page: u32,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// A regular expression over the problem's signature or message.
    pub pattern: Option<String>,
    pub category: Option<String>,
    pub cause: Option<String>,
    pub severity: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MarketConfig {
    pub max_report_bytes: usize,
    /// (hour, minute).
    pub market_at: (u8, u8),
    pub timezone: String,
    pub production: Vec<String>,
    pub clean_runs: u32,
    pub run_retention: Duration,
    /// Where readers reach the console (no trailing slash), for the
    /// absolute links of an exported market; none: the HTTP listener's.
    pub base_url: Option<String>,
    pub rules: Vec<MarketRule>,
    /// Targets the daily market is sent to (none: it is only served).
    pub publish: Vec<crate::policy::NotifyDef>,
    pub sources: Vec<SourceDef>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MarketRule {
    pub pattern: String,
    pub category: Option<String>,
    pub cause: Option<String>,
    pub severity: Option<String>,
}

impl Default for MarketConfig {
    fn default() -> Self {
        let mut c = Checker { errors: Vec::new() };
        market_config(&mut c, MarketSection::default())
    }
}

/// `http://host[:port][/prefix]`, nothing after the path.
fn valid_base_url(u: &str) -> bool {
    let Some(rest) = u.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    !host.is_empty()
        && !u.contains(['?', '#', ' ', '@'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
}

/// Parses `16MiB`, `512KiB`, `2MB`, `1000`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as \"16MiB\""))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" | "kB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        other => return Err(format!("{other:?} is not a size unit (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

pub(crate) fn market_config(c: &mut Checker, m: MarketSection) -> MarketConfig {
    let size_text = m
        .max_report_size
        .as_deref()
        .unwrap_or(defaults::MAX_REPORT_SIZE);
    let max_report_bytes = match parse_size(size_text) {
        Ok(n) if (1024..=1024 * 1024 * 1024).contains(&n) => n,
        Ok(_) => {
            c.fail(
                "market.max_report_size",
                format!("{size_text} is outside 1KiB..=1GiB"),
            );
            16 * 1024 * 1024
        }
        Err(e) => {
            c.fail("market.max_report_size", e);
            16 * 1024 * 1024
        }
    };
    let at_text = m.market_at.as_deref().unwrap_or(defaults::MARKET_AT);
    let market_at = match at_text
        .split_once(':')
        .and_then(|(h, mi)| Some((h.parse::<u8>().ok()?, mi.parse::<u8>().ok()?)))
    {
        Some((h, mi)) if h < 24 && mi < 60 => (h, mi),
        _ => {
            c.fail(
                "market.market_at",
                format!("{at_text:?} is not a time of day such as \"08:00\""),
            );
            (8, 0)
        }
    };
    let timezone = m.timezone.unwrap_or_else(|| defaults::TIMEZONE.into());
    let tz_ok = timezone == "UTC"
        || (!timezone.contains("..")
            && !timezone.starts_with('/')
            && timezone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
            && std::path::Path::new("/usr/share/zoneinfo")
                .join(&timezone)
                .is_file());
    if !tz_ok {
        c.fail(
            "market.timezone",
            format!(
                "{timezone:?} is not a time zone this machine knows (such as \"Europe/Berlin\")"
            ),
        );
    }
    let clean_runs = c.count(
        "market.clean_runs",
        m.clean_runs,
        defaults::CLEAN_RUNS,
        1..=100,
    );
    let run_retention = c.duration(
        "market.run_retention",
        m.run_retention.as_deref(),
        defaults::RUN_RETENTION,
        Duration::from_secs(7 * 86_400),
    );
    let base_url = m.base_url.map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &base_url {
        let plain = u
            .strip_prefix("https://")
            .map(|rest| format!("http://{rest}"))
            .unwrap_or_else(|| u.clone());
        if !valid_base_url(&plain) {
            c.fail(
                "market.base_url",
                format!("{u:?} is not an address such as \"https://gemba.example.net\" (http or https, a host, a path at most)"),
            );
        }
    }
    let mut rules = Vec::new();
    for (i, r) in m.rule.into_iter().enumerate() {
        let key = |k: &str| format!("market.rule[{i}].{k}");
        let Some(pattern) = r.pattern else {
            c.fail(
                &key("pattern"),
                "required: a regular expression over a problem's signature or message",
            );
            continue;
        };
        if let Err(e) = regex::Regex::new(&pattern) {
            c.fail(
                &key("pattern"),
                format!("{pattern:?} is not a regular expression: {e}"),
            );
        }
        if let Some(s) = &r.severity {
            if !matches!(s.as_str(), "low" | "medium" | "high" | "critical") {
                c.fail(
                    &key("severity"),
                    format!("{s:?} is not low, medium, high or critical"),
                );
            }
        }
        if r.category.is_none() && r.cause.is_none() && r.severity.is_none() {
            c.fail(
                &key("pattern"),
                "a rule sets at least one of category, cause and severity",
            );
        }
        rules.push(MarketRule {
            pattern,
            category: r.category,
            cause: r.cause,
            severity: r.severity,
        });
    }
    let publish = crate::policy::validate_targets(c, "market.publish", m.publish);
    let mut sources = Vec::new();
    for (i, src) in m.source.into_iter().enumerate() {
        let key = |k: &str| format!("market.source[{i}].{k}");
        match src.kind.as_deref() {
            Some("puppetdb") => {}
            Some(other) => {
                c.fail(
                    &key("kind"),
                    format!("unknown source kind {other:?}; use puppetdb"),
                );
                continue;
            }
            None => {
                c.fail(&key("kind"), "required: puppetdb");
                continue;
            }
        }
        let url = match src.url {
            Some(u) if valid_base_url(&u) => u.trim_end_matches('/').to_string(),
            Some(u) => {
                c.fail(
                    &key("url"),
                    format!("{u:?} is not an http:// base URL such as \"http://puppetdb.example.net:8080\" (PuppetDB's https port wants Puppet client certificates, which this build does not send)"),
                );
                continue;
            }
            None => {
                c.fail(&key("url"), "required: PuppetDB's base URL");
                continue;
            }
        };
        let interval = c.duration(
            &key("interval"),
            src.interval.as_deref(),
            "60s",
            Duration::from_secs(10),
        );
        let page = c.count(&key("page"), src.page, 100, 1..=1000);
        sources.push(SourceDef::PuppetDb {
            url,
            interval,
            page,
        });
    }
    MarketConfig {
        publish,
        sources,
        max_report_bytes,
        market_at,
        timezone,
        production: m
            .production
            .unwrap_or_else(|| vec!["production".into(), "prod".into()]),
        clean_runs,
        run_retention,
        base_url,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs")
            .unwrap_err()
            .contains("not a size unit"));
    }

    #[test]
    fn every_bad_market_setting_is_reported() {
        let mut c = Checker { errors: Vec::new() };
        market_config(
            &mut c,
            MarketSection {
                max_report_size: Some("1B".into()),
                market_at: Some("25:00".into()),
                timezone: Some("../etc/passwd".into()),
                rule: vec![RuleSection {
                    pattern: Some("(".into()),
                    severity: Some("urgent".into()),
                    ..Default::default()
                }],
                publish: vec![crate::policy::NotifySection {
                    kind: Some("webhook".into()),
                    url: Some("ftp://hooks.example.net/market".into()),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let keys: Vec<&str> = c.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "market.max_report_size",
                "market.market_at",
                "market.timezone",
                "market.rule[0].pattern",
                "market.rule[0].severity",
                "market.publish[0].url"
            ]
        );
    }
}
