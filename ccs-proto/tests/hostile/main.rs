//! The hostile-input catalogue (issue 13): a table of named inputs a hostile server sends to the
//! client ([`Connection`]) or a hostile client sends to the server role ([`ServerConnection`],
//! the emulator's core). For every case: no panic, the expected typed outcome (a close reason,
//! a stream error, an anomaly, or a documented tolerance), and the heap growth while the case
//! runs below a bound derived from the configured limits, measured with a counting allocator.
//!
//! The cases run one after another in a single `#[test]` so that the allocator's counts belong
//! to one case at a time. SECURITY.md describes what the catalogue shows.
//!
//! How memory is measured: `stats_alloc` counts bytes allocated, reallocated and freed but
//! keeps no high-water mark (and the workspace forbids the `unsafe` a wrapper would need).
//! The input is fed in pieces of at most [`MAX_PIECE`] bytes; after each piece the live
//! growth is `allocated + reallocated - freed`, and the peak *within* the piece is at most
//! the growth before it plus everything allocated during it. The catalogue asserts that upper
//! bound, so the real peak is below it too.
#![allow(missing_docs, unreachable_pub)] // a test binary: its `pub` is for the case modules

mod cases_client;
mod cases_server;

use std::alloc::System;
use std::time::{Duration, Instant};

use ccs_proto::connection::{CloseReason, ConnId, State};
use ccs_proto::error::{PeerError, XmlErrorKind};
use ccs_proto::server::{
    ServerCloseReason, ServerConfig, ServerConnection, ServerEvent, ServerState,
};
use ccs_proto::testing::Pair;
use ccs_proto::xml::FramerConfig;
use ccs_proto::{Connection, ConnectionEvent};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The largest piece handed to one `handle_input` call.
pub const MAX_PIECE: usize = 4096;

/// Which side the hostile bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A hostile server: the bytes go to the client's [`Connection`].
    ClientFacingServerBytes,
    /// A hostile client: the bytes go to a [`ServerConnection`] (the emulator's core).
    ServerFacingClientBytes,
    /// Covered by another test (named in `note`); listed here, not re-run.
    Documented,
}

/// Where the hostile bytes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the very start of the stream (before any byte from the peer).
    Fresh,
    /// After a complete scripted handshake (client: `Connected`; server: a bound resource).
    Ready,
}

/// What happens after the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Nothing,
    Eof,
    /// The clock moves on this many seconds and the timers fire.
    Advance(u64),
}

/// One row of the catalogue.
pub struct Case {
    pub name: &'static str,
    pub role: Role,
    pub start: Start,
    /// Generates the hostile bytes (outside the measured region).
    pub input: fn() -> Vec<u8>,
    /// Bytes per `handle_input` call (at most [`MAX_PIECE`]).
    pub piece: usize,
    /// What the side under test must keep by design on top of [`memory_bound`] (for
    /// example pending messages up to `max_pending`); 0 for nearly every case.
    pub retained: usize,
    pub then: Then,
    /// The expected outcome, in words (the table's documentation).
    pub expect: &'static str,
    /// The assertion of that outcome.
    pub check: fn(&Run) -> bool,
}

/// What a case produced. Events are kept up to [`KEPT_EVENTS`] (and the last one always), so
/// that the harness itself stays bounded under a flood.
#[derive(Debug, Default)]
pub struct Run {
    pub client_events: Vec<ConnectionEvent>,
    pub client_state: Option<State>,
    pub server_events: Vec<ServerEvent>,
    pub server_state: Option<ServerState>,
    /// Events seen in all.
    pub events_total: usize,
    /// The last bytes the side under test wrote.
    pub out_tail: Vec<u8>,
}

const KEPT_EVENTS: usize = 64;
const KEPT_OUT: usize = 16 * 1024;

impl Run {
    pub fn client_close(&self) -> Option<&CloseReason> {
        self.client_events.iter().find_map(|e| match e {
            ConnectionEvent::Closed { reason, .. } => Some(reason),
            _ => None,
        })
    }

    pub fn server_close(&self) -> Option<&ServerCloseReason> {
        self.server_events.iter().find_map(|e| match e {
            ServerEvent::Closed { reason } => Some(reason),
            _ => None,
        })
    }

    /// The XML error the connection under test closed with.
    pub fn xml(&self) -> Option<&XmlErrorKind> {
        match (self.client_close(), self.server_close()) {
            (Some(CloseReason::Protocol(PeerError::Xml(e))), _) => Some(&e.kind),
            (_, Some(ServerCloseReason::ProtocolError(e))) => Some(&e.kind),
            _ => None,
        }
    }

