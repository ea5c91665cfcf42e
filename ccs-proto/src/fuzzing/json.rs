//! Targets over the CCS JSON carried in `<gcm>` elements.

use crate::message::{ClientMessage, Incoming, IncomingRef};

/// What CCS sends: `data` as UTF-8 text (other bytes are skipped) decoded with
/// [`Incoming::from_json`]. It gives what the general path alone gives (the fast path for
/// acks and nacks, [`IncomingRef`], declines or agrees). Whatever decodes re-encodes to JSON
/// that decodes to the same message, and encoding is stable (the second encoding equals the
/// first); `ack_for` is `Some` exactly for upstream messages and receipts.
pub fn incoming_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = Incoming::from_json(text);
    assert_eq!(decoded, Incoming::from_json_general(text), "{text}");
    if let Some(view) = IncomingRef::parse(text) {
        assert_eq!(Ok(view.into_owned()), decoded, "{text}");
    }
    let Ok(m) = decoded else {
        return;
    };
    let again = serde_json::to_string(&m).expect("a decoded message encodes");
    let back = Incoming::from_json(&again).expect("an encoded message decodes");
    assert_eq!(back, m, "{text} -> {again}");
    assert_eq!(serde_json::to_string(&back).unwrap(), again);
    assert_eq!(
        m.ack_for().is_some(),
        matches!(m, Incoming::Upstream(_) | Incoming::Receipt(_))
    );
}

/// What an app server sends (the server role's decoder): `data` as UTF-8 text decoded with
/// [`ClientMessage::from_json`] (a downstream message or an ack). Whatever decodes
/// re-encodes to JSON that decodes to the same message, and encoding is stable.
pub fn downstream_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = ClientMessage::from_json(text) else {
        return;
    };
    let again = serde_json::to_string(&m).expect("a decoded message encodes");
    let back = ClientMessage::from_json(&again).expect("an encoded message decodes");
    assert_eq!(back, m, "{text} -> {again}");
    assert_eq!(serde_json::to_string(&back).unwrap(), again);
}
