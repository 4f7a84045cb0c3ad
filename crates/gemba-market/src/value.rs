//! Reading loosely shaped report documents. Puppet's YAML carries Ruby tags
//! (`!ruby/object:Puppet::Transaction::Report`, `!ruby/sym info`) and
//! anchors; they are reduced here to plain JSON values so that one reader
//! serves the YAML and the JSON form of a report. The YAML loader refuses
//! alias bombs and deep nesting itself; this module adds nothing that could
//! grow beyond the input.

use serde_json::{Map, Value};
use serde_yaml_ng::Value as Yaml;

/// A YAML document as JSON, tags dropped (their values kept).
pub fn yaml_to_json(text: &str) -> Result<Value, String> {
    let y: Yaml = serde_yaml_ng::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    Ok(convert(y))
}

fn convert(y: Yaml) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(convert).collect()),
        Yaml::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(key_text(k), convert(v));
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => convert(t.value),
    }
}

fn key_text(k: Yaml) -> String {
    match convert(k) {
        Value::String(s) => s,
        other => other.to_string(),
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
