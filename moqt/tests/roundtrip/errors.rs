//! Control messages the decoder must refuse, and ones the encoder must.

use super::*;

fn frame(ty: u64, payload: &[u8]) -> Bytes {
    let mut v = Vec::new();
    varint::encode(ty, &mut v);
    v.put_u16(payload.len() as u16);
    v.extend_from_slice(payload);
    Bytes::from(v)
}

fn decode_err(ty: u64, payload: &[u8]) -> DecodeError {
    ControlMessage::decode(&mut frame(ty, payload)).unwrap_err()
}

#[test]
fn control_message_errors() {
    // Unknown type: rejected as soon as the type is read.
    assert_eq!(
        ControlMessage::decode(&mut Bytes::from_static(&[0x42])),
        Err(DecodeError::UnknownMessageType(0x42))
    );
    // Length larger than the payload: Truncated.
    assert_eq!(
        decode_err(0x3, &[1]),
        DecodeError::Truncated {
            context: "control message"
        }
    );
    // Trailing bytes after the last field (length mismatch).
    assert_eq!(
        decode_err(0xE, &[0, 0xAA]),
        DecodeError::TrailingBytes {
            context: "control message",
            count: 1
        }
    );
    // Unknown parameter.
    assert_eq!(
        decode_err(0x2, &[0, 1, 0x05, 0]),
        DecodeError::UnknownParameter(0x05)
    );
    // Parameter not allowed in this message: FILL_TIMEOUT in SUBSCRIBE.
    assert_eq!(
        decode_err(0x3, &[0, 0, 0, 1, 0x0A, 0]),
        DecodeError::ParameterNotAllowed {
            parameter: 0x0A,
            message: MessageType::Subscribe
        }
    );
    // Duplicate parameter: FORWARD twice (type delta 0).
    assert_eq!(
        decode_err(0x2, &[0, 2, 0x10, 1, 0x00, 1]),
        DecodeError::DuplicateParameter(0x10)
    );
    // FORWARD out of range; GROUP_ORDER out of range.
    assert_eq!(
        decode_err(0x2, &[0, 1, 0x10, 2]),
        DecodeError::InvalidValue {
            field: "forward",
            value: 2
        }
    );
    assert_eq!(
        decode_err(0x3, &[0, 0, 0, 1, 0x22, 3]),
        DecodeError::InvalidValue {
            field: "group order",
            value: 3
        }
    );
    // Parameter type overflowing 2^64-1.
    let mut p = vec![0, 2, 0x10, 1];
    varint::encode(u64::MAX, &mut p);
    assert_eq!(
        decode_err(0x2, &p),
        DecodeError::Overflow {
            field: "parameter type"
        }
    );
    // Bad filter type; AbsoluteRange end group overflow; filter with trailing
    // bytes inside its length.
    assert_eq!(
        decode_err(0x2, &[0, 1, 0x21, 1, 5]),
        DecodeError::InvalidValue {
            field: "filter type",
            value: 5
        }
    );
    let mut f = vec![0x04];
    varint::encode(u64::MAX, &mut f);
    f.extend_from_slice(&[0, 1]);
    let mut p = vec![0, 1, 0x21, f.len() as u8];
    p.extend_from_slice(&f);
    assert_eq!(
        decode_err(0x2, &p),
        DecodeError::Overflow { field: "end group" }
    );
    assert_eq!(
        decode_err(0x2, &[0, 1, 0x21, 2, 1, 0]),
        DecodeError::TrailingBytes {
            context: "subscription filter",
            count: 1
        }
    );
    // Malformed token: KEY_VALUE_FORMATTING_ERROR.
    for token in [&[][..], &[4, 0], &[0], &[0, 1, 2], &[2, 1, 0]] {
        let mut p = vec![0, 1, 0x03, token.len() as u8];
        p.extend_from_slice(token);
        let e = decode_err(0x2, &p);
        assert_eq!(
            e,
            DecodeError::KeyValueFormatting { key: 0x03 },
            "{token:?}"
        );
        assert_eq!(
            e.session_error_code(),
            Some(SessionErrorCode::KeyValueFormattingError)
        );
    }
    // Namespace limits: 33 fields; an empty field; 4097 bytes.
    let mut p = vec![33];
    for _ in 0..33 {
        p.extend_from_slice(&[1, b'x']);
    }
    assert_eq!(
        decode_err(0x8, &p),
        DecodeError::TooLong {
            field: "track namespace fields",
            limit: 32,
            actual: 33
        }
    );
    assert_eq!(decode_err(0x8, &[1, 0]), DecodeError::EmptyNamespaceField);
    let mut p = vec![2, 0x8f, 0xff]; // field of 4095 bytes
    p.extend(std::iter::repeat_n(b'x', 4095));
    p.extend_from_slice(&[2, b'y', b'z']);
    assert!(matches!(
        decode_err(0x8, &p),
        DecodeError::TooLong {
            field: "track namespace",
            ..
        }
    ));
    // Full Track Name over 4096 (4095-byte field + 2-byte name).
    let mut p = vec![0, 1, 0x8f, 0xff];
    p.extend(std::iter::repeat_n(b'x', 4095));
    p.extend_from_slice(&[2, b'y', b'z', 0]);
    assert!(matches!(
        decode_err(0x3, &p),
        DecodeError::TooLong {
            field: "full track name",
            ..
        }
    ));
    // Reason phrase over 1024; GOAWAY URI over 8192.
    let mut p = vec![0, 0, 0x84, 0x01];
    p.extend(std::iter::repeat_n(b'r', 1025));
    assert!(matches!(
        decode_err(0xB, &p),
        DecodeError::TooLong {
            field: "reason phrase",
            ..
        }
    ));
    let mut p = vec![0xA0, 0x01];
    p.extend(std::iter::repeat_n(b'u', 8193));
    p.push(0);
    assert!(matches!(
        decode_err(0x10, &p),
        DecodeError::TooLong {
            field: "new session uri",
            ..
        }
    ));
    // Fetch type and End Of Track out of range.
    assert_eq!(
        decode_err(0x16, &[0, 4, 0]),
        DecodeError::InvalidValue {
            field: "fetch type",
            value: 4
        }
    );
    assert_eq!(
        decode_err(0x18, &[2, 0, 0, 0]),
        DecodeError::InvalidValue {
            field: "end of track",
            value: 2
        }
    );
    // Setup option value over 65535 bytes cannot even be framed; a KVP
    // type delta overflow in SETUP is a PROTOCOL_VIOLATION.
    let mut p = vec![0x01, 0];
    varint::encode(u64::MAX, &mut p);
    p.push(0);
    assert_eq!(
        decode_err(0x2F00, &p),
        DecodeError::Overflow {
            field: "setup option type"
        }
    );
    assert_eq!(
        DecodeError::Overflow { field: "x" }.session_error_code(),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn control_message_encode_errors() {
    // Payload over 65535 bytes.
    let big = Publish {
        request_id: 0,
        track: track(&["a"], "b"),
        track_alias: 0,
        parameters: Parameters::default(),
        track_properties: Properties::from_pairs(
            (0..3)
                .map(|i| KeyValuePair::bytes(2 * i + 1, vec![0u8; 30_000]).unwrap())
                .collect(),
        )
        .unwrap(),
    };
    let mut out = Vec::new();
    assert!(matches!(
        ControlMessage::from(big).encode(&mut out),
        Err(EncodeError::TooLong { limit: 65535, .. })
    ));
    assert!(out.is_empty(), "nothing written on error");
    // Parameter not allowed.
    let m = Subscribe {
        request_id: 0,
        track: FullTrackName::default(),
        parameters: Parameters {
            fill_timeout: Some(1),
            ..Parameters::default()
        },
    };
    assert_eq!(
        ControlMessage::from(m).encode(&mut out),
        Err(EncodeError::ParameterNotAllowed {
            parameter: 0x0A,
            message: MessageType::Subscribe
        })
    );
    // Redirect without the REDIRECT code and the reverse.
    let mut e = RequestError {
        error_code: RequestErrorCode::Timeout,
        retry_interval: 0,
        reason: ReasonPhrase::empty(),
        redirect: Some(Redirect::default()),
    };
    assert!(ControlMessage::from(e.clone()).encode(&mut out).is_err());
    e.error_code = RequestErrorCode::Redirect;
    e.redirect = None;
    assert!(ControlMessage::from(e).encode(&mut out).is_err());
    // Filter end group overflow.
    let m = RequestUpdate {
        request_id: 0,
        parameters: Parameters {
            subscription_filter: Some(SubscriptionFilter::AbsoluteRange {
                start: Location::new(u64::MAX, 0),
                end_group_delta: 1,
            }),
            ..Parameters::default()
        },
    };
    assert!(ControlMessage::from(m).encode(&mut out).is_err());
    // GOAWAY URI too long.
    let g = GoAway {
        new_session_uri: Bytes::from(vec![b'u'; 8193]),
        timeout: 0,
        request_id: None,
    };
    assert!(ControlMessage::from(g).encode(&mut out).is_err());
    assert!(out.is_empty());
    // Validated constructors.
    assert!(ReasonPhrase::new(vec![0u8; 1025]).is_err());
    assert_eq!(
        ReasonPhrase::truncated(&"ü".repeat(1000)).as_bytes().len(),
        1024
    );
    assert!(TrackNamespace::new((0..33).map(|_| b("x"))).is_err());
    assert!(TrackNamespace::new([b("")]).is_err());
    assert!(TrackNamespace::new([Bytes::from(vec![1u8; 4097])]).is_err());
    assert!(FullTrackName::new(
        TrackNamespace::new([Bytes::from(vec![1u8; 4096])]).unwrap(),
        b("x")
    )
    .is_err());
    assert!(KeyValuePair::varint(1, 0).is_err());
    assert!(KeyValuePair::bytes(2, Bytes::new()).is_err());
    assert!(KeyValuePair::bytes(1, vec![0u8; 65536]).is_err());
}
