//! Change events: what changed, when, tagged with where and what kind.
//! Three shapes arrive over HTTP — gemba's own, Graphite's events API and
//! Grafana's annotations API — and all become one [`NewEvent`] after the
//! same checks, so a Graphite hook and the CLI are refused for the same
//! reasons with the same words.
//!
//! Tags are `key=value` or a bare word; keys, values and words follow the
//! one name grammar of the grid (letters, digits, '-', '_', '.'), so a tag
//! is safe in a URL, a query and a chart label. Grafana's `key:value`
//! convention is read as `key=value`. An event's kind is its `kind=` tag,
//! or a bare tag naming a kind (Graphite and Grafana hooks tag a deploy
//! `deploy`), or `note`.

use std::collections::BTreeSet;

use gemba_core::ids::is_name;
use gemba_store::EventRow;
use serde::Deserialize;
use serde_json::Value;

/// The kinds an event may have.
pub const KINDS: &[&str] = &["deploy", "puppet", "chef", "git", "escalation", "note"];
/// A body over this is refused before parsing (the HTTP layer caps it too).
pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_WHAT: usize = 500;
pub const MAX_TEXT: usize = 16 * 1024;
pub const MAX_AUTHOR: usize = 100;
pub const MAX_LINK: usize = 2048;
pub const MAX_TAGS: usize = 32;
/// The earliest time an event may claim: 2000-01-01.
pub const EARLIEST_MS: u64 = 946_684_800_000;
/// How far in the future an event may start (clock skew, a planned window).
pub const FUTURE_MS: u64 = 24 * 3600 * 1000;
/// The longest an event may last.
pub const LONGEST_MS: u64 = 366 * 24 * 3600 * 1000;

/// Why an event was refused: one sentence that names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventError(pub String);

fn bad(why: impl Into<String>) -> EventError {
    EventError(why.into())
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    Graphite,
    Grafana,
    Escalator,
    Market,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Graphite => "graphite",
            Source::Grafana => "grafana",
            Source::Escalator => "escalator",
            Source::Market => "market",
        }
    }
}

/// A checked event, not yet stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub at_ms: u64,
    pub end_ms: Option<u64>,
    pub kind: String,
    pub what: String,
    pub tags: Vec<String>,
    pub text: String,
    pub author: String,
    pub link: String,
    pub source: Source,
    /// Set by gemba's own followers: a second event with the same origin
    /// is not stored.
    pub origin: Option<String>,
}

impl NewEvent {
    pub fn into_row(self) -> EventRow {
        EventRow {
            id: 0,
            at_ms: self.at_ms,
            end_ms: self.end_ms,
            kind: self.kind,
            what: self.what,
            tags: self.tags,
            text: self.text,
            author: self.author,
            link: self.link,
            source: self.source.as_str().to_string(),
            origin: self.origin,
        }
    }
}

/// The fields every shape fills in before the common checks.
#[derive(Default)]
struct Draft {
    at_ms: Option<u64>,
    end_ms: Option<u64>,
    what: String,
    tags: Vec<String>,
    text: String,
    author: String,
    link: String,
}

/// One tag, checked and normalized (`k:v` → `k=v`).
pub fn tag(raw: &str) -> Result<String, EventError> {
    let t = raw.trim();
    let split = t.split_once('=').or_else(|| t.split_once(':'));
    match split {
        Some((k, v)) => {
            if !is_name(k) {
                return Err(bad(format!(
                    "tag {:?}: the key {:?} is not a name (1-64 letters, digits, '-', '_', '.', starting with a letter or digit)",
                    cut(t, 80),
                    cut(k, 80)
                )));
            }
            if !is_name(v) {
                return Err(bad(format!(
                    "tag {:?}: the value {:?} is not a name (1-64 letters, digits, '-', '_', '.', starting with a letter or digit)",
                    cut(t, 80),
                    cut(v, 80)
                )));
            }
            Ok(format!("{}={v}", k.to_ascii_lowercase()))
        }
        None if is_name(t) => Ok(t.to_string()),
        None => Err(bad(format!(
            "tag {:?} is neither key=value nor a word (1-64 letters, digits, '-', '_', '.', starting with a letter or digit)",
            cut(t, 80)
        ))),
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(max).collect();
        c.push('…');
        c
    }
}

/// Refuses control characters in a one-line field.
pub fn no_controls(field: &str, s: &str) -> Result<(), EventError> {
    if s.chars().any(char::is_control) {
        return Err(bad(format!("{field} contains a control character")));
    }
    Ok(())
}

