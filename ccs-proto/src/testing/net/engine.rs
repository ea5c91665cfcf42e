//! The engine of [`Net`]: scheduled deliveries, links, dial results, and moving the
//! client's and the servers' outputs onto the links. Private: tests see only [`Net`].

use std::time::{Duration, Instant};

use super::{Dial, Net, Step};
use crate::client::{ClientEvent, Output};
use crate::connection::ConnId;
use crate::credentials::ServerKey;
use crate::server::{ServerConnection, ServerEvent, ServerState};
use crate::testing::{Direction, spend};

impl Net {
    pub(super) fn do_due(&mut self) -> Step {
        let now = self.now;
        if let Some((_, ev)) = self.sched.pop_due(now) {
            match ev {
                Ev::Deliver(id, dir, bytes) => self.deliver(id, dir, &bytes),
                Ev::Eof(id, dir) => self.eof(id, dir),
                Ev::Dialled(id, dial) => self.dialled(id, dial),
                Ev::Trickle(id) => self.trickle_step(id),
                Ev::Custom(c) => return Step::Custom(c),
            }
            self.pump();
            return Step::Moved;
        }
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client_timeouts += 1;
            self.client.handle_timeout(now);
            self.pump();
            if let Some(t) = self.client.poll_timeout()
                && t <= now
            {
                self.violations.push(format!(
                    "client timer did not move after handle_timeout at {:?}",
                    now - self.epoch
                ));
            }
        }
        let due: Vec<ConnId> = self
            .servers
            .iter()
            .filter(|(_, s)| s.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(s) = self.servers.get_mut(&id) {
                s.handle_timeout(now);
            }
        }
        self.pump();
        Step::Moved
    }

    pub(super) fn push(&mut self, at: Instant, ev: Ev) {
        self.sched.push(at, ev);
    }

    /// Carries out every output of the client and the servers until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.client.poll_output() {
                moved = true;
                self.on_output(out);
            }
            let ids: Vec<ConnId> = self.servers.keys().copied().collect();
            for id in ids {
                moved |= self.pump_server(id);
            }
            if !moved {
                return;
            }
        }
    }

    pub(super) fn pump_server(&mut self, id: ConnId) -> bool {
        let mut moved = false;
        let Some(server) = self.servers.get_mut(&id) else {
            return false;
        };
        let mut out = Vec::new();
        while let Some(bytes) = server.poll_transmit() {
            out.push(bytes);
        }
        let mut closed = false;
        while let Some(ev) = server.poll_event() {
            moved = true;
            if self.auto_ack
                && let ServerEvent::Downstream { message, .. } = &ev
            {
                // The message is pending: acking it cannot be refused while bound.
                let _ = server.ack(message.message_id().as_str(), None);
            }
            if let ServerEvent::Closed { .. } = ev {
                closed = true;
            }
            if self.keep_server_events {
                self.server_events.push((id, ev));
            }
        }
        if self.auto_ack {
            while let Some(bytes) = server.poll_transmit() {
                out.push(bytes);
            }
        }
        let state_closed = server.state() == ServerState::Closed;
        for bytes in out {
            moved = true;
            self.transfer(id, Direction::ToClient, bytes);
        }
        if state_closed || closed {
            if let Some(link) = self.links.get_mut(&id)
                && !link.server_done
            {
                link.server_done = true;
                let at = link.last[Direction::ToClient as usize].max(self.now + self.latency);
                self.push(at, Ev::Eof(id, Direction::ToClient));
            }
            self.servers.remove(&id);
            moved = true;
        }
        moved
    }

    pub(super) fn on_output(&mut self, out: Output) {
        match out {
            Output::Connect(id) => {
                self.connects.push(id);
                let dial = self.dial_plan.pop_front().unwrap_or(self.dial_default);
                let at = self.now + self.latency;
                self.push(at, Ev::Dialled(id, dial));
            }
            Output::Transmit(id, bytes) => {
                if self.draining.contains(&id) && contains(&bytes, b"<message id=") {
                    self.violations.push(format!(
                        "downstream message sent on draining {id} at {:?}",
                        self.now - self.epoch
                    ));
                }
                if self.draining.contains(&id) && contains(&bytes, b"urn:xmpp:ping") {
                    self.pings_while_draining += 1;
                }
                self.transfer(id, Direction::ToServer, bytes);
            }
            Output::Disconnect(id) => {
                if !self.disconnected.insert(id) {
                    self.violations.push(format!("second Disconnect for {id}"));
                }
                self.disconnects.push(id);
                if let Some(link) = self.links.get_mut(&id)
                    && !link.client_done
                {
                    link.client_done = true;
                    let at = link.last[Direction::ToServer as usize].max(self.now + self.latency);
                    self.push(at, Ev::Eof(id, Direction::ToServer));
                }
            }
            Output::Event(e) => {
                if let ClientEvent::ConnectionDraining { id } = &e {
                    self.draining.insert(*id);
                }
                self.client_events.push(e);
            }
        }
    }

    pub(super) fn transfer(&mut self, id: ConnId, dir: Direction, bytes: Vec<u8>) {
        let jitter = if self.latency_jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.below(self.latency_jitter.as_nanos() as u64 + 1))
        };
        let now = self.now;
        let latency = self.latency;
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if !link.alive || link.muted[dir as usize] {
            return;
        }
        let at = (now + latency + jitter).max(link.last[dir as usize]);
        link.last[dir as usize] = at;
        match self.max_piece {
            None => self.push(at, Ev::Deliver(id, dir, bytes)),
            Some(max) => {
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let n = (1 + self.rng.below(max as u64) as usize).min(rest.len());
                    self.push(at, Ev::Deliver(id, dir, rest[..n].to_vec()));
                    rest = &rest[n..];
                }
            }
        }
    }

    pub(super) fn deliver(&mut self, id: ConnId, dir: Direction, bytes: &[u8]) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if !link.alive {
            return;
        }
        match dir {
            Direction::ToServer if link.server_done => return,
            Direction::ToClient if link.client_done => return,
            _ => {}
        }
        let (n, dies) = spend(&mut link.budget[dir as usize], bytes.len());
        let now = self.now;
        match dir {
            Direction::ToServer => {
                if let Some(s) = self.servers.get_mut(&id) {
                    s.handle_input(now, &bytes[..n]);
                }
            }
            Direction::ToClient => self.client.handle_input(now, id, &bytes[..n]),
        }
        if dies {
            self.pump();
            self.kill(id);
        }
    }

    pub(super) fn trickle_step(&mut self, id: ConnId) {
        let now = self.now;
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let live = link.alive && !link.client_done && !link.server_done;
        let Some(t) = link.trickle.as_mut().filter(|_| live) else {
            link.trickle = None;
            return;
        };
        if t.sent >= TRICKLE_MAX {
            return; // quiet from now on, the stanza still open
        }
        let n = if t.sent == 0 { t.first } else { 1 };
        let piece: Vec<u8> = (t.sent..t.sent + n)
            .map(|i| t.head.get(i).copied().unwrap_or(b'x'))
            .collect();
        t.sent += n;
        let next = now + t.every;
        if t.sent == n {
            self.trickle_started.insert(id, now);
        }
        self.push(next, Ev::Trickle(id));
        self.deliver(id, Direction::ToClient, &piece);
    }

    pub(super) fn eof(&mut self, id: ConnId, dir: Direction) {
        let Some(link) = self.links.get(&id) else {
            return;
        };
        if !link.alive {
            return;
        }
        let now = self.now;
        match dir {
            Direction::ToServer => {
                if let Some(s) = self.servers.get_mut(&id) {
                    s.handle_eof(now);
                }
            }
            Direction::ToClient => self.client.handle_eof(now, id),
        }
    }

    pub(super) fn dialled(&mut self, id: ConnId, dial: Dial) {
        if self.disconnected.contains(&id) {
            return; // the client gave up on it (timeout, close)
        }
        let now = self.now;
        match dial {
            Dial::Accept | Dial::BadKey => {
                let mut config = self.server_config.clone();
                config.seed = id.0;
                if dial == Dial::BadKey {
                    config.server_key = ServerKey::new("not-the-key").expect("a valid literal key");
                }
                self.servers.insert(id, ServerConnection::new(config, now));
                self.links.insert(
                    id,
                    Link {
                        alive: true,
                        budget: [None, None],
                        muted: [false, false],
                        last: [now, now],
                        client_done: false,
                        server_done: false,
                        trickle: None,
                    },
                );
                self.client.handle_connected(now, id);
            }
            Dial::Refuse => self
                .client
                .handle_connect_failed(now, id, "connection refused"),
            Dial::Silent => {}
        }
    }
}

