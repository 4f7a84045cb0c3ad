//! `[http]`: the listener, its tokens and the console's origin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{defaults, Overrides};
use crate::validate::Checker;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Host names (besides IP addresses and localhost) browsers may use to
    /// reach this node, e.g. behind a reverse proxy.
    pub allowed_hosts: Option<Vec<String>>,
    /// Tokens with one purpose, each in its own private file: `ingest`
    /// (reports and events only: what agents and CI hold), `operator`
    /// (every change, and what programs printed), `read` (what programs
    /// printed, and log lines).
    pub ingest_token_file: Option<PathBuf>,
    pub operator_token_file: Option<PathBuf>,
    pub read_token_file: Option<PathBuf>,
    /// Connections served at once (besides a small reserve); by default
    /// half the process's file limit, at most 16384.
    pub max_connections: Option<u32>,
    /// How long a connection may take to send a request's head, or stay
    /// idle between requests.
    pub header_timeout: Option<String>,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token required by endpoints that change state.
    pub token: Option<String>,
    /// Host names a request's `Host` may carry besides IP addresses and
    /// localhost (lowercase).
    pub allowed_hosts: Vec<String>,
    /// `(scope, token)`: `ingest`, `operator` or `read`, from their files.
    pub scoped_tokens: Vec<(String, String)>,
    /// `[http] max_connections`, if set.
    pub max_connections: Option<usize>,
    pub header_timeout: std::time::Duration,
}

/// `[http]`, with the command line's overrides and the token from the
/// environment. `None` when the address does not parse.
pub(super) fn http_config(c: &mut Checker, http: HttpSection, o: &Overrides) -> Option<HttpConfig> {
    let http_text = o
        .http_listen
        .clone()
        .or(http.listen)
        .unwrap_or_else(|| defaults::HTTP_LISTEN.into());
    let http_listen = c.socket_addr("http.listen", &http_text);
    let token_file = o.token_file.clone().or(http.token_file);
    let mut token = o.token.clone().filter(|t| !t.is_empty());
    if let Some(t) = &token {
        if t.trim().len() < 16 {
            c.fail(
                "GEMBA_API_TOKEN",
                "the token must be at least 16 characters",
            );
        }
    }
    if token.is_none() {
        if let Some(p) = &token_file {
            match read_token_file(p) {
                Ok(t) => token = Some(t),
                Err(e) => c.fail("http.token_file", e),
            }
        }
    }
    let mut scoped_tokens: Vec<(String, String)> = Vec::new();
    for (scope, file) in [
        ("ingest", &http.ingest_token_file),
        ("operator", &http.operator_token_file),
        ("read", &http.read_token_file),
    ] {
        let Some(p) = file else { continue };
        let key = format!("http.{scope}_token_file");
        match read_token_file(p) {
            Ok(t) => {
                if token.as_deref() == Some(t.as_str())
                    || scoped_tokens.iter().any(|(_, other)| *other == t)
                {
                    c.fail(
                        &key,
                        format!(
                            "{}: the same token as another scope; each scope needs its own",
                            p.display()
                        ),
                    );
                } else {
                    scoped_tokens.push((scope.to_string(), t));
                }
            }
            Err(e) => c.fail(&key, e),
        }
    }
    if let Some(addr) = http_listen {
        if !addr.ip().is_loopback() && token.is_none() && scoped_tokens.is_empty() {
            c.fail("http.listen", format!(
                "{addr} is reachable beyond loopback; set http.token_file (or GEMBA_API_TOKEN) so that endpoints that change state require a token"
            ));
        }
    }

    let mut allowed_hosts = Vec::new();
    for (i, h) in http
        .allowed_hosts
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let valid = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
            });
        if valid {
            allowed_hosts.push(h.to_ascii_lowercase());
        } else {
            c.fail(
                &format!("http.allowed_hosts[{i}]"),
                format!("{h:?} is not a host name (without port)"),
            );
        }
    }
    let max_connections = http
        .max_connections
        .map(|n| c.count("http.max_connections", Some(n), n, 16..=1_000_000) as usize);
    let header_timeout = c.duration(
        "http.header_timeout",
        http.header_timeout.as_deref(),
        "10s",
        std::time::Duration::from_millis(100),
    );
    Some(HttpConfig {
        listen: http_listen?,
        token,
        allowed_hosts,
        scoped_tokens,
        max_connections,
        header_timeout,
    })
}

/// The token a token file holds: private, as the keys are, and at least
/// 16 characters once trimmed.
fn read_token_file(p: &Path) -> Result<String, String> {
    crate::secret::check_private(p)?;
    let t = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let t = t.trim();
    if t.len() < 16 {
        return Err(format!(
            "{}: the token must be at least 16 characters",
            p.display()
        ));
    }
    Ok(t.to_string())
}
