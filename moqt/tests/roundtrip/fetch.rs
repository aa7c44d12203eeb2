//! FETCH streams, and telling the data stream types apart.

use super::*;

fn fobj(g: u64, o: u64, sub: Option<u64>, prio: u8, payload: &str) -> FetchItem {
    FetchItem::Object(FetchObject {
        location: Location::new(g, o),
        subgroup_id: sub,
        publisher_priority: prio,
        properties: Properties::new(),
        payload: b(payload),
    })
}

fn eor(kind: EndOfRangeKind, g: u64, o: u64) -> FetchItem {
    FetchItem::EndOfRange(EndOfRange {
        kind,
        location: Location::new(g, o),
    })
}

fn fetch_roundtrip(order: GroupOrder, items: &[FetchItem]) {
    let mut wire = BytesMut::new();
    UniStreamHeader::Fetch(FetchHeader { request_id: 5 })
        .encode(&mut wire)
        .unwrap();
    let mut enc = FetchEncoder::new(order);
    for it in items {
        enc.encode_item(it, &mut wire).unwrap();
    }
    let mut buf = wire.freeze();
    assert_eq!(
        UniStreamHeader::decode(&mut buf),
        Ok(UniStreamHeader::Fetch(FetchHeader { request_id: 5 }))
    );
    let all = buf.clone();
    let mut dec = FetchDecoder::new(order);
    for it in items {
        assert_eq!(&dec.decode_item(&mut buf).unwrap(), it);
    }
    assert_eq!(dec.decode_item(&mut buf), Err(DecodeError::Incomplete));
    // Header-only decoding.
    let mut buf = all;
    let mut dec = FetchDecoder::new(order);
    for it in items {
        match (dec.decode_item_header(&mut buf).unwrap(), it) {
            (FetchItemHeader::Object(h), FetchItem::Object(o)) => {
                assert_eq!(h.location, o.location);
                assert_eq!(h.subgroup_id, o.subgroup_id);
                assert_eq!(buf.split_to(h.payload_len as usize), o.payload);
            }
            (FetchItemHeader::EndOfRange(e), FetchItem::EndOfRange(x)) => assert_eq!(&e, x),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn fetch_stream_roundtrips() {
    use EndOfRangeKind::*;
    fetch_roundtrip(GroupOrder::Ascending, &[]);
    fetch_roundtrip(
        GroupOrder::Ascending,
        &[
            fobj(0, 0, Some(0), 1, "a"),
            fobj(0, 1, Some(0), 1, "b"),
            fobj(0, 5, Some(1), 2, "c"),
            fobj(0, 6, Some(2), 2, ""),
            fobj(0, 7, None, 2, "dgram"),
            fobj(0, 8, Some(7), 2, ""),
            eor(NonExistent, 0, 20),
            eor(Unknown, 3, 4),
            fobj(3, 5, Some(7), 2, "after"),
            fobj(9, 0, Some(8), 2, ""),
            fobj(u64::MAX, u64::MAX, Some(u64::MAX), 0, "end"),
        ],
    );
    fetch_roundtrip(
        GroupOrder::Descending,
        &[
            eor(Unknown, 100, 3),
            fobj(100, 4, Some(0), 9, "x"),
            fobj(50, 0, Some(0), 9, "y"),
            fobj(49, 2, Some(1), 9, "z"),
            fobj(0, 0, Some(2), 9, ""),
        ],
    );
}

#[test]
fn fetch_errors() {
    let dec = || FetchDecoder::new(GroupOrder::Ascending);
    // First object referring to prior fields.
    for (flags, field) in [
        (0x14u8, "group id"),         // no group delta
        (0x18, "object id"),          // no object delta
        (0x0C, "publisher priority"), // no priority
        (0x1D, "subgroup id"),        // prior subgroup
        (0x1E, "subgroup id"),        // prior subgroup + 1
    ] {
        let mut wire = vec![flags];
        if flags & 0x08 != 0 {
            wire.push(1);
        }
        if flags & 0x04 != 0 {
            wire.push(1);
        }
        if flags & 0x10 != 0 {
            wire.push(1);
        }
        wire.push(0);
        assert_eq!(
            dec().decode_item(&mut Bytes::from(wire)),
            Err(DecodeError::NoPriorObject { field }),
            "{flags:#x}"
        );
    }
    // After an End of Range the prior subgroup and priority still come from
    // an actual object.
    let mut d = dec();
    let mut buf = Bytes::from_static(&[0x80, 0x8C, 1, 1, 0x01, 0]);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::NoPriorObject {
            field: "subgroup id"
        })
    );
    // After a datagram object there is no prior Subgroup ID.
    let mut d = dec();
    let mut buf = Bytes::from_static(&[0x5C, 1, 1, 1, 0, 0x01, 0]);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::NoPriorObject {
            field: "subgroup id"
        })
    );
    // Invalid flags values.
    for f in [0x80u64, 0x8D, 0x10D, 0x200, u64::MAX] {
        let mut wire = Vec::new();
        varint::encode(f, &mut wire);
        wire.extend_from_slice(&[0; 4]);
        assert_eq!(
            dec().decode_item(&mut Bytes::from(wire)),
            Err(DecodeError::InvalidValue {
                field: "fetch serialization flags",
                value: f
            })
        );
    }
    // Group ID going below 0 (descending) and above 2^64-1 (ascending).
    let mut d = FetchDecoder::new(GroupOrder::Descending);
    let mut buf = Bytes::from_static(&[0x1C, 1, 0, 0, 0, 0x08, 1, 0]);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::Overflow { field: "group id" })
    );
    let mut first = vec![0x1C];
    varint::encode(u64::MAX, &mut first);
    first.extend_from_slice(&[0, 0, 0, 0x08, 0, 0]);
    let mut d = dec();
    let mut buf = Bytes::from(first);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::Overflow { field: "group id" })
    );
    // Object ID overflow.
    let mut first = vec![0x1C, 0];
    varint::encode(u64::MAX, &mut first);
    first.extend_from_slice(&[0, 0, 0x00, 0]);
    let mut d = dec();
    let mut buf = Bytes::from(first);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::Overflow { field: "object id" })
    );
    // Encoder: groups against the order, objects going back.
    let mut enc = FetchEncoder::new(GroupOrder::Ascending);
    let mut out = Vec::new();
    enc.encode_item(&fobj(5, 5, Some(0), 0, ""), &mut out)
        .unwrap();
    assert!(enc
        .encode_item(&fobj(4, 0, Some(0), 0, ""), &mut out)
        .is_err());
    assert!(enc
        .encode_item(&fobj(5, 4, Some(0), 0, ""), &mut out)
        .is_err());
    let mut enc = FetchEncoder::new(GroupOrder::Descending);
    enc.encode_item(&fobj(5, 5, Some(0), 0, ""), &mut out)
        .unwrap();
    assert!(enc
        .encode_item(&fobj(6, 0, Some(0), 0, ""), &mut out)
        .is_err());
}

