//! A [`Client`] against the crate's real server role: one [`ServerConnection`] per connection
//! the client opens, joined by in-memory links with simulated time, latency (with optional
//! jitter, order kept per direction), random chunking and injected faults: dial outcomes
//! ([`Dial`]), links killed at once or after a number of bytes, muted directions, a stanza
//! trickled and never finished, raw bytes written to the client.
//!
//! The servers are reachable as [`Net::servers`]: answer what they receive (`ack`, `nack`,
//! `send_upstream`, ...) from your own app-server logic, or set [`Net::auto_ack`]. Whatever
//! the client and the servers report lands in [`Net::client_events`] and
//! [`Net::server_events`].
//!
//! Time only moves when the harness moves it, from the epoch given to [`Net::new`]:
//! [`Net::step`] jumps to the next scheduled thing (a delivery, a dial result, a timer, an
//! action scheduled with [`Net::schedule_custom`]); [`Net::drive`] settles without moving to
//! later timers; [`Net::advance`] moves the clock by a given time. It never reads the clock.
//!
//! ```
//! # use std::time::Instant;
//! use ccs_proto::client::ClientConfig;
//! use ccs_proto::credentials::{SenderId, ServerKey};
//! use ccs_proto::message::Downstream;
//! use ccs_proto::server::ServerConfig;
//! use ccs_proto::testing::net::{Net, acked_ids};
//! use ccs_proto::ConnectionConfig;
//!
//! let (sender, key) = (SenderId::new("123456789012")?, ServerKey::new("key")?);
//! let client = ClientConfig::new(ConnectionConfig::new(sender.clone(), key.clone()));
//! let mut net = Net::up(client, ServerConfig::new(sender, key), Instant::now());
//! net.send(Downstream::builder("device-token", "m-1")?.build());
//! net.drive();
//! // The server holds the message until the application answers it.
//! let conn = net.only_conn();
//! assert_eq!(net.pending(conn), ["m-1"]);
//! net.ack_all();
//! net.drive();
//! assert_eq!(acked_ids(&net.client_events), ["m-1"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use crate::client::{
    Client, ClientConfig, ClientEvent, DownReason, MessageTicket, Outcome, Output, Phase,
};
use crate::connection::ConnId;
use crate::credentials::ServerKey;
use crate::message::Downstream;
use crate::rng::SplitMix64;
use crate::server::{ServerConfig, ServerConnection, ServerEvent, ServerState};

use super::{Direction, spend};

/// What happens when the client asks to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dial {
    /// The transport comes up; the server accepts the credentials.
    Accept,
    /// The transport comes up; the server refuses the credentials.
    BadKey,
    /// The transport cannot be opened.
    Refuse,
    /// No answer ever (the client's connect timeout must fire).
    Silent,
}

/// What one [`Net::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing is scheduled and no timer is set.
    Idle,
    /// Something happened.
    Moved,
    /// An action scheduled with [`Net::schedule_custom`] came due: the caller runs it.
    Custom(u64),
}

/// A client and the server connections it opened, joined by in-memory links. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Net {
    /// The simulated clock.
    pub now: Instant,
    /// Where the simulated clock started.
    pub epoch: Instant,
    /// The client.
    pub client: Client,
    /// The server connection of each client connection whose dial was answered and that is
    /// not closed yet.
    pub servers: BTreeMap<ConnId, ServerConnection>,
    links: BTreeMap<ConnId, Link>,
    sched: BinaryHeap<Reverse<Sched>>,
    seq: u64,
    /// One-way delay of every transfer and of dial results.
    pub latency: Duration,
    /// Extra random delay per transfer, up to this (order is kept per direction).
    pub latency_jitter: Duration,
    /// Cut every transfer into pieces of 1..=max bytes.
    pub max_piece: Option<usize>,
    /// Draws the jitter and the pieces.
    pub rng: SplitMix64,
    /// The config of each new server connection (its `seed` set to the connection id).
    pub server_config: ServerConfig,
    /// How the next dials end, one per [`Output::Connect`]; then `dial_default`.
    pub dial_plan: VecDeque<Dial>,
    /// How a dial ends once `dial_plan` is empty.
    pub dial_default: Dial,
    /// Servers ack every downstream message as it arrives.
    pub auto_ack: bool,
    /// Record server events in `server_events` (the simulation and most tests do).
    pub keep_server_events: bool,
    /// Every event the client reported, in order.
    pub client_events: Vec<ClientEvent>,
    /// Every event the servers reported, in order, with their connection.
    pub server_events: Vec<(ConnId, ServerEvent)>,
    /// Every [`Output::Connect`], in order.
    pub connects: Vec<ConnId>,
    /// Every [`Output::Disconnect`], in order.
    pub disconnects: Vec<ConnId>,
    disconnected: BTreeSet<ConnId>,
    /// Connections the client reported draining.
    pub draining: BTreeSet<ConnId>,
    /// Broken rules seen by the harness itself: a message sent on a connection the client
    /// reported draining, a second `Disconnect`, a client timer still due after
    /// `handle_timeout`.
    pub violations: Vec<String>,
    /// How many times the client's timer fired.
    pub client_timeouts: u64,
    /// When the first byte of each trickled stanza reached the client.
    pub trickle_started: BTreeMap<ConnId, Instant>,
    /// Pings the client sent on connections it reported draining.
    pub pings_while_draining: u64,
}

