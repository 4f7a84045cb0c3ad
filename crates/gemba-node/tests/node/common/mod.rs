//! What the two-node tests share: a node's config on a loopback address,
//! a raw HTTP/1.0 exchange, and waiting for a condition.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gemba_core::{Config, Overrides};
use gemba_mesh::GridKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use gemba_testkit::{temp_dir, wait_for};

pub const TOKEN: &str = "logs-test-token-0123456789";

pub fn key() -> GridKey {
    GridKey::new(b"logs-test-grid-key-0123456789abc".to_vec()).unwrap()
}

pub fn config(id: &str, ip: &str, seed: Option<&str>, dir: &Path, toml: &str) -> Config {
    let o = Overrides {
        node_id: Some(id.into()),
        mesh_listen: Some(format!("{ip}:7946")),
        http_listen: Some(format!("{ip}:0")),
        seeds: seed.map(|s| vec![s.to_string()]).unwrap_or_default(),
        data_dir: Some(dir.join(id)),
        token: Some(TOKEN.into()),
        ..Default::default()
    };
    gemba_testkit::config_with(toml, &o)
}

/// A POST with the token and a body of `content_type`.
pub async fn http_typed(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// One HTTP/1.0 exchange: the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: bool,
    body: &str,
) -> (u16, String) {
    let auth = if token {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    let content = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    exchange(
        addr,
        &format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}{content}\r\n{body}"),
    )
    .await
}

/// A GET without the token: the whole answer, head and body.
pub async fn get_raw(addr: SocketAddr, path: &str) -> String {
    raw_exchange(
        addr,
        &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    )
    .await
}

/// A GET without the token that may fail (a refused or reset
/// connection): the status, 0 if there was none.
pub async fn try_get(addr: SocketAddr, path: &str) -> u16 {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(out)) => out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

async fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Sends `request` as written; the status and the body of the answer.
async fn exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let out = raw_exchange(addr, request).await;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}
