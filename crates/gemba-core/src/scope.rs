//! What an escalation is about: the whole environment, a tier, or a node.
//! Written `global`, `tier:NAME` or `node:NAME` on the command line, in the
//! API and in the journal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::is_name;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Global,
    Tier(String),
    Node(String),
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Tier(_) => "tier",
            Scope::Node(_) => "node",
        }
    }

    /// The tier or node name; empty for global.
    pub fn name(&self) -> &str {
        match self {
            Scope::Global => "",
            Scope::Tier(n) | Scope::Node(n) => n,
        }
    }

    /// Breadth: global (0) is broader than a tier (1), a tier than a node (2).
    pub fn breadth_rank(&self) -> u8 {
        match self {
            Scope::Global => 0,
            Scope::Tier(_) => 1,
            Scope::Node(_) => 2,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Tier(n) => write!(f, "tier:{n}"),
            Scope::Node(n) => write!(f, "node:{n}"),
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{:?} is not a scope; write global, tier:NAME or node:NAME (NAME: 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit)",
                s.chars().take(80).collect::<String>()
            )
        };
        // Scope names arrive from gossip, the API and the command line and
        // end up in program arguments: one grammar for all of them.
        match s.split_once(':') {
            None if s == "global" => Ok(Scope::Global),
            Some(("tier", n)) if is_name(n) => Ok(Scope::Tier(n.to_string())),
            Some(("node", n)) if is_name(n) => Ok(Scope::Node(n.to_string())),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for s in ["global", "tier:app", "node:web-1"] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        assert!("tier:".parse::<Scope>().is_err());
        // Names that would read as an option or carry control characters.
        for bad in [
            "node:--opt=x",
            "node:-x",
            "node:a b",
            "node:web\n1",
            "tier:a/b",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        assert!("host:x"
            .parse::<Scope>()
            .unwrap_err()
            .contains("global, tier:NAME"));
    }
}
