//! HTTPS: certificates read from PEM files and chosen by SNI, the TLS handshake (with its
//! timeout and ALPN's choice of HTTP/2 or HTTP/1.1), reloading certificates without
//! dropping connections, and the redirect of plain HTTP to HTTPS.
//!
//! Lifecycle: the configuration reads and checks every certificate at load
//! ([`load`]); [`Certs`] turns them into a rustls `ServerConfig` kept behind a lock that each
//! handshake reads once; [`Certs::reload`] reads the files again and swaps the
//! `ServerConfig` in one step, so handshakes after it use the new certificates while
//! established connections keep the session they negotiated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::body::ProxyBody;

/// ALPN protocols offered, in the server's order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Marks a request that arrived over TLS (a request extension set by the TLS listener):
/// the origin is told `X-Forwarded-Proto: https` and the page is cached apart from the
/// plain-HTTP one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Https;

/// Whether a request arrived over TLS.
pub fn is_https<B>(req: &Request<B>) -> bool {
    req.extensions().get::<Https>().is_some()
}

/// A certificate file and its private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM file: the certificate first, then its chain.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate could not be used; says which of the two files is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable, holds no certificate, or names no host.
    #[error("{path}: {cause}")]
    Cert { path: String, cause: String },
    /// The key file is missing, unreadable, holds no key, or the key does not match.
    #[error("{path}: {cause}")]
    Key { path: String, cause: String },
    /// rustls refused the set of certificates.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// A certificate ready to serve: its chain and key, and the host names it is chosen for.
#[derive(Clone)]
pub struct Certificate {
    /// The files it was read from, read again on reload.
    pub files: CertFiles,
    /// DNS names from the certificate's subject alternative names (`*.example.com` allowed).
    pub names: Vec<String>,
    /// Chain and signing key, as rustls hands them out.
    pub key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("files", &self.files)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// The crypto provider every TLS configuration uses (ring; no process-wide default needed).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its key, and checks that they belong together.
///
/// Errors name the file at fault: [`TlsError::Cert`] for the certificate file,
/// [`TlsError::Key`] for the key file (including a key that does not match the certificate).
pub fn load(files: &CertFiles) -> Result<Certificate, TlsError> {
    let cert_err = |cause: String| TlsError::Cert {
        path: files.cert.display().to_string(),
        cause,
    };
    let key_err = |cause: String| TlsError::Key {
        path: files.key.display().to_string(),
        cause,
    };
    readable(&files.cert).map_err(cert_err)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate file: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(cert_err(
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    };
    let names = dns_names(leaf).map_err(cert_err)?;
    if names.is_empty() {
        return Err(cert_err(
            "the certificate names no DNS host in its subject alternative names".into(),
        ));
    }
    readable(&files.key).map_err(key_err)?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| key_err(format!("holds no usable private key: {e}")))?;
    let key = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| key_err(format!("cannot use this key with {}: {e}", files.cert.display())))?;
    Ok(Certificate {
        files: files.clone(),
        names,
        key: Arc::new(key),
    })
}

/// Checks a file can be opened, so the error says "cannot read" rather than a PEM error.
fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read: {e}"))
}

/// The DNS names in a certificate's subject alternative names, lower-cased.
fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    Ok(ee.valid_dns_names().map(|n| n.to_ascii_lowercase()).collect())
}

/// Chooses a certificate by the name the client asked for (SNI).
#[derive(Debug)]
pub struct BySni {
    /// Served when the client sends no name or a name no certificate carries.
    default: Arc<CertifiedKey>,
    /// Exact names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates, by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl BySni {
    /// A resolver over `certs`; the first is the default. When two certificates carry the
    /// same name, the earlier one wins. `None` when `certs` is empty.
    pub fn new(certs: &[Certificate]) -> Option<BySni> {
        let default = certs.first()?.key.clone();
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for c in certs {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(n.clone()),
                }
                .or_insert_with(|| c.key.clone());
            }
        }
        Some(BySni {
            default,
            exact,
            wildcard,
        })
    }

    /// The certificate for a requested name: exact match, then a wildcard one label up, then
    /// the default.
    pub fn pick(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else { return &self.default };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()).clone())
    }
}

