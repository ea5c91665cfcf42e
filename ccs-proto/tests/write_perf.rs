//! A rough timing of the downstream encode path. Ignored by default (timings in a debug build
//! or on a loaded machine mean nothing); run it with
//! `cargo test -p ccs-proto --release --test write_perf -- --ignored --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use ccs_proto::xml::write::{self, MessageAttrs};

#[derive(serde::Serialize)]
struct Downstream<'a> {
    to: &'a str,
    message_id: &'a str,
    data: &'a serde_json::Value,
    time_to_live: u32,
    delivery_receipt_requested: bool,
}

#[test]
#[ignore = "timing; run in release with --ignored"]
#[allow(clippy::disallowed_methods)] // Only this timing test reads the clock.
fn downstream_encode_is_cheap() {
    let data =
        serde_json::json!({"hello": "world", "score": "5x1", "time": "15:10", "text": "a < b & c"});
    let msg = Downstream {
        to: "fE3xYz0AbC:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx2S3GmKD8vGFcQ7HiJ9a0bQ",
        message_id: "m-1366082849205",
        data: &data,
        time_to_live: 600,
        delivery_receipt_requested: true,
    };
    let attrs = MessageAttrs {
        id: Some("m-1366082849205"),
        ..MessageAttrs::default()
    };
    let value = serde_json::to_value(&msg).unwrap();
    let json = serde_json::to_string(&msg).unwrap();
    let mut out = Vec::with_capacity(1024);
    const N: u32 = 200_000;

    let mut time = |name: &str, f: &mut dyn FnMut(&mut Vec<u8>)| {
        for _ in 0..1000 {
            out.clear();
            f(&mut out);
        }
        let start = Instant::now();
        for _ in 0..N {
            out.clear();
            f(&mut out);
            black_box(&out);
        }
        let ns = start.elapsed().as_nanos() / u128::from(N);
        println!("{name}: {ns} ns per stanza ({} bytes)", out.len());
        ns
    };
    let t_struct = time("gcm_message_serialize(struct)", &mut |o| {
        write::gcm_message_serialize(o, &attrs, black_box(&msg)).unwrap()
    });
    let t_value = time("gcm_message_serialize(Value)", &mut |o| {
        write::gcm_message_serialize(o, &attrs, black_box(&value)).unwrap()
    });
    let t_str = time("gcm_message(&str)", &mut |o| {
        write::gcm_message(o, &attrs, black_box(&json))
    });
    let _ = time("serde_json::to_writer(TextEscaper)", &mut |o| {
        serde_json::to_writer(write::TextEscaper(o), black_box(&msg)).unwrap()
    });
    let t_plain = time("serde_json::to_writer(Vec) (reference)", &mut |o| {
        serde_json::to_writer(o, black_box(&msg)).unwrap()
    });
    println!("json is {} bytes", json.len());
    if !cfg!(debug_assertions) {
        assert!(
            t_struct < 1000 && t_value < 1000 && t_str < 1000,
            "too slow"
        );
        let _ = t_plain;
    }
}
