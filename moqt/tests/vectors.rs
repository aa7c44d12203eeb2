//! Byte-exact test vectors: every example of draft-ietf-moq-transport-18
//! (§1.4.1 Table 2, §1.5, §11.6), the type tables of §3.4, §11.3.1 and
//! §11.4.2, the code tables of §15, and hand-derived control messages.

use bytes::{Buf, Bytes, BytesMut};
use moqt::data::fetch::FETCH_HEADER_TYPE;
use moqt::data::stream::{CONTROL_STREAM_TYPE, PADDING_STREAM_TYPE};
use moqt::params::param_type;
use moqt::properties::property_type;
use moqt::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------- §1.4.1

/// Table 2 of §1.4.1, verbatim.
const TABLE_2: &[(&str, u64)] = &[
    ("25", 37),
    ("8025", 37),
    ("bbbd", 15_293),
    ("ed7f3e7d", 226_442_877),
    ("faa1a0e403d8", 2_893_212_287_960),
    ("fc8998abc66bc0", 151_288_809_941_952),
    ("fefa318fa8e3ca11", 70_423_237_261_249_041),
    ("ffffffffffffffffff", 18_446_744_073_709_551_615),
];

#[test]
fn varint_table_2_decodes() {
    for &(h, value) in TABLE_2 {
        let bytes = hex(h);
        assert_eq!(
            varint::decode_slice(&bytes),
            Ok((value, bytes.len())),
            "{h}"
        );
        let mut buf = Bytes::from(bytes.clone());
        assert_eq!(varint::decode(&mut buf), Ok(value), "{h}");
        assert!(buf.is_empty());
        assert_eq!(varint::len_from_first_byte(bytes[0]), bytes.len());
    }
}

#[test]
fn varint_table_2_encodes_byte_exact() {
    for &(h, value) in TABLE_2 {
        let bytes = hex(h);
        let mut out = Vec::new();
        varint::encode_with_len(value, bytes.len(), &mut out).unwrap();
        assert_eq!(out, bytes, "{h}");
    }
    // Minimal encodings: every example but 0x8025 is minimal.
    for &(h, value) in TABLE_2.iter().filter(|(h, _)| *h != "8025") {
        let mut out = Vec::new();
        varint::encode(value, &mut out);
        assert_eq!(out, hex(h), "{h}");
    }
}

/// Table 1 of §1.4.1: prefixes, lengths and ranges.
#[test]
fn varint_table_1_ranges() {
    let table: [(u8, usize, u64); 9] = [
        (0b0000_0000, 1, 127),
        (0b1000_0000, 2, 16_383),
        (0b1100_0000, 3, 2_097_151),
        (0b1110_0000, 4, 268_435_455),
        (0b1111_0000, 5, 34_359_738_367),
        (0b1111_1000, 6, 4_398_046_511_103),
        (0b1111_1100, 7, 562_949_953_421_311),
        (0b1111_1110, 8, 72_057_594_037_927_935),
        (0b1111_1111, 9, 18_446_744_073_709_551_615),
    ];
    for (prefix, len, max) in table {
        assert_eq!(varint::len_from_first_byte(prefix), len);
        assert_eq!(varint::max_value(len), Some(max));
        assert_eq!(varint::encoded_len(max), len);
        if len < 9 {
            assert_eq!(varint::encoded_len(max + 1), len + 1);
        }
        let mut out = Vec::new();
        varint::encode(max, &mut out);
        assert_eq!(out.len(), len);
        assert_eq!(out[0] & prefix, prefix, "prefix bits of {max}");
        assert_eq!(varint::decode_slice(&out), Ok((max, len)));
        // Zero in every length is valid (non-minimal encodings, §1.4.1).
        let mut zero = Vec::new();
        varint::encode_with_len(0, len, &mut zero).unwrap();
        assert_eq!(zero[0], prefix);
        assert_eq!(varint::decode_slice(&zero), Ok((0, len)));
        // One byte short is Incomplete.
        assert_eq!(
            varint::decode_slice(&out[..len - 1]),
            Err(DecodeError::Incomplete)
        );
    }
    assert!(varint::encode_with_len(128, 1, &mut Vec::new()).is_err());
    assert!(varint::encode_with_len(1, 0, &mut Vec::new()).is_err());
    assert!(varint::encode_with_len(1, 10, &mut Vec::new()).is_err());
    assert_eq!(varint::decode_slice(&[]), Err(DecodeError::Incomplete));
}

