//! Which report a document is, and the one entry point that reads any of
//! them. Endpoints say what they expect (Puppet's processor posts to its
//! own path, chef-client to its own); `gemba import` lets the content
//! decide.

use serde_json::Value;

use crate::chef::{self, Message, RunStart};
use crate::run::Run;
use crate::value::yaml_to_json;

/// A report format gemba reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `Puppet::Transaction::Report` as YAML (the `http` processor).
    PuppetYaml,
    /// The same report as JSON.
    PuppetJson,
    /// PuppetDB's wire/export format, or its v4 query answer (a list).
    PuppetDb,
    /// A chef-client data-collector message.
    ChefMessage,
    /// The JSON file of Chef's JsonFile report handler.
    ChefJsonFile,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::PuppetYaml => "puppet-yaml",
            Format::PuppetJson => "puppet-json",
            Format::PuppetDb => "puppetdb",
            Format::ChefMessage => "chef-data-collector",
            Format::ChefJsonFile => "chef-json-file",
        }
    }
}

/// What an endpoint accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `/api/v1/reports/puppet`: Puppet YAML or JSON.
    Puppet,
    /// `/api/v1/reports/puppetdb`.
    PuppetDb,
    /// `/api/v1/chef/data-collector`: a message, or a JsonFile document.
    Chef,
    /// `gemba import`: whatever the content is.
    Any,
}

/// One parsed document's content.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Run>),
    /// A Chef run began (its converge message will follow).
    Start(RunStart),
}

/// Why a document was not read: shown to the sender as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Reads `body` as what `expect` allows. A document may hold several runs
/// (a PuppetDB query answer); any bad one refuses the whole document, so
/// that nothing is half-stored.
pub fn parse(body: &[u8], expect: Expect) -> Result<(Format, Vec<Parsed>), ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ParseError(format!("the report is not UTF-8 text ({e})")))?;
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.is_empty() {
        return Err(ParseError("the report is empty".into()));
    }
    let looks_json = trimmed.starts_with('{') || trimmed.starts_with('[');
    if !looks_json {
        if matches!(expect, Expect::PuppetDb | Expect::Chef) {
            return Err(ParseError("expected a JSON document".into()));
        }
        let v = yaml_to_json(trimmed).map_err(ParseError)?;
        return one(Format::PuppetYaml, crate::puppet::parse(&v));
    }
    let v: Value =
        serde_json::from_str(trimmed).map_err(|e| ParseError(format!("not valid JSON: {e}")))?;
    let format = detect_json(&v).ok_or_else(|| {
        ParseError(match expect {
            Expect::Puppet => "not a Puppet report: no host and no resource_statuses".into(),
            Expect::PuppetDb => "not a PuppetDB report: no certname".into(),
            Expect::Chef => "not a Chef run: neither a data-collector message (message_type) nor a JsonFile handler document (elapsed_time)".into(),
            Expect::Any => "not a report gemba knows: not Puppet (host, resource_statuses), PuppetDB (certname), nor Chef (message_type, elapsed_time)".into(),
        })
    })?;
    let allowed = match expect {
        Expect::Any => true,
        Expect::Puppet => matches!(format, Format::PuppetJson | Format::PuppetDb),
        Expect::PuppetDb => format == Format::PuppetDb,
        Expect::Chef => matches!(format, Format::ChefMessage | Format::ChefJsonFile),
    };
    if !allowed {
        return Err(ParseError(format!(
            "this endpoint does not take {} documents",
            format.as_str()
        )));
    }
    match format {
        Format::PuppetJson => one(format, crate::puppet::parse(&v)),
        Format::PuppetDb => match &v {
            Value::Array(list) => {
                if list.len() > 10_000 {
                    return Err(ParseError(format!(
                        "{} reports in one document; send at most 10000",
                        list.len()
                    )));
                }
                let mut runs = Vec::with_capacity(list.len());
                for (i, r) in list.iter().enumerate() {
                    let run = crate::puppet::parse(r)
                        .map_err(|e| ParseError(format!("report {i}: {e}")))?;
                    runs.push(Parsed::Run(Box::new(run)));
                }
                Ok((format, runs))
            }
            _ => one(format, crate::puppet::parse(&v)),
        },
        Format::ChefMessage => match chef::parse_message(&v).map_err(ParseError)? {
            Message::Start(s) => Ok((format, vec![Parsed::Start(s)])),
            Message::Converge(r) => Ok((format, vec![Parsed::Run(r)])),
        },
        Format::ChefJsonFile => one(format, chef::parse_json_file(&v)),
        Format::PuppetYaml => unreachable!("JSON documents are never YAML here"),
    }
}

fn one(format: Format, r: Result<Run, String>) -> Result<(Format, Vec<Parsed>), ParseError> {
    r.map(|run| (format, vec![Parsed::Run(Box::new(run))]))
        .map_err(ParseError)
}

fn detect_json(v: &Value) -> Option<Format> {
    let first = match v {
        Value::Array(list) => {
            let f = list.first()?;
            return f.get("certname").map(|_| Format::PuppetDb);
        }
        Value::Object(_) => v,
        _ => return None,
    };
    let has = |k: &str| first.get(k).is_some();
    if has("message_type") || has("message_version") || (has("entity_uuid") && has("run_id")) {
        Some(Format::ChefMessage)
    } else if has("elapsed_time") && (has("all_resources") || has("updated_resources")) {
        Some(Format::ChefJsonFile)
    } else if has("certname") {
        Some(Format::PuppetDb)
    } else if has("host") && (has("resource_statuses") || has("report_format") || has("logs")) {
        Some(Format::PuppetJson)
    } else {
        None
    }
}