/// Refuses control characters but line breaks and tabs in a text.
pub fn no_controls_but_lines(field: &str, s: &str) -> Result<(), EventError> {
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(bad(format!(
            "{field} contains a control character other than a line break or a tab"
        )));
    }
    Ok(())
}

fn line(field: &str, s: &str, max: usize) -> Result<String, EventError> {
    let s = s.trim();
    if s.chars().count() > max {
        return Err(bad(format!(
            "{field} is longer than {max} characters ({})",
            s.chars().count()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(format!(
            "{field} contains a control character (line breaks belong in the text)"
        )));
    }
    Ok(s.to_string())
}

impl Draft {
    /// The common checks; `now_ms` fills a missing time.
    fn finish(self, source: Source, now_ms: u64) -> Result<NewEvent, EventError> {
        let what = line("what", &self.what, MAX_WHAT)?;
        if what.is_empty() {
            return Err(bad(
                "what is missing: say what changed, e.g. \"shop v2.3.1 released\"",
            ));
        }
        if self.text.chars().count() > MAX_TEXT {
            return Err(bad(format!("text is longer than {MAX_TEXT} characters")));
        }
        if self
            .text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(bad("text contains a control character"));
        }
        let author = line("author", &self.author, MAX_AUTHOR)?;
        let link = line("link", &self.link, MAX_LINK)?;
        if !(link.is_empty() || link.starts_with("http://") || link.starts_with("https://")) {
            return Err(bad(format!(
                "link {:?} is not an http:// or https:// URL",
                cut(&link, 80)
            )));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(bad(format!("{} tags; at most {MAX_TAGS}", self.tags.len())));
        }
        let mut tags = BTreeSet::new();
        for t in &self.tags {
            tags.insert(tag(t)?);
        }
        let at_ms = self.at_ms.unwrap_or(now_ms);
        if at_ms < EARLIEST_MS {
            return Err(bad(format!(
                "when ({}) is before 2000-01-01: send unix seconds or RFC 3339",
                format_ms(at_ms)
            )));
        }
        if at_ms > now_ms + FUTURE_MS {
            return Err(bad(format!(
                "when ({}) is more than a day in the future",
                format_ms(at_ms)
            )));
        }
        if let Some(end) = self.end_ms {
            if end < at_ms {
                return Err(bad(format!(
                    "the end ({}) is before the start ({})",
                    format_ms(end),
                    format_ms(at_ms)
                )));
            }
            if end - at_ms > LONGEST_MS {
                return Err(bad("the event lasts more than 366 days"));
            }
        }
        let mut kinds = tags.iter().filter_map(|t| t.strip_prefix("kind="));
        let kind = match kinds.next() {
            Some(k) if !KINDS.contains(&k) => {
                return Err(bad(format!(
                    "kind {k:?} is not one of {}",
                    KINDS.join(", ")
                )))
            }
            Some(k) => {
                if let Some(other) = kinds.next() {
                    return Err(bad(format!("two kinds: {k} and {other}")));
                }
                k.to_string()
            }
            None => tags
                .iter()
                .find(|t| KINDS.contains(&t.as_str()))
                .cloned()
                .unwrap_or_else(|| "note".to_string()),
        };
        Ok(NewEvent {
            at_ms,
            end_ms: self.end_ms,
            kind,
            what,
            tags: tags.into_iter().collect(),
            text: self.text,
            author,
            link,
            source,
            origin: None,
        })
    }
}

/// RFC 3339 in UTC, to the second.
pub fn format_ms(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// A point in time as a field of a payload: RFC 3339 text, or a number of
/// unix seconds (fractions allowed). Milliseconds are refused by name.
fn seconds_or_text(field: &str, v: &Value) -> Result<Option<u64>, EventError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => {
            let s = n
                .as_f64()
                .ok_or_else(|| bad(format!("{field} is not a number of seconds")))?;
            if !s.is_finite() || s < 0.0 {
                return Err(bad(format!("{field} {n} is not a time")));
            }
            if s > 1e11 {
                return Err(bad(format!(
                    "{field} {n} looks like milliseconds; send unix seconds or RFC 3339"
                )));
            }
            Ok(Some((s * 1000.0) as u64))
        }
        Value::String(t) => {
            let t = t.trim();
            if let Ok(s) = t.parse::<f64>() {
                return seconds_or_text(field, &serde_json::json!(s));
            }
            parse_time(t)
                .map(Some)
                .map_err(|why| bad(format!("{field}: {why}")))
        }
        _ => Err(bad(format!(
            "{field} must be RFC 3339 text or unix seconds"
        ))),
    }
}