#[test]
fn stream_type_peek() {
    let mut wire = Vec::new();
    ControlMessage::Setup(Setup::default())
        .encode(&mut wire)
        .unwrap();
    let b = Bytes::from(wire.clone());
    assert_eq!(StreamType::peek(&b), Ok(StreamType::Control));
    assert_eq!(
        StreamType::peek(&Bytes::from_static(&[0x05])),
        Ok(StreamType::Fetch)
    );
    assert_eq!(
        StreamType::peek(&Bytes::from_static(&[0x14])),
        Ok(StreamType::Subgroup(0x14))
    );
    assert_eq!(
        StreamType::peek(&Bytes::from_static(&[0x80])),
        Err(DecodeError::Incomplete)
    );
    assert_eq!(
        StreamType::peek(&Bytes::from_static(&[0x06])),
        Err(DecodeError::UnknownStreamType(6))
    );
    // A control stream header is the whole SETUP message.
    let mut b = Bytes::from(wire);
    assert_eq!(
        UniStreamHeader::decode(&mut b),
        Ok(UniStreamHeader::Control(Setup::default()))
    );
    // Split across chunks.
    let c = Bytes::from_static(&[0xAF]).chain(Bytes::from_static(&[0x00, 0x00, 0x00]));
    assert_eq!(StreamType::peek(&c), Ok(StreamType::Control));
}
