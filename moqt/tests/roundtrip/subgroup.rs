//! Subgroup streams and object datagrams.

use super::*;

fn sub_header(has_properties: bool, subgroup_id: SubgroupId) -> SubgroupHeader {
    SubgroupHeader {
        track_alias: 1,
        group_id: 2,
        subgroup_id,
        publisher_priority: Some(3),
        has_properties,
        end_of_group: true,
        first_object: true,
    }
}

#[test]
fn subgroup_stream_roundtrip_all_modes() {
    for has_properties in [false, true] {
        for subgroup_id in [
            SubgroupId::Zero,
            SubgroupId::FirstObjectId,
            SubgroupId::Explicit(9),
        ] {
            for priority in [None, Some(0)] {
                let mut header = sub_header(has_properties, subgroup_id);
                header.publisher_priority = priority;
                let objects = vec![
                    SubgroupObject {
                        object_id: 5,
                        properties: if has_properties {
                            props()
                        } else {
                            Properties::new()
                        },
                        status: ObjectStatus::Normal,
                        payload: b("first"),
                    },
                    SubgroupObject {
                        object_id: 6,
                        properties: Properties::new(),
                        status: ObjectStatus::Normal,
                        payload: Bytes::new(),
                    },
                    SubgroupObject {
                        object_id: 100,
                        properties: Properties::new(),
                        status: ObjectStatus::Normal,
                        payload: b("x"),
                    },
                    SubgroupObject {
                        object_id: 101,
                        properties: Properties::new(),
                        status: ObjectStatus::EndOfGroup,
                        payload: Bytes::new(),
                    },
                    SubgroupObject {
                        object_id: u64::MAX,
                        properties: Properties::new(),
                        status: ObjectStatus::EndOfTrack,
                        payload: Bytes::new(),
                    },
                ];
                let mut wire = BytesMut::new();
                let mut enc = SubgroupEncoder::new(header);
                UniStreamHeader::Subgroup(header).encode(&mut wire).unwrap();
                for o in &objects {
                    enc.encode_object(o, &mut wire).unwrap();
                }
                let mut buf = wire.clone().freeze();
                let UniStreamHeader::Subgroup(h) = UniStreamHeader::decode(&mut buf).unwrap()
                else {
                    panic!()
                };
                assert_eq!(h, header);
                let mut dec = SubgroupDecoder::new(h);
                if subgroup_id == SubgroupId::FirstObjectId {
                    assert_eq!(dec.subgroup_id(), None);
                }
                for o in &objects {
                    assert_eq!(&dec.decode_object(&mut buf).unwrap(), o);
                }
                assert_eq!(dec.decode_object(&mut buf), Err(DecodeError::Incomplete));
                assert_eq!(
                    dec.subgroup_id(),
                    Some(match subgroup_id {
                        SubgroupId::Zero => 0,
                        SubgroupId::FirstObjectId => 5,
                        SubgroupId::Explicit(x) => x,
                    })
                );
                // Header-only decoding, payloads consumed by the caller.
                let mut buf = wire.clone().freeze();
                UniStreamHeader::decode(&mut buf).unwrap();
                let mut dec = SubgroupDecoder::new(h);
                for o in &objects {
                    let oh = dec.decode_object_header(&mut buf).unwrap();
                    assert_eq!(oh.object_id, o.object_id);
                    assert_eq!(oh.payload_len, o.payload.len() as u64);
                    assert_eq!(buf.split_to(oh.payload_len as usize), o.payload);
                }
                assert!(buf.is_empty());
            }
        }
    }
}

