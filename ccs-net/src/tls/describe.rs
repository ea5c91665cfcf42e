//! [`describe_tls_error`]: why a TLS handshake failed, in sentences a person can act on.

use std::io;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError};

use super::calendar::utc;
use super::endpoint::Endpoint;

/// Explains why the TLS step of a connection to `endpoint` failed, in sentences a person can
/// act on: what is wrong and what to do about it.
///
/// `err` is an error from a TLS connector's `connect` (such as the one
/// an adapter makes from [`client_config`](super::client_config)), whose rustls error, if any, is inside
/// ([`io::Error::get_ref`]); `server_name` is the name the connector was given. The advice
/// names both the command-line flags of `ccs-cli` (`--ca-file`, `--pin-cert`,
/// `--server-name`) and the [`TlsOptions`](super::TlsOptions) fields they set.
pub fn describe_tls_error(
    endpoint: &Endpoint,
    server_name: &ServerName<'_>,
    err: &io::Error,
) -> String {
    if let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return explain(endpoint, server_name, tls);
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof => format!(
            "{endpoint} closed the connection during the TLS handshake: it may not speak TLS on \
             this port (a plaintext or STARTTLS port?), or it refused this client's TLS hello"
        ),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => format!(
            "{endpoint} reset the connection during the TLS handshake ({err}): it may not speak \
             TLS on this port (a plaintext or STARTTLS port?), or it refused this client's TLS \
             hello"
        ),
        _ => format!("TLS with {endpoint} failed: {err}"),
    }
}

/// How to trust a certificate that is exactly the one expected.
const PIN_HINT: &str = "trust exactly this certificate with --pin-cert FILE \
                        (TlsOptions::pinned_certs)";

/// What this client offers in a handshake (rustls with ring, safe defaults).
const OFFERS: &str = "TLS 1.3 and 1.2, with ECDHE key exchange (X25519, P-256, P-384) and \
                      AES-GCM or ChaCha20-Poly1305";

fn explain(endpoint: &Endpoint, server_name: &ServerName<'_>, err: &rustls::Error) -> String {
    use rustls::Error as E;
    use rustls::InvalidMessage as M;
    let why = match err {
        E::InvalidCertificate(cert) => return explain_certificate(endpoint, server_name, cert),
        E::InvalidMessage(M::InvalidContentType | M::UnknownProtocolVersion)
        | E::PeerSentOversizedRecord => {
            return format!(
                "{endpoint} does not seem to speak TLS: it answered the TLS hello with bytes \
                 that are not TLS (a plaintext XMPP or STARTTLS port, or another service?). CCS \
                 speaks TLS from the first byte (FCM: port 5235, or 5236 for testing): check \
                 the port, and that the server has TLS enabled"
            );
        }
        E::InvalidMessage(m) => format!(
            "the server sent a malformed TLS message ({m:?}): it may not speak TLS properly on \
             this port"
        ),
        E::AlertReceived(
            alert @ (AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity),
        ) => format!(
            "the server refused the handshake (alert {alert:?}): it shares no TLS version, \
             cipher suite or key exchange with this client, which offers {OFFERS}; or it wants \
             a client certificate, which this client does not send"
        ),
        E::AlertReceived(AlertDescription::ProtocolVersion) => format!(
            "the server speaks neither TLS 1.3 nor TLS 1.2 (alert ProtocolVersion); this client \
             offers {OFFERS}"
        ),
        E::AlertReceived(AlertDescription::UnrecognisedName) => format!(
            "the server does not serve the name `{}` that this client asked for (alert \
             UnrecognisedName): give the name it serves with --server-name NAME \
             (TlsOptions::server_name)",
            name_of(server_name)
        ),
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate, which this client does not send".into()
        }
        E::AlertReceived(alert) => {
            format!("the server ended the handshake with the TLS alert {alert:?}")
        }
        E::PeerIncompatible(rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13) => {
            format!("the server speaks neither TLS 1.3 nor TLS 1.2; this client offers {OFFERS}")
        }
        E::PeerIncompatible(p) => format!(
            "the server's TLS is not compatible with this client ({p:?}); this client offers \
             {OFFERS}"
        ),
        E::PeerMisbehaved(p) => format!("the server broke the TLS protocol ({p:?})"),
        E::NoCertificatesPresented => "the server presented no certificate".into(),
        other => other.to_string(),
    };
    format!("TLS with {endpoint} failed: {why}")
}

