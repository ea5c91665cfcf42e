//! In-memory network for the `client_*` tests and the client bench: a [`Client`] wired to one
//! real [`ServerConnection`] per connection it opens, with simulated time, latency, random
//! chunking and fault injection; and [`simulate`], the seeded simulation that checks the
//! invariant of DESIGN.md §1 with ledgers on both sides.
//!
//! Time only moves when the harness moves it: [`Net::step`] jumps to the next scheduled thing
//! (a delivery, a dial result, a timer, a scripted action). No test sleeps.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ccs_proto::client::{
    Client, ClientConfig, ClientEvent, ClientStats, ExpiryKind, FailReason, Jitter, Outcome,
    Output, RetryPolicy,
};
use ccs_proto::connection::{AckError, AckHandle, ConnId};
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::{Control, Downstream, MessageId, NackCode, Receipt, RetryClass, Upstream};
use ccs_proto::rng::SplitMix64;
use ccs_proto::server::{ServerConfig, ServerConnection, ServerEvent, ServerState};
use ccs_proto::{AckMode, ConnectionConfig};

pub const SENDER: &str = "123456789012";
pub const KEY: &str = "sim-key";

/// The simulated clock's start (the only clock read in these tests).
pub fn epoch() -> Instant {
    Instant::now()
}

pub fn client_config() -> ClientConfig {
    ClientConfig::new(ConnectionConfig::new(
        SenderId::new(SENDER).unwrap(),
        ServerKey::new(KEY).unwrap(),
    ))
}

pub fn server_config() -> ServerConfig {
    ServerConfig::new(SenderId::new(SENDER).unwrap(), ServerKey::new(KEY).unwrap())
}

pub fn msg(id: &str) -> Downstream {
    Downstream::builder("device-token", id).unwrap().build()
}

pub fn mid(id: &str) -> MessageId {
    MessageId::new(id).unwrap()
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToServer = 0,
    ToClient = 1,
}

#[derive(Debug)]
enum Ev {
    Deliver(ConnId, Dir, Vec<u8>),
    Eof(ConnId, Dir),
    Dialled(ConnId, Dial),
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
}

/// What one [`Net::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing is scheduled and no timer is set.
    Idle,
    /// Something happened.
    Moved,
    /// A scripted action came due: the caller runs it.
    Custom(u64),
}

/// A client and the server connections it opened, joined by in-memory links.
pub struct Net {
    pub now: Instant,
    pub epoch: Instant,
    pub client: Client,
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
    pub rng: SplitMix64,
    pub server_config: ServerConfig,
    /// Consumed one per `Output::Connect`; then `dial_default`.
    pub dial_plan: VecDeque<Dial>,
    pub dial_default: Dial,
    /// Servers ack every downstream message as it arrives.
    pub auto_ack: bool,
    /// Record server events in `server_events` (the simulation and most tests do).
    pub keep_server_events: bool,
    pub client_events: Vec<ClientEvent>,
    pub server_events: Vec<(ConnId, ServerEvent)>,
    pub connects: Vec<ConnId>,
    pub disconnects: Vec<ConnId>,
    disconnected: BTreeSet<ConnId>,
    /// Connections the client reported draining.
    pub draining: BTreeSet<ConnId>,
    /// Broken rules seen by the harness itself.
    pub violations: Vec<String>,
    pub client_timeouts: u64,
}

impl Net {
    pub fn new(config: ClientConfig) -> Self {
        Self::with_seed(config, 1)
    }

    pub fn with_seed(config: ClientConfig, seed: u64) -> Self {
        let now = epoch();
        let client = Client::new(config, now).expect("valid client config");
        let net = Self {
            now,
            epoch: now,
            client,
            servers: BTreeMap::new(),
            links: BTreeMap::new(),
            sched: BinaryHeap::new(),
            seq: 0,
            latency: ms(5),
            latency_jitter: Duration::ZERO,
            max_piece: None,
            rng: SplitMix64(seed),
            server_config: server_config(),
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
        };
        // Not pumped yet: set `dial_plan` and friends first; the first step pumps.
        net
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

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

    pub fn alive_links(&self) -> Vec<ConnId> {
        self.links
            .iter()
            .filter(|(_, l)| l.alive && !l.client_done && !l.server_done)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn take_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.client_events)
    }

    pub fn take_server_events(&mut self) -> Vec<(ConnId, ServerEvent)> {
        std::mem::take(&mut self.server_events)
    }

    pub fn send(&mut self, m: Downstream) -> ccs_proto::client::MessageTicket {
        let now = self.now;
        let t = self.client.send(now, m).expect("send accepted");
        self.pump();
        t
    }

    pub fn schedule_custom(&mut self, after: Duration, token: u64) {
        let at = self.now + after;
        self.push(at, Ev::Custom(token));
    }

    // ---- faults ----

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
    pub fn kill_after(&mut self, id: ConnId, dir: Dir, bytes: usize) {
        if let Some(l) = self.links.get_mut(&id) {
            l.budget[dir as usize] = Some(bytes);
        }
    }

    /// Drops every byte in `dir` from now on without ending the transport.
    pub fn mute(&mut self, id: ConnId, dir: Dir) {
        if let Some(l) = self.links.get_mut(&id) {
            l.muted[dir as usize] = true;
        }
    }

    /// Removes every armed kill budget: no link dies any more. Muted links stay muted (a
    /// stream cannot lose bytes in the middle and go on); the client's ping ends them.
    pub fn heal(&mut self) {
        for l in self.links.values_mut() {
            l.budget = [None, None];
        }
    }

    // ---- time ----

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

