//! Reading loosely shaped report documents. Puppet's YAML carries Ruby tags
//! (`!ruby/object:Puppet::Transaction::Report`, `!ruby/sym info`) and
//! anchors; they are reduced here to plain JSON values so that one reader
//! serves the YAML and the JSON form of a report. The YAML loader refuses
//! alias bombs and deep nesting itself; this module adds nothing that could
//! grow beyond the input.
//!
//! Nesting is checked before the loader runs: libyaml's scanner costs
//! time in proportion to the flow nesting for every token, so a body of
//! `logs: [[[[...` (200 KB) took half a minute before the loader reached
//! its own depth limit. A linear scan first measures the nesting and
//! refuses a document deeper than [`MAX_DEPTH`].

use serde_json::{Map, Value};

/// A YAML document as JSON, tags dropped (their values kept). The YAML
/// events are read straight into JSON values: no YAML tree in between.
pub fn yaml_to_json(text: &str) -> Result<Value, String> {
    check_nesting(text)?;
    serde_yaml_ng::from_str::<Json>(text)
        .map(|j| j.0)
        .map_err(|e| format!("not valid YAML: {e}"))
}

/// How deep collections may nest in a YAML report. Puppet's reports nest
/// about 6 deep.
pub const MAX_DEPTH: usize = 64;

/// Refuses a YAML document whose collections nest deeper than
/// [`MAX_DEPTH`], in time linear in its length (the scanner stops at the
/// first collection too deep, or at the first error).
fn check_nesting(text: &str) -> Result<(), String> {
    use saphyr_parser::{Event, Parser};
    // The loader's cost grows with flow nesting, which no document with
    // at most MAX_DEPTH opening brackets can pass (block nesting is
    // bounded by the loader's own recursion limit and costs it nothing
    // more per token): most reports skip the scan.
    if text.bytes().filter(|b| matches!(b, b'[' | b'{')).count() <= MAX_DEPTH {
        return Ok(());
    }
    let mut depth = 0usize;
    for event in Parser::new_from_str(text) {
        match event {
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), span)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "not a report: collections nest deeper than {MAX_DEPTH} levels (line {})",
                        span.start.line()
                    ));
                }
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok(_) => {}
            // The scanner's own limit on flow nesting (it looks ahead),
            // or YAML the loader would refuse as well.
            Err(e) if e.info().contains("recursion limit") => {
                return Err(format!(
                    "not a report: collections nest deeper than {MAX_DEPTH} levels (line {})",
                    e.marker().line()
                ))
            }
            Err(e) => return Err(format!("not valid YAML: {e}")),
        }
    }
    Ok(())
}

/// Fields of Puppet's YAML reports that no reader of gemba uses, and that
/// make up much of a report (every resource and log line carries its tags
/// and containment path): skipped while reading, so their values are never
/// built. A field of that name anywhere in a YAML document is left out.
const UNREAD: &[&str] = &[
    "tags",
    "containment_path",
    "corrective_change",
    "evaluation_time",
    "provider_used",
    "out_of_sync_count",
    "change_count",
    "audited",
    "historical_value",
    "redacted",
];

/// A JSON value read from YAML: a tagged node (`!ruby/object:...`,
/// `!ruby/sym`), which YAML's reader presents as an enum variant named by
/// the tag, becomes its content.
struct Json(Value);

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor).map(Json)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::from(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::from(u))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(JsonVisitor)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // The reader's hint is what the document says; the list grows as
        // items really arrive.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Json(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Json(k)) = map.next_key()? {
            let key = match k {
                Value::String(s) => s,
                other => other.to_string(),
            };
            if UNREAD.contains(&key.as_str()) {
                // Read past, never built: no value of it is kept.
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let Json(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use serde::de::VariantAccess;
        let (_tag, content): (serde::de::IgnoredAny, _) = data.variant()?;
        content.newtype_variant::<Json>().map(|j| j.0)
    }
}

/// Field access that tolerates the differences between report formats.
pub trait Field {
    fn str_of(&self, key: &str) -> Option<String>;
    fn u64_of(&self, key: &str) -> Option<u64>;
    fn f64_of(&self, key: &str) -> Option<f64>;
    fn bool_of(&self, key: &str) -> Option<bool>;
}

impl Field for Value {
    /// A string, or a number or boolean written as text; Ruby symbols
    /// (`:info`) lose their colon.
    fn str_of(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.strip_prefix(':').unwrap_or(s).to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn u64_of(&self, key: &str) -> Option<u64> {
        match self.get(key)? {
            Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn f64_of(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|f| f.is_finite())
    }

    fn bool_of(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Seconds (as tools report durations) to milliseconds, refusing
/// negative, infinite and absurd (over a year) values.
pub fn secs_to_ms(s: f64) -> Option<u64> {
    (s.is_finite() && (0.0..=31_536_000.0).contains(&s)).then(|| (s * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_tags_are_dropped_and_symbols_read_as_text() {
        let v = yaml_to_json(
            "--- !ruby/object:Puppet::Transaction::Report\nhost: a\nexternal_times:\n  !ruby/sym config_retrieval: 1.5\nlogs:\n- !ruby/object:Puppet::Util::Log\n  level: !ruby/sym err\n  message: boom\n- level: :info\n",
        )
        .unwrap();
        assert_eq!(v.str_of("host").as_deref(), Some("a"));
        assert_eq!(v["external_times"].f64_of("config_retrieval"), Some(1.5));
        assert_eq!(v["logs"][0].str_of("level").as_deref(), Some("err"));
        assert_eq!(v["logs"][1].str_of("level").as_deref(), Some("info"));
    }

    #[test]
    fn deep_nesting_is_refused_before_the_loader_runs() {
        // 200 KB of unclosed flow sequences: the loader alone spent most
        // of a minute on this.
        for body in [
            format!("logs: {}", "[".repeat(200_000)),
            format!("logs:\n{}", "  [\n".repeat(50_000)),
            format!("logs: {}", "{a: ".repeat(50_000)),
            format!(
                "logs:\n{}x",
                (1..80)
                    .map(|i| format!("{}- \n", "  ".repeat(i)))
                    .collect::<String>()
            ),
        ] {
            let err = yaml_to_json(&body).unwrap_err();
            assert!(
                err.contains("nest deeper than 64") || err.contains("not valid YAML"),
                "{err}"
            );
        }
        // 64 levels are still a document.
        let ok = format!("a: {}1{}", "[".repeat(63), "]".repeat(63));
        assert!(yaml_to_json(&ok).is_ok());
        let deep = format!("a: {}1{}", "[".repeat(65), "]".repeat(65));
        assert!(yaml_to_json(&deep)
            .unwrap_err()
            .contains("nest deeper than 64"));
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='p' {
            doc.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        let err = yaml_to_json(&doc).unwrap_err();
        assert!(err.contains("not valid YAML"), "{err}");
    }
}
