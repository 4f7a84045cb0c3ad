//! Error signatures: a message reduced to what stays the same when the
//! same fault happens again on another node or another day. Quoted values,
//! UUIDs, hex digests, numbers, IP addresses, paths and host names are
//! masked, so that `'/usr/bin/git' returned 128` on web-1 and
//! `'/usr/bin/git' returned 1` on web-9 are one problem, while the words
//! that describe the fault are kept.

/// Longest normalized message kept in a signature.
const MAX_SIGNATURE: usize = 300;

/// `message` with its variable parts masked.
pub fn normalize(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_SIGNATURE));
    let chars: Vec<char> = message.chars().take(4 * MAX_SIGNATURE).collect();
    let mut i = 0;
    while i < chars.len() && out.len() < MAX_SIGNATURE {
        let c = chars[i];
        let prev = if i == 0 { ' ' } else { chars[i - 1] };
        // A quoted value: a quote that opens after a separator and closes
        // before one ("couldn't" is not a quote).
        if (c == '\'' || c == '"' || c == '`') && !prev.is_alphanumeric() {
            if let Some(end) = chars[i + 1..]
                .iter()
                .position(|&q| q == c || (c == '`' && q == '\''))
            {
                let after = chars.get(i + 2 + end).copied().unwrap_or(' ');
                if !after.is_alphanumeric() {
                    out.push_str("<q>");
                    i += end + 2;
                    continue;
                }
            }
        }
        if c.is_whitespace() {
            if !out.ends_with(' ') && !out.is_empty() {
                out.push(' ');
            }
            i += 1;
            continue;
        }
        if is_word_char(c) && !is_word_char(prev) || c == '/' || c == '~' {
            let end = token_end(&chars, i);
            let token: String = chars[i..end].iter().collect();
            out.push_str(&mask(&token));
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out.trim().to_string()
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/' | '{' | '}' | '@' | '~' | '+')
}

fn token_end(chars: &[char], start: usize) -> usize {
    let mut end = start;
    while end < chars.len() && is_word_char(chars[end]) {
        end += 1;
    }
    // A sentence's full stop or colon is not part of the token.
    while end > start + 1 && matches!(chars[end - 1], '.' | ':' | ',') {
        end -= 1;
    }
    end.max(start + 1)
}

/// One token, masked if it is a variable part.
fn mask(token: &str) -> String {
    let t = token;
    if t.starts_with('/') || t.starts_with("~/") || t.starts_with("./") {
        return "<path>".into();
    }
    if let Some(rest) = t.strip_prefix("{sha256}").or(t.strip_prefix("{md5}")) {
        if rest.chars().all(|c| c.is_ascii_hexdigit()) {
            return "<hex>".into();
        }
    }
    if is_uuid(t) {
        return "<uuid>".into();
    }
    if t.len() >= 7
        && t.chars().all(|c| c.is_ascii_hexdigit())
        && t.chars().any(|c| c.is_ascii_digit())
    {
        return "<hex>".into();
    }
    if t.contains("://") {
        return "<url>".into();
    }
    let (core, port) = match t.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => (h, true),
        _ => (t, false),
    };
    if core.parse::<std::net::Ipv4Addr>().is_ok() {
        return "<ip>".into();
    }
    if is_host(core) {
        return if port {
            "<host>:<n>".into()
        } else {
            "<host>".into()
        };
    }
    // Numbers, alone or inside a word (`v2.3.1`, `pid1234`), become <n>.
    let mut out = String::new();
    let mut in_num = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            if !in_num {
                out.push_str("<n>");
                in_num = true;
            }
        } else if in_num && c == '.' {
            continue;
        } else {
            in_num = false;
            out.push(c);
        }
    }
    out
}

