//! Core parse and encode rates: a recorded stream of CCS ack stanzas through framer, stanza
//! decoder and JSON decoder (to owned acks, and to borrowed ones as a connection reads them);
//! downstream messages encoded into a transmit buffer.
//!
//! `cargo bench -p ccs-proto --bench codec`
//!
//! Instruction counts (steadier than wall-clock on a shared machine): build with
//! `cargo bench -p ccs-proto --bench codec --no-run`, then run the printed binary under
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measure_*'` with
//! `CCS_BENCH_ONCE=framer` (or `stanza`, `acks`, `acks_borrowed`, `encode`): it runs that scenario once over
//! the 10,000 stanzas (or messages), untimed.
#![allow(missing_docs)]

use std::hint::black_box;

use ccs_proto::message::{Downstream, Incoming, IncomingRef};
use ccs_proto::stanza::{Message, Stanza};
use ccs_proto::xml::{Event, Frame, Framer, FramerConfig, StreamReader, write};
use criterion::{Criterion, Throughput};

const N: usize = 10_000;
const READ: usize = 16 * 1024;

const HEADER: &[u8] = b"<stream:stream from=\"gcm.googleapis.com\" id=\"AF8BB607948BF55F\" \
    version=\"1.0\" xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">";

/// What CCS sends back for N downstream messages: N acks, with a keepalive now and then.
fn ack_stream() -> Vec<u8> {
    let mut s = HEADER.to_vec();
    for i in 0..N {
        s.extend_from_slice(
            format!(
                "<message><gcm xmlns=\"google:mobile:data\">{{\"from\":\"APA91bHFOtaQGSwupt5l1og{i:06}\",\
                 \"message_id\":\"m-{i:010}\",\"message_type\":\"ack\"}}</gcm></message>"
            )
            .as_bytes(),
        );
        if i % 1000 == 999 {
            s.push(b' ');
        }
    }
    s
}

fn downstream_messages() -> Vec<Downstream> {
    (0..N)
        .map(|i| {
            Downstream::builder(
                format!("fKx3Zq7nRbGf:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338qju59zJMjw2DELjzEvxwYv7hH5Ynpc1ODQ0aT4U4OFEeco8ohsN5PjL1iC2dNtk2BAokeMCg2ZXKqpc8FXKmhX94kIxQ{i}"),
                format!("m-{i:010}"),
            )
            .unwrap()
            .data(serde_json::json!({"score": "5x1", "time": "15:10", "note": "a < b & c"}))
            .unwrap()
            .time_to_live(600)
            .unwrap()
            .delivery_receipt_requested(true)
            .build()
        })
        .collect()
}

/// The stream through the framer alone.
#[inline(never)]
fn measure_framer(stream: &[u8]) {
    let mut f = Framer::new(FramerConfig::default());
    let mut n = 0;
    for chunk in stream.chunks(READ) {
        f.push(chunk);
        while let Some(frame) = f.next_frame().unwrap() {
            if matches!(frame, Frame::Stanza(_)) {
                n += 1;
            }
        }
    }
    assert_eq!(n, N);
}

/// Reads the stream as a connection does, `READ` bytes at a time, and hands each decoded
/// `<message>` to `each`; checks that all `N` came.
fn each_message(stream: &[u8], mut each: impl FnMut(Message)) {
    let mut r = StreamReader::new(FramerConfig::default());
    let mut n = 0;
    for chunk in stream.chunks(READ) {
        r.push(chunk);
        while let Some(ev) = r.next_event().unwrap() {
            if let Event::Stanza(Stanza::Message(m)) = ev {
                each(m);
                n += 1;
            }
        }
    }
    assert_eq!(n, N);
}

/// The stream through framer and stanza decoder: typed `Message`s.
#[inline(never)]
fn measure_stanza(stream: &[u8]) {
    each_message(stream, |m| {
        black_box(m);
    });
}

/// The stream through framer, stanza decoder and `Incoming::from_json`: owned `Ack`s.
#[inline(never)]
fn measure_acks(stream: &[u8]) {
    each_message(stream, |m| {
        let inc = Incoming::from_json(m.gcm.as_deref().unwrap()).unwrap();
        assert!(matches!(inc, Incoming::Ack(_)));
        black_box(inc);
    });
}

/// The stream through framer, stanza decoder and `IncomingRef::parse`: borrowed acks, as
/// `Connection` reads them (no copy of `from` and `message_id`).
#[inline(never)]
fn measure_acks_borrowed(stream: &[u8]) {
    each_message(stream, |m| {
        let json = m.gcm.as_deref().unwrap();
        let ack = IncomingRef::parse(json).unwrap();
        assert!(matches!(ack, IncomingRef::Ack(_)));
        black_box(ack);
    });
}

/// The messages encoded, 64 at a time into one transmit buffer.
#[inline(never)]
fn measure_encode(messages: &[Downstream], out: &mut Vec<u8>) {
    for (i, m) in messages.iter().enumerate() {
        write::downstream(out, m).unwrap();
        if i % 64 == 63 {
            black_box(&out);
            out.clear();
        }
    }
    out.clear();
}

fn decode(c: &mut Criterion) {
    let stream = ack_stream();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("framer_only", |b| b.iter(|| measure_framer(&stream)));
    g.bench_function("framer_and_stanza", |b| b.iter(|| measure_stanza(&stream)));
    g.bench_function("acks_framer_stanza_json", |b| {
        b.iter(|| measure_acks(&stream))
    });
    g.bench_function("acks_framer_stanza_json_borrowed", |b| {
        b.iter(|| measure_acks_borrowed(&stream))
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let messages = downstream_messages();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("downstream", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| measure_encode(&messages, &mut out))
    });
    g.finish();
}

fn main() {
    if let Ok(which) = std::env::var("CCS_BENCH_ONCE") {
        let stream = ack_stream();
        match which.as_str() {
            "framer" => measure_framer(&stream),
            "stanza" => measure_stanza(&stream),
            "acks" => measure_acks(&stream),
            "acks_borrowed" => measure_acks_borrowed(&stream),
            _ => {
                let messages = downstream_messages();
                let mut out = Vec::with_capacity(64 * 1024);
                measure_encode(&messages, &mut out);
            }
        }
        println!("{which}: {N} done");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    decode(&mut c);
    encode(&mut c);
    c.final_summary();
}