/// A rustls server configuration for `certs` (the first is the default), offering h2 and
/// http/1.1 through ALPN.
pub fn server_config(certs: &[Certificate]) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = BySni::new(certs).ok_or_else(|| TlsError::Config("no certificate configured".into()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The certificates in use, swapped as a whole on reload.
pub struct Certs {
    /// The files to read again on reload, the default first.
    files: Vec<CertFiles>,
    /// The configuration each new handshake uses.
    current: parking_lot::RwLock<Arc<ServerConfig>>,
}

impl Certs {
    /// Starts from certificates already read (by the configuration).
    pub fn new(certs: &[Certificate]) -> Result<Certs, TlsError> {
        Ok(Certs {
            files: certs.iter().map(|c| c.files.clone()).collect(),
            current: parking_lot::RwLock::new(server_config(certs)?),
        })
    }

    /// An acceptor for one handshake, with the certificates in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Reads every certificate and key file again and, if all are good, makes them the ones
    /// new handshakes use; returns how many certificates are now served. On any error the
    /// certificates in use stay as they were. Established connections are not touched.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let certs = self.files.iter().map(load).collect::<Result<Vec<_>, _>>()?;
        let cfg = server_config(&certs)?;
        *self.current.write() = cfg;
        Ok(certs.len())
    }
}

/// Where a plain-HTTP request is sent when `server.redirect_https` is on: the same host and
/// path on HTTPS (with `tls_port` unless it is 443). `None` for requests that must stay on
/// plain HTTP (ACME HTTP-01 challenges) or that have no usable host (left to the normal
/// path, which refuses them).
pub fn redirect_location(uri: &http::Uri, headers: &HeaderMap, tls_port: u16) -> Option<String> {
    if uri.path().starts_with("/.well-known/acme-challenge/") {
        return None;
    }
    let host = match uri.authority() {
        Some(a) => a.host(),
        None => {
            let h = headers.get(header::HOST)?.to_str().ok()?;
            if h.is_empty() || h.contains(['/', ' ', '@', '\\']) {
                return None;
            }
            match h.rfind(':') {
                Some(i) if !h.ends_with(']') => &h[..i],
                _ => h,
            }
        }
    };
    if host.is_empty() {
        return None;
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Some(if tls_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{tls_port}{path}")
    })
}

/// The `301 Moved Permanently` to HTTPS for a plain-HTTP GET or HEAD, if it gets one. Other
/// methods go on as they are: a 301 would turn a POST into a GET, and `PURGE` from
/// `bans.purge_allow` must keep working.
pub fn redirect<B>(req: &Request<B>, tls_port: u16) -> Option<Response<ProxyBody>> {
    if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        return None;
    }
    let location = redirect_location(req.uri(), req.headers(), tls_port)?;
    let value = HeaderValue::from_str(&location).ok()?;
    let mut resp = crate::answer::synth(StatusCode::MOVED_PERMANENTLY, "use HTTPS", "redirect-https");
    resp.headers_mut().insert(header::LOCATION, value);
    Some(resp)
}

/// Joins the `cookie` fields of an HTTP/2 request into one (RFC 9113 §8.2.3), as they must be
/// before the request goes on over HTTP/1.1 to the origin.
pub fn merge_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(header::COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, written to temporary files.
    fn cert(names: &[&str], tag: &str) -> Certificate {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let dir = std::env::temp_dir().join(format!("strata-tls-unit-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = CertFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, ck.cert.pem()).unwrap();
        std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
        load(&files).unwrap()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let a = cert(&["a.example", "www.a.example"], "a");
        let b = cert(&["*.b.example", "b.example"], "b");
        let sni = BySni::new(&[a.clone(), b.clone()]).unwrap();
        assert!(Arc::ptr_eq(sni.pick(Some("a.example")), &a.key));
        assert!(Arc::ptr_eq(sni.pick(Some("WWW.A.EXAMPLE.")), &a.key));
        assert!(Arc::ptr_eq(sni.pick(Some("b.example")), &b.key));
        assert!(Arc::ptr_eq(sni.pick(Some("x.b.example")), &b.key));
        assert!(
            Arc::ptr_eq(sni.pick(Some("y.x.b.example")), &a.key),
            "a wildcard covers one label"
        );
        assert!(Arc::ptr_eq(sni.pick(Some("other.example")), &a.key));
        assert!(Arc::ptr_eq(sni.pick(None), &a.key));
        assert_eq!(b.names, vec!["*.b.example", "b.example"]);
    }

    #[test]
    fn mismatched_key_and_missing_files_name_the_file() {
        let a = cert(&["a.example"], "ma");
        let b = cert(&["b.example"], "mb");
        let crossed = CertFiles {
            cert: a.files.cert.clone(),
            key: b.files.key.clone(),
        };
        assert!(matches!(load(&crossed), Err(TlsError::Key { .. })));
        let missing = CertFiles {
            cert: a.files.cert.clone(),
            key: "/nonexistent/key.pem".into(),
        };
        assert!(matches!(load(&missing), Err(TlsError::Key { .. })));
        let swapped = CertFiles {
            cert: a.files.key.clone(),
            key: a.files.key.clone(),
        };
        assert!(matches!(load(&swapped), Err(TlsError::Cert { .. })));
    }

    #[test]
    fn reload_keeps_the_old_certificates_on_error() {
        let a = cert(&["r.example"], "r");
        let certs = Certs::new(std::slice::from_ref(&a)).unwrap();
        let before = certs.current.read().clone();
        assert_eq!(certs.reload().unwrap(), 1);
        assert!(!Arc::ptr_eq(&before, &certs.current.read()), "a good reload swaps");
        let now = certs.current.read().clone();
        std::fs::write(&a.files.key, "not a key").unwrap();
        assert!(certs.reload().is_err());
        assert!(
            Arc::ptr_eq(&now, &certs.current.read()),
            "a failed reload keeps the old"
        );
    }

    #[test]
    fn redirects_keep_host_and_path_and_spare_acme() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("Example.com:8080"));
        let uri: http::Uri = "/a/b?x=1".parse().unwrap();
        assert_eq!(
            redirect_location(&uri, &h, 443).as_deref(),
            Some("https://Example.com/a/b?x=1")
        );
        assert_eq!(
            redirect_location(&uri, &h, 8443).as_deref(),
            Some("https://Example.com:8443/a/b?x=1")
        );
        h.insert(header::HOST, HeaderValue::from_static("[::1]"));
        assert_eq!(
            redirect_location(&uri, &h, 443).as_deref(),
            Some("https://[::1]/a/b?x=1")
        );
        let acme: http::Uri = "/.well-known/acme-challenge/tok".parse().unwrap();
        assert_eq!(redirect_location(&acme, &h, 443), None);
        h.insert(header::HOST, HeaderValue::from_static("evil.com/x"));
        assert_eq!(redirect_location(&uri, &h, 443), None);
    }

    #[test]
    fn h2_cookie_fields_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("wordpress_logged_in_x=y"));
        merge_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; wordpress_logged_in_x=y");
    }
}