#[derive(Debug)]
pub(super) enum Ev {
    Deliver(ConnId, Direction, Vec<u8>),
    Eof(ConnId, Direction),
    Dialled(ConnId, Dial),
    /// The next bytes of a trickled stanza (see [`Net::trickle`]).
    Trickle(ConnId),
    Custom(u64),
}

#[derive(Debug)]
pub(super) struct Link {
    pub(super) alive: bool,
    /// Bytes still allowed through per direction before the link dies.
    pub(super) budget: [Option<usize>; 2],
    pub(super) muted: [bool; 2],
    /// Latest delivery time per direction (keeps each direction in order).
    pub(super) last: [Instant; 2],
    /// The client closed its side (after `Output::Disconnect`).
    pub(super) client_done: bool,
    /// The server connection is closed.
    pub(super) server_done: bool,
    /// A stanza being trickled to the client in place of the server's output.
    pub(super) trickle: Option<Trickle>,
}

/// A stanza that never ends, sent to the client a byte at a time (see [`Net::trickle`]).
#[derive(Debug)]
pub(super) struct Trickle {
    /// The stanza's opening bytes; after them, filler that never closes it.
    pub(super) head: Vec<u8>,
    /// Bytes sent so far.
    pub(super) sent: usize,
    /// Bytes in the first piece.
    pub(super) first: usize,
    /// Delay between pieces.
    pub(super) every: Duration,
}

/// How many bytes a trickle sends at most (then it goes quiet, its stanza still open): far
/// below the client's stanza size limit, so that only a timeout can end it.
const TRICKLE_MAX: usize = 4096;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
