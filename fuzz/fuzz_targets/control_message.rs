//! Every MoQT control message (§10), framed as on a control or request
//! stream: `Type (vi64), Length (16), Payload`.
//!
//! Input: byte 0 picks the mode.
//!
//! * Bit 7 clear (raw): the low 3 bits are a count k of chunk-size bytes
//!   that follow; the rest is a stream of control messages. It is decoded
//!   whole, chunk by chunk and as a non-contiguous buffer (all must agree),
//!   and every message that decodes is re-encoded and decoded again: same
//!   value, and the second encoding equals the first (encoders are
//!   canonical).
//! * Bit 7 set (structured): the rest describes messages field by field
//!   (`arbitrary`); each is encoded, must decode to itself, and the
//!   concatenation must decode in chunks to the same sequence.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use fastrelay_fuzz::{decode_three_ways, AMsg, End, Fixed, Step};
use libfuzzer_sys::fuzz_target;
use moqt::message::ControlMessage;
use moqt::DecodeError;

fn step<'a>() -> Step<'a, ControlMessage> {
    Box::new(|b| ControlMessage::decode(b))
}

/// Encode, decode, encode again: equal value, identical bytes.
fn round_trip(m: &ControlMessage) -> Bytes {
    let enc = m
        .to_bytes()
        .unwrap_or_else(|e| panic!("a decoded message does not encode: {e}: {m:?}"));
    let mut b = enc.clone();
    let back = ControlMessage::decode(&mut b).expect("own encoding does not decode");
    assert!(b.is_empty(), "own encoding has trailing bytes");
    assert_eq!(&back, m, "round trip changed the message");
    assert_eq!(back.to_bytes().unwrap(), enc, "encoding is not canonical");
    // try_decode is decode with Incomplete as None.
    let mut b = enc.clone();
    assert_eq!(
        ControlMessage::try_decode(&mut b).unwrap().as_ref(),
        Some(m)
    );
    let cut = enc.slice(..enc.len() - 1);
    let mut b = cut.clone();
    assert_eq!(ControlMessage::decode(&mut b), Err(DecodeError::Incomplete));
    enc
}

fn raw(seeds: &[u8], data: &[u8]) {
    let data = Bytes::copy_from_slice(data);
    let (msgs, end) = decode_three_ways(&data, seeds, step);
    for m in &msgs {
        // The type byte and its permissions are consistent.
        let ty = m.message_type();
        assert_eq!(moqt::MessageType::from_code(ty.code()), Some(ty));
        round_trip(m);
    }
    if let End::Error(e) = end {
        assert!(
            e.session_error_code().is_some(),
            "{e:?} without a session code"
        );
    }
}

fn structured(data: &[u8]) {
    let Ok(list) = Vec::<AMsg>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut ctx = Fixed::default();
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for a in &list {
        let m = a.build(&mut ctx);
        match m.to_bytes() {
            Ok(enc) => {
                let mut b = enc.clone();
                let back = ControlMessage::decode(&mut b)
                    .unwrap_or_else(|e| panic!("own encoding fails to decode: {e}: {m:?}"));
                assert!(b.is_empty());
                assert_eq!(back, m, "encode/decode changed the message");
                round_trip(&back);
                stream.extend_from_slice(&enc);
                want.push(m);
            }
            // Only the 16-bit Message Length can refuse what was built.
            Err(moqt::EncodeError::TooLong { .. }) => {}
            Err(e) => panic!("built message does not encode: {e}: {m:?}"),
        }
    }
    let stream = Bytes::from(stream);
    let (got, end) = decode_three_ways(&stream, &[7, 1, 200], step);
    assert_eq!(got, want);
    assert_eq!(end, End::Incomplete { left: 0 });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x80 == 0 {
        let k = usize::from(mode & 7).min(rest.len());
        let (seeds, stream) = rest.split_at(k);
        raw(seeds, stream);
    } else {
        structured(rest);
    }
});
