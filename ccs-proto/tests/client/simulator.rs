//! The seeded simulation: [`simulate`] runs a [`Net`] under faults drawn from a seed and
//! checks the invariant of DESIGN.md §1 with ledgers on both sides (see `simulation.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ccs_proto::AckMode;
use ccs_proto::client::{
    ClientEvent, ClientStats, DownReason, ExpiryKind, FailReason, Jitter, Outcome, RetryPolicy,
};
use ccs_proto::connection::{AckError, AckHandle, CloseReason, ConnId};
use ccs_proto::credentials::DEFAULT_DOMAIN;
use ccs_proto::message::{Control, Downstream, MessageId, NackCode, Receipt, RetryClass, Upstream};
use ccs_proto::rng::SplitMix64;
use ccs_proto::server::{ServerEvent, ServerState};
use ccs_proto::xml::write::{self, MessageAttrs};
use serde_json::{Map, Value, json};

use crate::fixtures::*;

/// What a simulation run covers; [`simulate`] derives everything else (connections, window,
/// timers, fault mix) from the seed.
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
    /// Drains after which the server never closed the stream nor answered.
    pub stuck_drains: usize,
    /// Connections the client closed at the drain deadline.
    pub drain_timeouts: usize,
    /// Messages unanswered on a stuck drained connection, sent again elsewhere.
    pub stuck_resent: usize,
    /// Pings the client sent on draining connections (a stuck server answers them).
    pub pings_while_draining: u64,
    /// Connections on which the server trickled a stanza that never ends.
    pub trickles: usize,
    /// Connections the client declared dead for a stanza left open, or an unanswered ping.
    pub stanza_timeouts: usize,
    pub ping_timeouts: usize,
    /// Upstream messages whose `message_id` other devices also use.
    pub colliding_upstream: usize,
    /// Upstream messages with optional fields of odd types, written raw.
    pub odd_upstream: usize,
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
    /// The client's `drain_timeout` and `stanza_timeout`.
    drain_timeout: Duration,
    stanza_timeout: Duration,
    /// ‰ of drains by control message after which the server goes quiet: it never closes
    /// the stream and never answers what is in flight (it still answers pings).
    p_stuck: u64,
    /// ‰ of fault ticks that start trickling a never-ending stanza on a connection.
    p_trickle: u64,
    /// ‰ of upstream messages whose id is a per-device counter (`"1"`, `"2"`, ..., or
    /// `"m-1"`, ... on some devices, like our downstream ids), shared by every device.
    p_collide: u64,
    /// ‰ of upstream messages with optional fields of odd types (written raw: the server
    /// role cannot produce them).
    p_odd: u64,
}

/// The ack key of an upstream message or receipt: `(from, message_id)`. Device-chosen ids
/// collide across devices.
type UpKey = (String, MessageId);

/// Devices sending upstream messages.
const DEVICES: usize = 13;

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
    /// Draws for the faults added later (stuck drains, trickles, colliding ids, odd
    /// fields), apart from `r` so that the other knobs of a seed stay what they were.
    r2: SplitMix64,
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
    up_known: HashSet<UpKey>,
    /// What the application must be handed for each upstream message (not receipts).
    up_expected: HashMap<UpKey, Upstream>,
    up_outstanding: HashMap<UpKey, (ConnId, Mail)>,
    up_server_acked: HashSet<UpKey>,
    up_delivered: HashMap<UpKey, u32>,
    up_app_acked: HashSet<UpKey>,
    acks_pending: usize,
    receipts_made: HashSet<MessageId>,
    /// Per device: the last counter id used.
    dev_counter: [u64; DEVICES],
    // stuck drains and trickles
    /// Some connection came up (refused credentials before that end the client).
    ever_up: bool,
    /// Connections some fault hit (kills, mutes, stream errors, drains).
    touched: HashSet<ConnId>,
    /// Connections drained and then left hanging by their server.
    stuck: HashSet<ConnId>,
    /// Connections trickled a never-ending stanza.
    trickled: HashSet<ConnId>,
    /// Stuck or trickled connections not yet down; for stuck ones, when the client
    /// reported them draining.
    watched: BTreeMap<ConnId, Option<Instant>>,
    /// Messages unanswered on a stuck connection: none may be answered, or sent anywhere
    /// else, before the client ends it.
    stuck_inflight: HashMap<MessageId, ConnId>,
    /// Messages given back by a stuck connection's end: each must be sent again (or
    /// expire, or stay unsent at close).
    resend_expected: HashSet<MessageId>,
    /// When the client last reported a message expired by its ack timeout.
    ack_expired_at: Option<Instant>,
    stuck_drains: usize,
    drain_timeouts: usize,
    stuck_resent: usize,
    trickles: usize,
    stanza_timeouts: usize,
    ping_timeouts: usize,
    colliding_upstream: usize,
    odd_upstream: usize,
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
    /// An upstream message written as raw stanza bytes (odd optional fields). The server
    /// role does not know it: the client's ack shows up as `UnknownAck`, and this ledger
    /// tracks it instead.
    Raw(Box<RawUp>),
}

