//! Certificate pinning: a [`ServerCertVerifier`] that trusts the pinned certificates
//! exactly and hands every other one to rustls' usual verifier, and a small reader of a
//! certificate's validity period (the one check a pinned certificate still gets).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tracing::debug;

use super::calendar::days_from_civil;

/// Trusts the pinned certificates exactly, and every other certificate as rustls' usual
/// verifier does. See [pinning](super::TlsOptions#pinning).
#[derive(Debug)]
pub(super) struct PinningVerifier {
    /// The pinned certificates (DER).
    pinned: Vec<CertificateDer<'static>>,
    /// The usual verifier, for every other certificate; `None` when no CA is trusted.
    others: Option<Arc<WebPkiServerVerifier>>,
    /// The provider's signature algorithms, for the handshake signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinningVerifier {
    /// Trusts `pinned` exactly and hands every other certificate to `others`.
    pub(super) fn new(
        pinned: Vec<CertificateDer<'static>>,
        others: Option<Arc<WebPkiServerVerifier>>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            pinned,
            others,
            algorithms,
        }
    }
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

/// Refuses, when it is given, a pinned certificate whose validity period cannot be read
/// (the verifier checks it at each handshake).
pub(super) fn pinnable(cert: &CertificateDer<'_>, from: &str) -> Result<(), String> {
    match validity(cert) {
        Some(_) => Ok(()),
        None => Err(format!(
            "the pinned certificate from {from} is not an X.509 certificate this client can read"
        )),
    }
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
}
