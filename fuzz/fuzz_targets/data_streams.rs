//! Data streams and datagrams (§11): unidirectional stream headers
//! (control, SUBGROUP_HEADER, FETCH_HEADER, padding) and the objects that
//! follow them, fetch items, OBJECT_DATAGRAMs.
//!
//! Input: byte 0 is `0b00kkkdmm`: `mm` the mode, `d` the Group Order of
//! a fetch (1 = Descending), `kkk` a count of chunk-size bytes that follow;
//! the rest is the stream or datagram.
//!
//! * mm = 0, 1: a unidirectional stream from its type on. Decoded whole,
//!   chunk by chunk and as a non-contiguous buffer (all must agree); a
//!   subgroup or fetch stream is decoded a second time with the
//!   header-then-payload API (same objects); everything decoded is
//!   re-encoded with the crate's encoders and decodes to the same items.
//! * mm = 2: one datagram, decoded whole; round trip as above.
//! * mm = 3: fetch items with no FETCH_HEADER in front.

#![no_main]

use bytes::{Buf, Bytes};
use fastrelay_fuzz::{decode_three_ways, End, Step};
use libfuzzer_sys::fuzz_target;
use moqt::data::fetch::{FetchItemHeader, FetchObject};
use moqt::data::subgroup::SubgroupObject;
use moqt::{
    ControlMessage, Datagram, DecodeError, FetchDecoder, FetchEncoder, FetchItem, GroupOrder,
    StreamType, SubgroupDecoder, SubgroupEncoder, UniStreamHeader,
};

/// One thing read from a unidirectional stream.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Header(UniStreamHeader),
    Object(SubgroupObject),
    Fetch(FetchItem),
    Message(ControlMessage),
}

/// What follows the header.
enum Body {
    Header,
    Subgroup(SubgroupDecoder),
    Fetch(FetchDecoder),
    Control,
    Padding,
}

/// A stateful step that reads a whole unidirectional stream.
fn uni_step<'a>(order: GroupOrder) -> Step<'a, Item> {
    let mut body = Body::Header;
    Box::new(move |b: &mut dyn Buf| match &mut body {
        Body::Header => {
            let h = UniStreamHeader::decode(b)?;
            body = match &h {
                UniStreamHeader::Control(_) => Body::Control,
                UniStreamHeader::Subgroup(s) => Body::Subgroup(SubgroupDecoder::new(*s)),
                UniStreamHeader::Fetch(_) => Body::Fetch(FetchDecoder::new(order)),
                UniStreamHeader::Padding => Body::Padding,
            };
            Ok(Item::Header(h))
        }
        Body::Subgroup(d) => d.decode_object(b).map(Item::Object),
        Body::Fetch(d) => d.decode_item(b).map(Item::Fetch),
        Body::Control => ControlMessage::decode(b).map(Item::Message),
        // Padding is discarded unread: it stays "incomplete" for ever.
        Body::Padding => Err(DecodeError::Incomplete),
    })
}

fn fetch_step<'a>(order: GroupOrder) -> Step<'a, FetchItem> {
    let mut d = FetchDecoder::new(order);
    Box::new(move |b: &mut dyn Buf| d.decode_item(b))
}

/// The subgroup objects again, through `decode_object_header` with the
/// payload taken separately.
fn subgroup_by_header(data: &Bytes, dec: SubgroupDecoder) -> (Vec<SubgroupObject>, End) {
    let mut dec = dec;
    let mut b = data.clone();
    let mut out = Vec::new();
    loop {
        let mut probe = b.clone();
        match dec.clone().decode_object_header(&mut probe) {
            Ok(h) if (probe.remaining() as u64) < h.payload_len => {
                return (
                    out,
                    End::Incomplete {
                        left: b.remaining(),
                    },
                )
            }
            Ok(_) => {}
            Err(DecodeError::Incomplete) => {
                return (
                    out,
                    End::Incomplete {
                        left: b.remaining(),
                    },
                )
            }
            Err(e) => return (out, End::Error(e)),
        }
        let h = dec.decode_object_header(&mut b).unwrap();
        let payload = b.split_to(h.payload_len as usize);
        out.push(SubgroupObject {
            object_id: h.object_id,
            properties: h.properties,
            status: h.status,
            payload,
        });
    }
}

/// The fetch items again, through `decode_item_header`.
fn fetch_by_header(data: &Bytes, order: GroupOrder) -> (Vec<FetchItem>, End) {
    let mut dec = FetchDecoder::new(order);
    let mut b = data.clone();
    let mut out = Vec::new();
    loop {
        let mut probe = b.clone();
        match dec.clone().decode_item_header(&mut probe) {
            Ok(FetchItemHeader::Object(h)) if (probe.remaining() as u64) < h.payload_len => {
                return (
                    out,
                    End::Incomplete {
                        left: b.remaining(),
                    },
                )
            }
            Ok(_) => {}
            Err(DecodeError::Incomplete) => {
                return (
                    out,
                    End::Incomplete {
                        left: b.remaining(),
                    },
                )
            }
            Err(e) => return (out, End::Error(e)),
        }
        out.push(match dec.decode_item_header(&mut b).unwrap() {
            FetchItemHeader::EndOfRange(e) => FetchItem::EndOfRange(e),
            FetchItemHeader::Object(h) => FetchItem::Object(FetchObject {
                location: h.location,
                subgroup_id: h.subgroup_id,
                publisher_priority: h.publisher_priority,
                properties: h.properties,
                payload: b.split_to(h.payload_len as usize),
            }),
        });
    }
}

fn encode_fetch(items: &[FetchItem], order: GroupOrder, out: &mut Vec<u8>) {
    let mut enc = FetchEncoder::new(order);
    for it in items {
        enc.encode_item(it, out)
            .unwrap_or_else(|e| panic!("decoded fetch item does not encode: {e}: {it:?}"));
    }
}