impl Net {
    /// A client made from `client` whose connections reach servers made from `server`;
    /// `epoch` is the simulated clock's start. Latency 5 ms, every dial accepted, servers
    /// answer nothing on their own, draws seeded with 1 (see [`Net::with_seed`]).
    ///
    /// Nothing has moved yet: set `dial_plan` and the rest first; the first step pumps.
    ///
    /// # Panics
    ///
    /// If `client` does not validate (a test bug).
    pub fn new(client: ClientConfig, server: ServerConfig, epoch: Instant) -> Self {
        let now = epoch;
        let client = Client::new(client, now).expect("valid client config");
        Self {
            now,
            epoch: now,
            client,
            servers: BTreeMap::new(),
            links: BTreeMap::new(),
            sched: BinaryHeap::new(),
            seq: 0,
            latency: Duration::from_millis(5),
            latency_jitter: Duration::ZERO,
            max_piece: None,
            rng: SplitMix64(1),
            server_config: server,
            dial_plan: VecDeque::new(),
            dial_default: Dial::Accept,
            auto_ack: false,
            keep_server_events: true,
            client_events: Vec::new(),
            server_events: Vec::new(),
            connects: Vec::new(),
            disconnects: Vec::new(),
            disconnected: BTreeSet::new(),
            draining: BTreeSet::new(),
            violations: Vec::new(),
            client_timeouts: 0,
            trickle_started: BTreeMap::new(),
            pings_while_draining: 0,
        }
    }