#[test]
fn subgroup_errors() {
    let h = sub_header(false, SubgroupId::Zero);
    // Object ID overflow: prev + delta + 1 > 2^64-1.
    let mut dec = SubgroupDecoder::new(h);
    let mut first = Vec::new();
    varint::encode(u64::MAX, &mut first);
    first.extend_from_slice(&[1, b'a', 0, 1, b'b']);
    let mut buf = Bytes::from(first);
    dec.decode_object(&mut buf).unwrap();
    assert_eq!(
        dec.decode_object(&mut buf),
        Err(DecodeError::Overflow { field: "object id" })
    );
    // Unknown object status.
    let mut dec = SubgroupDecoder::new(h);
    assert_eq!(
        dec.decode_object(&mut Bytes::from_static(&[0, 0, 1])),
        Err(DecodeError::InvalidValue {
            field: "object status",
            value: 1
        })
    );
    // Properties on a status object.
    let mut dec = SubgroupDecoder::new(sub_header(true, SubgroupId::Zero));
    assert_eq!(
        dec.decode_object(&mut Bytes::from_static(&[0, 2, 0x02, 1, 0, 3])),
        Err(DecodeError::PropertiesOnStatusObject)
    );
    // Properties block shorter than its pairs.
    let mut dec = SubgroupDecoder::new(sub_header(true, SubgroupId::Zero));
    assert_eq!(
        dec.decode_object(&mut Bytes::from_static(&[0, 1, 0x03, 1, 0])),
        Err(DecodeError::Truncated {
            context: "object properties"
        })
    );
    // Encoder checks.
    let mut enc = SubgroupEncoder::new(h);
    let mut out = Vec::new();
    let mut o = SubgroupObject {
        object_id: 3,
        ..Default::default()
    };
    enc.encode_object(&o, &mut out).unwrap();
    assert!(
        enc.encode_object(&o, &mut out).is_err(),
        "object IDs must increase"
    );
    o.object_id = 4;
    o.properties = props();
    assert!(
        enc.encode_object(&o, &mut out).is_err(),
        "no PROPERTIES bit"
    );
    o.properties = Properties::new();
    o.status = ObjectStatus::EndOfGroup;
    o.payload = b("x");
    assert!(
        enc.encode_object(&o, &mut out).is_err(),
        "status object with payload"
    );
}

#[test]
fn datagram_roundtrip_and_errors() {
    let variants = [
        ObjectDatagram::default(),
        ObjectDatagram {
            track_alias: 7,
            group_id: 8,
            object_id: 9,
            publisher_priority: Some(1),
            end_of_group: true,
            properties: props(),
            content: DatagramContent::Payload(b("hello")),
        },
        ObjectDatagram {
            track_alias: 7,
            group_id: 8,
            object_id: 0,
            publisher_priority: None,
            end_of_group: false,
            properties: props(),
            content: DatagramContent::Status(ObjectStatus::Normal),
        },
        ObjectDatagram {
            track_alias: u64::MAX,
            group_id: u64::MAX,
            object_id: u64::MAX,
            publisher_priority: Some(255),
            end_of_group: false,
            properties: Properties::new(),
            content: DatagramContent::Status(ObjectStatus::EndOfTrack),
        },
    ];
    for d in variants {
        let mut out = Vec::new();
        d.encode(&mut out).unwrap();
        let wire = Bytes::from(out);
        assert_eq!(Datagram::decode(&wire), Ok(Datagram::Object(d.clone())));
        if let DatagramContent::Payload(p) = Datagram::decode(&wire)
            .map(|x| match x {
                Datagram::Object(o) => o.content,
                _ => unreachable!(),
            })
            .unwrap()
        {
            // Zero-copy: the payload points into the datagram.
            let range = wire.as_ptr_range();
            assert!(p.is_empty() || range.contains(&p.as_ptr()));
        }
    }
    // Properties bit with length 0.
    assert!(matches!(
        Datagram::decode(&Bytes::from_static(&[0x01, 1, 2, 3, 4, 0])),
        Err(DecodeError::InvalidValue { .. })
    ));
    // Status + properties + non-Normal status.
    assert_eq!(
        Datagram::decode(&Bytes::from_static(&[0x2D, 1, 2, 2, 0x3C, 1, 3])),
        Err(DecodeError::PropertiesOnStatusObject)
    );
    // Trailing bytes after a status.
    assert!(matches!(
        Datagram::decode(&Bytes::from_static(&[0x2C, 1, 2, 3, 9])),
        Err(DecodeError::TrailingBytes { .. })
    ));
    // Truncated header.
    assert_eq!(
        Datagram::decode(&Bytes::from_static(&[0x00, 1])),
        Err(DecodeError::Truncated {
            context: "datagram"
        })
    );
    // Encoder: status with END_OF_GROUP; non-Normal status with properties.
    let mut d = ObjectDatagram {
        end_of_group: true,
        content: DatagramContent::Status(ObjectStatus::Normal),
        ..Default::default()
    };
    assert!(d.encode(&mut Vec::new()).is_err());
    d.end_of_group = false;
    d.content = DatagramContent::Status(ObjectStatus::EndOfGroup);
    d.properties = props();
    assert!(d.encode(&mut Vec::new()).is_err());
}