fn is_uuid(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A dotted name whose last label is alphabetic: `github.com`,
/// `repo.example.net`. File names (`site.pp`, `init.rb`) are kept: their
/// last label is a known file extension.
fn is_host(t: &str) -> bool {
    let labels: Vec<&str> = t.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return false;
    }
    let last = labels[labels.len() - 1];
    const FILE_EXTENSIONS: &[&str] = &[
        "pp", "rb", "erb", "epp", "conf", "cfg", "txt", "yaml", "yml", "json", "sh", "py", "pl",
        "service", "log", "d", "ini", "xml", "html", "toml", "lock", "tar", "gz", "zip", "deb",
        "rpm", "so", "exe", "msi", "ps1", "bat", "pem", "crt", "key",
    ];
    last.len() >= 2
        && last.chars().all(|c| c.is_ascii_alphabetic())
        && !FILE_EXTENSIONS.contains(&last.to_ascii_lowercase().as_str())
        && labels
            .iter()
            .all(|l| l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// A problem category guessed from the words of a failure and the run's
/// log lines about it (where "returned 7" says what failed), for faults
/// whose cause is usually outside the node: name resolution, source
/// control, package repositories, HTTP services, the network. Anything
/// else is `configuration`. Configured rules come before this guess.
pub fn guess_category(resource: &str, message: &str, detail: &[String]) -> &'static str {
    let mut m = message.to_ascii_lowercase();
    for d in detail {
        m.push('\n');
        m.push_str(&d.to_ascii_lowercase());
    }
    let r = resource.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if any(&[
        "temporary failure in name resolution",
        "name or service not known",
        "could not resolve host",
        "getaddrinfo",
        "nxdomain",
        "no address associated with hostname",
    ]) {
        "dns"
    } else if r.contains("vcsrepo")
        || r.contains("scm")
        || r.contains("git")
        || any(&[
            "fatal: unable to access",
            "could not read from remote repository",
            "git ",
            "svn ",
            "scm",
        ])
    {
        "scm"
    } else if r.starts_with("package[")
        || any(&[
            "apt-get",
            "yum ",
            "dnf ",
            "repository",
            "unable to locate package",
            "failed to fetch",
            "no package",
            "mirror",
            "release file",
            "hash sum mismatch",
            "repomd.xml",
            "cannot find a valid baseurl",
        ])
    {
        "package-repo"
    } else if any(&[
        "http error",
        "404 not found",
        "500 internal server error",
        "502 bad gateway",
        "503 service unavailable",
        "504 gateway time",
        "the requested url returned error",
        "could not download",
        "error 50",
    ]) {
        "http"
    } else if any(&[
        "connection refused",
        "timed out",
        "no route to host",
        "network is unreachable",
        "connection reset",
        "ssl_connect",
        "failed to connect",
        "could not connect",
        "couldn't connect",
        "connection timed out",
    ]) {
        "network"
    } else {
        "configuration"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_fault_on_two_nodes_has_one_signature() {
        let a = normalize("change from 'notrun' to ['0'] failed: '/usr/bin/git fetch' returned 128 instead of one of [0]");
        let b = normalize("change from 'notrun' to ['0'] failed: '/usr/bin/git pull' returned 1 instead of one of [0]");
        assert_eq!(a, b);
        assert_eq!(
            a,
            "change from <q> to [<q>] failed: <q> returned <n> instead of one of [<n>]"
        );
    }

    #[test]
    fn variable_parts_are_masked_and_words_kept() {
        assert_eq!(
            normalize("Could not retrieve catalog from remote server: Failed to open TCP connection to puppet.example.net:8140 (Connection refused)"),
            "Could not retrieve catalog from remote server: Failed to open TCP connection to <host>:<n> (Connection refused)"
        );
        assert_eq!(
            normalize("run 0271e125-97dd-498a-b026-8448ee60aafe failed on 10.1.2.3 reading /etc/app/app.conf sum 5891b5b522d5df"),
            "run <uuid> failed on <ip> reading <path> sum <hex>"
        );
        assert_eq!(
            normalize("Couldn't start it at site.pp:12"),
            "Couldn't start it at site.pp:<n>"
        );
        assert_eq!(normalize("  spaced \n  out  "), "spaced out");
    }

    #[test]
    fn categories_of_outside_faults() {
        assert_eq!(guess_category("Exec[fetch-from-scm]", "x", &[]), "scm");
        assert_eq!(
            guess_category("Vcsrepo[/srv/app]", "fatal: unable to access", &[]),
            "scm"
        );
        assert_eq!(
            guess_category("Package[nginx]", "E: Failed to fetch", &[]),
            "package-repo"
        );
        assert_eq!(
            guess_category("File[x]", "Temporary failure in name resolution", &[]),
            "dns"
        );
        assert_eq!(
            guess_category("Service[app]", "Could not start", &[]),
            "configuration"
        );
        // The words are in the command's output, not in "returned 7".
        assert_eq!(
            guess_category(
                "Exec[deploy]",
                "'curl -fsS http://mirror.example.net:8081/app.tar' returned 7 instead of one of [0]",
                &["notice: curl: (7) Failed to connect to mirror.example.net port 8081".into()]
            ),
            "package-repo"
        );
        assert_eq!(
            guess_category(
                "Exec[deploy]",
                "returned 22 instead of one of [0]",
                &["notice: curl: (22) The requested URL returned error: 503".into()]
            ),
            "http"
        );
        assert_eq!(
            guess_category(
                "Exec[deploy]",
                "returned 7 instead of one of [0]",
                &["notice: curl: (7) Failed to connect to 10.0.0.5 port 8081".into()]
            ),
            "network"
        );
    }
}
