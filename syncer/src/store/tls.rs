//! TLS to MySQL (`mysql_ssl_mode`, `mysql_ssl_ca`): the driver's options for each mode, the
//! name a `verify_ca` server's certificate holds, and a refused handshake said in words an
//! operator can act on.
//!
//! `verify_ca` checks the chain, not the name. The driver checks both (its own way of
//! skipping the name no longer matches the TLS library's errors), so the syncer learns the
//! name the certificate holds with one handshake of its own, in which the chain is checked
//! against `mysql_ssl_ca` and only the name is let pass, and has the driver expect that name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::SslOpts;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{MysqlTls, SslMode};

/// The driver's TLS options for `tls`; `None` for plain text. `name`: for `verify_ca`, the
/// name the server's certificate holds ([`certificate_name`]), expected instead of the
/// URL's host.
pub fn ssl_opts(tls: &MysqlTls, name: Option<&str>) -> Option<SslOpts> {
    let checked = || match &tls.ca {
        // Only the operator's CA: a public CA's certificate for any name is no proof here.
        Some(ca) => SslOpts::default()
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true),
        None => SslOpts::default(),
    };
    match tls.mode {
        SslMode::Disabled => None,
        SslMode::Required => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        SslMode::VerifyCa => Some(match name {
            Some(n) => checked().with_danger_tls_hostname_override(Some(n.to_string())),
            None => checked().with_danger_skip_domain_validation(true),
        }),
        SslMode::VerifyIdentity => Some(checked()),
    }
}

/// Why a connection failed, with what the TLS settings have to do with it when they do:
/// `None` when the error is not about TLS.
pub fn explain(e: &mysql_async::Error, tls: &MysqlTls) -> Option<String> {
    use mysql_async::{DriverError, Error, IoError};
    match e {
        Error::Io(IoError::Tls(t)) => Some(explain_text(&t.to_string(), tls)),
        // The TLS library's refusals reach the driver as I/O errors.
        Error::Io(IoError::Io(io)) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(|r| explain_text(&format!("{r:?}"), tls)),
        Error::Driver(DriverError::NoClientSslFlagFromServer) => Some(format!(
            "TLS to MySQL refused (mysql_ssl_mode = {}): the server offers no TLS (set its ssl_cert and ssl_key)",
            tls.mode.as_str()
        )),
        _ => None,
    }
}

/// A TLS refusal (`text`: the TLS library's error) with what to check.
fn explain_text(text: &str, tls: &MysqlTls) -> String {
    let hint = if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        match &tls.ca {
            Some(ca) => format!(
                "the server's certificate is not signed by a CA in mysql_ssl_ca ({})",
                ca.display()
            ),
            None => "the server's certificate is not signed by a public CA: name its CA in mysql_ssl_ca".to_string(),
        }
    } else if text.contains("NotValidForName") {
        "the server's certificate does not name the host of the mysql URL (verify_identity): \
         connect by a name it holds, or use verify_ca"
            .to_string()
    } else if text.contains("Expired") || text.contains("NotValidYet") {
        "the server's certificate is outside its validity period".to_string()
    } else {
        "the TLS handshake failed".to_string()
    };
    format!(
        "TLS to MySQL refused (mysql_ssl_mode = {}): {hint}: {text}",
        tls.mode.as_str()
    )
}

/// Checks the chain against the CA and lets a name mismatch pass; keeps the certificate.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
    seen: parking_lot::Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked after the chain: a name error means the chain was good.
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                *self.seen.lock() = Some(end_entity.clone().into_owned());
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A name `der` (a certificate) holds: its first DNS name, else its first IP address.
fn name_in(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let names = &san.value.general_names;
    names
        .iter()
        .find_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .or_else(|| {
            names.iter().find_map(|n| match n {
                GeneralName::IPAddress(b) => match b.len() {
                    4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                    16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                    _ => None,
                },
                _ => None,
            })
        })
}

/// Reads one MySQL packet's payload.
async fn packet(s: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    Ok(payload)
}