/// RFC 3339 text as unix ms.
pub fn parse_time(t: &str) -> Result<u64, String> {
    let ts = t
        .parse::<jiff::Timestamp>()
        .map_err(|_| format!("{:?} is not an RFC 3339 time", cut(t, 64)))?;
    u64::try_from(ts.as_millisecond()).map_err(|_| format!("{t:?} is before 1970"))
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, EventError> {
    if body.len() > MAX_BODY {
        return Err(bad(format!(
            "the body is {} bytes; an event is at most {MAX_BODY}",
            body.len()
        )));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body is not a JSON object")),
        Err(e) => Err(bad(format!("the body is not JSON: {e}"))),
    }
}

fn string(field: &str, v: Option<Value>) -> Result<String, EventError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("{field} must be a string"))),
    }
}

fn refuse_unknown(
    m: &serde_json::Map<String, Value>,
    known: &[&str],
    shape: &str,
) -> Result<(), EventError> {
    if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown field {:?} in {shape}; known: {}",
            cut(k, 64),
            known.join(", ")
        )));
    }
    Ok(())
}

/// Tags as a list of strings, or (Graphite) one string split at commas
/// and spaces, or (gemba) an object of key → value.
fn tags_of(v: Option<Value>, object_ok: bool) -> Result<Vec<String>, EventError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split([',', ' '])
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()),
        Some(Value::Array(a)) => {
            if a.len() > MAX_TAGS {
                return Err(bad(format!("{} tags; at most {MAX_TAGS}", a.len())));
            }
            a.into_iter()
                .map(|t| match t {
                    Value::String(s) => Ok(s),
                    _ => Err(bad("tags must be strings")),
                })
                .collect()
        }
        Some(Value::Object(o)) if object_ok => {
            if o.len() > MAX_TAGS {
                return Err(bad(format!("{} tags; at most {MAX_TAGS}", o.len())));
            }
            o.into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok(format!("{k}={s}")),
                    _ => Err(bad(format!(
                        "tag {:?} must have a string value",
                        cut(&k, 64)
                    ))),
                })
                .collect()
        }
        Some(_) => Err(bad("tags must be a list of strings")),
    }
}

/// gemba's own shape (`POST /api/v1/events`):
/// `{"what", "when"?, "end"?, "kind"?, "tags"?, "text"?, "author"?, "link"?}`;
/// tags a list (`["service=shop"]`) or an object (`{"service": "shop"}`).
pub fn from_api(body: &[u8], now_ms: u64) -> Result<NewEvent, EventError> {
    let mut m = json_object(body)?;
    refuse_unknown(
        &m,
        &[
            "what", "when", "end", "kind", "tags", "text", "author", "link",
        ],
        "an event",
    )?;
    let mut tags = tags_of(m.remove("tags"), true)?;
    let kind = string("kind", m.remove("kind"))?;
    if !kind.is_empty() {
        if !KINDS.contains(&kind.as_str()) {
            return Err(bad(format!(
                "kind {:?} is not one of {}",
                cut(&kind, 64),
                KINDS.join(", ")
            )));
        }
        tags.retain(|t| !t.starts_with("kind=") || t == &format!("kind={kind}"));
        tags.push(format!("kind={kind}"));
    }
    Draft {
        at_ms: seconds_or_text("when", m.get("when").unwrap_or(&Value::Null))?,
        end_ms: seconds_or_text("end", m.get("end").unwrap_or(&Value::Null))?,
        what: string("what", m.remove("what"))?,
        tags,
        text: string("text", m.remove("text"))?,
        author: string("author", m.remove("author"))?,
        link: string("link", m.remove("link"))?,
    }
    .finish(Source::Api, now_ms)
}

/// Graphite's events API (`POST /events/`): `{"what", "tags", "data",
/// "when"?}`, tags a list or one string of words.
pub fn from_graphite(body: &[u8], now_ms: u64) -> Result<NewEvent, EventError> {
    let mut m = json_object(body)?;
    refuse_unknown(&m, &["what", "tags", "data", "when"], "a Graphite event")?;
    Draft {
        at_ms: seconds_or_text("when", m.get("when").unwrap_or(&Value::Null))?,
        end_ms: None,
        what: string("what", m.remove("what"))?,
        tags: tags_of(m.remove("tags"), false)?,
        text: string("data", m.remove("data"))?,
        ..Draft::default()
    }
    .finish(Source::Graphite, now_ms)
}