/// Re-encodes a decoded uni stream.
fn encode_uni(items: &[Item], order: GroupOrder) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sub: Option<SubgroupEncoder> = None;
    let mut fetch = FetchEncoder::new(order);
    for it in items {
        match it {
            Item::Header(h) => {
                h.encode(&mut out).expect("decoded header does not encode");
                if let UniStreamHeader::Subgroup(s) = h {
                    sub = Some(SubgroupEncoder::new(*s));
                }
            }
            Item::Object(o) => sub
                .as_mut()
                .expect("object without header")
                .encode_object(o, &mut out)
                .unwrap_or_else(|e| panic!("decoded object does not encode: {e}: {o:?}")),
            Item::Fetch(f) => fetch
                .encode_item(f, &mut out)
                .unwrap_or_else(|e| panic!("decoded fetch item does not encode: {e}: {f:?}")),
            Item::Message(m) => m.encode(&mut out).expect("decoded message does not encode"),
        }
    }
    out
}

fn uni(data: &Bytes, seeds: &[u8], order: GroupOrder) {
    let (items, end) = decode_three_ways(data, seeds, || uni_step(order));

    // The stream type alone says what the header was.
    if let Some(Item::Header(h)) = items.first() {
        let t = StreamType::peek(&data.clone()).expect("header decoded but type does not peek");
        match (h, t) {
            (UniStreamHeader::Control(_), StreamType::Control)
            | (UniStreamHeader::Fetch(_), StreamType::Fetch)
            | (UniStreamHeader::Padding, StreamType::Padding) => {}
            (UniStreamHeader::Subgroup(s), StreamType::Subgroup(t)) => {
                assert_eq!(s.stream_type(), u64::from(t))
            }
            other => panic!("header and stream type disagree: {other:?}"),
        }
        // The header-then-payload API sees the same objects.
        let mut rest = data.clone();
        let _ = UniStreamHeader::decode(&mut rest).unwrap();
        match h {
            UniStreamHeader::Subgroup(s) => {
                let (objs, e2) = subgroup_by_header(&rest, SubgroupDecoder::new(*s));
                let whole: Vec<_> = items[1..]
                    .iter()
                    .map(|i| match i {
                        Item::Object(o) => o.clone(),
                        _ => unreachable!(),
                    })
                    .collect();
                assert_eq!(objs, whole, "object headers API disagrees");
                assert_eq!(e2, end, "object headers API ends otherwise");
            }
            UniStreamHeader::Fetch(_) => {
                let (got, e2) = fetch_by_header(&rest, order);
                let whole: Vec<_> = items[1..]
                    .iter()
                    .map(|i| match i {
                        Item::Fetch(f) => f.clone(),
                        _ => unreachable!(),
                    })
                    .collect();
                assert_eq!(got, whole, "item headers API disagrees");
                assert_eq!(e2, end, "item headers API ends otherwise");
            }
            _ => {}
        }
    }

    // Round trip.
    let enc = Bytes::from(encode_uni(&items, order));
    let mut again = Vec::new();
    let e = fastrelay_fuzz::drive(&mut uni_step(order), &mut enc.clone(), &mut again);
    assert_eq!(again, items, "re-encoded stream decodes otherwise");
    assert_eq!(e, End::Incomplete { left: 0 });
    assert_eq!(
        encode_uni(&again, order),
        &enc[..],
        "encoding is not canonical"
    );
}

fn datagram(data: &Bytes) {
    let Ok(d) = Datagram::decode(data) else {
        return;
    };
    let mut enc = Vec::new();
    d.encode(&mut enc)
        .unwrap_or_else(|e| panic!("decoded datagram does not encode: {e}: {d:?}"));
    let enc = Bytes::from(enc);
    let back = Datagram::decode(&enc).expect("own encoding does not decode");
    assert_eq!(back, d, "round trip changed the datagram");
    let mut enc2 = Vec::new();
    back.encode(&mut enc2).unwrap();
    assert_eq!(enc2, &enc[..], "encoding is not canonical");
    // Truncations never decode to the same thing by accident: a status
    // datagram cut short fails; a payload one loses payload bytes.
    if let Datagram::Object(o) = &d {
        if !enc.is_empty() {
            let cut = enc.slice(..enc.len() - 1);
            if let Ok(Datagram::Object(c)) = Datagram::decode(&cut) {
                assert_ne!(c, *o);
            }
        }
    }
}

fn fetch_items(data: &Bytes, seeds: &[u8], order: GroupOrder) {
    let (items, end) = decode_three_ways(data, seeds, || fetch_step(order));
    let (got, e2) = fetch_by_header(data, order);
    assert_eq!(got, items, "item headers API disagrees");
    assert_eq!(e2, end, "item headers API ends otherwise");
    let mut enc = Vec::new();
    encode_fetch(&items, order, &mut enc);
    let enc = Bytes::from(enc);
    let mut again = Vec::new();
    let e = fastrelay_fuzz::drive(&mut fetch_step(order), &mut enc.clone(), &mut again);
    assert_eq!(again, items, "re-encoded fetch items decode otherwise");
    assert_eq!(e, End::Incomplete { left: 0 });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from((mode >> 3) & 7).min(rest.len());
    let (seeds, body) = rest.split_at(k);
    let body = Bytes::copy_from_slice(body);
    let order = if mode & 4 != 0 {
        GroupOrder::Descending
    } else {
        GroupOrder::Ascending
    };
    match mode & 3 {
        0 | 1 => uni(&body, seeds, order),
        2 => datagram(&body),
        _ => fetch_items(&body, seeds, order),
    }
});