/// `verify_ca`: the name the certificate of the server at `host:port` holds, after one
/// handshake that checks its chain against the CAs in `ca` (the MySQL greeting, an SSL
/// request, TLS; then the connection is dropped).
///
/// Errors, in words: the server unreachable or without TLS, a chain `ca` does not sign, a
/// certificate without a name.
pub async fn certificate_name(host: &str, port: u16, ca: &Path, deadline: Duration) -> Result<String, String> {
    let tls = MysqlTls {
        mode: SslMode::VerifyCa,
        ca: Some(ca.to_path_buf()),
    };
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(ca).map_err(|e| format!("mysql_ssl_ca {}: {e}", ca.display()))?;
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: CertificateDer<'static> = cert.map_err(|e| format!("mysql_ssl_ca {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("mysql_ssl_ca {}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("mysql_ssl_ca {}: {e}", ca.display()))?;
    let verifier = Arc::new(ChainOnly {
        inner,
        seen: parking_lot::Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let handshake = async {
        let mut s = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        let greeting = packet(&mut s).await.map_err(|e| format!("{host}:{port}: {e}"))?;
        if greeting.first() == Some(&0xff) {
            return Err(format!(
                "{host}:{port} refused: {}",
                String::from_utf8_lossy(&greeting[3.min(greeting.len())..])
            ));
        }
        // SSLRequest: CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL |
        // CLIENT_SECURE_CONNECTION, max packet 16 MiB, utf8mb4, 23 bytes of filler.
        let mut req = vec![32, 0, 0, 1];
        req.extend_from_slice(&(0x0001u32 | 0x0200 | 0x0800 | 0x8000).to_le_bytes());
        req.extend_from_slice(&(16u32 << 20).to_le_bytes());
        req.push(45);
        req.extend_from_slice(&[0; 23]);
        s.write_all(&req).await.map_err(|e| format!("{host}:{port}: {e}"))?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, s)
            .await
            .map_err(|e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(r) => explain_text(&format!("{r:?}"), &tls),
                None => format!("TLS to MySQL at {host}:{port} failed: {e}"),
            })?;
        Ok(())
    };
    tokio::time::timeout(deadline, handshake)
        .await
        .map_err(|_| format!("{host}:{port}: no TLS handshake within {deadline:?}"))??;
    let der = verifier.seen.lock().take().ok_or("the server sent no certificate")?;
    name_in(&der).ok_or_else(|| "the server's certificate holds no DNS name or IP address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn each_mode_checks_what_it_says() {
        assert!(ssl_opts(&MysqlTls::default(), None).is_none());
        let required = ssl_opts(
            &MysqlTls {
                mode: SslMode::Required,
                ca: None,
            },
            None,
        )
        .expect("tls");
        assert!(required.accept_invalid_certs() && required.skip_domain_validation());
        let ca = PathBuf::from("/etc/strata/mysql-ca.pem");
        let verify_ca = ssl_opts(
            &MysqlTls {
                mode: SslMode::VerifyCa,
                ca: Some(ca.clone()),
            },
            None,
        )
        .expect("tls");
        assert!(!verify_ca.accept_invalid_certs() && verify_ca.skip_domain_validation());
        assert!(verify_ca.disable_built_in_roots());
        assert_eq!(verify_ca.root_certs().len(), 1);
        let identity = ssl_opts(
            &MysqlTls {
                mode: SslMode::VerifyIdentity,
                ca: None,
            },
            None,
        )
        .expect("tls");
        assert!(!identity.accept_invalid_certs() && !identity.skip_domain_validation());
        assert!(
            !identity.disable_built_in_roots(),
            "the public CAs without mysql_ssl_ca"
        );
    }

    #[test]
    fn verify_ca_expects_the_name_the_certificate_holds() {
        let tls = MysqlTls {
            mode: SslMode::VerifyCa,
            ca: Some(PathBuf::from("/etc/strata/mysql-ca.pem")),
        };
        let o = ssl_opts(&tls, Some("db.example.test")).expect("tls");
        assert_eq!(o.tls_hostname_override(), Some("db.example.test"));
        assert!(!o.skip_domain_validation() && !o.accept_invalid_certs());
    }

    #[test]
    fn the_name_of_a_certificate_is_its_first_dns_name_else_its_address() {
        let der = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let key = rcgen::KeyPair::generate().unwrap();
            rcgen::CertificateParams::new(names)
                .unwrap()
                .self_signed(&key)
                .unwrap()
                .der()
                .to_vec()
        };
        assert_eq!(
            name_in(&der(&["10.0.0.5", "db.example.test"])).as_deref(),
            Some("db.example.test")
        );
        assert_eq!(name_in(&der(&["10.0.0.5"])).as_deref(), Some("10.0.0.5"));
        assert_eq!(name_in(&der(&["2001:db8::5"])).as_deref(), Some("2001:db8::5"));
        assert_eq!(name_in(b"not a certificate"), None);
    }

    #[test]
    fn refusals_say_what_to_check() {
        let tls = MysqlTls {
            mode: SslMode::VerifyCa,
            ca: Some(PathBuf::from("/etc/strata/mysql-ca.pem")),
        };
        let text = explain_text("InvalidCertificate(UnknownIssuer)", &tls);
        assert!(
            text.starts_with("TLS to MySQL refused (mysql_ssl_mode = verify_ca): the server's certificate is not signed by a CA in mysql_ssl_ca (/etc/strata/mysql-ca.pem)"),
            "{text}"
        );
        assert!(explain_text("InvalidCertificate(Expired)", &tls).contains("outside its validity period"));
        let public = MysqlTls {
            mode: SslMode::VerifyIdentity,
            ca: None,
        };
        assert!(explain_text("InvalidCertificate(UnknownIssuer)", &public).contains("name its CA in mysql_ssl_ca"));
    }

    #[test]
    fn a_server_without_tls_is_named() {
        let tls = MysqlTls {
            mode: SslMode::Required,
            ca: None,
        };
        let e = mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer);
        assert_eq!(
            explain(&e, &tls).as_deref(),
            Some("TLS to MySQL refused (mysql_ssl_mode = required): the server offers no TLS (set its ssl_cert and ssl_key)")
        );
        let other = mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed);
        assert_eq!(explain(&other, &tls), None);
    }
}