#[test]
fn varint_every_first_byte_is_valid() {
    // Every first byte announces a length of 1..=9 and every completion of
    // it decodes: the only decoding failure is truncation.
    for b in 0..=255u8 {
        let len = varint::len_from_first_byte(b);
        let mut v = vec![b];
        v.resize(len, 0xA5);
        let (_, n) = varint::decode_slice(&v).unwrap();
        assert_eq!(n, len);
    }
}

// ---------------------------------------------------------------- §1.5

#[test]
fn serialized_name_example_1_5() {
    let text = "example.2enet-team2-project_x--report";
    let name = FullTrackName::parse_serialized(text).unwrap();
    let fields: Vec<&[u8]> = name
        .namespace()
        .fields()
        .iter()
        .map(|f| f.as_ref())
        .collect();
    assert_eq!(fields, vec![&b"example.net"[..], b"team2", b"project_x"]);
    assert_eq!(name.name().as_ref(), b"report");
    assert_eq!(name.to_serialized(), text);
}

#[test]
fn serialized_name_canonical_rules_1_5_1() {
    use NameParseError::*;
    let bad = [
        ("a.2E--x", BadEscape),             // uppercase hex digit
        ("a.61--x", RedundantEscape(b'a')), // literal byte escaped
        ("a.--x", BadEscape),               // period without two digits
        ("a.2--x", BadEscape),              // one digit
        ("a--x.", BadEscape),               // trailing period
        ("a--x.6", BadEscape),              // trailing period, one digit
        ("a b--x", InvalidChar(' ')),
        ("a--x-y", InvalidChar('-')),
        ("noseparator", MissingSeparator),
        ("a---x", InvalidChar('-')),
        ("a--b--c", InvalidChar('-')),
        ("-a--x", InvalidNamespace), // empty field
    ];
    for (text, err) in bad {
        assert_eq!(FullTrackName::parse_serialized(text), Err(err), "{text}");
    }
    // Empty namespace and/or empty track name.
    let n = FullTrackName::parse_serialized("--").unwrap();
    assert!(n.namespace().is_empty() && n.name().is_empty());
    let n = FullTrackName::parse_serialized("a-b--").unwrap();
    assert_eq!(n.namespace().len(), 2);
    assert!(n.name().is_empty());
    // Bijective on all bytes.
    let all: Vec<u8> = (0..=255).collect();
    let ns = TrackNamespace::new([Bytes::from(all.clone()), Bytes::from_static(b"-")]).unwrap();
    let name = FullTrackName::new(ns, all).unwrap();
    let text = name.to_serialized();
    assert!(text
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-'));
    assert_eq!(FullTrackName::parse_serialized(&text).unwrap(), name);
}

// ---------------------------------------------------------------- §11.6

/// §11.6, first example: a subgroup on one stream.
#[test]
fn example_11_6_subgroup_on_one_stream() {
    let wire = hex("14 02 00 00 00
         00 04 61626364
         00 04 65666768");
    let mut buf = Bytes::from(wire.clone());
    let UniStreamHeader::Subgroup(header) = UniStreamHeader::decode(&mut buf).unwrap() else {
        panic!("not a subgroup stream")
    };
    assert_eq!(
        header,
        SubgroupHeader {
            track_alias: 2,
            group_id: 0,
            subgroup_id: SubgroupId::Explicit(0),
            publisher_priority: Some(0),
            has_properties: false,
            end_of_group: false,
            first_object: false,
        }
    );
    assert_eq!(header.stream_type(), 0x14);
    let mut dec = SubgroupDecoder::new(header);
    let o0 = dec.decode_object(&mut buf).unwrap();
    let o1 = dec.decode_object(&mut buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!((o0.object_id, &o0.payload[..]), (0, &b"abcd"[..]));
    assert_eq!((o1.object_id, &o1.payload[..]), (1, &b"efgh"[..]));
    assert_eq!(o0.status, ObjectStatus::Normal);

    let mut out = Vec::new();
    let mut enc = SubgroupEncoder::new(header);
    enc.encode_header(&mut out).unwrap();
    enc.encode_object(&o0, &mut out).unwrap();
    enc.encode_object(&o1, &mut out).unwrap();
    assert_eq!(out, wire);
}

/// §11.6, second example: a group on one stream, the first object with two
/// Properties. The draft's "Properties Length = 33" and "Length = 21" only
/// add up with QUIC varints and a 21-byte value, but the value shown,
/// "traceID:123456", is 14 bytes; with the draft-18 integer the pairs are
/// 1 + 5 (type 4, value 2186796243) + 1 + 1 + 14 (type 77 = delta 73,
/// length 14) = 22 bytes.
#[test]
fn example_11_6_group_with_properties() {
    let wire = hex("35 02 00 00
         00 16 04 f08257dcd3 49 0e 74726163654944 3a 313233343536 04 61626364
         00 00 04 65666768");
    let mut buf = Bytes::from(wire.clone());
    let UniStreamHeader::Subgroup(header) = UniStreamHeader::decode(&mut buf).unwrap() else {
        panic!("not a subgroup stream")
    };
    assert_eq!(header.stream_type(), 0x35);
    assert!(header.has_properties);
    assert_eq!(header.publisher_priority, None, "DEFAULT_PRIORITY bit");
    assert_eq!(header.subgroup_id, SubgroupId::Explicit(0));
    assert_eq!(header.track_alias, 2);
    let mut dec = SubgroupDecoder::new(header);
    let o0 = dec.decode_object(&mut buf).unwrap();
    let o1 = dec.decode_object(&mut buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!(o0.object_id, 0);
    assert_eq!(o1.object_id, 1);
    let p = o0.properties.pairs();
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].key, p[0].as_varint()), (4, Some(2_186_796_243)));
    assert_eq!(p[1].key, 77);
    assert_eq!(
        p[1].as_bytes().map(|b| &b[..]),
        Some(&b"traceID:123456"[..])
    );
    assert_eq!(o0.properties.max_cache_duration(), Ok(Some(2_186_796_243)));
    assert!(o1.properties.is_empty());
    assert_eq!(&o0.payload[..], b"abcd");
    assert_eq!(&o1.payload[..], b"efgh");

    let mut out = Vec::new();
    let mut enc = SubgroupEncoder::new(header);
    enc.encode_header(&mut out).unwrap();
    enc.encode_object(&o0, &mut out).unwrap();
    enc.encode_object(&o1, &mut out).unwrap();
    assert_eq!(out, wire);
}

// ------------------------------------------------------- type tables

#[test]
fn subgroup_types_figure_24() {
    let ranges = [
        0x10..=0x15,
        0x18..=0x1D,
        0x30..=0x35,
        0x38..=0x3D,
        0x50..=0x55,
        0x58..=0x5D,
        0x70..=0x75,
        0x78..=0x7D,
    ];
    let invalid_mode_11 = [
        0x16, 0x17, 0x1E, 0x1F, 0x36, 0x37, 0x3E, 0x3F, 0x56, 0x57, 0x5E, 0x5F, 0x76, 0x77, 0x7E,
        0x7F,
    ];
    for t in 0..=0xFFu64 {
        let valid = ranges.iter().any(|r| r.contains(&t));
        assert_eq!(data::subgroup::is_subgroup_type(t), valid, "{t:#x}");
        let expected = match t {
            FETCH_HEADER_TYPE => Some(StreamType::Fetch),
            _ if valid => Some(StreamType::Subgroup(t as u8)),
            _ => None,
        };
        assert_eq!(StreamType::from_code(t), expected, "{t:#x}");
        if invalid_mode_11.contains(&t) {
            assert!(!valid);
            let mut b = Bytes::from(vec![t as u8, 0, 0, 0, 0, 0]);
            assert_eq!(
                UniStreamHeader::decode(&mut b),
                Err(DecodeError::UnknownStreamType(t))
            );
        }
    }
    assert_eq!(
        StreamType::from_code(CONTROL_STREAM_TYPE),
        Some(StreamType::Control)
    );
    assert_eq!(
        StreamType::from_code(PADDING_STREAM_TYPE),
        Some(StreamType::Padding)
    );
}

#[test]
fn subgroup_type_bits() {
    // Every valid type decodes to flags that re-encode to the same type.
    for t in (0..0x80u64).filter(|&t| data::subgroup::is_subgroup_type(t)) {
        let mut wire = vec![t as u8, 7, 9];
        if t & 0x06 == 0x04 {
            wire.push(3);
        }
        if t & 0x20 == 0 {
            wire.push(200);
        }
        let mut b = Bytes::from(wire.clone());
        let h = SubgroupHeader::decode(&mut b).unwrap();
        assert!(b.is_empty());
        assert_eq!(h.stream_type(), t);
        assert_eq!(h.has_properties, t & 0x01 != 0);
        assert_eq!(h.end_of_group, t & 0x08 != 0);
        assert_eq!(h.first_object, t & 0x40 != 0);
        assert_eq!(h.publisher_priority.is_none(), t & 0x20 != 0);
        assert_eq!(
            h.subgroup_id,
            match (t >> 1) & 3 {
                0 => SubgroupId::Zero,
                1 => SubgroupId::FirstObjectId,
                _ => SubgroupId::Explicit(3),
            }
        );
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        assert_eq!(out, wire);
    }
}

#[test]
fn datagram_types_figure_23() {
    let valid: Vec<u64> = (0x00..=0x0F)
        .chain([0x20, 0x21, 0x24, 0x25, 0x28, 0x29, 0x2C, 0x2D])
        .collect();
    for t in 0..=0xFFu64 {
        assert_eq!(
            data::datagram::is_object_datagram_type(t),
            valid.contains(&t),
            "{t:#x}"
        );
        if !valid.contains(&t) {
            let mut d = Vec::new();
            varint::encode(t, &mut d);
            d.extend_from_slice(&[1, 1, 1, 1, 1]);
            let d = Bytes::from(d);
            assert_eq!(
                Datagram::decode(&d),
                Err(DecodeError::UnknownDatagramType(t)),
                "{t:#x}"
            );
        }
    }
    for t in [0x22u8, 0x23, 0x26, 0x27, 0x2A, 0x2B, 0x2E, 0x2F] {
        assert!(!data::datagram::is_object_datagram_type(t.into()));
    }
}

#[test]
fn datagram_type_bits_every_variant() {
    for &t in &[
        0x00u8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E,
        0x0F, 0x20, 0x21, 0x24, 0x25, 0x28, 0x29, 0x2C, 0x2D,
    ] {
        let t64 = u64::from(t);
        let mut wire = vec![t, 5, 6];
        if t64 & 0x04 == 0 {
            wire.push(7);
        }
        if t64 & 0x08 == 0 {
            wire.push(9);
        }
        if t64 & 0x01 != 0 {
            wire.extend_from_slice(&[2, 0x3C, 1]); // Prior Group ID Gap = 1
        }
        if t64 & 0x20 != 0 {
            wire.push(0); // status Normal
        } else {
            wire.extend_from_slice(b"payload");
        }
        let Datagram::Object(d) = Datagram::decode(&Bytes::from(wire.clone())).unwrap() else {
            panic!()
        };
        assert_eq!(d.track_alias, 5);
        assert_eq!(d.group_id, 6);
        assert_eq!(d.object_id, if t64 & 0x04 != 0 { 0 } else { 7 });
        assert_eq!(d.publisher_priority, (t64 & 0x08 == 0).then_some(9));
        assert_eq!(d.end_of_group, t64 & 0x02 != 0);
        assert_eq!(
            d.properties.prior_group_id_gap(),
            Ok((t64 & 1 != 0).then_some(1))
        );
        match &d.content {
            DatagramContent::Status(s) => {
                assert!(t64 & 0x20 != 0);
                assert_eq!(*s, ObjectStatus::Normal)
            }
            DatagramContent::Payload(p) => assert_eq!(&p[..], b"payload"),
        }
        assert_eq!(d.datagram_type(), t64);
        let mut out = Vec::new();
        d.encode(&mut out).unwrap();
        assert_eq!(out, wire, "{t:#x}");
    }
}

// ------------------------------------------------------- code tables

#[test]
fn code_tables_section_15_10() {
    use SessionErrorCode as S;
    let session = [
        (S::NoError, 0x0),
        (S::InternalError, 0x1),
        (S::Unauthorized, 0x2),
        (S::ProtocolViolation, 0x3),
        (S::InvalidRequestId, 0x4),
        (S::DuplicateTrackAlias, 0x5),
        (S::KeyValueFormattingError, 0x6),
        (S::InvalidPath, 0x8),
        (S::MalformedPath, 0x9),
        (S::GoawayTimeout, 0x10),
        (S::ControlMessageTimeout, 0x11),
        (S::DataStreamTimeout, 0x12),
        (S::AuthTokenCacheOverflow, 0x13),
        (S::DuplicateAuthTokenAlias, 0x14),
        (S::VersionNegotiationFailed, 0x15),
        (S::MalformedAuthToken, 0x16),
        (S::UnknownAuthTokenAlias, 0x17),
        (S::ExpiredAuthToken, 0x18),
        (S::InvalidAuthority, 0x19),
        (S::MalformedAuthority, 0x1A),
    ];
    for (c, v) in session {
        assert_eq!(c.code(), v);
        assert_eq!(S::from_code(v), c);
    }
    use RequestErrorCode as R;
    let request = [
        (R::InternalError, 0x0),
        (R::Unauthorized, 0x1),
        (R::Timeout, 0x2),
        (R::NotSupported, 0x3),
        (R::MalformedAuthToken, 0x4),
        (R::ExpiredAuthToken, 0x5),
        (R::GoingAway, 0x6),
        (R::ExcessiveLoad, 0x9),
        (R::DoesNotExist, 0x10),
        (R::InvalidRange, 0x11),
        (R::MalformedTrack, 0x12),
        (R::DuplicateSubscription, 0x19),
        (R::Uninterested, 0x20),
        (R::PrefixOverlap, 0x30),
        (R::NamespaceTooLarge, 0x31),
        (R::InvalidJoiningRequestId, 0x32),
        (R::UnsupportedExtension, 0x33),
        (R::Redirect, 0x34),
    ];
    for (c, v) in request {
        assert_eq!(c.code(), v);
        assert_eq!(R::from_code(v), c);
    }
    use PublishDoneCode as P;
    let done = [
        (P::InternalError, 0x0),
        (P::Unauthorized, 0x1),
        (P::TrackEnded, 0x2),
        (P::SubscriptionEnded, 0x3),
        (P::GoingAway, 0x4),
        (P::TooFarBehind, 0x5),
        (P::Expired, 0x6),
        (P::UpdateFailed, 0x8),
        (P::ExcessiveLoad, 0x9),
        (P::MalformedTrack, 0x12),
    ];
    for (c, v) in done {
        assert_eq!(c.code(), v);
        assert_eq!(P::from_code(v), c);
    }
    use StreamResetCode as T;
    let reset = [
        (T::InternalError, 0x0),
        (T::Cancelled, 0x1),
        (T::DeliveryTimeout, 0x2),
        (T::SessionClosed, 0x3),
        (T::GoingAway, 0x4),
        (T::TooFarBehind, 0x5),
        (T::UnknownObjectStatus, 0x6),
        (T::ExpiredAuthToken, 0x7),
        (T::ExcessiveLoad, 0x9),
        (T::MalformedTrack, 0x12),
    ];
    for (c, v) in reset {
        assert_eq!(c.code(), v);
        assert_eq!(T::from_code(v), c);
    }
    // Unknown and GREASE codes are kept (§14).
    assert_eq!(R::from_code(0x9D), R::Unknown(0x9D));
    assert_eq!(R::Unknown(0x9D).code(), 0x9D);
    assert!(!R::from_code(0x7).is_known());
}

#[test]
fn grease_values_section_14() {
    assert!(is_grease(0x9D));
    assert!(is_grease(0x11C));
    assert!(is_grease(0x3fff_ffff_ffff_ffde));
    assert!(!is_grease(0x9C));
    assert!(!is_grease(0x9E));
    assert!(!is_grease(0));
    assert!(!is_grease(0x3fff_ffff_ffff_ffde + 0x7F));
}

#[test]
fn message_type_table_5() {
    let table: [(u64, MessageType); 19] = [
        (0x2F00, MessageType::Setup),
        (0x10, MessageType::GoAway),
        (0x3, MessageType::Subscribe),
        (0x4, MessageType::SubscribeOk),
        (0x1D, MessageType::Publish),
        (0x1E, MessageType::PublishOk),
        (0xB, MessageType::PublishDone),
        (0x16, MessageType::Fetch),
        (0x18, MessageType::FetchOk),
        (0xD, MessageType::TrackStatus),
        (0x6, MessageType::PublishNamespace),
        (0x50, MessageType::SubscribeNamespace),
        (0x51, MessageType::SubscribeTracks),
        (0x8, MessageType::Namespace),
        (0xE, MessageType::NamespaceDone),
        (0xF, MessageType::PublishBlocked),
        (0x2, MessageType::RequestUpdate),
        (0x7, MessageType::RequestOk),
        (0x5, MessageType::RequestError),
    ];
    for (code, ty) in table {
        assert_eq!(ty.code(), code);
        assert_eq!(MessageType::from_code(code), Some(ty));
    }
    for reserved in message::RESERVED_MESSAGE_TYPES {
        assert_eq!(MessageType::from_code(reserved), None);
        let mut b = Bytes::from(vec![reserved as u8, 0, 0]);
        if reserved >= 0x40 {
            b = Bytes::from(vec![0x80, reserved as u8, 0, 0]);
        }
        assert_eq!(
            ControlMessage::decode(&mut b),
            Err(DecodeError::UnknownMessageType(reserved))
        );
    }
    let first: Vec<MessageType> = MessageType::ALL
        .into_iter()
        .filter(|t| t.starts_request_stream())
        .collect();
    assert_eq!(
        first,
        vec![
            MessageType::Subscribe,
            MessageType::Publish,
            MessageType::Fetch,
            MessageType::TrackStatus,
            MessageType::PublishNamespace,
            MessageType::SubscribeNamespace,
            MessageType::SubscribeTracks
        ]
    );
}

// ------------------------------------------- hand-derived control messages

fn ns(fields: &[&str]) -> TrackNamespace {
    TrackNamespace::new(fields.iter().map(|f| Bytes::copy_from_slice(f.as_bytes()))).unwrap()
}

fn check(msg: ControlMessage, wire: &str) {
    let wire = hex(wire);
    let mut out = Vec::new();
    msg.encode(&mut out).unwrap();
    assert_eq!(out, wire, "{msg:?}");
    let mut b = Bytes::from(wire);
    assert_eq!(ControlMessage::decode(&mut b).unwrap(), msg);
    assert!(b.is_empty());
}

#[test]
fn setup_bytes() {
    // 0x2F00 is a 2-byte varint: 0x80 | 0x2F, 0x00.
    let setup = Setup {
        options: vec![
            SetupOption::Path(Bytes::from_static(b"/moq")),
            SetupOption::MaxAuthTokenCacheSize(4096),
            SetupOption::MoqtImplementation(Bytes::from_static(b"fr")),
        ],
    };
    check(
        ControlMessage::Setup(setup),
        "af00 000d
         01 04 2f6d6f71
         03 9000
         03 02 6672",
    );
}

#[test]
fn subscribe_bytes() {
    let msg = Subscribe {
        request_id: 2,
        track: FullTrackName::new(ns(&["live", "cam"]), Bytes::from_static(b"video")).unwrap(),
        parameters: Parameters {
            forward: Some(true),
            subscriber_priority: Some(0x80),
            subscription_filter: Some(SubscriptionFilter::AbsoluteRange {
                start: Location::new(5, 1),
                end_group_delta: 3,
            }),
            ..Parameters::default()
        },
    };
    check(
        msg.into(),
        "03 001c
         02
         02 04 6c697665 03 63616d
         05 766964656f
         03
         10 01
         10 80
         01 04 04 05 01 03",
    );
}

#[test]
fn goaway_request_error_publish_done_bytes() {
    check(
        GoAway {
            new_session_uri: Bytes::new(),
            timeout: 1000,
            request_id: Some(1),
        }
        .into(),
        "10 0004 00 83e8 01",
    );
    check(
        RequestError {
            error_code: RequestErrorCode::Redirect,
            retry_interval: 1,
            reason: ReasonPhrase::new(&b"moved"[..]).unwrap(),
            redirect: Some(Redirect {
                connect_uri: Bytes::from_static(b"moqt://b"),
                track: FullTrackName::default(),
            }),
        }
        .into(),
        "05 0013 34 01 05 6d6f766564 08 6d6f71743a2f2f62 00 00",
    );
    check(
        PublishDone {
            status_code: PublishDoneCode::TrackEnded,
            stream_count: STREAM_COUNT_UNKNOWN,
            reason: ReasonPhrase::empty(),
        }
        .into(),
        "0b 000b 02 ff3fffffffffffffff 00",
    );
}

#[test]
fn fetch_and_fetch_ok_bytes() {
    check(
        Fetch {
            request_id: 4,
            fetch_type: FetchType::RelativeJoining(JoiningFetch {
                joining_request_id: 2,
                joining_start: 1,
            }),
            parameters: Parameters {
                group_order: Some(GroupOrder::Descending),
                ..Parameters::default()
            },
        }
        .into(),
        "16 0007 04 02 02 01 01 22 02",
    );
    check(
        FetchOk {
            end_of_track: true,
            end_location: Location::new(9, 0),
            parameters: Parameters::default(),
            track_properties: Properties::from_pairs(vec![KeyValuePair::varint(
                property_type::DEFAULT_PUBLISHER_PRIORITY,
                3,
            )
            .unwrap()])
            .unwrap(),
        }
        .into(),
        "18 0006 01 09 00 00 0e 03",
    );
}

#[test]
fn authorization_token_bytes() {
    let msg = PublishNamespace {
        request_id: 6,
        namespace: ns(&["a"]),
        parameters: Parameters {
            authorization_tokens: vec![
                AuthToken::Register {
                    alias: 1,
                    token_type: 0,
                    value: Bytes::from_static(b"tk"),
                },
                AuthToken::UseAlias { alias: 1 },
            ],
            ..Parameters::default()
        },
    };
    // Second token: Type Delta 0 (the parameter repeats).
    check(
        msg.into(),
        "06 0010 06 01 01 61 02 03 05 01 01 00 746b 00 02 02 01",
    );
}

#[test]
fn stream_headers_bytes() {
    let mut out = Vec::new();
    UniStreamHeader::Fetch(FetchHeader { request_id: 300 })
        .encode(&mut out)
        .unwrap();
    assert_eq!(out, hex("05 812c"));
    out.clear();
    UniStreamHeader::Padding.encode(&mut out).unwrap();
    data::stream::encode_padding(3, &mut out);
    // 0x132B3E28 needs 29 bits: a 5-byte varint.
    assert_eq!(out, hex("f0 132b3e28 000000"));
    let mut b = Bytes::from(out);
    assert_eq!(
        UniStreamHeader::decode(&mut b),
        Ok(UniStreamHeader::Padding)
    );
    assert_eq!(b.remaining(), 3);
    out = Vec::new();
    Datagram::Padding { len: 2 }.encode(&mut out).unwrap();
    assert_eq!(out, hex("f0 132b3e29 0000"));
    assert_eq!(
        Datagram::decode(&Bytes::from(out)),
        Ok(Datagram::Padding { len: 2 })
    );
}

#[test]
fn fetch_objects_bytes() {
    // Ascending fetch: {3,0} subgroup 0 prio 5 "a"; {3,1} same subgroup and
    // priority; end of unknown range {5,2}; {6,0} subgroup 4 prio 5.
    let items = [
        FetchItem::Object(FetchObject {
            location: Location::new(3, 0),
            subgroup_id: Some(0),
            publisher_priority: 5,
            properties: Properties::new(),
            payload: Bytes::from_static(b"a"),
        }),
        FetchItem::Object(FetchObject {
            location: Location::new(3, 1),
            subgroup_id: Some(0),
            publisher_priority: 5,
            properties: Properties::new(),
            payload: Bytes::from_static(b"b"),
        }),
        FetchItem::EndOfRange(EndOfRange {
            kind: EndOfRangeKind::Unknown,
            location: Location::new(5, 2),
        }),
        FetchItem::Object(FetchObject {
            location: Location::new(6, 0),
            subgroup_id: Some(4),
            publisher_priority: 5,
            properties: Properties::new(),
            payload: Bytes::new(),
        }),
    ];
    let wire = hex("1c 03 00 05 01 61
         00 01 62
         810c 05 02
         0f 00 04 00 00");
    let mut out = BytesMut::new();
    let mut enc = FetchEncoder::new(GroupOrder::Ascending);
    for item in &items {
        enc.encode_item(item, &mut out).unwrap();
    }
    assert_eq!(&out[..], &wire[..]);
    let mut b = Bytes::from(wire);
    let mut dec = FetchDecoder::new(GroupOrder::Ascending);
    for item in &items {
        assert_eq!(&dec.decode_item(&mut b).unwrap(), item);
    }
    assert!(b.is_empty());
}

#[test]
fn parameter_type_values_table_13() {
    assert_eq!(param_type::OBJECT_DELIVERY_TIMEOUT, 0x02);
    assert_eq!(param_type::AUTHORIZATION_TOKEN, 0x03);
    assert_eq!(param_type::RENDEZVOUS_TIMEOUT, 0x04);
    assert_eq!(param_type::SUBGROUP_DELIVERY_TIMEOUT, 0x06);
    assert_eq!(param_type::EXPIRES, 0x08);
    assert_eq!(param_type::LARGEST_OBJECT, 0x09);
    assert_eq!(param_type::FILL_TIMEOUT, 0x0A);
    assert_eq!(param_type::FORWARD, 0x10);
    assert_eq!(param_type::SUBSCRIBER_PRIORITY, 0x20);
    assert_eq!(param_type::SUBSCRIPTION_FILTER, 0x21);
    assert_eq!(param_type::GROUP_ORDER, 0x22);
    assert_eq!(param_type::NEW_GROUP_REQUEST, 0x32);
    assert_eq!(param_type::TRACK_NAMESPACE_PREFIX, 0x34);
}
