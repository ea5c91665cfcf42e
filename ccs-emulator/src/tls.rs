//! The server's TLS setup: a generated self-signed certificate or a provided one, served by
//! rustls with the workspace's one crypto provider (ring).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSource;
use crate::error::EmulatorError;

/// The names a generated certificate is valid for: loopback, and the hosts CCS was dialled
/// at, so that a client configured for the real service can be pointed here unchanged.
pub const GENERATED_NAMES: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "gcm.googleapis.com",
    "fcm-xmpp.googleapis.com",
    "gcm-xmpp.googleapis.com",
];

/// A ready rustls configuration and the certificate chain as PEM (for clients to trust).
pub(crate) struct Tls {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) cert_pem: String,
}

/// Builds the server's TLS configuration.
pub(crate) fn server_tls(source: &TlsSource) -> Result<Tls, EmulatorError> {
    let (cert_pem, key_pem) = match source {
        TlsSource::Generate => generate()?,
        TlsSource::Provided {
            cert_chain_pem,
            key_pem,
        } => (cert_chain_pem.clone(), key_pem.clone()),
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EmulatorError::Tls(format!("certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(EmulatorError::Tls(
            "the certificate chain holds no CERTIFICATE block".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| EmulatorError::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EmulatorError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| EmulatorError::Tls(e.to_string()))?;
    // CCS spoke XMPP directly over TLS, no ALPN.
    config.alpn_protocols.clear();
    Ok(Tls {
        config: Arc::new(config),
        cert_pem,
    })
}

/// A fresh self-signed certificate and key for [`GENERATED_NAMES`], both PEM.
fn generate() -> Result<(String, String), EmulatorError> {
    let names: Vec<String> = GENERATED_NAMES.iter().map(|&n| n.to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| EmulatorError::Certificate(e.to_string()))?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_loads() {
        let tls = server_tls(&TlsSource::Generate).unwrap();
        assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn provided_certificate_round_trips() {
        let (cert, key) = generate().unwrap();
        let tls = server_tls(&TlsSource::Provided {
            cert_chain_pem: cert.clone(),
            key_pem: key,
        })
        .unwrap();
        assert_eq!(tls.cert_pem, cert);
    }

    #[test]
    fn garbage_is_an_error() {
        let err = server_tls(&TlsSource::Provided {
            cert_chain_pem: "nothing here".into(),
            key_pem: "nor here".into(),
        });
        assert!(matches!(err, Err(EmulatorError::Tls(_))));
        let (cert, _) = generate().unwrap();
        let err = server_tls(&TlsSource::Provided {
            cert_chain_pem: cert,
            key_pem: "no key".into(),
        });
        assert!(matches!(err, Err(EmulatorError::Tls(_))));
    }
}