fn explain_certificate(
    endpoint: &Endpoint,
    server_name: &ServerName<'_>,
    err: &CertificateError,
) -> String {
    use CertificateError as C;
    let ours = "the server's certificate";
    let why = match err {
        C::Other(other) if other.0.to_string() == "CaUsedAsEndEntity" => format!(
            "{ours} is a CA certificate (basicConstraints CA:TRUE), which TLS does not accept as \
             a server's own certificate, even when it is trusted with --ca-file. `openssl req \
             -x509` makes such certificates unless given `-addext \
             basicConstraints=critical,CA:FALSE`. Either {PIN_HINT}, or keep it as the CA \
             (--ca-file) and give the server a certificate signed by it"
        ),
        C::Other(other) if other.0.to_string() == "EndEntityUsedAsCa" => format!(
            "a certificate in the server's chain signs another one but is not marked as a CA \
             (basicConstraints CA:TRUE): re-issue that issuing certificate as a CA, or \
             {PIN_HINT}"
        ),
        C::UnknownIssuer => format!(
            "{ours} is not signed by a certificate authority this client trusts (unknown \
             issuer). If the server uses a private CA or a self-signed certificate, pass that CA \
             with --ca-file FILE (TlsOptions::ca_files), or {PIN_HINT}. A pinned certificate \
             must be byte for byte the one the server presents. A public server may be failing \
             to send its intermediate certificates"
        ),
        C::ExpiredContext { time, not_after } => format!(
            "{ours} expired on {} ({} ago). The server needs a renewed certificate (and a \
             pinned one must then be pinned anew); if that date looks wrong, check this \
             machine's clock",
            utc(not_after.as_secs()),
            span(time.as_secs().saturating_sub(not_after.as_secs()))
        ),
        C::Expired => format!(
            "{ours} has expired (or its validity period is invalid): the server needs a renewed \
             certificate; check this machine's clock too"
        ),
        C::NotValidYetContext { time, not_before } => format!(
            "{ours} is not valid yet: it is valid from {} ({} from now). Check the clocks of \
             this machine and of the machine that made the certificate",
            utc(not_before.as_secs()),
            span(not_before.as_secs().saturating_sub(time.as_secs()))
        ),
        C::NotValidYet => format!(
            "{ours} is not valid yet: check the clocks of this machine and of the machine that \
             made the certificate"
        ),
        C::NotValidForNameContext {
            expected,
            presented,
        } => {
            let expected = name_of(expected);
            let names: Vec<String> = presented
                .iter()
                .filter_map(|n| presented_host(n))
                .map(|n| format!("`{n}`"))
                .collect();
            match names.as_slice() {
                [] => format!(
                    "{ours} is not valid for `{expected}`: it names no host at all (it has no DNS \
                     or IP subjectAltName; TLS ignores the Common Name). Give the server a certificate \
                     made with `-addext subjectAltName={}`, or {PIN_HINT}",
                    san_for(&expected)
                ),
                _ => format!(
                    "{ours} is not valid for `{expected}`: it is valid only for {}. Connect to one \
                     of those names, or give one with --server-name NAME \
                     (TlsOptions::server_name), or {PIN_HINT}",
                    join_or(&names)
                ),
            }
        }
        C::NotValidForName => format!(
            "{ours} is not valid for `{}`: connect to a name it carries, or give one with \
             --server-name NAME (TlsOptions::server_name), or {PIN_HINT}",
            name_of(server_name)
        ),
        C::Revoked => format!(
            "{ours} has been revoked by its issuer and must not be trusted: the server needs a \
             new certificate"
        ),
        C::BadSignature => "a signature does not verify: either a certificate in the server's \
             chain was not signed by the CA it names (is the --ca-file a different CA with the \
             same name, e.g. one made again since?), or the server does not hold the private \
             key of the certificate it presents"
            .into(),
        #[allow(deprecated)]
        C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => format!(
            "{ours} is signed with an algorithm this client does not accept; it accepts ECDSA \
             (P-256, P-384), Ed25519 and RSA (PKCS#1 v1.5 or PSS, SHA-256/384/512, 2048 bits or \
             more): re-issue the certificate with one of those"
        ),
        C::BadEncoding => {
            format!("{ours} is not a well-formed X.509 certificate (bad DER encoding)")
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
            "{ours} is not allowed for TLS servers: its extendedKeyUsage lacks serverAuth. \
             Re-issue it with `-addext extendedKeyUsage=serverAuth`, or without that extension"
        ),
        C::UnhandledCriticalExtension => format!(
            "{ours} has an extension marked critical that this client does not understand: \
             re-issue it without that extension, or {PIN_HINT}"
        ),
        other => format!("{ours} was refused: {other}"),
    };
    format!("TLS with {endpoint} failed: {why}")
}

