//! Where to connect and how to trust it: endpoints, presets, the rustls client config with
//! its pinned certificates, and TLS failures explained.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tracing::debug;

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
        let verifier = PinningVerifier {
            pinned,
            others,
            algorithms: provider.signature_verification_algorithms,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
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

/// Refuses, when it is given, a pinned certificate whose validity period cannot be read
/// (the verifier checks it at each handshake).
fn pinnable(cert: &CertificateDer<'_>, from: &str) -> Result<(), String> {
    match validity(cert) {
        Some(_) => Ok(()),
        None => Err(format!(
            "the pinned certificate from {from} is not an X.509 certificate this client can read"
        )),
    }
}

/// Trusts the pinned certificates exactly, and every other certificate as rustls' usual
/// verifier does. See [pinning](TlsOptions#pinning).
#[derive(Debug)]
struct PinningVerifier {
    /// The pinned certificates (DER).
    pinned: Vec<CertificateDer<'static>>,
    /// The usual verifier, for every other certificate; `None` when no CA is trusted.
    others: Option<Arc<WebPkiServerVerifier>>,
    /// The provider's signature algorithms, for the handshake signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return match &self.others {
                Some(others) => others.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ),
                None => Err(CertificateError::UnknownIssuer.into()),
            };
        }
        let (not_before, not_after) = validity(end_entity).ok_or(CertificateError::BadEncoding)?;
        let at = |secs| UnixTime::since_unix_epoch(Duration::from_secs(secs));
        if now.as_secs() < not_before {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before: at(not_before),
            }
            .into());
        }
        if now.as_secs() > not_after {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after: at(not_after),
            }
            .into());
        }
        debug!("the server presented a pinned certificate");
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
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

/// Explains why the TLS step of a connection to `endpoint` failed, in sentences a person can
/// act on: what is wrong and what to do about it.
///
/// `err` is an error from a TLS connector's `connect` (such as the one
/// [`tls_connector`](crate::tls_connector) makes), whose rustls error, if any, is inside
/// ([`io::Error::get_ref`]); `server_name` is the name the connector was given. The advice
/// names both the command-line flags of `ccs-cli` (`--ca-file`, `--pin-cert`,
/// `--server-name`) and the [`TlsOptions`] fields they set.
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

/// A UNIX time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
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

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a count of days since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The validity period (notBefore, notAfter) of a DER X.509 certificate, in seconds since
/// the UNIX epoch (earlier times count as 0). Reads only as far as the validity field.
fn validity(cert: &[u8]) -> Option<(u64, u64)> {
    let (cert, _) = der_take(cert, 0x30)?; // Certificate
    let (tbs, _) = der_take(cert, 0x30)?; // TBSCertificate
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_take(rest, 0xa0)?.1; // [0] version
    }
    rest = der_take(rest, 0x02)?.1; // serialNumber
    rest = der_take(rest, 0x30)?.1; // signature
    rest = der_take(rest, 0x30)?.1; // issuer
    let (validity, _) = der_take(rest, 0x30)?;
    let (not_before, rest) = der_time(validity)?;
    let (not_after, _) = der_time(rest)?;
    Some((not_before, not_after))
}

/// Splits one DER element tagged `tag` off the front of `input`: (its content, the rest).
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            if rest.len() < n {
                return None;
            }
            let (bytes, rest) = rest.split_at(n);
            let len = bytes.iter().try_fold(0usize, |acc, &b| {
                acc.checked_mul(256)?.checked_add(b.into())
            })?;
            (len, rest)
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Reads a UTCTime or GeneralizedTime (`...Z`, whole seconds) off the front of `input`.
fn der_time(input: &[u8]) -> Option<(u64, &[u8])> {
    let tag = *input.first()?;
    let (content, rest) = der_take(input, tag)?;
    let digits = content.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |d: &[u8]| {
        d.iter()
            .fold(0i64, |acc, &b| acc * 10 + i64::from(b - b'0'))
    };
    let (year, rest_digits) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| num(&rest_digits[i * 2..i * 2 + 2]);
    let (month, day, hour, minute, second) = (field(0), field(1), field(2), field(3), field(4));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((u64::try_from(secs).unwrap_or(0), rest))
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

    #[test]
    fn validity_is_read_in_both_time_encodings() {
        // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050 on.
        for (from, to) in [
            ((1975, 1, 1), (2049, 12, 31)),
            ((2000, 2, 29), (2090, 6, 1)),
        ] {
            let mut p = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
            p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
            p.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
            let cert = p.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
            assert_eq!(
                validity(cert.der()),
                Some((
                    u64::try_from(p.not_before.unix_timestamp()).unwrap(),
                    u64::try_from(p.not_after.unix_timestamp()).unwrap()
                ))
            );
        }
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x00]), None);
    }

    #[test]
    fn der_lengths_and_times() {
        let long = [&[0x04, 0x81, 0x80][..], &[7u8; 0x80]].concat();
        assert_eq!(
            der_take(&long, 0x04).map(|(c, r)| (c.len(), r.len())),
            Some((128, 0))
        );
        assert_eq!(der_take(&long, 0x30), None);
        assert_eq!(der_take(&[0x04, 0x80], 0x04), None); // indefinite length: not DER
        assert_eq!(der_take(&[0x04, 0x03, 1, 2], 0x04), None); // short
        let utc = |s: &str| [&[0x17, s.len() as u8][..], s.as_bytes()].concat();
        assert_eq!(der_time(&utc("700101000000Z")), Some((0, &[][..])));
        assert_eq!(
            der_time(&utc("491231235959Z")).map(|t| t.0),
            Some(2_524_607_999)
        );
        assert_eq!(der_time(&utc("500101000000Z")).map(|t| t.0), Some(0)); // 1950: before 1970
        assert_eq!(der_time(&utc("701301000000Z")), None); // month 13
        assert_eq!(der_time(&utc("7001010000Z")), None); // no seconds
        assert_eq!(der_time(&utc("700101000000+0100")), None);
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400 + 3_723), "2000-02-29 01:02:03 UTC");
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
