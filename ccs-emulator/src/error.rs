//! Why the emulator could not start.

use std::fmt;
use std::io;

/// Why [`Emulator::start`](crate::Emulator::start) failed. Nothing is left running.
#[derive(Debug)]
#[non_exhaustive]
pub enum EmulatorError {
    /// The configuration is not usable (the field and why).
    Config {
        /// The field of [`EmulatorConfig`](crate::EmulatorConfig).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Generating the self-signed certificate failed.
    Certificate(String),
    /// The provided certificate chain or key could not be read or was refused by rustls.
    Tls(String),
    /// Binding the listening socket failed.
    Bind(io::Error),
}

impl fmt::Display for EmulatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { field, reason } => {
                write!(f, "invalid emulator config `{field}`: {reason}")
            }
            Self::Certificate(e) => write!(f, "cannot generate the TLS certificate: {e}"),
            Self::Tls(e) => write!(f, "unusable TLS certificate or key: {e}"),
            Self::Bind(e) => write!(f, "cannot listen: {e}"),
        }
    }
}

impl std::error::Error for EmulatorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind(e) => Some(e),
            _ => None,
        }
    }
}
