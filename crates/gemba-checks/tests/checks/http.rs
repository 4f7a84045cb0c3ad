//! The `http` check against servers this test runs on loopback: status and
//! body over plain HTTP, and over HTTPS the certificate's days left, with
//! a CA and a certificate made here by `openssl`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gemba_checks::http::{probe, HttpProbe};
use gemba_checks::Status;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{self, ServerConfig};

/// Answers every connection with `response`, over TLS when `tls` is given.
async fn serve(addr: &str, response: &'static str, tls: Option<Arc<ServerConfig>>) -> String {
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let local = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                match tls {
                    Some(cfg) => {
                        let Ok(mut t) = tokio_rustls::TlsAcceptor::from(cfg).accept(s).await else {
                            return;
                        };
                        let _ = t.read(&mut buf).await;
                        let _ = t.write_all(response.as_bytes()).await;
                        let _ = t.shutdown().await;
                    }
                    None => {
                        let mut s = s;
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(response.as_bytes()).await;
                    }
                }
            });
        }
    });
    local
}

fn probe_of<'a>(url: &'a str, ca: Option<&'a str>) -> HttpProbe<'a> {
    HttpProbe {
        url,
        expect_status: 200,
        body_contains: Some("ok"),
        ca_file: ca,
        warn_days: 14,
        crit_days: 3,
        timeout: Duration::from_secs(5),
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

#[tokio::test]
async fn plain_http_status_and_body() {
    let up = serve("127.0.14.4:0", OK, None).await;
    let url = format!("http://{up}/health");
    let (s, out, perf) = probe(probe_of(&url, None)).await;
    assert_eq!(s, Status::Ok, "{out}");
    assert!(out.starts_with("HTTP OK"), "{out}");
    assert_eq!(perf[0].label, "time");

    let bad = serve(
        "127.0.14.4:0",
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
        None,
    )
    .await;
    let url = format!("http://{bad}/");
    let (s, out, _) = probe(probe_of(&url, None)).await;
    assert_eq!(s, Status::Critical);
    assert!(
        out.contains("status 503, expected 200") && out.contains("lacks \"ok\""),
        "{out}"
    );

    let (s, out, _) = probe(probe_of("http://127.0.14.4:1/", None)).await;
    assert_eq!(s, Status::Critical);
    assert!(out.contains("cannot connect"), "{out}");
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A CA and a leaf certificate for 127.0.14.5, valid for `days`.
fn make_certs(dir: &Path, days: u32) -> Option<(PathBuf, PathBuf, PathBuf)> {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.14.5\nbasicConstraints=CA:FALSE\n",
    )
    .ok()?;
    let ok = openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "60",
            "-subj",
            "/CN=gemba test CA",
        ],
    ) && openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.14.5",
        ],
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            &days.to_string(),
            "-extfile",
            "leaf.ext",
        ],
    );
    ok.then(|| {
        (
            dir.join("ca.pem"),
            dir.join("leaf.pem"),
            dir.join("leaf.key"),
        )
    })
}

#[tokio::test]
async fn https_reports_the_days_left_on_the_certificate() {
    let dir = std::env::temp_dir().join(format!("gemba-http-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some((ca, leaf, key)) = make_certs(&dir, 10) else {
        eprintln!("SKIP: openssl is missing, cannot make test certificates");
        return;
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let addr = serve("127.0.14.5:0", OK, Some(Arc::new(cfg))).await;
    let url = format!("https://{addr}/");
    let ca = ca.display().to_string();

    // About 10 days left (openssl and this clock may differ by a second
    // around the day boundary): under 14, a warning.
    let (s, out, perf) = probe(probe_of(&url, Some(&ca))).await;
    assert_eq!(s, Status::Warning, "{out}");
    let days = perf
        .iter()
        .find(|p| p.label == "cert_days")
        .expect("cert_days perfdata")
        .value;
    assert!(days == 9.0 || days == 10.0, "{days}");
    assert!(
        out.contains(&format!("certificate expires in {days} day(s)")),
        "{out}"
    );
    // Thresholds move the verdict.
    let (s, out, _) = probe(HttpProbe {
        warn_days: 5,
        crit_days: 2,
        ..probe_of(&url, Some(&ca))
    })
    .await;
    assert_eq!(s, Status::Ok, "{out}");
    assert!(
        out.contains("HTTP OK") && out.contains(&format!("expires in {days} day(s)")),
        "{out}"
    );
    let (s, _, _) = probe(HttpProbe {
        warn_days: 30,
        crit_days: 20,
        ..probe_of(&url, Some(&ca))
    })
    .await;
    assert_eq!(s, Status::Critical);
    // Without the private CA the server is not trusted.
    let (s, out, _) = probe(probe_of(&url, None)).await;
    assert_eq!(s, Status::Critical);
    assert!(out.contains("TLS handshake failed"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
