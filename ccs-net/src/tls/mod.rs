//! Where to connect and how to trust it: endpoints, presets, the rustls client config with
//! its pinned certificates, and TLS failures explained.
//!
//! [`TlsOptions`] and the rustls client config live here; [`Endpoint`] in `endpoint.rs`,
//! the pinning verifier and its reader of a certificate's validity period in `pin.rs`,
//! [`describe_tls_error`] in `describe.rs`, and the civil-date arithmetic both of those
//! need in `calendar.rs`.

mod calendar;
mod describe;
mod endpoint;
mod pin;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub use describe::describe_tls_error;
pub use endpoint::Endpoint;

use pin::{PinningVerifier, pinnable};

/// How the server's certificate is checked.
///
/// # Pinning
///
/// A certificate in [`pinned_certs`](Self::pinned_certs) or [`pinned_pem`](Self::pinned_pem)
/// is trusted when, and only when, the server presents exactly it (byte for byte) as its own
/// certificate. This is how to trust a self-signed certificate made by `openssl req -x509`:
/// such a certificate is marked as a CA (`CA:TRUE`), and TLS refuses a CA certificate as a
/// server's own certificate, even one given in [`ca_files`](Self::ca_files).
///
/// - Not checked for a pinned certificate: who issued it, the names it carries, whether it
///   is marked as a CA, its key usages and extensions, and the certificates the server
///   sends with it. The person who pinned it chose that very certificate.
/// - Still checked: that the server holds its private key (the handshake signature is
///   verified with the certificate's key, as for any certificate), and its validity period:
///   an expired or not yet valid pinned certificate is refused with the same error as any
///   other. A pin thus ends when its certificate does; pin the renewed certificate then.
/// - Every other certificate is verified exactly as without pins (against the web roots and
///   [`ca_files`](Self::ca_files)/[`ca_pem`](Self::ca_pem)). Pinning adds trust in the
///   pinned certificates and removes no check from any other.
///
/// Every certificate in a pinned PEM file is pinned.
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
    /// Server certificates (PEM files) to trust exactly, whoever issued them and whatever
    /// names they carry; see [pinning](Self#pinning).
    pub pinned_certs: Vec<PathBuf>,
    /// Pinned server certificates as PEM text; see [pinning](Self#pinning).
    pub pinned_pem: Vec<String>,
}

/// Builds the rustls client configuration: the web PKI roots (webpki-roots) plus any extra
/// CAs, and any pinned certificates, with the workspace's one crypto provider (ring).
pub fn client_config(opts: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
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
        for cert in pem_file(path, "CA file")? {
            add(cert, &path.display().to_string())?;
        }
    }
    for pem in &opts.ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            add(cert.map_err(|e| format!("bad CA PEM: {e}"))?, "PEM text")?;
        }
    }
    let mut pinned = Vec::new();
    for path in &opts.pinned_certs {
        for cert in pem_file(path, "pinned certificate file")? {
            pinnable(&cert, &path.display().to_string())?;
            pinned.push(cert);
        }
    }
    for pem in &opts.pinned_pem {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad pinned certificate PEM: {e}"))?;
        if certs.is_empty() {
            return Err("no certificate found in pinned certificate PEM text".into());
        }
        for cert in certs {
            pinnable(&cert, "PEM text")?;
            pinned.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if pinned.is_empty() {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let others = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("TLS setup: {e}"))?,
            )
        };
        let verifier =
            PinningVerifier::new(pinned, others, provider.signature_verification_algorithms);
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The TLS server name for `endpoint`.
pub fn server_name(endpoint: &Endpoint, opts: &TlsOptions) -> Result<ServerName<'static>, String> {
    let name = opts
        .server_name
        .clone()
        .unwrap_or_else(|| endpoint.host.clone());
    ServerName::try_from(name.clone())
        .map_err(|_| format!("`{name}` is not a valid TLS server name"))
}

/// A failed TLS handshake as the core wants it: [`describe_tls_error`]'s explanation, and
/// whether retrying cannot help (a certificate the configuration does not trust stays
/// untrusted on retry: permanent; anything else is transient).
pub fn connect_failure(
    endpoint: &Endpoint,
    server_name: &ServerName<'_>,
    err: &std::io::Error,
) -> ccs_proto::client::ConnectFailure {
    let why = describe_tls_error(endpoint, server_name, err);
    let untrusted = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    if untrusted {
        ccs_proto::client::ConnectFailure::permanent(why)
    } else {
        ccs_proto::client::ConnectFailure::transient(why)
    }
}

/// The certificates in a PEM file; at least one.
fn pem_file(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {what} {}", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn pinned_certificates_that_cannot_be_used_are_clear_errors() {
        let opts = TlsOptions {
            pinned_certs: vec!["/nonexistent/pin.pem".into()],
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err();
        assert!(
            e.contains("pinned certificate file /nonexistent/pin.pem"),
            "{e}"
        );
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let opts = TlsOptions {
            pinned_pem: vec![key],
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err();
        assert!(e.contains("no certificate found"), "{e}");
        let not_x509 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let opts = TlsOptions {
            pinned_pem: vec![not_x509.into()],
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err();
        assert!(e.contains("not an X.509 certificate"), "{e}");
    }
}
