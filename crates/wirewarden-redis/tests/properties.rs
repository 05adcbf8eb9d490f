//! Property tests: round trips, resumable decoding, hostile bytes, and `redis-protocol` as an
//! oracle on valid input.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use wirewarden_redis::redis_protocol::resp2::decode as rp2_decode;
use wirewarden_redis::redis_protocol::resp2::encode as rp2_encode;
use wirewarden_redis::redis_protocol::resp3::decode::complete as rp3_decode;
use wirewarden_redis::redis_protocol::resp3::encode::complete as rp3_encode;
use wirewarden_redis::{
    Limits, ReplyDecoder, Request, RequestDecoder, RespVersion, Value, encode_args, split_args,
};

fn bytes_any() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn utf8_line() -> impl Strategy<Value = Bytes> {
    "[a-zA-Z0-9 _:.-]{0,16}".prop_map(Bytes::from)
}

fn double_text() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Bytes::from(format!("{f}"))),
        Just(Bytes::from_static(b"inf")),
        Just(Bytes::from_static(b"-inf")),
    ]
}

fn resp2_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        utf8_line().prop_map(Value::SimpleString),
        utf8_line().prop_map(Value::SimpleError),
        any::<i64>().prop_map(Value::Integer),
        bytes_any().prop_map(Value::BulkString),
        Just(Value::NullBulkString),
        Just(Value::NullArray),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| vec(inner, 0..6).prop_map(Value::Array))
}

/// RESP3 values. `hashable` leaves only, so maps and sets also fit redis-protocol's
/// hash-based frames; `streamed` adds the streamed forms.
fn resp3_value(streamed: bool) -> BoxedStrategy<Value> {
    let key = prop_oneof![
        utf8_line().prop_map(Value::SimpleString),
        bytes_any().prop_map(Value::BulkString),
        any::<i64>().prop_map(Value::Integer),
    ];
    let leaf = prop_oneof![
        utf8_line().prop_map(Value::SimpleString),
        utf8_line().prop_map(Value::SimpleError),
        any::<i64>().prop_map(Value::Integer),
        bytes_any().prop_map(Value::BulkString),
        Just(Value::Null),
        double_text().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        "-?[1-9][0-9]{0,40}".prop_map(|s| Value::BigNumber(Bytes::from(s))),
        bytes_any().prop_map(Value::BlobError),
        (prop_oneof![Just("txt"), Just("mkd")], bytes_any()).prop_map(|(f, t)| {
            Value::VerbatimString {
                format: Bytes::from_static(f.as_bytes()),
                text: t,
            }
        }),
    ];
    let leaf: BoxedStrategy<Value> = if streamed {
        prop_oneof![
            4 => leaf,
            1 => vec(vec(any::<u8>(), 1..8).prop_map(Bytes::from), 0..4)
                .prop_map(Value::StreamedString),
        ]
        .boxed()
    } else {
        leaf.boxed()
    };
    let key = key.boxed();
    leaf.prop_recursive(4, 48, 5, move |inner| {
        let key = key.clone();
        let pairs = vec((key.clone(), inner.clone()), 0..4).prop_map(|mut p| {
            // Unique keys: redis-protocol's maps are hash maps.
            let mut seen = Vec::new();
            p.retain(|(k, _)| {
                let b = k.to_bytes();
                if seen.contains(&b) {
                    false
                } else {
                    seen.push(b);
                    true
                }
            });
            p
        });
        let set = vec(key.clone(), 0..4).prop_map(|mut items| {
            let mut seen = Vec::new();
            items.retain(|v| {
                let b = v.to_bytes();
                if seen.contains(&b) {
                    false
                } else {
                    seen.push(b);
                    true
                }
            });
            items
        });
        let mut options: Vec<BoxedStrategy<Value>> = vec![
            vec(inner.clone(), 0..5).prop_map(Value::Array).boxed(),
            vec(inner.clone(), 0..5).prop_map(Value::Push).boxed(),
            set.clone().prop_map(Value::Set).boxed(),
            pairs.clone().prop_map(Value::Map).boxed(),
            (
                pairs.clone().prop_filter("non-empty", |p| !p.is_empty()),
                inner.clone(),
            )
                .prop_filter("not null", |(_, v)| {
                    !v.is_null() && !matches!(v, Value::Attributed { .. })
                })
                .prop_map(|(attributes, v)| Value::Attributed {
                    attributes,
                    value: Box::new(v),
                })
                .boxed(),
        ];
        if streamed {
            options.push(
                vec(inner.clone(), 0..4)
                    .prop_map(Value::StreamedArray)
                    .boxed(),
            );
            options.push(set.prop_map(Value::StreamedSet).boxed());
            options.push(pairs.prop_map(Value::StreamedMap).boxed());
        }
        proptest::strategy::Union::new(options)
    })
    .boxed()
}

