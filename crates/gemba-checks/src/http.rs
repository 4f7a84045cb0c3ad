//! The `http` check: one GET over plain HTTP or HTTPS (hyper over TCP or
//! rustls), the status and an optional body match, and for HTTPS the days
//! left on the server's certificate.
//!
//! Certificates are verified against the Mozilla roots, plus the PEM
//! bundle given as `tls_ca_file` for private CAs. A certificate that
//! expires within `tls_crit_days` is CRITICAL, within `tls_warn_days`
//! WARNING; an expired or untrusted one fails the handshake, CRITICAL.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::nagios::{Perf, Status};

const BODY_LIMIT: usize = 1024 * 1024;

/// What the check was asked.
#[derive(Clone, Debug)]
pub struct HttpProbe<'a> {
    pub url: &'a str,
    pub expect_status: u16,
    pub body_contains: Option<&'a str>,
    pub ca_file: Option<&'a str>,
    pub warn_days: u32,
    pub crit_days: u32,
    pub timeout: Duration,
}

type Verdict = (Status, String, Vec<Perf>);

fn roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn client_config(ca_file: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let build = |store: RootCertStore| {
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(store).with_no_client_auth()))
            .map_err(|e| format!("cannot set up TLS: {e}"))
    };
    match ca_file {
        None => {
            if let Some(c) = DEFAULT.get() {
                return Ok(c.clone());
            }
            let c = build(roots())?;
            Ok(DEFAULT.get_or_init(|| c).clone())
        }
        Some(path) => {
            let mut store = roots();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read tls_ca_file {path}: {e}"))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tls_ca_file {path} is not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err(format!("tls_ca_file {path} holds no certificate"));
            }
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| format!("tls_ca_file {path}: {e}"))?;
            }
            build(store)
        }
    }
}

/// Unix seconds when the certificate stops being valid.
fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

async fn fetch<IO>(io: IO, host: &str, path: &str) -> Result<(u16, Vec<u8>, bool), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(
            hyper::header::USER_AGENT,
            concat!("gemba-check/", env!("CARGO_PKG_VERSION")),
        )
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"));
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    let status = resp.status().as_u16();
    let (body, cut) = match Limited::new(resp.into_body(), BODY_LIMIT).collect().await {
        Ok(b) => (b.to_bytes().to_vec(), false),
        Err(_) => (Vec::new(), true),
    };
    driver.abort();
    Ok((status, body, cut))
}

/// Runs the probe; never longer than its timeout.
pub async fn probe(p: HttpProbe<'_>) -> Verdict {
    let url = p.url;
    match tokio::time::timeout(p.timeout, run(&p)).await {
        Ok(v) => v,
        Err(_) => (
            Status::Critical,
            format!(
                "HTTP CRITICAL - {url}: no answer within {:.1} s",
                p.timeout.as_secs_f64()
            ),
            vec![],
        ),
    }
}

async fn run(p: &HttpProbe<'_>) -> Verdict {
    let url = p.url;
    let started = std::time::Instant::now();
    let uri: hyper::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            return (
                Status::Unknown,
                format!("HTTP UNKNOWN - {url} is not a URL: {e}"),
                vec![],
            )
        }
    };
    let https = uri.scheme_str() == Some("https");
    let Some(host) = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
    else {
        return (
            Status::Unknown,
            format!("HTTP UNKNOWN - {url} has no host"),
            vec![],
        );
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host_header = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.clone());
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let tcp = match tokio::net::TcpStream::connect((host.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => {
            return (
                Status::Critical,
                format!("HTTP CRITICAL - {url}: cannot connect: {e}"),
                vec![],
            )
        }
    };
    let mut expiry: Option<(i64, i64)> = None;
    let fetched = if https {
        let config = match client_config(p.ca_file) {
            Ok(c) => c,
            Err(e) => {
                return (
                    Status::Unknown,
                    format!("HTTP UNKNOWN - {url}: {e}"),
                    vec![],
                )
            }
        };
        let Ok(name) = ServerName::try_from(host.clone()) else {
            return (
                Status::Unknown,
                format!("HTTP UNKNOWN - {url}: {host} is not a TLS server name"),
                vec![],
            );
        };
        let tls = match TlsConnector::from(config).connect(name, tcp).await {
            Ok(t) => t,
            Err(e) => {
                return (
                    Status::Critical,
                    format!("HTTP CRITICAL - {url}: TLS handshake failed: {e}"),
                    vec![],
                )
            }
        };
        if let Some(end) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(not_after)
        {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            expiry = Some((end, (end - now) / 86_400));
        }
        fetch(tls, &host_header, &path).await
    } else {
        fetch(tcp, &host_header, &path).await
    };
    let secs = started.elapsed().as_secs_f64();
    let mut perf = vec![Perf {
        label: "time".into(),
        value: secs,
        uom: "s".into(),
        warn: None,
        crit: None,
        min: Some(0.0),
        max: Some(p.timeout.as_secs_f64()),
    }];
    let (code, body, cut) = match fetched {
        Ok(f) => f,
        Err(e) => {
            return (
                Status::Critical,
                format!("HTTP CRITICAL - {url}: {e}"),
                perf,
            )
        }
    };
    let mut problems: Vec<(Status, String)> = Vec::new();
    if code != p.expect_status {
        problems.push((
            Status::Critical,
            format!("status {code}, expected {}", p.expect_status),
        ));
    }
    if let Some(needle) = p.body_contains {
        if cut {
            problems.push((
                Status::Critical,
                format!("the body is over {} KiB, not searched", BODY_LIMIT / 1024),
            ));
        } else if !String::from_utf8_lossy(&body).contains(needle) {
            problems.push((Status::Critical, format!("the body lacks {needle:?}")));
        }
    }
    let mut cert_note = String::new();
    if let Some((end, days)) = expiry {
        perf.push(Perf {
            label: "cert_days".into(),
            value: days as f64,
            uom: String::new(),
            warn: Some(p.warn_days.to_string()),
            crit: Some(p.crit_days.to_string()),
            min: None,
            max: None,
        });
        let when = format!("certificate expires in {days} day(s) (unix {end})");
        if days < p.crit_days as i64 {
            problems.push((Status::Critical, when));
        } else if days < p.warn_days as i64 {
            problems.push((Status::Warning, when));
        } else {
            cert_note = format!("; {when}");
        }
    }
    let worst = problems
        .iter()
        .map(|(s, _)| *s)
        .max_by_key(|s| s.severity())
        .unwrap_or(Status::Ok);
    let text = if problems.is_empty() {
        format!(
            "HTTP OK - {url}: status {code}, {} bytes in {secs:.3} s{cert_note}",
            body.len()
        )
    } else {
        let what: Vec<String> = problems.into_iter().map(|(_, t)| t).collect();
        format!("HTTP {} - {url}: {}", worst.as_str(), what.join("; "))
    };
    (worst, text, perf)
}