/// A host name from rustls' list of the names a certificate presents, whose entries read
/// `DnsName("example.com")` or `IpAddress(192.0.2.1)`; `None` for entries that name no host
/// (directory names, URIs). Any other form is kept as it is.
fn presented_host(entry: &str) -> Option<&str> {
    if let Some(name) = entry
        .strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
    {
        return Some(name);
    }
    if let Some(ip) = entry
        .strip_prefix("IpAddress(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return Some(ip);
    }
    let other_kinds = [
        "DirectoryName",
        "UniformResourceIdentifier(",
        "Unsupported(",
    ];
    if other_kinds.iter().any(|k| entry.starts_with(k)) {
        return None;
    }
    Some(entry)
}

/// A server name as text.
fn name_of(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// The subjectAltName entry (openssl syntax) for a name.
fn san_for(name: &str) -> String {
    if name.parse::<std::net::IpAddr>().is_ok() {
        format!("IP:{name}")
    } else {
        format!("DNS:{name}")
    }
}

/// `a`, `a or b`, `a, b or c`.
fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A duration in the largest unit that keeps it at 2 or more.
fn span(secs: u64) -> String {
    match secs {
        1 => "1 second".into(),
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3600 => format!("{} hours", s / 3600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(span(1), "1 second");
        assert_eq!(span(119), "119 seconds");
        assert_eq!(span(7_199), "119 minutes");
        assert_eq!(span(7_200), "2 hours");
        assert_eq!(span(3 * 86_400 + 5), "3 days");
    }

    #[test]
    fn name_lists() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(join_or(&names(&["a"])), "a");
        assert_eq!(join_or(&names(&["a", "b"])), "a or b");
        assert_eq!(join_or(&names(&["a", "b", "c"])), "a, b or c");
        assert_eq!(presented_host("DnsName(\"a.test\")"), Some("a.test"));
        assert_eq!(presented_host("IpAddress(192.0.2.1)"), Some("192.0.2.1"));
        assert_eq!(presented_host("DirectoryName"), None);
        assert_eq!(presented_host("UniformResourceIdentifier(\"u:x\")"), None);
        assert_eq!(presented_host("plain.test"), Some("plain.test"));
    }

    fn describe(err: impl Into<rustls::Error>) -> String {
        let endpoint = Endpoint::new("127.0.0.1", 5235);
        let name = ServerName::try_from("ccs.test").unwrap();
        let err = io::Error::new(io::ErrorKind::InvalidData, err.into());
        describe_tls_error(&endpoint, &name, &err)
    }

    #[test]
    fn descriptions_of_errors_the_loopback_tests_do_not_provoke() {
        let e = describe(CertificateError::Revoked);
        assert!(
            e.starts_with("TLS with 127.0.0.1:5235 failed: the server's"),
            "{e}"
        );
        assert!(e.contains("revoked"), "{e}");
        let e = describe(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.1").unwrap(),
            presented: vec!["DirectoryName".into()],
        });
        assert!(e.contains("names no host at all"), "{e}");
        assert!(e.contains("subjectAltName=IP:127.0.0.1"), "{e}");
        let e = describe(CertificateError::InvalidPurpose);
        assert!(e.contains("serverAuth"), "{e}");
        let e = describe(rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13);
        assert!(e.contains("neither TLS 1.3 nor TLS 1.2"), "{e}");
        let e = describe(rustls::Error::AlertReceived(
            AlertDescription::UnrecognisedName,
        ));
        assert!(
            e.contains("`ccs.test`") && e.contains("--server-name"),
            "{e}"
        );
        let endpoint = Endpoint::new("::1", 5235);
        let name = ServerName::try_from("ccs.test").unwrap();
        let e = describe_tls_error(&endpoint, &name, &io::Error::other("boom"));
        assert_eq!(e, "TLS with [::1]:5235 failed: boom");
    }
}
