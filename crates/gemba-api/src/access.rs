//! Who a request is, and what it may do.
//!
//! A node may hold four tokens, each in its own private file:
//! - the API token (`token_file`): everything;
//! - `operator`: every change (approve, ack, assign, post-mortems,
//!   incidents, events, reports) and what programs printed;
//! - `read`: what programs printed (check output, step output, log lines,
//!   run logs), nothing that changes state;
//! - `ingest`: reports and events only, what agents and CI hold (Puppet
//!   prints its report URL, token included, when a submission fails).
//!
//! A request proves a token with `Authorization: Bearer`, or for reports
//! and events as Puppet and Chef send it (basic auth, the Chef header),
//! or with the session cookie a person gets by signing in to the console
//! with a token. A node with no token at all (loopback only) grants
//! everything, as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};

/// What a request may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// Post reports and events.
    pub ingest: bool,
    /// Change state: approve, ack, assign, post-mortems, incidents.
    pub operate: bool,
    /// See what programs printed.
    pub read: bool,
}

impl Grant {
    pub const ALL: Grant = Grant {
        ingest: true,
        operate: true,
        read: true,
    };

    /// What a scoped token grants.
    pub fn of_scope(scope: &str) -> Grant {
        match scope {
            "ingest" => Grant {
                ingest: true,
                ..Grant::default()
            },
            "operator" => Grant::ALL,
            "read" => Grant {
                read: true,
                ..Grant::default()
            },
            _ => Grant::default(),
        }
    }
}

/// The tokens a node accepts: `(label, token, grant)`.
#[derive(Default)]
pub struct Tokens {
    list: Vec<(&'static str, String, Grant)>,
}

impl Tokens {
    /// The API token (everything) and the scoped ones.
    pub fn new(full: Option<String>, scoped: &[(String, String)]) -> Tokens {
        let mut list = Vec::new();
        if let Some(t) = full {
            list.push(("api", t, Grant::ALL));
        }
        for (scope, t) in scoped {
            let label = match scope.as_str() {
                "ingest" => "ingest",
                "operator" => "operator",
                "read" => "read",
                _ => continue,
            };
            list.push((label, t.clone(), Grant::of_scope(label)));
        }
        Tokens { list }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The token `given` is, compared in constant time with each.
    pub fn find(&self, given: &str) -> Option<(&'static str, Grant)> {
        let mut found = None;
        for (label, t, grant) in &self.list {
            if constant_time_eq(given.as_bytes(), t.as_bytes()) {
                found = Some((*label, *grant));
            }
        }
        found
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The cookie a signed-in console carries.
pub const COOKIE: &str = "gemba_session";
/// How long a console session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions a node keeps at most.
const MAX_SESSIONS: usize = 1024;

#[derive(Clone, Debug)]
pub struct Session {
    /// Who signed in, as they named themselves (the journal records it).
    pub name: String,
    /// Which token they signed in with.
    pub token: &'static str,
    pub grant: Grant,
    expires: Instant,
}

/// The console's sessions, known by the SHA-256 of their cookie.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<[u8; 32], Session>>,
}

fn cookie_key(cookie: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    /// A new session; its cookie value, or `None` when the node holds as
    /// many live sessions as it may.
    pub fn start(&self, name: &str, token: &'static str, grant: Grant) -> Option<String> {
        let cookie = gemba_core::secret::random32().ok()?;
        let cookie: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
        let mut inner = self.inner.lock().ok()?;
        let now = Instant::now();
        if inner.len() >= MAX_SESSIONS {
            inner.retain(|_, s| s.expires > now);
            if inner.len() >= MAX_SESSIONS {
                return None;
            }
        }
        inner.insert(
            cookie_key(&cookie),
            Session {
                name: name.to_string(),
                token,
                grant,
                expires: now + SESSION_TTL,
            },
        );
        Some(cookie)
    }

    /// The live session a request's cookie names.
    pub fn of(&self, headers: &HeaderMap) -> Option<Session> {
        let cookie = session_cookie(headers)?;
        let mut inner = self.inner.lock().ok()?;
        let key = cookie_key(&cookie);
        match inner.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                inner.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn end(&self, headers: &HeaderMap) {
        if let (Some(cookie), Ok(mut inner)) = (session_cookie(headers), self.inner.lock()) {
            inner.remove(&cookie_key(&cookie));
        }
    }
}

/// The session cookie's value, if the request carries one of the right
/// shape.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Who a request is: its grant and the name the journal records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub grant: Grant,
    pub name: String,
}

/// What a request may do: a node without tokens grants everything; else
/// a bearer token, or a console session.
pub(crate) fn who(tokens: &Tokens, sessions: &Sessions, headers: &HeaderMap) -> Option<Who> {
    if tokens.is_empty() {
        return Some(Who {
            grant: Grant::ALL,
            name: named(headers).unwrap_or("api").to_string(),
        });
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some((label, grant)) = bearer.and_then(|b| tokens.find(b)) {
        // A token holder may say who they are (the CLI sends the user).
        let name = named(headers).unwrap_or(label).to_string();
        return Some(Who { grant, name });
    }
    sessions.of(headers).map(|s| Who {
        grant: s.grant,
        name: s.name,
    })
}

/// `X-Gemba-User`, if it is a name.
fn named(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-gemba-user")
        .and_then(|v| v.to_str().ok())
        .filter(|v| gemba_core::ids::is_name(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn each_token_grants_its_scope_and_a_session_what_its_token_did() {
        let tokens = Tokens::new(
            Some("full-token-0123456789".into()),
            &[
                ("ingest".into(), "ingest-token-0123456789".into()),
                ("read".into(), "read-token-0123456789".into()),
            ],
        );
        let sessions = Sessions::default();
        let with = |t: &str| {
            who(
                &tokens,
                &sessions,
                &headers(&[("authorization", &format!("Bearer {t}"))]),
            )
        };
        assert_eq!(with("full-token-0123456789").unwrap().grant, Grant::ALL);
        let ingest = with("ingest-token-0123456789").unwrap();
        assert_eq!(
            (ingest.grant.ingest, ingest.grant.operate, ingest.grant.read),
            (true, false, false)
        );
        assert_eq!(ingest.name, "ingest");
        let read = with("read-token-0123456789").unwrap().grant;
        assert_eq!((read.ingest, read.operate, read.read), (false, false, true));
        assert!(with("nope-nope-nope-nope").is_none());
        assert!(who(&tokens, &sessions, &HeaderMap::new()).is_none());

        let cookie = sessions.start("dana", "read", read).unwrap();
        let h = headers(&[("cookie", &format!("theme=dark; {COOKIE}={cookie}"))]);
        assert_eq!(
            who(&tokens, &sessions, &h),
            Some(Who {
                grant: read,
                name: "dana".into()
            })
        );
        sessions.end(&h);
        assert!(who(&tokens, &sessions, &h).is_none(), "signed out");
        // No tokens at all: loopback, everything.
        let none = Tokens::default();
        assert_eq!(
            who(&none, &sessions, &HeaderMap::new()).unwrap().grant,
            Grant::ALL
        );
    }
}