    /// The stream error condition the side under test received (client) or sent (server).
    pub fn stream_error(&self) -> Option<&str> {
        match (self.client_close(), self.server_close()) {
            (Some(CloseReason::StreamError(e)), _) => Some(&e.condition),
            (_, Some(ServerCloseReason::StreamError { condition, .. })) => Some(condition),
            _ => None,
        }
    }

    pub fn wrote(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.out_tail).contains(needle)
    }

    pub fn open(&self) -> bool {
        self.client_close().is_none() && self.server_close().is_none()
    }

    fn keep_out(&mut self, bytes: &[u8]) {
        self.out_tail.extend_from_slice(bytes);
        if self.out_tail.len() > 2 * KEPT_OUT {
            let cut = self.out_tail.len() - KEPT_OUT;
            self.out_tail.drain(..cut);
        }
    }
}

// ---- scripted peers ----------------------------------------------------------------------

pub const SERVER_HEADER: &str = "<stream:stream from='gcm.googleapis.com' id='1' version='1.0' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";
pub const SASL_FEATURES: &str = "<stream:features><mechanisms \
    xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
pub const SUCCESS: &str = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
pub const BIND_FEATURES: &str =
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>";

pub fn bind_result(id: &str) -> String {
    format!(
        "<iq type='result' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <jid>123456789012@gcm.googleapis.com/R</jid></bind></iq>"
    )
}

/// Everything a server sends for the client to reach `Connected` (no session offered).
pub fn server_handshake() -> String {
    format!(
        "{SERVER_HEADER}{SASL_FEATURES}{SUCCESS}{SERVER_HEADER}{BIND_FEATURES}{}",
        bind_result("bind_1")
    )
}

/// Everything a client sends for the server role to bind a resource.
pub fn client_handshake() -> Vec<u8> {
    use ccs_proto::xml::write;
    let mut b = Vec::new();
    write::client_header(&mut b, "gcm.googleapis.com");
    write::auth_plain(&mut b, "", "123456789012@gcm.googleapis.com", "test-key");
    write::client_header(&mut b, "gcm.googleapis.com");
    write::iq_bind_set(&mut b, "bind_1", None);
    b
}

/// A `<message>` with a `<gcm>` child holding `json` (escaped as XML text).
pub fn gcm(json: &str) -> Vec<u8> {
    let mut b = Vec::new();
    ccs_proto::xml::write::gcm_message(&mut b, &Default::default(), json);
    b
}

pub fn repeat(prefix: &str, fill: u8, n: usize, suffix: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(prefix.len() + n + suffix.len());
    b.extend_from_slice(prefix.as_bytes());
    b.resize(prefix.len() + n, fill);
    b.extend_from_slice(suffix.as_bytes());
    b
}

pub const MB: usize = 1024 * 1024;

// ---- the runner ----------------------------------------------------------------------------

#[allow(clippy::disallowed_methods)] // the simulated clock's epoch
fn epoch() -> Instant {
    Instant::now()
}

/// The heap growth a case may cause: a stanza is held in the framer's buffer (which may
/// double while it grows), decoded once (a copy) and its JSON parsed (another), so four times
/// the stanza limit, plus a constant for the connection's own state, events and queues.
pub fn memory_bound(framer: &FramerConfig) -> usize {
    4 * framer.max_stanza_bytes.max(framer.max_header_bytes) + 256 * 1024
}

struct Meter {
    region: Region<'static, System>,
    peak_upper: isize,
}

impl Meter {
    fn new() -> Self {
        Self {
            region: Region::new(GLOBAL),
            peak_upper: 0,
        }
    }

    fn live(&self) -> isize {
        let s = self.region.change();
        s.bytes_allocated as isize + s.bytes_reallocated - s.bytes_deallocated as isize
    }

    /// Runs one step, raising the peak by (growth before) + (everything allocated during).
    fn step(&mut self, f: impl FnOnce()) {
        let before = self.region.change();
        let live_before = self.live();
        f();
        let after = self.region.change();
        let allocated = (after.bytes_allocated - before.bytes_allocated) as isize
            + (after.bytes_reallocated - before.bytes_reallocated).max(0);
        self.peak_upper = self
            .peak_upper
            .max(live_before + allocated)
            .max(self.live());
    }
}

