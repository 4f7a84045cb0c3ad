//! Query strings, typed. Every query a route takes is a struct here with
//! `deny_unknown_fields`, read by [`Query`] (or [`parse`] for a query this
//! node builds itself): one length cap, one "unknown parameter" answer
//! that lists the known ones, one rule for names and one for yes/no.
//! Repeated keys (`tag=a&tag=b`) fill a list.
//!
//! Who a request is comes from its token or console session alone
//! ([`crate::access::who`]); no query or body names its actor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::respond::ApiError;

/// The longest query string read.
pub(crate) const MAX_QUERY: usize = 8192;

/// A query string read into `T`.
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse(parts.uri.query().unwrap_or("")).map(Query)
    }
}

/// Reads `raw` (without the `?`) into `T`.
pub(crate) fn parse<T: DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    if raw.len() > MAX_QUERY {
        return Err(ApiError::bad(format!(
            "the query string is longer than {MAX_QUERY} bytes"
        )));
    }
    serde_html_form::from_str(raw).map_err(|e| ApiError::bad(reworded(&e.to_string())))
}

/// serde's words in the API's: "unknown parameter `x`; known: a, b".
fn reworded(e: &str) -> String {
    let e: String = e.chars().take(400).collect();
    match e.strip_prefix("unknown field ") {
        Some(rest) => match rest.split_once(", expected ") {
            Some((field, known)) => format!(
                "unknown parameter {field}; known: {}",
                known
                    .trim_start_matches("one of ")
                    .trim_start_matches("`")
                    .replace("`, `", ", ")
                    .replace("` or `", ", ")
                    .replace(['`'], "")
            ),
            None => format!("unknown parameter {rest}"),
        },
        None => e,
    }
}

/// A value that must be a name: the grid's one grammar for ids.
pub(crate) fn name(what: &str, v: &str) -> Result<String, ApiError> {
    if gemba_core::ids::is_name(v) {
        Ok(v.to_string())
    } else {
        Err(ApiError::bad(format!(
            "{what} {:?} is not a name (letters, digits, '-', '_', '.')",
            v.chars().take(64).collect::<String>()
        )))
    }
}

/// Yes or no: `true`, `1`, `yes` are yes; `false`, `0`, `no` and an
/// empty value are no; anything else is refused.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = String::deserialize(d)?;
    match v.as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "{:?} is not true or false",
            other.chars().take(20).collect::<String>()
        ))),
    }
}

/// A whole number; the error shows the value (serde does not say which
/// parameter it was reading).
fn number<'de, D: Deserializer<'de>, N: std::str::FromStr>(d: D) -> Result<Option<N>, D::Error> {
    let v = String::deserialize(d)?;
    v.trim().parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{:?} is not a whole number",
            v.chars().take(20).collect::<String>()
        ))
    })
}

/// A number within `lo..=hi`, named in the error.
pub(crate) fn within(
    what: &str,
    n: Option<usize>,
    lo: usize,
    hi: usize,
) -> Result<Option<usize>, ApiError> {
    match n {
        Some(n) if !(lo..=hi).contains(&n) => Err(ApiError::bad(format!(
            "{what} {n} is not a number in {lo}..={hi}"
        ))),
        n => Ok(n),
    }
}

/// `GET /api/v1/events`: `since`, `until`, `kind`, `limit`, and `tag` as
/// often as needed (every tag must match).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Events {
    #[serde(alias = "from")]
    pub since: Option<String>,
    #[serde(alias = "to")]
    pub until: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub tag: Vec<String>,
    #[serde(default, deserialize_with = "number")]
    pub limit: Option<usize>,
}

impl From<Events> for gemba_timeline::Query {
    fn from(p: Events) -> Self {
        gemba_timeline::Query {
            since: p.since,
            until: p.until,
            tags: p.tag,
            kind: p.kind,
            limit: p.limit,
        }
    }
}

