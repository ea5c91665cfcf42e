//! [`Dialer`] and [`Transport`]: where a connection's bytes go, and the default
//! [`TcpDialer`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use ccs_net::Endpoint;
use ccs_proto::client::ConnectFailure;

/// A byte stream a connection runs TLS over, usable from two threads at once.
///
/// Each connection reads on one thread and writes on another, each with its own handle on
/// the stream ([`try_clone`](Self::try_clone)), and the client's IO thread keeps a third to
/// close the stream from outside ([`shutdown`](Self::shutdown)) when a connection must stop
/// whatever the peer does. A shutdown through any handle must wake a read or a write
/// blocked on any other (as it does for sockets).
pub trait Transport: Read + Write + Send + Sized + 'static {
    /// Another handle on the same stream (as [`TcpStream::try_clone`]).
    fn try_clone(&self) -> io::Result<Self>;

    /// Shuts down the reading side, the writing side or both (as [`TcpStream::shutdown`]).
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

impl Transport for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

#[cfg(unix)]
impl Transport for std::os::unix::net::UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        std::os::unix::net::UnixStream::try_clone(self)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        std::os::unix::net::UnixStream::shutdown(self, how)
    }
}

/// Opens the byte stream a connection runs TLS over. [`TcpDialer`] is the default; your own
/// can go through a proxy or a unix socket. It is called on the connection's own thread,
/// again for every new connection the reconnect policy makes, and may block.
pub trait Dialer: Send + Sync + 'static {
    /// The byte stream.
    type Stream: Transport;

    /// Opens a stream to `endpoint`. Say whether retrying can help with
    /// [`ConnectFailure::permanent`] or [`ConnectFailure::transient`]; what to do about it
    /// is the core's decision.
    ///
    /// A connection the client gives up while this call is still running cannot be
    /// interrupted: its thread ends when the call returns (and the stream is then closed at
    /// once). Bound the time it may take.
    fn dial(&self, endpoint: &Endpoint) -> Result<Self::Stream, ConnectFailure>;
}

/// Resolves the endpoint's host and connects over TCP (with `TCP_NODELAY`), trying each
/// address in turn. A name that does not resolve is a permanent failure; a refused
/// connection a transient one.
#[derive(Debug, Clone, Copy)]
pub struct TcpDialer {
    /// How long one TCP connect may take (per address). Default 10 s.
    pub connect_timeout: Duration,
}

impl Default for TcpDialer {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Dialer for TcpDialer {
    type Stream = TcpStream;

    fn dial(&self, endpoint: &Endpoint) -> Result<TcpStream, ConnectFailure> {
        // Resolving apart from connecting tells a name that does not resolve (permanent)
        // from a refused connection (transient).
        let addrs: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
            .to_socket_addrs()
            .map_err(|e| {
                ConnectFailure::permanent(format!("cannot resolve {}: {e}", endpoint.host))
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ConnectFailure::permanent(format!(
                "cannot resolve {}: no address",
                endpoint.host
            )));
        }
        let mut last = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, self.connect_timeout) {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
        Err(ConnectFailure::transient(format!(
            "cannot connect to {endpoint}: {e}"
        )))
    }
}