fn run_client(case: &Case, input: &[u8], meter: &mut Meter) -> Run {
    let config = Pair::client_config();
    let mut now = epoch();
    let mut conn = Connection::new(ConnId(1), config, now).unwrap();
    let mut run = Run::default();
    let mut scratch = Vec::with_capacity(64 * 1024);
    if case.start == Start::Ready {
        conn.handle_input(now, server_handshake().as_bytes());
        assert_eq!(conn.state(), State::Connected, "{}: handshake", case.name);
        while conn.poll_event().is_some() {}
        while conn.transmit_into(&mut scratch) {}
    }
    run.out_tail.reserve(3 * KEPT_OUT);
    run.client_events.reserve(KEPT_EVENTS + 2);
    let drain = |conn: &mut Connection, run: &mut Run, scratch: &mut Vec<u8>| {
        while let Some(ev) = conn.poll_event() {
            run.events_total += 1;
            if run.client_events.len() < KEPT_EVENTS || matches!(ev, ConnectionEvent::Closed { .. })
            {
                run.client_events.push(ev);
            }
        }
        scratch.clear();
        while conn.transmit_into(scratch) {}
        run.keep_out(scratch);
    };
    *meter = Meter::new();
    for piece in input.chunks(case.piece) {
        meter.step(|| {
            conn.handle_input(now, piece);
            drain(&mut conn, &mut run, &mut scratch);
        });
    }
    meter.step(|| {
        match case.then {
            Then::Nothing => {}
            Then::Eof => conn.handle_eof(now),
            Then::Advance(s) => {
                now += Duration::from_secs(s);
                conn.handle_timeout(now);
            }
        }
        drain(&mut conn, &mut run, &mut scratch);
    });
    run.client_state = Some(conn.state());
    run
}

pub fn server_config() -> ServerConfig {
    Pair::server_config()
}

fn run_server(case: &Case, input: &[u8], meter: &mut Meter) -> Run {
    let mut now = epoch();
    let mut conn = ServerConnection::new(server_config(), now);
    let mut run = Run::default();
    let mut scratch = Vec::with_capacity(64 * 1024);
    if case.start == Start::Ready {
        conn.handle_input(now, &client_handshake());
        assert_eq!(conn.state(), ServerState::Bound, "{}: handshake", case.name);
        while conn.poll_event().is_some() {}
        while conn.transmit_into(&mut scratch) {}
    }
    run.out_tail.reserve(3 * KEPT_OUT);
    run.server_events.reserve(KEPT_EVENTS + 2);
    let drain = |conn: &mut ServerConnection, run: &mut Run, scratch: &mut Vec<u8>| {
        while let Some(ev) = conn.poll_event() {
            run.events_total += 1;
            if run.server_events.len() < KEPT_EVENTS || matches!(ev, ServerEvent::Closed { .. }) {
                run.server_events.push(ev);
            }
        }
        scratch.clear();
        while conn.transmit_into(scratch) {}
        run.keep_out(scratch);
    };
    *meter = Meter::new();
    for piece in input.chunks(case.piece) {
        meter.step(|| {
            conn.handle_input(now, piece);
            drain(&mut conn, &mut run, &mut scratch);
        });
    }
    meter.step(|| {
        match case.then {
            Then::Nothing => {}
            Then::Eof => conn.handle_eof(now),
            Then::Advance(s) => {
                now += Duration::from_secs(s);
                conn.handle_timeout(now);
            }
        }
        drain(&mut conn, &mut run, &mut scratch);
    });
    run.server_state = Some(conn.state());
    run
}

fn catalogue() -> Vec<Case> {
    let mut all = cases_client::cases();
    all.extend(cases_server::cases());
    all
}

#[test]
fn hostile_input_catalogue() {
    let cases = catalogue();
    let run_cases = cases.iter().filter(|c| c.role != Role::Documented).count();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");

    // HOSTILE_DUMP=1 prints what each case produced (events, state, last bytes written).
    let dump = std::env::var_os("HOSTILE_DUMP").is_some();
    let bound = memory_bound(&FramerConfig::default()) as isize;
    let mut failures = Vec::new();
    for case in &cases {
        if case.role == Role::Documented {
            continue;
        }
        assert!(case.piece >= 1 && case.piece <= MAX_PIECE, "{}", case.name);
        let input = (case.input)();
        let mut meter = Meter::new();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match case.role {
            Role::ClientFacingServerBytes => run_client(case, &input, &mut meter),
            _ => run_server(case, &input, &mut meter),
        }));
        let run = match outcome {
            Ok(run) => run,
            Err(_) => {
                failures.push(format!("{}: PANIC", case.name));
                continue;
            }
        };
        let peak = meter.peak_upper;
        println!(
            "{:<48} {:>9} bytes in, peak growth <= {:>8} B, {} events",
            case.name,
            input.len(),
            peak,
            run.events_total
        );
        if dump {
            println!("    {run:?}");
        }
        if !(case.check)(&run) {
            failures.push(format!(
                "{}: expected {}; got {run:?} (wrote {:?})",
                case.name,
                case.expect,
                String::from_utf8_lossy(&run.out_tail)
            ));
        }
        let bound = bound + case.retained as isize;
        if peak > bound {
            failures.push(format!("{}: peak growth {peak} > bound {bound}", case.name));
        }
    }
    println!("{} cases, {run_cases} run", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
