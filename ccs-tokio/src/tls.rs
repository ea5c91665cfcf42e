//! Where to connect and how to trust it: endpoints, presets, and the rustls client config.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A host and port to dial with direct TLS (never STARTTLS, never plaintext).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host to dial; also the TLS server name unless [`TlsOptions::server_name`] says
    /// otherwise.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Endpoint {
    /// FCM's production XMPP endpoint, `fcm-xmpp.googleapis.com:5235`.
    pub fn fcm() -> Self {
        Self::new("fcm-xmpp.googleapis.com", 5235)
    }

    /// FCM's test environment, `fcm-xmpp.googleapis.com:5236`.
    pub fn fcm_test() -> Self {
        Self::new("fcm-xmpp.googleapis.com", 5236)
    }

    /// The 2013 GCM endpoint, `gcm.googleapis.com:5235`.
    pub fn gcm() -> Self {
        Self::new("gcm.googleapis.com", 5235)
    }

    /// Any host and port (the emulator, for example).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Parses `HOST:PORT`, `[V6]:PORT`, or a preset name (`fcm`, `fcm-test`, `gcm`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "fcm" => return Ok(Self::fcm()),
            "fcm-test" => return Ok(Self::fcm_test()),
            "gcm" => return Ok(Self::gcm()),
            _ => {}
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:PORT or a preset (fcm, fcm-test, gcm)"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{s}` has no host"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        Ok(Self::new(host, port))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// The name the certificate must carry; default: the dialled host.
    pub server_name: Option<String>,
    /// Extra CA certificates (PEM files) to trust, e.g. the emulator's certificate.
    pub ca_files: Vec<PathBuf>,
    /// Extra CA certificates as PEM text.
    pub ca_pem: Vec<String>,
    /// Trust only the extra CAs, not the public web roots (for tests).
    pub only_extra_roots: bool,
}

/// Builds the rustls client configuration: the web PKI roots (webpki-roots) plus any extra
/// CAs, with the workspace's one crypto provider (ring).
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    if !opts.only_extra_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let mut add = |der: CertificateDer<'static>, from: &str| {
        roots
            .add(der)
            .map_err(|e| format!("CA certificate from {from} is not usable: {e}"))
    };
    for path in &opts.ca_files {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        let mut n = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
            add(cert, &path.display().to_string())?;
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "no certificate found in CA file {}",
                path.display()
            ));
        }
    }
    for pem in &opts.ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            add(cert.map_err(|e| format!("bad CA PEM: {e}"))?, "PEM text")?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The TLS server name for `endpoint`.
pub(crate) fn server_name(
    endpoint: &Endpoint,
    opts: &TlsOptions,
) -> Result<ServerName<'static>, String> {
    let name = opts
        .server_name
        .clone()
        .unwrap_or_else(|| endpoint.host.clone());
    ServerName::try_from(name.clone())
        .map_err(|_| format!("`{name}` is not a valid TLS server name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(Endpoint::parse("fcm").unwrap(), Endpoint::fcm());
        assert_eq!(Endpoint::parse("fcm-test").unwrap().port, 5236);
        assert_eq!(Endpoint::parse("gcm").unwrap().host, "gcm.googleapis.com");
        assert_eq!(
            Endpoint::parse("127.0.0.1:4000").unwrap(),
            Endpoint::new("127.0.0.1", 4000)
        );
        assert_eq!(Endpoint::parse("[::1]:5").unwrap(), Endpoint::new("::1", 5));
        assert_eq!(Endpoint::new("::1", 5).to_string(), "[::1]:5");
        assert!(Endpoint::parse("nohost").is_err());
        assert!(Endpoint::parse(":1").is_err());
        assert!(Endpoint::parse("h:99999").is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let opts = TlsOptions {
            ca_files: vec!["/nonexistent/ca.pem".into()],
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn default_roots_build() {
        client_config(&TlsOptions::default()).unwrap();
    }
}
