//! [`Endpoint`]: a host and port to dial, and the FCM/GCM presets.

use std::fmt;

/// A host and port to dial with direct TLS (never STARTTLS, never plaintext).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host to dial; also the TLS server name unless
    /// [`TlsOptions::server_name`](super::TlsOptions::server_name) says otherwise.
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
}