    // ---- moving bytes and outputs ----

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
            self.transfer(id, Dir::ToClient, bytes);
        }
        if state_closed || closed {
            if let Some(link) = self.links.get_mut(&id)
                && !link.server_done
            {
                link.server_done = true;
                let at = link.last[Dir::ToClient as usize].max(self.now + self.latency);
                self.push(at, Ev::Eof(id, Dir::ToClient));
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
                self.transfer(id, Dir::ToServer, bytes);
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
                    let at = link.last[Dir::ToServer as usize].max(self.now + self.latency);
                    self.push(at, Ev::Eof(id, Dir::ToServer));
                }
            }
            Output::Event(e) => {
                if let ClientEvent::ConnectionDraining { id } = &e {
                    self.draining.insert(*id);
                }
                self.client_events.push(e);
            }
            other => self.violations.push(format!("unknown output {other:?}")),
        }
    }

    fn transfer(&mut self, id: ConnId, dir: Dir, bytes: Vec<u8>) {
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

    fn deliver(&mut self, id: ConnId, dir: Dir, bytes: &[u8]) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if !link.alive {
            return;
        }
        match dir {
            Dir::ToServer if link.server_done => return,
            Dir::ToClient if link.client_done => return,
            _ => {}
        }
        let (n, dies) = ccs_proto::testing::spend(&mut link.budget[dir as usize], bytes.len());
        let now = self.now;
        match dir {
            Dir::ToServer => {
                if let Some(s) = self.servers.get_mut(&id) {
                    s.handle_input(now, &bytes[..n]);
                }
            }
            Dir::ToClient => self.client.handle_input(now, id, &bytes[..n]),
        }
        if dies {
            self.pump();
            self.kill(id);
        }
    }

    fn eof(&mut self, id: ConnId, dir: Dir) {
        let Some(link) = self.links.get(&id) else {
            return;
        };
        if !link.alive {
            return;
        }
        let now = self.now;
        match dir {
            Dir::ToServer => {
                if let Some(s) = self.servers.get_mut(&id) {
                    s.handle_eof(now);
                }
            }
            Dir::ToClient => self.client.handle_eof(now, id),
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
                    config.server_key = ServerKey::new("not-the-key").unwrap();
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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// =============================================================================================
// The seeded simulation
// =============================================================================================

/// What a simulation run covers. [`SimSpec::from_seed`] derives everything else from the
/// seed.
#[derive(Debug, Clone, Copy)]
pub struct SimSpec {
    pub seed: u64,
    pub messages: usize,
    /// Allow tiny pieces (1..16 bytes) when the seed picks them (slow for long runs).
    pub tiny_pieces: bool,
}

/// What a run saw, for the test output.
#[derive(Debug, Clone, Default)]
pub struct SimSummary {
    pub seed: u64,
    pub setup: String,
    pub accepted: usize,
    pub outcomes: BTreeMap<&'static str, usize>,
    pub upstream: usize,
    pub upstream_deliveries: usize,
    pub kills: usize,
    pub drains: usize,
    pub steps: u64,
    pub sim_time: Duration,
    pub stats: ClientStats,
    /// A hash of the run's observable history (same seed, same hash).
    pub trace: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimPhase {
    Faults,
    Calm,
    Closing,
    Done,
}

#[derive(Debug)]
enum Action {
    AppSend,
    FaultTick,
    UpstreamTick,
    Answer(ConnId, MessageId, Answer),
    CloseServer(ConnId),
    AppAck(AckHandle),
    CloseEarly,
}

#[derive(Debug, Clone)]
enum Answer {
    Ack(Option<String>),
    Nack(NackCode),
    StanzaError,
}

#[derive(Debug, Clone, Copy)]
struct Knobs {
    p_nack: u64,
    p_stanza_error: u64,
    p_missing: u64,
    p_canonical: u64,
    slow: Duration,
    fault_every: Duration,
    p_kill: u64,
    p_drain: u64,
    p_bad_dial: u64,
    manual: bool,
    close_early: bool,
    retry_max: u32,
    retry_rate_limited: bool,
}

/// Nacks a downstream message can get (BAD_ACK answers our acks, never a downstream message).
const NACK_CODES: [&str; 16] = [
    "BAD_REGISTRATION",
    "DEVICE_UNREGISTERED",
    "INTERNAL_SERVER_ERROR",
    "SERVICE_UNAVAILABLE",
    "INVALID_JSON",
    "CONNECTION_DRAINING",
    "DEVICE_MESSAGE_RATE_EXCEEDED",
    "TOPICS_MESSAGE_RATE_EXCEEDED",
    "QUOTA_EXCEEDED",
    "AUTHENTICATION_FAILED",
    "INVALID_TTL",
    "JSON_TYPE_ERROR",
    "INVALID_APNS_CREDENTIAL",
    "JSON_PARSING_ERROR",
    "SOMETHING_NEW",
    "InvalidJson : INVALID_TTL : Invalid value (-1)",
];

struct Sim {
    spec: SimSpec,
    net: Net,
    r: SplitMix64,
    k: Knobs,
    setup: String,
    phase: SimPhase,
    fault_phase_min: Duration,
    // app side
    next_msg: usize,
    /// By ticket: the message id and how many outcomes were reported.
    tickets: Vec<(MessageId, u8)>,
    by_id: HashMap<MessageId, usize>,
    outcomes: usize,
    outcome_kinds: BTreeMap<&'static str, usize>,
    unsent_reported: Vec<MessageId>,
    queue_full: bool,
    // server ledger
    received: HashMap<MessageId, u32>,
    acked: HashMap<MessageId, Vec<Option<String>>>,
    nacked: HashMap<MessageId, Vec<NackCode>>,
    rejected: HashSet<MessageId>,
    draining_servers: HashSet<ConnId>,
    /// Connections the client announced up. Upstream messages go only to these: the
    /// `Connection` does not take messages while its session request is outstanding (see
    /// the report on this branch), and a real server learns the session is done from it.
    client_up: HashSet<ConnId>,
    close_scheduled: HashSet<ConnId>,
    // upstream ledger
    up_total: usize,
    up_generated: usize,
    mailbox: VecDeque<Mail>,
    up_known: HashSet<MessageId>,
    up_outstanding: HashMap<MessageId, (ConnId, Mail)>,
    up_server_acked: HashSet<MessageId>,
    up_delivered: HashMap<MessageId, u32>,
    up_app_acked: HashSet<MessageId>,
    acks_pending: usize,
    receipts_made: HashSet<MessageId>,
    // bookkeeping
    actions: HashMap<u64, Action>,
    next_token: u64,
    kills: usize,
    drains: usize,
    steps: u64,
    trace: u64,
    violations: Vec<String>,
    closed_report: Option<usize>,
}

#[derive(Debug, Clone)]
enum Mail {
    Up(Upstream),
    Receipt(Receipt),
}

impl Mail {
    fn id(&self) -> &MessageId {
        match self {
            Mail::Up(u) => &u.message_id,
            Mail::Receipt(r) => &r.message_id,
        }
    }
}

/// Runs one seeded simulation; `Err` describes the first broken rule, with the seed.
pub fn simulate(spec: SimSpec) -> Result<SimSummary, String> {
    let mut sim = Sim::new(spec);
    let result = sim.run();
    match result {
        Ok(()) => Ok(sim.summary()),
        Err(e) => Err(format!(
            "simulation seed {seed:#x} ({setup}) failed at {t:?} (step {steps}): {e}\n\
             replay: CCS_SIM_SEED={seed:#x} CCS_SIM_MESSAGES={n} cargo test -p ccs-proto \
             --test client_simulation replay_seed -- --nocapture",
            seed = spec.seed,
            setup = sim.setup,
            t = sim.net.elapsed(),
            steps = sim.steps,
            n = spec.messages,
        )),
    }
}

impl Sim {
    fn new(spec: SimSpec) -> Self {
        let mut r = SplitMix64(spec.seed ^ 0x5EED_CAFE_F00D_D00D);
        let mut c = client_config();
        let connections = 1 + r.below(4) as usize;
        c.connections = connections;
        c.connection.window = [1, 3, 10, 50, 100][r.below(5) as usize];
        let manual = r.below(3) == 0;
        c.connection.ack_mode = if manual {
            AckMode::Manual
        } else {
            AckMode::Auto
        };
        c.connection.ping_after = secs(10);
        c.connection.ping_timeout = secs(5);
        c.connection.setup_timeout = secs(3);
        c.max_queue = [5, 50, 500, 5000][r.below(4) as usize];
        c.seed = r.next();
        let retry_max = [1, 2, 3, 5][r.below(4) as usize];
        let retry_rate_limited = r.below(3) == 0;
        c.retry = RetryPolicy::default();
        c.retry.max_attempts = retry_max;
        c.retry.base = ms(20 + r.below(200));
        c.retry.cap = secs(2);
        c.retry.retry_rate_limited = retry_rate_limited;
        if r.below(4) == 0 {
            c.retry.jitter = Jitter::None;
        }
        c.reconnect.base = ms(20 + r.below(100));
        c.reconnect.cap = secs(3);
        c.reconnect.healthy_after = ms(200 + r.below(3000));
        c.reconnect.connect_timeout = secs(2);
        c.reconnect.max_connecting = 1 + r.below(4) as usize;
        c.ack_timeout = Some(secs(20));
        if r.below(4) == 0 {
            c.max_queue_time = Some(secs(30 + r.below(60)));
        }
        c.dedup_window = 1_000_000;
        let k = Knobs {
            p_nack: r.below(60),
            p_stanza_error: r.below(10),
            p_missing: r.below(5),
            p_canonical: 20,
            slow: ms(r.below(400)),
            fault_every: ms(100 + r.below(900)),
            p_kill: 10 + r.below(50),
            p_drain: r.below(30),
            p_bad_dial: r.below(30),
            manual,
            close_early: r.below(6) == 0,
            retry_max,
            retry_rate_limited,
        };
        let mut net = Net::with_seed(c.clone(), r.next());
        net.latency = ms(1 + r.below(30));
        net.latency_jitter = ms(r.below(10));
        net.max_piece = match r.below(4) {
            0 if spec.tiny_pieces => Some(1 + r.below(16) as usize),
            0 | 1 => Some(32 + r.below(600) as usize),
            2 => Some(500 + r.below(4000) as usize),
            _ => None,
        };
        let setup = format!(
            "connections {connections}, window {}, {:?} acks, max_queue {}, retries {} (rate {}), \
             queue time {:?}, latency {:?}+{:?}, pieces {:?}, nack {}‰, stanza err {}‰, \
             missing {}‰, kill {}%/{:?}, drain {}%, bad dial {}%, close early {}",
            c.connection.window,
            c.connection.ack_mode,
            c.max_queue,
            retry_max,
            retry_rate_limited,
            c.max_queue_time,
            net.latency,
            net.latency_jitter,
            net.max_piece,
            k.p_nack,
            k.p_stanza_error,
            k.p_missing,
            k.p_kill,
            k.fault_every,
            k.p_drain,
            k.p_bad_dial,
            k.close_early,
        );
        let messages = spec.messages;
        let fault_phase_min = Duration::from_millis(20 * messages as u64 / connections as u64)
            .clamp(secs(5), secs(600));
        Self {
            spec,
            net,
            r,
            k,
            setup,
            phase: SimPhase::Faults,
            fault_phase_min,
            next_msg: 0,
            tickets: Vec::with_capacity(messages),
            by_id: HashMap::with_capacity(messages),
            outcomes: 0,
            outcome_kinds: BTreeMap::new(),
            unsent_reported: Vec::new(),
            queue_full: false,
            received: HashMap::new(),
            acked: HashMap::new(),
            nacked: HashMap::new(),
            rejected: HashSet::new(),
            draining_servers: HashSet::new(),
            client_up: HashSet::new(),
            close_scheduled: HashSet::new(),
            up_total: messages / 4,
            up_generated: 0,
            mailbox: VecDeque::new(),
            up_known: HashSet::new(),
            up_outstanding: HashMap::new(),
            up_server_acked: HashSet::new(),
            up_delivered: HashMap::new(),
            up_app_acked: HashSet::new(),
            acks_pending: 0,
            receipts_made: HashSet::new(),
            actions: HashMap::new(),
            next_token: 0,
            kills: 0,
            drains: 0,
            steps: 0,
            trace: 0xcbf2_9ce4_8422_2325,
            violations: Vec::new(),
            closed_report: None,
        }
    }

    fn later(&mut self, after: Duration, action: Action) {
        self.next_token += 1;
        self.actions.insert(self.next_token, action);
        self.net.schedule_custom(after, self.next_token);
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.r.below(1000) < per_mille
    }

    fn mix(&mut self, v: u64) {
        self.trace = (self.trace ^ v).wrapping_mul(0x0100_0000_01b3);
    }

    fn run(&mut self) -> Result<(), String> {
        self.later(Duration::ZERO, Action::AppSend);
        self.later(self.k.fault_every, Action::FaultTick);
        self.later(ms(10), Action::UpstreamTick);
        if self.k.close_early {
            let at = ms(self.r.below(self.fault_phase_min.as_millis() as u64));
            self.later(at, Action::CloseEarly);
        }
        let max_steps = 400 * self.spec.messages as u64 + 2_000_000;
        // Time enough for every message at this setup's pace (one round trip plus the
        // answer delay per window slot), four times over, plus an hour.
        let c = self.net.client.config();
        let per_message = (2 * (self.net.latency + self.net.latency_jitter) + self.k.slow + ms(5))
            / (c.connections * c.connection.window) as u32;
        let max_time =
            3 * self.fault_phase_min + secs(3600) + 4 * per_message * self.spec.messages as u32;
        while self.phase != SimPhase::Done {
            self.steps += 1;
            if self.steps > max_steps || self.net.elapsed() > max_time {
                return Err(format!(
                    "did not finish: phase {:?}, {} of {} messages accepted, {} outcomes, \
                     queued {}, in flight {}, mailbox {}, upstream outstanding {}, \
                     connections {:?}",
                    self.phase,
                    self.tickets.len(),
                    self.spec.messages,
                    self.outcomes,
                    self.net.client.queued(),
                    self.net.client.in_flight(),
                    self.mailbox.len(),
                    self.up_outstanding.len(),
                    self.net.client.connections().collect::<Vec<_>>(),
                ) + &std::env::var("CCS_SIM_DEBUG")
                    .map(|_| {
                        let d = format!("{:?}", self.net.client);
                        let keep = |k: &str| {
                            d.find(k)
                                .map(|i| d[i..].chars().take(400).collect::<String>())
                                .unwrap_or_default()
                        };
                        format!(
                            "\n{}\n{}\n{}\n{:?}",
                            keep("slots:"),
                            keep("waiting:"),
                            keep("connecting:"),
                            self.net.client.poll_timeout().map(|t| t - self.net.now)
                        )
                    })
                    .unwrap_or_default());
            }
            match self.net.step() {
                Step::Idle => {
                    if self.phase != SimPhase::Done {
                        return Err(format!("idle in phase {:?}", self.phase));
                    }
                }
                Step::Moved => {}
                Step::Custom(token) => {
                    if let Some(a) = self.actions.remove(&token) {
                        self.act(a)?;
                    }
                }
            }
            self.observe()?;
            self.advance_phase();
        }
        self.final_checks()
    }

    // ---- scripted actions ----

    fn act(&mut self, a: Action) -> Result<(), String> {
        let now = self.net.now;
        match a {
            Action::AppSend => {
                if self.phase == SimPhase::Faults || self.phase == SimPhase::Calm {
                    self.app_send();
                    if self.next_msg < self.spec.messages {
                        let after = ms(1 + self.r.below(20));
                        self.later(after, Action::AppSend);
                    }
                }
            }
            Action::FaultTick => {
                if self.phase == SimPhase::Faults
                    || (self.phase == SimPhase::Closing && self.k.close_early)
                {
                    self.fault();
                    let every = self.k.fault_every;
                    self.later(every, Action::FaultTick);
                }
            }
            Action::UpstreamTick => {
                if self.phase != SimPhase::Done {
                    self.upstream_tick();
                    let after = ms(5 + self.r.below(50));
                    self.later(after, Action::UpstreamTick);
                }
            }
            Action::Answer(conn, id, answer) => self.answer(conn, &id, answer),
            Action::CloseServer(conn) => {
                if let Some(s) = self.net.servers.get_mut(&conn) {
                    let _ = s.close();
                }
            }
            Action::AppAck(h) => {
                self.acks_pending -= 1;
                match self.net.client.ack(now, &h) {
                    Ok(()) => {
                        self.up_app_acked.insert(h.message_id().clone());
                    }
                    Err(AckError::ConnectionGone) => {}
                    Err(e) => return Err(format!("ack of {} refused: {e}", h.message_id())),
                }
            }
            Action::CloseEarly => {
                if self.phase == SimPhase::Faults {
                    let deadline = now + ms(self.r.below(8000));
                    self.net.client.close(now, deadline);
                    self.phase = SimPhase::Closing;
                    let m = msg("after-close");
                    if self.net.client.send(now, m).is_ok() {
                        return Err("send accepted after close".into());
                    }
                }
            }
        }
        self.net.pump();
        Ok(())
    }

    fn app_send(&mut self) {
        let burst = 1 + self.r.below(60);
        for _ in 0..burst {
            if self.next_msg >= self.spec.messages {
                return;
            }
            let id = format!("m-{}", self.next_msg);
            let mut b = Downstream::builder(format!("tok-{}", self.next_msg % 97), id.clone())
                .unwrap()
                .data(serde_json::json!({"n": self.next_msg, "text": "<&>\"'"}))
                .unwrap();
            if self.next_msg.is_multiple_of(5) {
                b = b.delivery_receipt_requested(true);
            }
            let now = self.net.now;
            match self.net.client.send(now, b.build()) {
                Ok(t) => {
                    let idx = t.get() as usize;
                    if idx != self.tickets.len() {
                        self.violations.push(format!("ticket {idx} out of order"));
                    }
                    let id = mid(&id);
                    self.by_id.insert(id.clone(), idx);
                    self.tickets.push((id, 0));
                    self.next_msg += 1;
                }
                Err(e) => {
                    if !matches!(e.kind, ccs_proto::client::SendErrorKind::QueueFull { .. }) {
                        self.violations.push(format!("send refused: {e}"));
                    }
                    if e.message.message_id().as_str() != id {
                        self.violations
                            .push("refused send gave back another message".into());
                    }
                    self.queue_full = true;
                    return;
                }
            }
        }
    }

    fn fault(&mut self) {
        let links = self.net.alive_links();
        if links.is_empty() {
            return;
        }
        let id = links[self.r.below(links.len() as u64) as usize];
        if self.chance(self.k.p_kill * 10) {
            self.kills += 1;
            match self.r.below(5) {
                0 => self.net.kill(id),
                1 => {
                    let n = self.r.below(3000) as usize;
                    self.net.kill_after(id, Dir::ToServer, n);
                }
                2 => {
                    let n = self.r.below(3000) as usize;
                    self.net.kill_after(id, Dir::ToClient, n);
                }
                3 => {
                    if let Some(s) = self.net.servers.get_mut(&id) {
                        let _ = s.stream_error("internal-server-error", Some("simulated"));
                    }
                }
                _ => {
                    if self.r.below(4) == 0 {
                        self.net.mute(id, Dir::ToClient);
                    } else if let Some(s) = self.net.servers.get_mut(&id) {
                        let _ = s.close();
                    }
                }
            }
        } else if self.chance(self.k.p_drain * 10) {
            self.start_drain(id, true);
        }
    }

    fn start_drain(&mut self, id: ConnId, control: bool) {
        let Some(s) = self.net.servers.get_mut(&id) else {
            return;
        };
        if !matches!(s.state(), ServerState::Bound | ServerState::Draining) {
            return;
        }
        if control && !self.client_up.contains(&id) {
            return;
        }
        if control && s.send_control(&Control::connection_draining()).is_err() {
            return;
        }
        self.drains += 1;
        self.draining_servers.insert(id);
        if self.close_scheduled.insert(id) {
            let after = ms(100 + self.r.below(3000));
            self.later(after, Action::CloseServer(id));
        }
    }

    fn upstream_tick(&mut self) {
        let generating = matches!(self.phase, SimPhase::Faults | SimPhase::Calm);
        if generating && self.up_generated < self.up_total {
            let n = 1 + self.r.below(8) as usize;
            for _ in 0..n.min(self.up_total - self.up_generated) {
                let i = self.up_generated;
                self.up_generated += 1;
                let up = Upstream {
                    from: format!("device-{}", i % 13),
                    category: Some("com.example".into()),
                    message_id: mid(&format!("up-{i}")),
                    data: serde_json::from_value(serde_json::json!({"i": i})).unwrap(),
                    time_to_live: None,
                    extra: Default::default(),
                };
                self.up_known.insert(up.message_id.clone());
                self.mailbox.push_back(Mail::Up(up));
            }
        }
        let mut bound = self.net.bound();
        bound.retain(|c| self.client_up.contains(c));
        if bound.is_empty() {
            return;
        }
        let n = self.mailbox.len().min(1 + self.r.below(20) as usize);
        for _ in 0..n {
            let Some(mail) = self.mailbox.pop_front() else {
                break;
            };
            let conn = bound[self.r.below(bound.len() as u64) as usize];
            let Some(s) = self.net.servers.get_mut(&conn) else {
                self.mailbox.push_back(mail);
                continue;
            };
            let sent = match &mail {
                Mail::Up(u) => s.send_upstream(u),
                Mail::Receipt(r) => s.send_receipt(r),
            };
            match sent {
                Ok(()) => {
                    self.up_outstanding.insert(mail.id().clone(), (conn, mail));
                }
                Err(_) => self.mailbox.push_back(mail),
            }
        }
    }

    fn answer(&mut self, conn: ConnId, id: &MessageId, answer: Answer) {
        let Some(s) = self.net.servers.get_mut(&conn) else {
            return;
        };
        if !s.is_pending(id.as_str()) {
            return;
        }
        match answer {
            Answer::Ack(canonical) => {
                if s.ack(id.as_str(), canonical.as_deref()).is_ok() {
                    self.acked.entry(id.clone()).or_default().push(canonical);
                    let wants_receipt = id
                        .as_str()
                        .trim_start_matches("m-")
                        .parse::<u64>()
                        .is_ok_and(|n| n % 5 == 0);
                    if wants_receipt && self.r.below(2) == 0 {
                        let rid = mid(&format!("dr2:{id}"));
                        if self.receipts_made.insert(rid.clone()) {
                            let receipt = Receipt::sent_to_device(id, "tok", 1_400_000_000_000);
                            self.up_known.insert(rid);
                            self.mailbox.push_back(Mail::Receipt(receipt));
                        }
                    }
                }
            }
            Answer::Nack(code) => {
                if s.nack(id.as_str(), code.clone(), Some("simulated")).is_ok() {
                    self.nacked
                        .entry(id.clone())
                        .or_default()
                        .push(code.clone());
                    if code == NackCode::ConnectionDraining {
                        self.start_drain(conn, false);
                    }
                }
            }
            Answer::StanzaError => {
                if s.stanza_error(id.as_str(), "bad-request", Some("simulated"))
                    .is_ok()
                {
                    self.rejected.insert(id.clone());
                }
            }
        }
    }

    // ---- what the client and the servers reported ----

    fn observe(&mut self) -> Result<(), String> {
        for (conn, ev) in self.net.take_server_events() {
            self.on_server_event(conn, ev)?;
        }
        for ev in self.net.take_events() {
            self.on_client_event(ev)?;
        }
        if let Some(v) = self.net.violations.first() {
            return Err(v.clone());
        }
        if let Some(v) = self.violations.first() {
            return Err(v.clone());
        }
        for c in self.net.client.connections() {
            if c.in_flight > c.window {
                return Err(format!(
                    "{} has {} in flight, window {}",
                    c.id, c.in_flight, c.window
                ));
            }
        }
        Ok(())
    }

    fn on_server_event(&mut self, conn: ConnId, ev: ServerEvent) -> Result<(), String> {
        match ev {
            ServerEvent::Downstream { message, .. } => {
                let id = message.message_id().clone();
                let Some(&t) = self.by_id.get(&id) else {
                    return Err(format!("server received {id}, never accepted by send"));
                };
                *self.received.entry(id.clone()).or_default() += 1;
                let n = message
                    .data()
                    .and_then(|d| d.get("n"))
                    .and_then(|v| v.as_u64());
                if n != Some(t as u64) {
                    return Err(format!("{id} arrived with the wrong payload"));
                }
                let draining = self.draining_servers.contains(&conn);
                let calm = self.phase != SimPhase::Faults;
                let (delay, answer) = if draining && self.r.below(2) == 0 {
                    (
                        Duration::ZERO,
                        Some(Answer::Nack(NackCode::ConnectionDraining)),
                    )
                } else if calm {
                    (ms(self.r.below(20)), Some(Answer::Ack(None)))
                } else {
                    let slow = self.k.slow.as_millis() as u64;
                    let delay = ms(self.r.below(slow + 1));
                    let roll = self.r.below(1000);
                    let answer = if roll < self.k.p_nack {
                        let code = NACK_CODES[self.r.below(NACK_CODES.len() as u64) as usize];
                        Some(Answer::Nack(NackCode::parse(code)))
                    } else if roll < self.k.p_nack + self.k.p_stanza_error {
                        Some(Answer::StanzaError)
                    } else if roll < self.k.p_nack + self.k.p_stanza_error + self.k.p_missing {
                        None
                    } else if self.r.below(1000) < self.k.p_canonical {
                        Some(Answer::Ack(Some(format!("canon-{t}"))))
                    } else {
                        Some(Answer::Ack(None))
                    };
                    (delay, answer)
                };
                if let Some(answer) = answer {
                    self.later(delay, Action::Answer(conn, id, answer));
                }
            }
            ServerEvent::AppAck(ack) => {
                if self.up_outstanding.remove(&ack.message_id).is_none() {
                    return Err(format!(
                        "ack of {} which the server did not send",
                        ack.message_id
                    ));
                }
                self.up_server_acked.insert(ack.message_id);
            }
            ServerEvent::UnknownAck(ack) => {
                return Err(format!(
                    "client acked {} twice or on the wrong connection",
                    ack.message_id
                ));
            }
            ServerEvent::WindowViolation { pending, window } => {
                return Err(format!(
                    "window exceeded on {conn}: {pending} pending, window {window}"
                ));
            }
            ServerEvent::DuplicatePending { message_id } => {
                return Err(format!("{message_id} sent twice on {conn} while pending"));
            }
            ServerEvent::InvalidPayload { json, error, .. } => {
                return Err(format!("client sent an invalid payload {json}: {error}"));
            }
            ServerEvent::Closed { .. } => {
                self.draining_servers.remove(&conn);
                let back: Vec<MessageId> = self
                    .up_outstanding
                    .iter()
                    .filter(|(_, (c, _))| *c == conn)
                    .map(|(id, _)| id.clone())
                    .collect();
                let mut back: Vec<Mail> = back
                    .into_iter()
                    .filter_map(|id| self.up_outstanding.remove(&id).map(|(_, m)| m))
                    .collect();
                back.sort_by(|a, b| a.id().cmp(b.id()));
                for m in back {
                    self.mailbox.push_front(m);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_client_event(&mut self, ev: ClientEvent) -> Result<(), String> {
        match ev {
            ClientEvent::Outcome {
                ticket,
                message,
                outcome,
            } => {
                let idx = ticket.get() as usize;
                self.mix(idx as u64);
                self.mix((self.net.now - self.net.epoch).as_nanos() as u64);
                let Some((id, count)) = self.tickets.get_mut(idx) else {
                    return Err(format!("outcome for unknown {ticket}"));
                };
                *count += 1;
                if *count > 1 {
                    return Err(format!("{id} ({ticket}) reported twice: {outcome:?}"));
                }
                if message.message_id() != id {
                    return Err(format!("{ticket} came back with {}", message.message_id()));
                }
                let id = id.clone();
                self.outcomes += 1;
                let kind = self.check_outcome(&id, &outcome)?;
                *self.outcome_kinds.entry(kind).or_default() += 1;
                self.mix(kind.len() as u64);
                if let Outcome::Unsent { .. } = outcome {
                    self.unsent_reported.push(id);
                }
            }
            ClientEvent::Upstream { message, ack } => {
                self.delivered(message.message_id.clone(), ack)?;
            }
            ClientEvent::Receipt { receipt, ack } => {
                self.delivered(receipt.message_id.clone(), ack)?;
            }
            ClientEvent::Closed { report } => {
                if report.unsent.len() != self.unsent_reported.len()
                    || report
                        .unsent
                        .iter()
                        .zip(&self.unsent_reported)
                        .any(|((_, a), b)| a != b)
                {
                    return Err(format!(
                        "close report {:?} differs from the Unsent outcomes {:?}",
                        report.unsent, self.unsent_reported
                    ));
                }
                self.closed_report = Some(report.unsent.len());
                self.phase = SimPhase::Done;
            }
            ClientEvent::ConnectionUp { id, .. } => {
                self.client_up.insert(id);
            }
            ClientEvent::ConnectionDown { id, .. } => {
                self.client_up.remove(&id);
            }
            ClientEvent::QueueOpen => {
                if !self.queue_full {
                    return Err("QueueOpen without a refused send".into());
                }
                self.queue_full = false;
            }
            ClientEvent::Unrecognized { id, message } => {
                return Err(format!("unrecognized message on {id}: {message:?}"));
            }
            ClientEvent::Anomaly { id, anomaly } => {
                return Err(format!("anomaly on {id}: {anomaly:?}"));
            }
            _ => {}
        }
        Ok(())
    }

    fn delivered(&mut self, id: MessageId, ack: Option<AckHandle>) -> Result<(), String> {
        if !self.up_known.contains(&id) {
            return Err(format!(
                "upstream {id} delivered but never sent by the server"
            ));
        }
        let n = self.up_delivered.entry(id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            // Only in manual mode, and only when the earlier copy's ack never went through.
            if !self.k.manual || self.up_app_acked.contains(&id) {
                return Err(format!("upstream {id} handed to the application {n} times"));
            }
        }
        if self.k.manual {
            let Some(h) = ack else {
                return Err(format!("manual mode: {id} without a handle"));
            };
            self.acks_pending += 1;
            let after = ms(self.r.below(300));
            self.later(after, Action::AppAck(h));
        } else if ack.is_some() {
            return Err(format!("auto mode: {id} came with a handle"));
        }
        Ok(())
    }

    fn check_outcome(&self, id: &MessageId, outcome: &Outcome) -> Result<&'static str, String> {
        let config = self.net.client.config();
        Ok(match outcome {
            Outcome::Acked {
                canonical_registration_id,
            } => {
                let Some(acks) = self.acked.get(id) else {
                    return Err(format!("{id} reported acked, the server never acked it"));
                };
                if !acks.contains(canonical_registration_id) {
                    return Err(format!(
                        "{id} acked with {canonical_registration_id:?}, server sent {acks:?}"
                    ));
                }
                "acked"
            }
            Outcome::Nacked { nack } => {
                if !self.nacked.get(id).is_some_and(|c| c.contains(&nack.error)) {
                    return Err(format!("{id} reported nacked {}, never sent", nack.error));
                }
                let retried = match nack.error.retry_class() {
                    RetryClass::Backoff | RetryClass::OtherConnection => true,
                    RetryClass::RateLimited => self.k.retry_rate_limited,
                    RetryClass::Final => false,
                };
                if retried {
                    return Err(format!(
                        "{id} reported nacked with retryable {}",
                        nack.error
                    ));
                }
                "nacked"
            }
            Outcome::Failed { reason, attempts } => {
                let FailReason::Nack(nack) = reason else {
                    return Err(format!("{id} failed: {reason:?}"));
                };
                if !self.nacked.get(id).is_some_and(|c| c.contains(&nack.error)) {
                    return Err(format!("{id} failed with {}, never sent", nack.error));
                }
                if *attempts != self.k.retry_max {
                    return Err(format!(
                        "{id} failed after {attempts} attempts, policy {}",
                        self.k.retry_max
                    ));
                }
                "failed"
            }
            Outcome::Rejected { .. } => {
                if !self.rejected.contains(id) {
                    return Err(format!("{id} reported rejected, no stanza error sent"));
                }
                "rejected"
            }
            Outcome::Expired { kind, .. } => {
                let allowed = match kind {
                    ExpiryKind::AckTimeout => config.ack_timeout.is_some(),
                    ExpiryKind::QueueTime => config.max_queue_time.is_some(),
                    _ => false,
                };
                if !allowed {
                    return Err(format!("{id} expired ({kind:?}) without that limit"));
                }
                "expired"
            }
            Outcome::Unsent { .. } => {
                if !self.net.client.is_closing() {
                    return Err(format!("{id} unsent while not closing"));
                }
                "unsent"
            }
            other => return Err(format!("{id}: unexpected outcome {other:?}")),
        })
    }

    fn advance_phase(&mut self) {
        let now = self.net.now;
        match self.phase {
            SimPhase::Faults => {
                // Faults end once everything was offered, or after a while in any case (the
                // harshest seeds let little through; the rest then goes in calm weather).
                let offered =
                    self.next_msg >= self.spec.messages && self.up_generated >= self.up_total;
                let elapsed = self.net.elapsed();
                if (offered && elapsed >= self.fault_phase_min)
                    || elapsed >= 3 * self.fault_phase_min + secs(60)
                {
                    self.phase = SimPhase::Calm;
                    self.net.heal();
                    self.net.dial_plan.clear();
                    self.net.dial_default = Dial::Accept;
                }
            }
            SimPhase::Calm => {
                if self.outcomes == self.tickets.len()
                    && self.next_msg >= self.spec.messages
                    && self.mailbox.is_empty()
                    && self.up_outstanding.is_empty()
                    && self.acks_pending == 0
                {
                    self.phase = SimPhase::Closing;
                    self.net.client.close(now, now + secs(30));
                    self.net.pump();
                }
            }
            SimPhase::Closing | SimPhase::Done => {}
        }
        // Dial outcomes for the next connection attempts.
        if self.phase == SimPhase::Faults && self.net.dial_plan.is_empty() {
            let dial = if self.chance(self.k.p_bad_dial * 10) {
                [Dial::BadKey, Dial::Refuse, Dial::Silent][self.r.below(3) as usize]
            } else {
                Dial::Accept
            };
            self.net.dial_plan.push_back(dial);
        }
    }

    fn final_checks(&mut self) -> Result<(), String> {
        self.observe()?;
        let accepted = self.tickets.len();
        if let Some((id, _)) = self.tickets.iter().find(|(_, n)| *n != 1) {
            return Err(format!("{id} has no outcome"));
        }
        let stats = self.net.client.stats();
        if stats.queued != accepted as u64 || stats.outcomes() != accepted as u64 {
            return Err(format!(
                "stats: queued {}, outcomes {}, accepted {accepted}",
                stats.queued,
                stats.outcomes()
            ));
        }
        let connects: BTreeSet<ConnId> = self.net.connects.iter().copied().collect();
        let disconnects: BTreeSet<ConnId> = self.net.disconnects.iter().copied().collect();
        if connects != disconnects || self.net.disconnects.len() != connects.len() {
            return Err(format!(
                "{} connects, {} disconnects",
                self.net.connects.len(),
                self.net.disconnects.len()
            ));
        }
        if !self.k.close_early {
            if self.closed_report != Some(0) {
                return Err(format!(
                    "{:?} messages unsent after a calm close",
                    self.closed_report
                ));
            }
            let total = self.up_known.len();
            if self.up_server_acked.len() != total {
                return Err(format!(
                    "{} of {total} upstream messages and receipts acked",
                    self.up_server_acked.len()
                ));
            }
            if let Some(id) = self
                .up_known
                .iter()
                .find(|id| !self.up_delivered.contains_key(*id))
            {
                return Err(format!("upstream {id} never handed to the application"));
            }
        }
        Ok(())
    }

    fn summary(&self) -> SimSummary {
        SimSummary {
            seed: self.spec.seed,
            setup: self.setup.clone(),
            accepted: self.tickets.len(),
            outcomes: self.outcome_kinds.clone(),
            upstream: self.up_known.len(),
            upstream_deliveries: self.up_delivered.values().map(|n| *n as usize).sum(),
            kills: self.kills,
            drains: self.drains,
            steps: self.steps,
            sim_time: self.net.elapsed(),
            stats: self.net.client.stats().clone(),
            trace: self.trace,
        }
    }
}

impl SimSummary {
    pub fn line(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "seed {:#018x}: {} msgs {:?}; upstream {} ({} deliveries); {} kills, {} drains; \
             sent {} resent {} retried {} conns {} reconnects {} auth failures {}; {:?} simulated, {} steps",
            self.seed,
            self.accepted,
            self.outcomes,
            self.upstream,
            self.upstream_deliveries,
            self.kills,
            self.drains,
            self.stats.sent,
            self.stats.resent,
            self.stats.retried,
            self.stats.connection_attempts,
            self.stats.reconnects,
            self.stats.auth_failures,
            self.sim_time,
            self.steps,
        );
        s
    }
}

// =============================================================================================
// Helpers for the scenario tests
// =============================================================================================

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
pub fn downs(
    events: &[ClientEvent],
) -> Vec<(ConnId, ccs_proto::client::DownReason, Option<Duration>)> {
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

impl Net {
    /// A network whose client is up on all its connections (asserted).
    pub fn up(config: ClientConfig) -> Self {
        let n = config.connections;
        let mut net = Self::new(config);
        net.drive();
        let up = ups(&net.client_events).len();
        assert_eq!(
            up, n,
            "not all connections came up: {:?}",
            net.client_events
        );
        net
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
    pub fn only_conn(&self) -> ConnId {
        let up: Vec<ConnId> = self
            .client
            .connections()
            .filter(|c| c.phase == ccs_proto::client::Phase::Up)
            .map(|c| c.id)
            .collect();
        assert_eq!(up.len(), 1, "{up:?}");
        up[0]
    }
}
