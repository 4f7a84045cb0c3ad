//! `[store]`: where the store lives, SQLite by default or PostgreSQL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use crate::validate::Checker;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite:///var/lib/gemba/gemba.db`, a plain path, or
    /// `postgres://user@host:port/db`.
    pub url: Option<String>,
    /// PostgreSQL's password, in a file readable by gemba only (else the
    /// URL's, else `PGPASSWORD`).
    pub password_file: Option<PathBuf>,
    /// Journal lines and closed escalations older than this are removed.
    pub journal_retention: Option<String>,
}

/// Where the server role keeps what must survive a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file. Its WAL needs every server on one host.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by servers on any number of hosts.
    Postgres {
        /// `postgres://user@host:port/db` (libpq's URL form).
        url: String,
        password_file: Option<PathBuf>,
    },
}

/// A URL with its password (if it holds one) replaced by `***`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreLocation::Postgres { url, .. } => f.write_str(&without_password(url)),
        }
    }
}

impl StoreLocation {
    /// `sqlite://<path>` (so `sqlite:///var/lib/gemba/gemba.db` is
    /// absolute), a plain path, or `postgres://user@host:port/db`.
    pub fn parse(text: &str) -> Result<StoreLocation, String> {
        let path = match text.split_once("://") {
            Some(("sqlite", path)) => path,
            Some(("postgres" | "postgresql", rest)) => {
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(
                        "no host: use postgres://user@host:port/db".into(),
                    );
                }
                return Ok(StoreLocation::Postgres {
                    url: text.to_string(),
                    password_file: None,
                });
            }
            Some((scheme, _)) => {
                return Err(format!(
                    "unknown store scheme {scheme:?}; use sqlite://<path>, postgres://user@host:port/db or a plain path"
                ))
            }
            None => text,
        };
        if path.is_empty() {
            return Err("no path: use sqlite:///var/lib/gemba/gemba.db or a plain path".into());
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub location: StoreLocation,
    pub journal_retention: Duration,
}

/// `[store]`; the default file lives in the data directory.
pub(super) fn store_config(c: &mut Checker, store: StoreSection, data_dir: &Path) -> StoreConfig {
    let mut location = match store.url.as_deref() {
        None => StoreLocation::Sqlite(data_dir.join("gemba.db")),
        Some(text) => StoreLocation::parse(text).unwrap_or_else(|reason| {
            c.fail(
                "store.url",
                format!("{:?}: {reason}", without_password(text)),
            );
            StoreLocation::Sqlite(data_dir.join("gemba.db"))
        }),
    };
    if let Some(file) = store.password_file {
        match &mut location {
            StoreLocation::Postgres { password_file, .. } => *password_file = Some(file),
            StoreLocation::Sqlite(_) => c.fail(
                "store.password_file",
                "only a postgres:// store takes a password",
            ),
        }
    }
    let journal_retention = c.duration(
        "store.journal_retention",
        store.journal_retention.as_deref(),
        defaults::JOURNAL_RETENTION,
        Duration::from_secs(3600),
    );

    StoreConfig {
        location,
        journal_retention,
    }
}
