//! Names of things on the grid. Node ids and site names travel in gossip
//! keys and URLs, so they are restricted to a safe alphabet once, here.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

fn check_name(kind: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{kind} must not be empty"));
    }
    if s.len() > 64 {
        return Err(format!("{kind} {s:?} is longer than 64 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{kind} {s:?} contains {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    // Names end up as program arguments ({node} in an action): one that
    // starts with '-' would read as an option, one that starts with '.'
    // as a relative path.
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("{kind} {s:?} must start with a letter or a digit"));
    }
    Ok(())
}

/// Whether `s` follows the one grammar of names that travel between nodes
/// and into program arguments: 1-64 letters, digits, '-', '_' or '.',
/// starting with a letter or a digit.
pub fn is_name(s: &str) -> bool {
    check_name("name", s).is_ok()
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: impl AsRef<str>) -> Result<Self, String> {
                check_name($kind, s.as_ref())?;
                Ok(Self(Arc::from(s.as_ref())))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0.to_string()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}

name_type!(
    /// The unique name of a node on the grid (`web-3`, `fra1.db-1`).
    NodeId,
    "node id"
);
name_type!(
    /// A location that groups nodes: a datacenter, a cloud region, an office.
    SiteName,
    "site"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_separators_used_in_gossip_keys() {
        assert!(NodeId::new("web-1.fra").is_ok());
        let err = NodeId::new("a:b").unwrap_err();
        assert!(err.contains("':'"), "{err}");
        assert!(SiteName::new("").is_err());
        assert!(NodeId::new("--opt=x").is_err());
        assert!(NodeId::new(".hidden").is_err());
        assert!(NodeId::new("web\n1").is_err());
        assert!(!is_name(&"a".repeat(65)));
    }
}