#[derive(Debug, Clone)]
struct RawUp {
    from: String,
    message_id: MessageId,
    bytes: Vec<u8>,
}

impl Mail {
    fn key(&self) -> UpKey {
        match self {
            Mail::Up(u) => (u.from.clone(), u.message_id.clone()),
            Mail::Receipt(r) => (r.from.clone(), r.message_id.clone()),
            Mail::Raw(r) => (r.from.clone(), r.message_id.clone()),
        }
    }
}

/// An upstream message from `from` with id `id` carrying an odd optional field (`variant`
/// picks which), as JSON text, with what the client must decode it to: every such message
/// is an [`Upstream`], the odd value kept in `extra` (or read, for a `time_to_live` of
/// digits or an integral float).
fn odd_upstream(variant: u64, from: &str, id: &MessageId, i: usize) -> (String, Upstream) {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let obj = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut expected = Upstream {
        from: from.to_owned(),
        category: Some("com.example".into()),
        message_id: id.clone(),
        data: obj(json!({"i": i})),
        time_to_live: None,
        extra: Map::new(),
    };
    let mut category = r#""category":"com.example""#.to_owned();
    let mut data = format!(r#""data":{{"i":{i}}}"#);
    let mut more = String::new();
    match variant % 13 {
        0 => {
            more = r#""time_to_live":"86400""#.into();
            expected.time_to_live = Some(86400);
        }
        1 => {
            more = r#""time_to_live":86400.0"#.into();
            expected.time_to_live = Some(86400);
        }
        2 => {
            more = r#""time_to_live":8.64e4"#.into();
            expected.time_to_live = Some(86400);
        }
        3 => {
            category = r#""category":7"#.into();
            expected.category = None;
            expected.extra.insert("category".into(), json!(7));
        }
        4 => {
            data = r#""data":"not-an-object""#.into();
            expected.data = Map::new();
            expected.extra.insert("data".into(), json!("not-an-object"));
        }
        5 => {
            let nested = json!({"a": {"b": [1, {"c": null}, 2.5]}, "d": "<&>\"'"});
            more = format!(r#""x_nested":{nested}"#);
            expected.extra.insert("x_nested".into(), nested);
        }
        6 => {
            more = r#""time_to_live":"1 day""#.into();
            expected.extra.insert("time_to_live".into(), json!("1 day"));
        }
        7 => {
            more = r#""time_to_live":-1"#.into();
            expected.extra.insert("time_to_live".into(), json!(-1));
        }
        8 => {
            // A field given twice: each name keeps its last value.
            category = r#""category":"com.other","category":"com.example""#.into();
        }
        9 => {
            category = r#""category":null,"time_to_live":null"#.into();
            expected.category = None;
        }
        10 => {
            category = r#""category":{"pkg":"x"}"#.into();
            data = format!(r#""data":{{"i":{i},"nested":{{"deep":[true,false]}}}}"#);
            expected.category = None;
            expected
                .extra
                .insert("category".into(), json!({"pkg": "x"}));
            expected.data = obj(json!({"i": i, "nested": {"deep": [true, false]}}));
        }
        11 => {
            more = r#""message_type":null"#.into();
        }
        _ => {
            more = r#""time_to_live":1.5,"category_extra":[]"#.into();
            expected.extra.insert("time_to_live".into(), json!(1.5));
            expected.extra.insert("category_extra".into(), json!([]));
        }
    }
    let mut fields = vec![
        format!("\"from\":{}", q(from)),
        category,
        format!("\"message_id\":{}", q(id.as_str())),
        data,
    ];
    if !more.is_empty() {
        // The odd field first or last.
        if variant.is_multiple_of(2) {
            fields.insert(0, more);
        } else {
            fields.push(more);
        }
    }
    (format!("{{{}}}", fields.join(",")), expected)
}

/// The stanza the server writes for an upstream message, with `json` as its payload.
fn upstream_stanza(json: &str) -> Vec<u8> {
    let to = format!("{SENDER}@{DEFAULT_DOMAIN}");
    let from = format!("devices@{DEFAULT_DOMAIN}");
    let attrs = MessageAttrs {
        id: None,
        to: Some(&to),
        from: Some(&from),
        kind: Some("normal"),
    };
    let mut out = Vec::new();
    write::gcm_message(&mut out, &attrs, json);
    out
}

/// The opening of a stanza that a trickling server never finishes.
fn trickle_head() -> Vec<u8> {
    let mut out = upstream_stanza(r#"{"from":"trickler","message_id":"never","data":{"pad":""#);
    // Cut `</gcm></message>`: the stanza stays open, inside a JSON string that the
    // trickle's filler bytes (`x`) go on extending.
    let end = out
        .windows(6)
        .rposition(|w| w == b"</gcm>")
        .expect("the stanza has a gcm element");
    out.truncate(end);
    out
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
             --test client replay_seed -- --nocapture",
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
        // The later faults draw from their own generator: the knobs above stay each seed's.
        // (The salt was picked for the mix of `hundred_thousand_messages`, seed 0xA7.)
        let mut r2 = SplitMix64(spec.seed ^ 0x0DD5_FA17_7E1C_C0EB);
        // Mostly short drain deadlines; sometimes longer than `ping_after`, so that the
        // client pings a stuck server (which answers) before its drain deadline.
        c.connection.drain_timeout = if r2.below(4) == 0 {
            ms(11_000 + r2.below(5001))
        } else {
            ms(1000 + r2.below(4001))
        };
        c.connection.stanza_timeout = ms(1000 + r2.below(7001));
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
            drain_timeout: c.connection.drain_timeout,
            stanza_timeout: c.connection.stanza_timeout,
            p_stuck: [0, 250, 600, 1000][r2.below(4) as usize],
            p_trickle: [0, 0, 30, 100][r2.below(4) as usize],
            p_collide: [0, 300, 1000][r2.below(3) as usize],
            p_odd: [0, 50, 200][r2.below(3) as usize],
        };
        let mut net = Net::new(c.clone(), server_config(), epoch()).with_seed(r.next());
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
             missing {}‰, kill {}%/{:?}, drain {}%, bad dial {}%, close early {}, \
             drain timeout {:?} (stuck {}‰), stanza timeout {:?} (trickle {}‰), \
             colliding ids {}‰, odd fields {}‰",
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
            k.drain_timeout,
            k.p_stuck,
            k.stanza_timeout,
            k.p_trickle,
            k.p_collide,
            k.p_odd,
        );
        let messages = spec.messages;
        let fault_phase_min = Duration::from_millis(20 * messages as u64 / connections as u64)
            .clamp(secs(5), secs(600));
        Self {
            spec,
            net,
            r,
            r2,
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
            up_expected: HashMap::new(),
            up_outstanding: HashMap::new(),
            up_server_acked: HashSet::new(),
            up_delivered: HashMap::new(),
            up_app_acked: HashSet::new(),
            acks_pending: 0,
            receipts_made: HashSet::new(),
            dev_counter: [0; DEVICES],
            ever_up: false,
            touched: HashSet::new(),
            stuck: HashSet::new(),
            trickled: HashSet::new(),
            watched: BTreeMap::new(),
            stuck_inflight: HashMap::new(),
            resend_expected: HashSet::new(),
            ack_expired_at: None,
            stuck_drains: 0,
            drain_timeouts: 0,
            stuck_resent: 0,
            trickles: 0,
            stanza_timeouts: 0,
            ping_timeouts: 0,
            colliding_upstream: 0,
            odd_upstream: 0,
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

    /// [`Sim::chance`] from the second generator (the later faults).
    fn chance2(&mut self, per_mille: u64) -> bool {
        per_mille > 0 && self.r2.below(1000) < per_mille
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
                    let _ = s.close(self.net.now);
                }
            }
            Action::AppAck(h) => {
                self.acks_pending -= 1;
                match self.net.client.ack(now, &h) {
                    Ok(()) => {
                        self.up_app_acked
                            .insert((h.to().to_owned(), h.message_id().clone()));
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
        let mut links = self.net.alive_links();
        // Stuck and trickled connections are left to the client's deadlines.
        links.retain(|c| !self.stuck.contains(c) && !self.trickled.contains(c));
        if links.is_empty() {
            return;
        }
        let id = links[self.r.below(links.len() as u64) as usize];
        if self.chance(self.k.p_kill * 10) {
            self.kills += 1;
            self.touched.insert(id);
            match self.r.below(5) {
                0 => self.net.kill(id),
                1 => {
                    let n = self.r.below(3000) as usize;
                    self.net.kill_after(id, Direction::ToServer, n);
                }
                2 => {
                    let n = self.r.below(3000) as usize;
                    self.net.kill_after(id, Direction::ToClient, n);
                }
                3 => {
                    if let Some(s) = self.net.servers.get_mut(&id) {
                        let _ = s.stream_error("internal-server-error", Some("simulated"));
                    }
                }
                _ => {
                    if self.r.below(4) == 0 {
                        self.net.mute(id, Direction::ToClient);
                    } else if let Some(s) = self.net.servers.get_mut(&id) {
                        let _ = s.close(self.net.now);
                    }
                }
            }
        } else if self.chance(self.k.p_drain * 10) {
            self.start_drain(id, true);
        } else if self.chance2(self.k.p_trickle) {
            self.start_trickle(id);
        }
    }

    /// The server on `id` starts a stanza and trickles its bytes, never finishing it; its
    /// own output is dropped from then on. The client must end the connection by its
    /// stanza timeout (or its ping timeout) and send what was in flight elsewhere.
    fn start_trickle(&mut self, id: ConnId) {
        let bound = self
            .net
            .servers
            .get(&id)
            .is_some_and(|s| s.state() == ServerState::Bound);
        if !bound || !self.client_up.contains(&id) || self.touched.contains(&id) {
            return;
        }
        let head = trickle_head();
        let first = 1 + self.r2.below(head.len() as u64) as usize;
        let every = ms(20 + self.r2.below(1500));
        if self.net.trickle(id, head, first, every) {
            self.trickles += 1;
            self.trickled.insert(id);
            self.watched.insert(id, None);
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
        let fresh = self.touched.insert(id) && !self.close_scheduled.contains(&id);
        if control && fresh && self.chance2(self.k.p_stuck) {
            // The server never closes this stream and never answers what is in flight.
            self.stuck_drains += 1;
            self.stuck.insert(id);
            self.close_scheduled.insert(id);
            self.watched.insert(id, None);
            let pending: Vec<MessageId> = self
                .net
                .servers
                .get(&id)
                .map(|s| s.pending_ids().into_iter().cloned().collect())
                .unwrap_or_default();
            for m in pending {
                self.stuck_inflight.insert(m, id);
            }
            return;
        }
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
                self.generate_upstream(i);
            }
        }
        let mut bound = self.net.bound();
        // A stuck server sends nothing new.
        bound.retain(|c| self.client_up.contains(c) && !self.stuck.contains(c));
        if bound.is_empty() {
            return;
        }
        let n = self.mailbox.len().min(1 + self.r.below(20) as usize);
        for _ in 0..n {
            let Some(mail) = self.mailbox.pop_front() else {
                break;
            };
            let conn = bound[self.r.below(bound.len() as u64) as usize];
            let sent = match &mail {
                Mail::Raw(raw) => self.net.inject_to_client(conn, raw.bytes.clone()),
                Mail::Up(u) => self
                    .net
                    .servers
                    .get_mut(&conn)
                    .is_some_and(|s| s.send_upstream(u).is_ok()),
                Mail::Receipt(r) => self
                    .net
                    .servers
                    .get_mut(&conn)
                    .is_some_and(|s| s.send_receipt(r).is_ok()),
            };
            if sent {
                self.up_outstanding.insert(mail.key(), (conn, mail));
            } else {
                self.mailbox.push_back(mail);
            }
        }
    }

    /// Upstream message `i`: from one of the devices, with a unique id or (sometimes) the
    /// device's next counter value, which every device uses; sometimes with an odd optional
    /// field, then written raw.
    fn generate_upstream(&mut self, i: usize) {
        let dev = i % DEVICES;
        let from = format!("device-{dev}");
        let id = if self.chance2(self.k.p_collide) {
            self.colliding_upstream += 1;
            self.dev_counter[dev] += 1;
            let n = self.dev_counter[dev];
            // Some devices' ids look like our downstream ones.
            if dev.is_multiple_of(3) {
                mid(&format!("m-{n}"))
            } else {
                mid(&n.to_string())
            }
        } else {
            mid(&format!("up-{i}"))
        };
        let key = (from.clone(), id.clone());
        if !self.up_known.insert(key.clone()) {
            self.violations
                .push(format!("simulation bug: upstream {key:?} generated twice"));
        }
        if self.chance2(self.k.p_odd) {
            self.odd_upstream += 1;
            let variant = self.r2.next();
            let (json, expected) = odd_upstream(variant, &from, &id, i);
            self.up_expected.insert(key, expected);
            self.mailbox.push_back(Mail::Raw(Box::new(RawUp {
                from,
                message_id: id,
                bytes: upstream_stanza(&json),
            })));
        } else {
            let up = Upstream {
                from,
                category: Some("com.example".into()),
                message_id: id,
                data: serde_json::from_value(json!({"i": i})).unwrap(),
                time_to_live: None,
                extra: Map::new(),
            };
            self.up_expected.insert(key, up.clone());
            self.mailbox.push_back(Mail::Up(up));
        }
    }

    fn answer(&mut self, conn: ConnId, id: &MessageId, answer: Answer) {
        if self.stuck.contains(&conn) {
            return; // a stuck server answers nothing
        }
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
                            self.up_known.insert((receipt.from.clone(), rid));
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
        let now = self.net.now;
        for (id, seen) in &self.watched {
            let deadline = match seen {
                Some(seen) => Some(*seen + self.k.drain_timeout),
                None => self
                    .net
                    .trickle_started
                    .get(id)
                    .map(|t0| *t0 + self.k.stanza_timeout),
            };
            if let Some(d) = deadline
                && now > d
            {
                return Err(format!(
                    "{id} ({}) still up {:?} after its deadline",
                    if seen.is_some() {
                        "stuck draining"
                    } else {
                        "trickled"
                    },
                    now - d
                ));
            }
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
                if let Some(&stuck) = self.stuck_inflight.get(&id)
                    && self.watched.contains_key(&stuck)
                {
                    return Err(format!(
                        "{id} sent again on {conn} while still in flight on stuck draining {stuck}"
                    ));
                }
                if self.resend_expected.remove(&id) {
                    self.stuck_resent += 1;
                }
                if self.stuck.contains(&conn) {
                    // Nothing new goes to a draining connection (checked on the client's
                    // output); a stuck server would not answer it anyway.
                    return Ok(());
                }
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
                let key = (ack.to, ack.message_id);
                match self.up_outstanding.remove(&key) {
                    Some((_, Mail::Up(_) | Mail::Receipt(_))) => {}
                    _ => return Err(format!("ack of {key:?} which the server did not send")),
                }
                self.up_server_acked.insert(key);
            }
            ServerEvent::UnknownAck(ack) => {
                // The server role does not know the messages written raw: this ledger does.
                let key = (ack.to, ack.message_id);
                match self.up_outstanding.get(&key) {
                    Some((c, Mail::Raw(_))) if *c == conn => {
                        self.up_outstanding.remove(&key);
                        self.up_server_acked.insert(key);
                    }
                    _ => {
                        return Err(format!(
                            "client acked {key:?} twice or on the wrong connection"
                        ));
                    }
                }
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
                let back: Vec<UpKey> = self
                    .up_outstanding
                    .iter()
                    .filter(|(_, (c, _))| *c == conn)
                    .map(|(key, _)| key.clone())
                    .collect();
                let mut back: Vec<Mail> = back
                    .into_iter()
                    .filter_map(|key| self.up_outstanding.remove(&key).map(|(_, m)| m))
                    .collect();
                back.sort_by_key(Mail::key);
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
                if let Outcome::Expired {
                    kind: ExpiryKind::AckTimeout,
                    ..
                } = outcome
                {
                    self.ack_expired_at = Some(self.net.now);
                }
                let answered = !matches!(kind, "expired" | "unsent");
                if answered
                    && let Some(stuck) = self.stuck_inflight.get(&id)
                    && self.watched.contains_key(stuck)
                {
                    return Err(format!(
                        "{id} reported {kind} while unanswered on stuck {stuck}"
                    ));
                }
                if self.resend_expected.remove(&id) && answered {
                    return Err(format!(
                        "{id} reported {kind}, never sent again after its stuck connection"
                    ));
                }
                *self.outcome_kinds.entry(kind).or_default() += 1;
                self.mix(kind.len() as u64);
                if let Outcome::Unsent { .. } = outcome {
                    self.unsent_reported.push(id);
                }
            }
            ClientEvent::Upstream { message, ack } => {
                let key = (message.from.clone(), message.message_id.clone());
                match self.up_expected.get(&key) {
                    Some(e) if *e == *message => {}
                    Some(e) => {
                        return Err(format!(
                            "upstream {key:?} handed over as {message:?}, sent as {e:?}"
                        ));
                    }
                    None => {
                        return Err(format!(
                            "upstream {key:?} delivered but never sent by the server"
                        ));
                    }
                }
                self.delivered(key, ack)?;
            }
            ClientEvent::Receipt { receipt, ack } => {
                self.delivered((receipt.from.clone(), receipt.message_id.clone()), ack)?;
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
                self.ever_up = true;
                self.client_up.insert(id);
            }
            ClientEvent::ConnectionDraining { id } => {
                if let Some(seen) = self.watched.get_mut(&id)
                    && self.stuck.contains(&id)
                {
                    *seen = Some(self.net.now);
                }
            }
            ClientEvent::ConnectionDown { id, reason, .. } => {
                self.client_up.remove(&id);
                self.connection_down(id, &reason)?;
            }
            ClientEvent::FirstConnectFailed { error, permanent } => {
                return Err(format!(
                    "the client gave up on its first connection ({error:?}, permanent \
                     {permanent})"
                ));
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

    /// Checks how a stuck or trickled connection ended, and counts the deadlines' work.
    fn connection_down(&mut self, id: ConnId, reason: &DownReason) -> Result<(), String> {
        let now = self.net.now;
        let closed = match reason {
            DownReason::Closed(r) => Some(r),
            _ => None,
        };
        match closed {
            Some(CloseReason::DrainTimeout) => self.drain_timeouts += 1,
            Some(CloseReason::StanzaTimeout) => self.stanza_timeouts += 1,
            Some(CloseReason::PingTimeout) => self.ping_timeouts += 1,
            _ => {}
        }
        let Some(seen) = self.watched.remove(&id) else {
            return Ok(());
        };
        // The client may end it first itself (`Local`): when it closes, or when the ack
        // timeout has just expired the connection's whole window (it then replaces it).
        let closing = self.net.client.is_closing();
        let replaced = self.ack_expired_at == Some(now);
        let local = (closing || replaced) && closed == Some(&CloseReason::Local);
        if self.stuck.contains(&id) {
            match (closed, seen) {
                (Some(CloseReason::DrainTimeout), Some(seen)) => {
                    if now != seen + self.k.drain_timeout {
                        return Err(format!(
                            "stuck {id} closed {:?} after it drained, drain timeout {:?}",
                            now - seen,
                            self.k.drain_timeout
                        ));
                    }
                }
                (Some(CloseReason::DrainTimeout), None) => {
                    return Err(format!(
                        "{id} closed for its drain deadline, never draining"
                    ));
                }
                _ if local => {}
                _ => return Err(format!("stuck draining {id} ended: {reason:?}")),
            }
            // What it left unanswered goes out again.
            let mut back: Vec<MessageId> = self
                .stuck_inflight
                .iter()
                .filter(|(_, c)| **c == id)
                .map(|(m, _)| m.clone())
                .collect();
            back.sort();
            for m in back {
                self.stuck_inflight.remove(&m);
                let pending = self.by_id.get(&m).is_some_and(|&t| self.tickets[t].1 == 0);
                if pending {
                    self.resend_expected.insert(m);
                }
            }
        } else if self.trickled.contains(&id) {
            match closed {
                Some(CloseReason::StanzaTimeout | CloseReason::PingTimeout) => {}
                // A drain by nack after the trickle began closes it from the server's side.
                _ if local || self.touched.contains(&id) => {}
                _ => return Err(format!("trickled {id} ended: {reason:?}")),
            }
            if let Some(&t0) = self.net.trickle_started.get(&id)
                && now > t0 + self.k.stanza_timeout
            {
                return Err(format!(
                    "trickled {id} ended {:?} after its stanza began, stanza timeout {:?}",
                    now - t0,
                    self.k.stanza_timeout
                ));
            }
        }
        Ok(())
    }

    fn delivered(&mut self, id: UpKey, ack: Option<AckHandle>) -> Result<(), String> {
        if !self.up_known.contains(&id) {
            return Err(format!(
                "upstream {id:?} delivered but never sent by the server"
            ));
        }
        let n = self.up_delivered.entry(id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            // Only in manual mode, and only when the earlier copy's ack never went through.
            if !self.k.manual || self.up_app_acked.contains(&id) {
                return Err(format!(
                    "upstream {id:?} handed to the application {n} times"
                ));
            }
        }
        if self.k.manual {
            let Some(h) = ack else {
                return Err(format!("manual mode: {id:?} without a handle"));
            };
            self.acks_pending += 1;
            let after = ms(self.r.below(300));
            self.later(after, Action::AppAck(h));
        } else if ack.is_some() {
            return Err(format!("auto mode: {id:?} came with a handle"));
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
            let mut dial = if self.chance(self.k.p_bad_dial * 10) {
                [Dial::BadKey, Dial::Refuse, Dial::Silent][self.r.below(3) as usize]
            } else {
                Dial::Accept
            };
            // Refused credentials before any connection came up end the client at once
            // (the first-connection policy): not a fault this simulation is about.
            if dial == Dial::BadKey && !self.ever_up {
                dial = Dial::Accept;
            }
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
                return Err(format!("upstream {id:?} never handed to the application"));
            }
            if let Some(id) = self.resend_expected.iter().next() {
                return Err(format!(
                    "{id}, unanswered on a stuck connection, was never sent again"
                ));
            }
        }
        if let Some(id) = self.watched.keys().next() {
            return Err(format!("{id} (stuck or trickled) never reported down"));
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
            stuck_drains: self.stuck_drains,
            drain_timeouts: self.drain_timeouts,
            stuck_resent: self.stuck_resent,
            pings_while_draining: self.net.pings_while_draining,
            trickles: self.trickles,
            stanza_timeouts: self.stanza_timeouts,
            ping_timeouts: self.ping_timeouts,
            colliding_upstream: self.colliding_upstream,
            odd_upstream: self.odd_upstream,
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
            "seed {:#018x}: {} msgs {:?}; upstream {} ({} deliveries, {} colliding ids, {} odd); \
             {} kills, {} drains ({} stuck, {} drain timeouts, {} resent, {} pings), {} trickles \
             ({} stanza timeouts, {} ping timeouts); \
             sent {} resent {} retried {} conns {} reconnects {} auth failures {}; {:?} simulated, {} steps",
            self.seed,
            self.accepted,
            self.outcomes,
            self.upstream,
            self.upstream_deliveries,
            self.colliding_upstream,
            self.odd_upstream,
            self.kills,
            self.drains,
            self.stuck_drains,
            self.drain_timeouts,
            self.stuck_resent,
            self.pings_while_draining,
            self.trickles,
            self.stanza_timeouts,
            self.ping_timeouts,
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
