//! The one place settings are checked: a [`Checker`] collects every
//! invalid setting with its key, so that a bad configuration is reported
//! whole (exit 64) instead of one error per try. Config sections and the
//! policy both validate through it; neither imports the other's checks.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// One invalid setting: where it is and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

use crate::duration::HumanDuration;

pub(crate) struct Checker {
    pub(crate) errors: Vec<Invalid>,
}

impl Checker {
    pub(crate) fn fail(&mut self, key: &str, reason: impl Into<String>) {
        self.errors.push(Invalid {
            key: key.to_string(),
            reason: reason.into(),
        });
    }

    pub(crate) fn duration(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: &str,
        min: Duration,
    ) -> Duration {
        let text = value.unwrap_or(default);
        match text.parse::<HumanDuration>() {
            Ok(d) if d.0 < min => {
                self.fail(
                    key,
                    format!("{text} is too short; the minimum is {}", HumanDuration(min)),
                );
                d.0
            }
            Ok(d) => d.0,
            Err(e) => {
                self.fail(key, e);
                Duration::ZERO
            }
        }
    }

    pub(crate) fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Some(a);
        }
        match text.to_socket_addrs() {
            Ok(mut it) => match it.next() {
                Some(a) => Some(a),
                None => {
                    self.fail(key, format!("{text:?} resolves to no address"));
                    None
                }
            },
            Err(e) => {
                self.fail(key, format!("{text:?} is not a host:port address ({e})"));
                None
            }
        }
    }

    pub(crate) fn count(
        &mut self,
        key: &str,
        value: Option<u32>,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> u32 {
        let v = value.unwrap_or(default);
        if !range.contains(&v) {
            self.fail(
                key,
                format!("{v} is out of range {}..={}", range.start(), range.end()),
            );
        }
        v
    }

    pub(crate) fn percent(&mut self, key: &str, value: Option<f64>, default: f64) -> f64 {
        let v = value.unwrap_or(default);
        if !(0.0..=100.0).contains(&v) || v.is_nan() {
            self.fail(key, format!("{v} is not a percentage between 0 and 100"));
        }
        v / 100.0
    }
}
