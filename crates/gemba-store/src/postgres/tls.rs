//! TLS to PostgreSQL, set the way operators already know from libpq: the
//! connection string's `sslmode` and `sslrootcert` parameters.
//!
//! | sslmode       | encrypted                      | certificate checked          |
//! |---------------|--------------------------------|------------------------------|
//! | `disable`     | never                          | -                            |
//! | `prefer` (default) | when the server offers TLS | chain, if `sslrootcert` is given |
//! | `require`     | always, or no connection       | chain, if `sslrootcert` is given |
//! | `verify-ca`   | always                         | chain against `sslrootcert`  |
//! | `verify-full` | always                         | chain and the host name      |
//!
//! `sslrootcert` is a PEM file of the CA certificates to trust, or
//! `system` for the Mozilla roots (a database with a public certificate).
//! The driver itself knows only disable/prefer/require and no root file,
//! so both parameters are taken out of the string here and turned into a
//! rustls client configuration (ring, TLS 1.2 and 1.3).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres::config::SslMode;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};

/// The modes, as libpq names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslModeName {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslModeName {
    fn parse(value: &str) -> Result<SslModeName, String> {
        Ok(match value {
            "disable" => SslModeName::Disable,
            "prefer" => SslModeName::Prefer,
            "require" => SslModeName::Require,
            "verify-ca" => SslModeName::VerifyCa,
            "verify-full" => SslModeName::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported (it tries without TLS first); \
                     use prefer, require, verify-ca or verify-full"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslModeName::Disable => "disable",
            SslModeName::Prefer => "prefer",
            SslModeName::Require => "require",
            SslModeName::VerifyCa => "verify-ca",
            SslModeName::VerifyFull => "verify-full",
        }
    }
}

/// What the connection string asked of TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsWish {
    pub mode: SslModeName,
    /// A PEM file, or "system".
    pub rootcert: Option<String>,
}

/// How far a server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Encrypted only: anyone on the path who can answer the handshake is
    /// believed (libpq's prefer and require without a root file).
    Nothing,
    /// Signed by a trusted CA, whatever name it was issued for.
    Chain,
    /// Signed by a trusted CA for the host connected to.
    ChainAndName,
}

impl TlsWish {
    pub fn check(&self) -> Check {
        match (self.mode, &self.rootcert) {
            (SslModeName::VerifyFull, _) => Check::ChainAndName,
            (SslModeName::VerifyCa, _) => Check::Chain,
            (_, Some(_)) => Check::Chain,
            _ => Check::Nothing,
        }
    }

    /// The driver's mode (it enforces "TLS or nothing" and the fallback).
    pub fn driver_mode(&self) -> SslMode {
        match self.mode {
            SslModeName::Disable => SslMode::Disable,
            SslModeName::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL; returns
/// the URL the driver gets and what was asked of TLS.
pub fn split_url(url: &str) -> Result<(String, TlsWish), String> {
    let mut wish = TlsWish {
        mode: SslModeName::Prefer,
        rootcert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), wish));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("{key}: not UTF-8 once decoded"))?;
        match key {
            "sslmode" => wish.mode = SslModeName::parse(&value)?,
            "sslrootcert" => {
                if value.is_empty() {
                    return Err("sslrootcert is empty: give a PEM file or `system`".into());
                }
                wish.rootcert = Some(value.into_owned());
            }
            _ => kept.push(pair),
        }
    }
    if matches!(wish.mode, SslModeName::VerifyCa | SslModeName::VerifyFull)
        && wish.rootcert.is_none()
    {
        return Err(format!(
            "sslmode={} needs sslrootcert=FILE (the CA's PEM certificates) or sslrootcert=system",
            wish.mode.as_str()
        ));
    }
    if wish.mode == SslModeName::Disable && wish.rootcert.is_some() {
        return Err("sslrootcert is given but sslmode=disable turns TLS off".into());
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, wish))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

fn roots(rootcert: &str) -> Result<RootCertStore, String> {
    if rootcert == "system" {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(rootcert)
        .map_err(|e| format!("cannot read sslrootcert {rootcert}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("sslrootcert {rootcert} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("sslrootcert {rootcert} holds no certificate"));
    }
    let mut store = RootCertStore::empty();
    for c in certs {
        store
            .add(c)
            .map_err(|e| format!("sslrootcert {rootcert}: {e}"))?;
    }
    Ok(store)
}

/// The rustls configuration for `wish` (also built for `disable`, where
/// the driver never uses it).
pub fn client_config(wish: &TlsWish) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (wish.check(), &wish.rootcert) {
        (Check::Nothing, _) | (_, None) => Arc::new(Unchecked(provider)),
        (check, Some(file)) => {
            let full =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(file)?), provider)
                    .build()
                    .map_err(|e| format!("sslrootcert {file}: {e}"))?;
            if check == Check::ChainAndName {
                full
            } else {
                Arc::new(ChainOnly(full))
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Believes any certificate, but still checks that the server holds its
/// key (the handshake signatures).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The full check minus the host name (libpq's verify-ca). The chain is
/// checked before the name, so a name error means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_taken_out_and_the_rest_kept() {
        let (rest, wish) = split_url(
            "postgres://g@db:5432/gemba?connect_timeout=3&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://g@db:5432/gemba?connect_timeout=3");
        assert_eq!(wish.mode, SslModeName::VerifyFull);
        assert_eq!(wish.rootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(wish.check(), Check::ChainAndName);
        assert_eq!(wish.driver_mode(), SslMode::Require);

        let (rest, wish) = split_url("postgres://g@db/gemba").unwrap();
        assert_eq!(rest, "postgres://g@db/gemba");
        assert_eq!(wish.mode, SslModeName::Prefer);
        assert_eq!(wish.check(), Check::Nothing);
        assert_eq!(wish.driver_mode(), SslMode::Prefer);

        // A root file makes prefer/require check the chain, as libpq does.
        let (_, wish) = split_url("postgres://g@db/gemba?sslmode=require&sslrootcert=/ca").unwrap();
        assert_eq!(wish.check(), Check::Chain);
    }

    #[test]
    fn wrong_tls_parameters_are_named() {
        let err = |url: &str| split_url(url).unwrap_err();
        assert!(err("postgres://g@db/x?sslmode=verify-full").contains("needs sslrootcert"));
        assert!(err("postgres://g@db/x?sslmode=strict").contains("sslmode=strict is not one of"));
        assert!(err("postgres://g@db/x?sslmode=allow").contains("not supported"));
        assert!(err("postgres://g@db/x?sslmode=disable&sslrootcert=/ca").contains("turns TLS off"));
        assert!(err("postgres://g@db/x?sslrootcert=").contains("sslrootcert is empty"));
        let e = client_config(&TlsWish {
            mode: SslModeName::VerifyCa,
            rootcert: Some("/nonexistent/ca.pem".into()),
        })
        .unwrap_err();
        assert!(
            e.contains("cannot read sslrootcert /nonexistent/ca.pem"),
            "{e}"
        );
    }
}
