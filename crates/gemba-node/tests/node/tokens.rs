//! Tokens with a purpose, and a console a person signs in to.
//! - An ingest token posts reports and events, and nothing else: it cannot
//!   open an incident, approve, or read what programs printed.
//! - A read token reads what programs printed and changes nothing.
//! - A person signs in with the operator token: the console shows them
//!   program output and who they are, lets them act, and the record
//!   names them; a cross-site request with their cookie is refused; after
//!   signing out the cookie is worth nothing.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use gemba_mesh::UdpNet;
use gemba_node::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INGEST: &str = "ingest-token-for-agents-0123";
const READ: &str = "read-token-for-people-0123";
const OPERATOR: &str = "operator-token-for-people-0123";

/// One exchange with extra header lines; the whole answer.
async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> String {
    let content = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}{content}\r\n{body}")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_does_what_it_is_for_and_a_signed_in_operator_acts_under_their_name() {
    let dir = temp_dir("tokens");
    let mut files = String::new();
    for (scope, token) in [("ingest", INGEST), ("read", READ), ("operator", OPERATOR)] {
        let f = dir.join(format!("{scope}.token"));
        std::fs::write(&f, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        files.push_str(&format!("{scope}_token_file = \"{}\"\n", f.display()));
    }
    let policy = format!(
        r#"
[http]
{files}
[escalator]
quiet_period = "0s"

[[level]]
level = 1
name = "restart"
run = ["/bin/echo", "restarting"]
timeout = "5s"
quiesce = "0s"
approve = true

[[check]]
name = "plugin"
kind = "command"
command = ["/bin/sh", "-c", "echo 'CRITICAL secret-looking output'; exit 2"]
interval = "1s"
fall = 1
level = 1
"#
    );
    let c = config("srv", "127.0.98.1", None, &dir, &policy);
    let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
    let addr = node.http_addr().unwrap();
    wait_for(
        "the escalation awaiting approval",
        Duration::from_secs(30),
        || async {
            raw(addr, "GET", "/api/v1/escalations/1", &bearer(OPERATOR), "")
                .await
                .contains("awaiting-approval")
        },
    )
    .await;

    // Ingest: events and reports, nothing else.
    let event = r#"{"what": "shop v2 released", "tags": {"service": "shop", "kind": "deploy"}}"#;
    let a = raw(addr, "POST", "/api/v1/events", &bearer(INGEST), event).await;
    assert!(matches!(status(&a), 200 | 201), "{a}");
    let a = raw(
        addr,
        "POST",
        "/api/v1/escalations/1/approve",
        &bearer(INGEST),
        "",
    )
    .await;
    assert_eq!(status(&a), 403, "{a}");
    assert!(a.contains("operator token"), "{a}");
    let incident = r#"{"title": "shop down", "severity": "major"}"#;
    let a = raw(addr, "POST", "/api/v1/incidents", &bearer(INGEST), incident).await;
    assert_eq!(status(&a), 403, "{a}");
    let a = raw(addr, "GET", "/api/v1/checks", &bearer(INGEST), "").await;
    assert!(
        !a.contains("secret-looking") && a.contains("output hidden"),
        "{a}"
    );
    let a = raw(
        addr,
        "GET",
        "/api/v1/logs?process=shop",
        &bearer(INGEST),
        "",
    )
    .await;
    assert_eq!(status(&a), 403, "{a}");

    // Read: what programs printed, no changes.
    let a = raw(addr, "GET", "/api/v1/checks", &bearer(READ), "").await;
    assert!(a.contains("secret-looking output"), "{a}");
    let a = raw(addr, "POST", "/api/v1/events", &bearer(READ), event).await;
    assert_eq!(status(&a), 403, "{a}");

    // A person signs in with the operator token.
    let a = raw(
        addr,
        "POST",
        "/api/v1/session",
        "",
        &format!(r#"{{"name": "dana", "token": "{OPERATOR}"}}"#),
    )
    .await;
    assert_eq!(status(&a), 200, "{a}");
    let set = a
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=43200"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let page = raw(addr, "GET", "/checks", &with_cookie, "").await;
    assert!(
        page.contains("secret-looking output"),
        "the console shows output"
    );
    assert!(
        page.contains("signed in as <b>dana</b> (operator token)"),
        "{page}"
    );
    let anonymous = raw(addr, "GET", "/checks", "", "").await;
    assert!(
        !anonymous.contains("secret-looking")
            && anonymous.contains(r#"<a href="/signin">sign in</a>"#)
    );
    // They act from the console (a same-origin request) under their name.
    let same_origin =
        format!("{with_cookie}Origin: http://{addr}\r\nSec-Fetch-Site: same-origin\r\n");
    let a = raw(
        addr,
        "POST",
        "/api/v1/escalations/1/approve",
        &same_origin,
        "",
    )
    .await;
    assert_eq!(status(&a), 200, "{a}");
    let journal = raw(addr, "GET", "/api/v1/escalations/1", &bearer(READ), "").await;
    assert!(journal.contains("approved by dana"), "{journal}");
    // A page on another site cannot use the cookie.
    let cross =
        format!("{with_cookie}Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n");
    let a = raw(addr, "POST", "/api/v1/incidents", &cross, incident).await;
    assert_eq!(status(&a), 403, "{a}");
    // Signing out ends the session.
    let a = raw(addr, "POST", "/api/v1/session/end", &same_origin, "").await;
    assert_eq!(status(&a), 200, "{a}");
    let a = raw(addr, "POST", "/api/v1/incidents", &same_origin, incident).await;
    assert_eq!(status(&a), 401, "{a}");
    // A wrong token signs no one in.
    let a = raw(
        addr,
        "POST",
        "/api/v1/session",
        "",
        r#"{"name": "eve", "token": "guess-guess-guess-guess"}"#,
    )
    .await;
    assert_eq!(status(&a), 401, "{a}");
    node.shutdown().await;
}
