//! Targets over the XML layer: the framer and stanza decoding.

use bytes::Bytes;

use crate::xml::{Frame, Framer, FramerConfig, read};

/// The frames of `input` pushed in pieces of `piece` bytes (whole when `None`), with every
/// invariant of the framer checked on the way: each stanza is exactly the input bytes at the
/// position the framer says it has consumed up to, whitespace frames are whitespace, no frame
/// exceeds the limits, `consumed + buffered` equals the bytes pushed until an error, and the
/// framer always makes progress. Whitespace frames are left out of the result (how a run of
/// whitespace is split depends on the pieces). `Err(())` ends the list on an error.
fn frames(input: &[u8], piece: Option<usize>) -> Vec<Result<Frame, ()>> {
    let config = FramerConfig {
        max_stanza_bytes: 512,
        max_depth: 8,
        max_header_bytes: 256,
    };
    let mut f = Framer::new(config.clone());
    let mut out = Vec::new();
    let mut pushed = 0usize;
    let size = piece.unwrap_or(input.len()).max(1);
    let mut steps = 0usize;
    for chunk in input.chunks(size) {
        f.push(chunk);
        pushed += chunk.len();
        loop {
            steps += 1;
            assert!(steps <= 2 * input.len() + 4, "the framer does not progress");
            let before = f.consumed();
            match f.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let after = f.consumed();
                    let at = usize::try_from(after).unwrap();
                    assert!(at <= pushed, "consumed {at} of {pushed} bytes");
                    assert_eq!(at as u64 + f.buffered() as u64, pushed as u64);
                    match &frame {
                        Frame::Stanza(bytes) => {
                            assert!(bytes.len() <= config.max_stanza_bytes);
                            assert!(after - before >= bytes.len() as u64);
                            assert_eq!(&input[at - bytes.len()..at], &bytes[..]);
                            assert_eq!(bytes.first(), Some(&b'<'));
                            assert_eq!(bytes.last(), Some(&b'>'));
                        }
                        Frame::Whitespace(n) => {
                            assert!(*n > 0);
                            assert!(input[at - n..at].iter().all(u8::is_ascii_whitespace));
                            continue;
                        }
                        Frame::Header(_) => {
                            assert!(f.header().is_some());
                            assert!(after - before <= config.max_header_bytes as u64);
                        }
                        _ => {}
                    }
                    out.push(Ok(frame));
                }
                Err(_) => {
                    // Sticky: the same error again, and later bytes are dropped.
                    assert!(f.next_frame().is_err());
                    f.push(b"<x/>");
                    assert_eq!(f.buffered(), 0);
                    out.push(Err(()));
                    return out;
                }
            }
        }
    }
    out
}

/// The framer: `data[0]` picks a piece size, the rest is one stream pushed in pieces of that
/// size. Every frame is a slice of the input at the position the framer reports (see the
/// checks of `frames`), the total consumed never exceeds the input, and the frames (but for
/// whitespace) are the same as when the whole input is pushed at once. Every stanza frame is
/// then decoded (it must not panic), to what the general path alone gives.
pub fn framer(data: &[u8]) {
    let (size, _) = super::pieces(data);
    let input = data.get(1..).unwrap_or_default();
    let whole = frames(input, None);
    let cut = frames(input, Some(size));
    assert_eq!(whole, cut, "pieces of {size} bytes frame differently");
    let mut header = None;
    for f in whole.into_iter().flatten() {
        match f {
            Frame::Header(h) => header = Some(h),
            Frame::Stanza(bytes) => {
                let general =
                    read::decode_general(&bytes, header.as_ref(), &mut Default::default());
                assert_eq!(read::decode(&bytes, header.as_ref()), general);
            }
            _ => {}
        }
    }
}

/// Stanza decoding: `data` as one stanza, decoded without a stream header and after the
/// client header a server sends (`jabber:client` default namespace, `stream` prefix).
/// Decoding is deterministic (the same bytes give the same result twice), and gives what the
/// general path alone gives (the fast path for CCS messages declines or agrees).
pub fn stanza(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let a = read::decode(&bytes, None);
    let b = read::decode(&bytes, None);
    assert_eq!(a, b);
    let mut f = Framer::new(FramerConfig::default());
    f.push(
        b"<stream:stream from='gcm.googleapis.com' id='A1' version='1.0' \
          xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>",
    );
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Header(_)))));
    let header = f.header();
    let c = read::decode(&bytes, header);
    let d = read::decode(&bytes, header);
    assert_eq!(c, d);
    let general = |h| read::decode_general(&bytes, h, &mut read::Scratch::default());
    assert_eq!(a, general(None));
    assert_eq!(c, general(header));
}