fn decode_all(buf: &[u8], version: RespVersion) -> Vec<wirewarden_redis::Frame> {
    let mut d = ReplyDecoder::default();
    let mut b = BytesMut::from(buf);
    let mut out = Vec::new();
    while let Some(f) = d.decode(&mut b, version).unwrap() {
        out.push(f);
    }
    assert!(b.is_empty());
    out
}

/// Feeds `buf` in pieces cut at `cuts`, as a socket would.
fn decode_in_pieces(buf: &[u8], cuts: &[usize], version: RespVersion) -> Vec<Bytes> {
    let mut d = ReplyDecoder::default();
    let mut b = BytesMut::new();
    let mut out = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
    points.push(buf.len());
    points.sort_unstable();
    let mut at = 0;
    for p in points {
        b.extend_from_slice(&buf[at..p]);
        at = p;
        while let Some(f) = d.decode(&mut b, version).unwrap() {
            out.push(f.into_raw());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn resp2_round_trip_and_oracle(v in resp2_value(), cuts in vec(any::<usize>(), 0..6)) {
        let wire = v.to_bytes();
        let frames = decode_all(&wire, RespVersion::Resp2);
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(frames[0].raw(), &wire);
        prop_assert_eq!(&frames[0].value().unwrap(), &v);
        prop_assert_eq!(decode_in_pieces(&wire, &cuts, RespVersion::Resp2), vec![wire.clone()]);
        // redis-protocol decodes our encoding to the same frame...
        let (theirs, used) = rp2_decode::decode_bytes(&wire).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(Some(theirs.clone()), v.to_resp2_frame());
        // ...and we decode its encoding to the same value.
        let mut enc = BytesMut::new();
        rp2_encode::extend_encode(&mut enc, &theirs, false).unwrap();
        let ours = decode_all(&enc, RespVersion::Resp2);
        prop_assert_eq!(ours[0].value().unwrap().to_resp2_frame(), Some(theirs));
    }

    #[test]
    fn resp3_round_trip_and_oracle(v in resp3_value(false), cuts in vec(any::<usize>(), 0..6)) {
        let wire = v.to_bytes();
        let frames = decode_all(&wire, RespVersion::Resp3);
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(&frames[0].value().unwrap(), &v);
        prop_assert_eq!(decode_in_pieces(&wire, &cuts, RespVersion::Resp3), vec![wire.clone()]);
        let (theirs, used) = rp3_decode::decode_bytes(&wire).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
        let mine = v.to_resp3_frame().unwrap();
        prop_assert_eq!(&theirs, &mine);
        let mut enc = BytesMut::new();
        rp3_encode::extend_encode(&mut enc, &theirs, false).unwrap();
        let ours = decode_all(&enc, RespVersion::Resp3);
        prop_assert_eq!(ours[0].value().unwrap().to_resp3_frame(), Some(theirs));
    }

    #[test]
    fn streamed_round_trip(v in resp3_value(true), cuts in vec(any::<usize>(), 0..6)) {
        let wire = v.to_bytes();
        let frames = decode_all(&wire, RespVersion::Resp3);
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(&frames[0].value().unwrap(), &v);
        prop_assert_eq!(decode_in_pieces(&wire, &cuts, RespVersion::Resp3), vec![wire.clone()]);
        if let Some(els) = frames[0].elements().unwrap() {
            // Every element is a frame of its own.
            for e in els {
                prop_assert_eq!(decode_all(&e, RespVersion::Resp3).len(), 1);
            }
        }
    }

    #[test]
    fn pipelines_split_back_into_their_frames(vs in vec(resp3_value(true), 1..8), cuts in vec(any::<usize>(), 0..10)) {
        let mut wire = BytesMut::new();
        let mut each = Vec::new();
        for v in &vs {
            let b = v.to_bytes();
            wire.extend_from_slice(&b);
            each.push(b);
        }
        prop_assert_eq!(decode_in_pieces(&wire, &cuts, RespVersion::Resp3), each);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..256)) {
        for version in [RespVersion::Resp2, RespVersion::Resp3] {
            let mut d = ReplyDecoder::new(Limits::default().with_max_depth(8).with_max_elements(64));
            let mut b = BytesMut::from(&data[..]);
            while let Ok(Some(f)) = d.decode(&mut b, version) {
                let v = f.value().unwrap();
                // Whatever we accept re-encodes to something that decodes to the same value.
                let again = decode_all(&v.to_bytes(), RespVersion::Resp3);
                prop_assert_eq!(again[0].value().unwrap(), v);
                let _ = f.elements().unwrap();
            }
        }
        let mut d = RequestDecoder::default();
        let mut b = BytesMut::from(&data[..]);
        while let Ok(Some(r)) = d.decode(&mut b) {
            prop_assert!(!r.args().is_empty());
            let _ = wirewarden_redis::classify(r.args());
        }
    }

    #[test]
    fn mutated_frames_never_panic(v in resp3_value(true), at in any::<usize>(), byte in any::<u8>()) {
        let mut wire = v.to_bytes().to_vec();
        let i = at % wire.len();
        wire[i] = byte;
        let mut d = ReplyDecoder::default();
        let mut b = BytesMut::from(&wire[..]);
        while let Ok(Some(f)) = d.decode(&mut b, RespVersion::Resp3) {
            let _ = f.value().unwrap();
        }
    }

    #[test]
    fn requests_round_trip(args in vec(vec(any::<u8>(), 0..20), 1..8)) {
        let mut wire = BytesMut::new();
        encode_args(&args, &mut wire);
        let raw = wire.clone().freeze();
        let mut d = RequestDecoder::default();
        let r = d.decode(&mut wire).unwrap().unwrap();
        prop_assert_eq!(r.raw(), &raw);
        let got: Vec<Vec<u8>> = r.args().iter().map(|a| a.to_vec()).collect();
        prop_assert_eq!(&got, &args);
        prop_assert_eq!(Request::from_args(args.iter().map(|a| Bytes::from(a.clone()))), r);
    }

    #[test]
    fn pipelined_requests_in_pieces_keep_their_arguments(
        reqs in vec(vec(vec(any::<u8>(), 0..40), 1..6), 1..5),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        // The arguments are collected while the scan goes, however the bytes arrive: one
        // read per piece, split anywhere, several requests in one buffer.
        let mut wire = BytesMut::new();
        for args in &reqs {
            encode_args(args, &mut wire);
        }
        let wire = wire.freeze();
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        at.push(wire.len());
        at.sort_unstable();
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut got: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut from = 0;
        for to in at {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r.args().iter().map(|a| a.to_vec()).collect());
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, reqs);
    }

    #[test]
    fn inline_quoting_round_trips(args in vec(vec(1u8..=255, 1..12), 1..6)) {
        // Quote every argument the way redis-cli does; the server's splitter gives them back.
        let mut line = Vec::new();
        for a in &args {
            line.push(b'"');
            for &b in a {
                match b {
                    b'"' => line.extend_from_slice(b"\\\""),
                    b'\\' => line.extend_from_slice(b"\\\\"),
                    0x20..=0x7e => line.push(b),
                    _ => line.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                }
            }
            line.extend_from_slice(b"\" ");
        }
        let got: Vec<Vec<u8>> = split_args(&Bytes::from(line)).unwrap().iter().map(|a| a.to_vec()).collect();
        prop_assert_eq!(got, args);
    }
}