    /// Seeds the draws of jitter and pieces with `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = SplitMix64(seed);
        self
    }

    /// A network whose client is up on all its connections (asserted).
    ///
    /// # Panics
    ///
    /// If not all of them come up.
    pub fn up(client: ClientConfig, server: ServerConfig, epoch: Instant) -> Self {
        let n = client.connections;
        let mut net = Self::new(client, server, epoch);
        net.drive();
        let up = ups(&net.client_events).len();
        assert_eq!(
            up, n,
            "not all connections came up: {:?}",
            net.client_events
        );
        net
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// The server connection of `id`.
    ///
    /// # Panics
    ///
    /// If there is none (never dialled, refused, or closed).
    pub fn server(&mut self, id: ConnId) -> &mut ServerConnection {
        self.servers
            .get_mut(&id)
            .expect("no such server connection")
    }

    /// The server connections that are bound (or draining): where messages flow.
    pub fn bound(&self) -> Vec<ConnId> {
        self.servers
            .iter()
            .filter(|(id, s)| {
                matches!(s.state(), ServerState::Bound | ServerState::Draining)
                    && self
                        .links
                        .get(id)
                        .is_some_and(|l| l.alive && !l.client_done)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The connections whose link is up and neither side has closed.
    pub fn alive_links(&self) -> Vec<ConnId> {
        self.links
            .iter()
            .filter(|(_, l)| l.alive && !l.client_done && !l.server_done)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Events the client reported since the last call.
    pub fn take_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.client_events)
    }

    /// Events the servers reported since the last call.
    pub fn take_server_events(&mut self) -> Vec<(ConnId, ServerEvent)> {
        std::mem::take(&mut self.server_events)
    }

    /// Hands `m` to the client now and carries out what follows at once.
    ///
    /// # Panics
    ///
    /// If the client refuses it (a full queue, a duplicate id, closing).
    pub fn send(&mut self, m: Downstream) -> MessageTicket {
        let now = self.now;
        let t = self.client.send(now, m).expect("send accepted");
        self.pump();
        t
    }

    /// Schedules an action of the caller's, `token`, after `after`: the step that reaches it
    /// returns [`Step::Custom`] (and `drive` and `advance` return it).
    pub fn schedule_custom(&mut self, after: Duration, token: u64) {
        let at = self.now + after;
        self.push(at, Ev::Custom(token));
    }

    /// The link dies now: both sides see the end of the transport; bytes in flight are lost.
    pub fn kill(&mut self, id: ConnId) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if !link.alive {
            return;
        }
        link.alive = false;
        let now = self.now;
        self.client.handle_eof(now, id);
        if let Some(s) = self.servers.get_mut(&id) {
            s.handle_eof(now);
        }
        self.pump();
    }

    /// Lets only `bytes` more bytes through in `dir`, then the link dies.
    pub fn kill_after(&mut self, id: ConnId, dir: Direction, bytes: usize) {
        if let Some(l) = self.links.get_mut(&id) {
            l.budget[dir as usize] = Some(bytes);
        }
    }

    /// Drops every byte in `dir` from now on without ending the transport.
    pub fn mute(&mut self, id: ConnId, dir: Direction) {
        if let Some(l) = self.links.get_mut(&id) {
            l.muted[dir as usize] = true;
        }
    }

    /// The server starts a stanza on `id` and never finishes it: its own output on the link is
    /// dropped from now on (as [`Net::mute`] does, so the stream the client reads stays
    /// well-formed: everything the server wrote before arrives whole, then the stanza), and
    /// the stanza's bytes follow, `first` at once and then one every `every`, never closing
    /// it. It stops when the link ends.
    pub fn trickle(&mut self, id: ConnId, head: Vec<u8>, first: usize, every: Duration) -> bool {
        // What the server wrote so far goes out first, whole.
        self.pump();
        let now = self.now;
        let latency = self.latency;
        let Some(link) = self.links.get_mut(&id) else {
            return false;
        };
        if !link.alive || link.client_done || link.server_done || link.trickle.is_some() {
            return false;
        }
        link.muted[Direction::ToClient as usize] = true;
        link.trickle = Some(Trickle {
            first: first.clamp(1, head.len().max(1)),
            head,
            sent: 0,
            every,
        });
        let at = (now + latency).max(link.last[Direction::ToClient as usize]);
        self.push(at, Ev::Trickle(id));
        true
    }

    /// Writes a whole stanza from the server to the client on `id`, after everything the
    /// server wrote so far (the bytes of a message the server role cannot produce). `false`
    /// if the server cannot send messages now (not bound, closing, link gone). Dropped like
    /// the server's own output on a muted link.
    pub fn inject_to_client(&mut self, id: ConnId, bytes: Vec<u8>) -> bool {
        self.pump();
        let ready = self
            .servers
            .get(&id)
            .is_some_and(|s| matches!(s.state(), ServerState::Bound | ServerState::Draining));
        let up = self
            .links
            .get(&id)
            .is_some_and(|l| l.alive && !l.client_done && !l.server_done);
        if !ready || !up {
            return false;
        }
        self.transfer(id, Direction::ToClient, bytes);
        true
    }

    /// Removes every armed kill budget: no link dies any more. Muted links stay muted (a
    /// stream cannot lose bytes in the middle and go on); the client's ping ends them.
    pub fn heal(&mut self) {
        for l in self.links.values_mut() {
            l.budget = [None, None];
        }
    }

    /// The next time anything happens.
    pub fn next_time(&self) -> Option<Instant> {
        let servers = self
            .servers
            .values()
            .filter_map(ServerConnection::poll_timeout)
            .min();
        [
            self.sched.peek().map(|Reverse(s)| s.at),
            self.client.poll_timeout(),
            servers,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves to the next thing that happens and does it.
    pub fn step(&mut self) -> Step {
        self.pump();
        let Some(t) = self.next_time() else {
            return Step::Idle;
        };
        self.now = self.now.max(t);
        self.do_due()
    }

    /// Delivers everything in flight (jumping the clock over latency) and fires timers that
    /// are due, without moving to later timers. Returns the scripted actions that came due.
    pub fn drive(&mut self) -> Vec<u64> {
        let mut custom = Vec::new();
        for _ in 0..1_000_000 {
            self.pump();
            let timer_due = self.client.poll_timeout().is_some_and(|t| t <= self.now)
                || self
                    .servers
                    .values()
                    .any(|s| s.poll_timeout().is_some_and(|t| t <= self.now));
            if let Some(Reverse(s)) = self.sched.peek() {
                self.now = self.now.max(s.at);
            } else if !timer_due {
                return custom;
            }
            if let Step::Custom(c) = self.do_due() {
                custom.push(c);
            }
        }
        panic!("the network did not settle");
    }

    /// Moves the clock forward by `by`, doing everything due on the way.
    pub fn advance(&mut self, by: Duration) -> Vec<u64> {
        let target = self.now + by;
        let mut custom = Vec::new();
        loop {
            self.pump();
            match self.next_time() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    if let Step::Custom(c) = self.do_due() {
                        custom.push(c);
                    }
                }
                _ => {
                    self.now = self.now.max(target);
                    return custom;
                }
            }
        }
    }

    /// Steps until `done` holds (checked after every step), at most `max` steps.
    pub fn run_until(&mut self, max: usize, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        for _ in 0..max {
            if done(self) {
                return true;
            }
            if self.step() == Step::Idle {
                return done(self);
            }
        }
        false
    }

    /// The ids pending (received, unanswered) on a server connection, in arrival order.
    pub fn pending(&self, id: ConnId) -> Vec<String> {
        self.servers
            .get(&id)
            .map(|s| {
                s.pending_ids()
                    .into_iter()
                    .map(|m| m.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Acks every pending message on every server connection.
    pub fn ack_all(&mut self) {
        let ids: Vec<ConnId> = self.servers.keys().copied().collect();
        for c in ids {
            for m in self.pending(c) {
                let _ = self.server(c).ack(&m, None);
            }
        }
        self.pump();
    }

    /// The one live (up, not draining) connection's id.
    ///
    /// # Panics
    ///
    /// If there is not exactly one.
    pub fn only_conn(&self) -> ConnId {
        let up: Vec<ConnId> = self
            .client
            .connections()
            .filter(|c| c.phase == Phase::Up)
            .map(|c| c.id)
            .collect();
        assert_eq!(up.len(), 1, "{up:?}");
        up[0]
    }

    fn do_due(&mut self) -> Step {
        let now = self.now;
        if self.sched.peek().is_some_and(|Reverse(s)| s.at <= now) {
            let Some(Reverse(s)) = self.sched.pop() else {
                return Step::Idle;
            };
            match s.ev {
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

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.sched.push(Reverse(Sched {
            at,
            seq: self.seq,
            ev,
        }));
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

    fn pump_server(&mut self, id: ConnId) -> bool {
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

    fn on_output(&mut self, out: Output) {
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

    fn transfer(&mut self, id: ConnId, dir: Direction, bytes: Vec<u8>) {
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

    fn deliver(&mut self, id: ConnId, dir: Direction, bytes: &[u8]) {
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

    fn trickle_step(&mut self, id: ConnId) {
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

    fn eof(&mut self, id: ConnId, dir: Direction) {
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

    fn dialled(&mut self, id: ConnId, dial: Dial) {
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

/// The outcomes among `events`: (ticket, message id, outcome).
pub fn outcomes(events: &[ClientEvent]) -> Vec<(u64, String, Outcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Outcome {
                ticket,
                message,
                outcome,
            } => Some((
                ticket.get(),
                message.message_id().as_str().to_owned(),
                outcome.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// The ids of the acked messages among `events`, in order.
pub fn acked_ids(events: &[ClientEvent]) -> Vec<String> {
    outcomes(events)
        .into_iter()
        .filter(|(_, _, o)| o.is_acked())
        .map(|(_, id, _)| id)
        .collect()
}

/// The downstream message ids the servers received, in order, with their connection.
pub fn received(events: &[(ConnId, ServerEvent)]) -> Vec<(ConnId, String)> {
    events
        .iter()
        .filter_map(|(c, e)| match e {
            ServerEvent::Downstream { message, .. } => {
                Some((*c, message.message_id().as_str().to_owned()))
            }
            _ => None,
        })
        .collect()
}

/// The ids of the connections the client reported up, in order.
pub fn ups(events: &[ClientEvent]) -> Vec<ConnId> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ConnectionUp { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// The `ConnectionDown` events: (id, reason, will_retry_in).
pub fn downs(events: &[ClientEvent]) -> Vec<(ConnId, DownReason, Option<Duration>)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ConnectionDown {
                id,
                reason,
                will_retry_in,
            } => Some((*id, reason.clone(), *will_retry_in)),
            _ => None,
        })
        .collect()
}

#[derive(Debug)]
enum Ev {
    Deliver(ConnId, Direction, Vec<u8>),
    Eof(ConnId, Direction),
    Dialled(ConnId, Dial),
    /// The next bytes of a trickled stanza (see [`Net::trickle`]).
    Trickle(ConnId),
    Custom(u64),
}

#[derive(Debug)]
struct Sched {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Sched {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Sched {}
impl PartialOrd for Sched {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sched {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Debug)]
struct Link {
    alive: bool,
    /// Bytes still allowed through per direction before the link dies.
    budget: [Option<usize>; 2],
    muted: [bool; 2],
    /// Latest delivery time per direction (keeps each direction in order).
    last: [Instant; 2],
    /// The client closed its side (after `Output::Disconnect`).
    client_done: bool,
    /// The server connection is closed.
    server_done: bool,
    /// A stanza being trickled to the client in place of the server's output.
    trickle: Option<Trickle>,
}

/// A stanza that never ends, sent to the client a byte at a time (see [`Net::trickle`]).
#[derive(Debug)]
struct Trickle {
    /// The stanza's opening bytes; after them, filler that never closes it.
    head: Vec<u8>,
    /// Bytes sent so far.
    sent: usize,
    /// Bytes in the first piece.
    first: usize,
    /// Delay between pieces.
    every: Duration,
}

/// How many bytes a trickle sends at most (then it goes quiet, its stanza still open): far
/// below the client's stanza size limit, so that only a timeout can end it.
const TRICKLE_MAX: usize = 4096;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