/// Grafana's annotations API (`POST /api/annotations`): `{"time"?,
/// "timeEnd"?, "tags"?, "text"}` with times in unix milliseconds; the
/// dashboard and panel fields are accepted and have no meaning here. The
/// text's first line is what changed, the rest its text.
pub fn from_grafana(body: &[u8], now_ms: u64) -> Result<NewEvent, EventError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Annotation {
        time: Option<i64>,
        time_end: Option<i64>,
        #[serde(default)]
        tags: Vec<String>,
        text: Option<String>,
        #[allow(dead_code)]
        #[serde(rename = "dashboardUID")]
        dashboard_uid: Option<String>,
        #[allow(dead_code)]
        dashboard_id: Option<i64>,
        #[allow(dead_code)]
        panel_id: Option<i64>,
    }
    if body.len() > MAX_BODY {
        return Err(bad(format!(
            "the body is {} bytes; an annotation is at most {MAX_BODY}",
            body.len()
        )));
    }
    let a: Annotation =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a Grafana annotation: {e}")))?;
    let ms = |field: &str, v: Option<i64>| -> Result<Option<u64>, EventError> {
        match v {
            None | Some(0) => Ok(None),
            Some(v) if v < 0 => Err(bad(format!("{field} {v} is not a time"))),
            Some(v) if v < 100_000_000_000 => Err(bad(format!(
                "{field} {v} looks like seconds; Grafana sends unix milliseconds"
            ))),
            Some(v) => Ok(Some(v as u64)),
        }
    };
    let at_ms = ms("time", a.time)?;
    let mut end_ms = ms("timeEnd", a.time_end)?;
    if end_ms.is_some() && end_ms == at_ms {
        end_ms = None;
    }
    if a.tags.len() > MAX_TAGS {
        return Err(bad(format!("{} tags; at most {MAX_TAGS}", a.tags.len())));
    }
    let text = a.text.unwrap_or_default();
    let (what, rest) = match text.trim().split_once('\n') {
        Some((first, rest)) => (first.to_string(), rest.trim().to_string()),
        None => (text.trim().to_string(), String::new()),
    };
    Draft {
        at_ms,
        end_ms,
        what,
        tags: a.tags,
        text: rest,
        ..Draft::default()
    }
    .finish(Source::Grafana, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_400_000_000;

    #[test]
    fn tags_normalize_and_bad_ones_are_named() {
        assert_eq!(tag("Service:shop").unwrap(), "service=shop");
        assert_eq!(tag("deploy").unwrap(), "deploy");
        let e = tag("service=sh op").unwrap_err().0;
        assert!(e.contains("\"sh op\""), "{e}");
        let e = tag("a=b=c").unwrap_err().0;
        assert!(e.contains("value"), "{e}");
    }

    #[test]
    fn kind_comes_from_the_field_a_tag_or_defaults_to_note() {
        let e = from_api(br#"{"what":"x","kind":"deploy"}"#, NOW).unwrap();
        assert_eq!(e.kind, "deploy");
        assert!(e.tags.contains(&"kind=deploy".to_string()));
        let e = from_graphite(br#"{"what":"x","tags":"deploy shop"}"#, NOW).unwrap();
        assert_eq!(e.kind, "deploy");
        let e = from_api(br#"{"what":"x"}"#, NOW).unwrap();
        assert_eq!(e.kind, "note");
        let e = from_api(br#"{"what":"x","kind":"party"}"#, NOW)
            .unwrap_err()
            .0;
        assert!(e.contains("kind \"party\""), "{e}");
    }

    #[test]
    fn times_are_checked() {
        let e = from_api(br#"{"what":"x","when":1795000000123}"#, NOW)
            .unwrap_err()
            .0;
        assert!(e.contains("milliseconds"), "{e}");
        let e = from_api(
            br#"{"what":"x","when":"2026-11-21T10:00:00Z","end":"2026-11-21T09:00:00Z"}"#,
            NOW,
        )
        .unwrap_err()
        .0;
        assert!(e.contains("before the start"), "{e}");
        let e = from_api(br#"{"what":"x","when":"1999-01-01T00:00:00Z"}"#, NOW)
            .unwrap_err()
            .0;
        assert!(e.contains("before 2000"), "{e}");
        let e = from_grafana(br#"{"text":"x","time":1795000000}"#, NOW)
            .unwrap_err()
            .0;
        assert!(e.contains("looks like seconds"), "{e}");
    }
}