/// Grafana's annotation query (`GET /api/annotations`): a time range in
/// unix milliseconds, tags (all must match, or any with `matchAny`), a
/// limit; the dashboard and panel fields Grafana sends are accepted and
/// mean nothing here.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Annotations {
    #[serde(default, deserialize_with = "number")]
    pub from: Option<u64>,
    #[serde(default, deserialize_with = "number")]
    pub to: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "number")]
    pub limit: Option<usize>,
    #[serde(default, deserialize_with = "flag")]
    pub match_any: bool,
    /// `annotation` (or none); `alert` asks for alerts, which gemba keeps
    /// as escalations, not here.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(rename = "dashboardUID")]
    #[allow(dead_code)]
    pub dashboard_uid: Option<String>,
    #[allow(dead_code)]
    pub dashboard_id: Option<String>,
    #[allow(dead_code)]
    pub panel_id: Option<String>,
    #[allow(dead_code)]
    pub user_id: Option<String>,
}

/// A series or chart: `node`, `process` (`host` for the machine) and
/// `metric`; several nodes or processes overlay. Charts also take a size,
/// the marker kinds (`events=deploy,config`, `none`) and marker tags.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Series {
    #[serde(default)]
    pub node: Vec<String>,
    #[serde(default)]
    pub process: Vec<String>,
    #[serde(default)]
    pub metric: String,
    #[serde(alias = "from")]
    pub since: Option<String>,
    #[serde(alias = "to")]
    pub until: Option<String>,
    #[serde(default, deserialize_with = "number")]
    pub width: Option<u32>,
    #[serde(default, deserialize_with = "number")]
    pub height: Option<u32>,
    pub events: Option<String>,
    #[serde(default)]
    pub tag: Vec<String>,
    /// Start where the data starts when it fills only the end of the
    /// window (a page's default window).
    #[serde(default, deserialize_with = "flag")]
    pub fit: bool,
}

/// `GET /api/v1/logs`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Logs {
    pub node: Option<String>,
    pub process: Option<String>,
    #[serde(alias = "from")]
    pub since: Option<String>,
    #[serde(alias = "to")]
    pub until: Option<String>,
    #[serde(default, deserialize_with = "number")]
    pub limit: Option<usize>,
}

/// `GET /api/v1/incidents`, `GET /api/v1/actions`: only what is open,
/// and how many.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listing {
    #[serde(default, deserialize_with = "flag")]
    pub open: bool,
    #[serde(default, deserialize_with = "number")]
    pub limit: Option<usize>,
}

/// A node's page: the window its charts cover.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeWindow {
    pub since: Option<String>,
}

/// The morning market: of which day, in which form.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Market {
    pub date: Option<String>,
    pub format: Option<String>,
}

/// `GET /api/v1/problems`: by status, kind, severity and a node it
/// affects.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Problems {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    pub node: Option<String>,
    pub environment: Option<String>,
}

/// `GET /api/v1/journal`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Journal {
    #[serde(default, deserialize_with = "number")]
    pub limit: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_parameter_is_named_with_the_known_ones() {
        let e = parse::<Listing>("open=1&colour=red").err().unwrap();
        assert_eq!(e.1, "unknown parameter `colour`; known: open, limit");
    }

    #[test]
    fn repeated_keys_fill_a_list_and_yes_no_is_strict() {
        let e: Events = parse("tag=a&tag=b&from=2d").unwrap();
        assert_eq!(e.tag, ["a", "b"]);
        assert_eq!(e.since.as_deref(), Some("2d"));
        assert!(parse::<Listing>("open=yes").unwrap().open);
        assert!(!parse::<Listing>("").unwrap().open);
        let e = parse::<Listing>("open=maybe").err().unwrap();
        assert!(e.1.contains("\"maybe\" is not true or false"), "{}", e.1);
        let e = parse::<Listing>("limit=lots").err().unwrap();
        assert!(e.1.contains("\"lots\" is not a whole number"), "{}", e.1);
    }

    #[test]
    fn a_long_query_is_refused_before_it_is_read() {
        let long = format!("tag={}", "a".repeat(MAX_QUERY));
        let e = parse::<Events>(&long).err().unwrap();
        assert!(e.1.contains("longer than 8192"), "{}", e.1);
    }
}
