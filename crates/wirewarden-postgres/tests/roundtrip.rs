//! Property tests: every message of both directions survives encode → decode unchanged and
//! re-encodes to the same bytes; arbitrary bytes never panic any decoder.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use wirewarden_postgres::backend::Authentication;
use wirewarden_postgres::frontend::{Bind, CancelRequest, FunctionCall, Parse};
use wirewarden_postgres::{
    AuthContext, BackendDecoder, BackendMessage, CopyResponse, DataRow, ErrorFields,
    FieldDescription, FrontendDecoder, FrontendMessage, Limits, ObjectType, ProtocolVersion,
    RowDescription, StartupMessage, TransactionStatus,
};

fn cstr() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(1u8..=255, 0..16).prop_map(Bytes::from)
}

fn nonempty_cstr() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(1u8..=255, 1..16).prop_map(Bytes::from)
}

fn blob() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from)
}

fn nullable() -> impl Strategy<Value = Option<Bytes>> {
    prop::option::of(blob())
}

fn key() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 4..=256).prop_map(Bytes::from)
}

fn object_type() -> impl Strategy<Value = ObjectType> {
    prop_oneof![Just(ObjectType::Statement), Just(ObjectType::Portal)]
}

fn startup() -> impl Strategy<Value = FrontendMessage> {
    prop_oneof![
        (
            prop_oneof![Just(ProtocolVersion::V3_0), Just(ProtocolVersion::V3_2)],
            prop::collection::vec((nonempty_cstr(), cstr()), 0..6)
        )
            .prop_map(
                |(version, parameters)| FrontendMessage::Startup(StartupMessage {
                    version,
                    parameters
                })
            ),
        Just(FrontendMessage::SslRequest),
        Just(FrontendMessage::GssEncRequest),
        (any::<i32>(), key()).prop_map(|(process_id, secret_key)| {
            FrontendMessage::CancelRequest(CancelRequest {
                process_id,
                secret_key,
            })
        }),
    ]
}

fn frontend() -> impl Strategy<Value = (FrontendMessage, AuthContext)> {
    let u = AuthContext::Unknown;
    prop_oneof![
        (
            cstr(),
            cstr(),
            prop::collection::vec(any::<i16>(), 0..4),
            prop::collection::vec(nullable(), 0..6),
            prop::collection::vec(any::<i16>(), 0..4)
        )
            .prop_map(
                move |(portal, statement, param_formats, params, result_formats)| {
                    (
                        FrontendMessage::Bind(Bind {
                            portal,
                            statement,
                            param_formats,
                            params,
                            result_formats,
                        }),
                        u,
                    )
                }
            ),
        (object_type(), cstr())
            .prop_map(move |(kind, name)| (FrontendMessage::Close { kind, name }, u)),
        (object_type(), cstr())
            .prop_map(move |(kind, name)| (FrontendMessage::Describe { kind, name }, u)),
        blob().prop_map(move |d| (FrontendMessage::CopyData(d), u)),
        Just((FrontendMessage::CopyDone, u)),
        cstr().prop_map(move |m| (FrontendMessage::CopyFail(m), u)),
        (cstr(), any::<i32>())
            .prop_map(move |(portal, max_rows)| (FrontendMessage::Execute { portal, max_rows }, u)),
        Just((FrontendMessage::Flush, u)),
        (
            any::<u32>(),
            prop::collection::vec(any::<i16>(), 0..4),
            prop::collection::vec(nullable(), 0..4),
            any::<i16>()
        )
            .prop_map(move |(function, arg_formats, args, result_format)| {
                (
                    FrontendMessage::FunctionCall(FunctionCall {
                        function,
                        arg_formats,
                        args,
                        result_format,
                    }),
                    u,
                )
            }),
        (cstr(), cstr(), prop::collection::vec(any::<u32>(), 0..6)).prop_map(
            move |(name, query, param_types)| {
                (
                    FrontendMessage::Parse(Parse {
                        name,
                        query,
                        param_types,
                    }),
                    u,
                )
            }
        ),
        cstr().prop_map(move |q| (FrontendMessage::Query(q), u)),
        Just((FrontendMessage::Sync, u)),
        Just((FrontendMessage::Terminate, u)),
        cstr().prop_map(|p| (FrontendMessage::PasswordMessage(p), AuthContext::Password)),
        (nonempty_cstr(), nullable()).prop_map(|(mechanism, data)| {
            (
                FrontendMessage::SaslInitialResponse { mechanism, data },
                AuthContext::SaslInitial,
            )
        }),
        blob().prop_map(|d| (FrontendMessage::SaslResponse(d), AuthContext::Sasl)),
        blob().prop_map(|d| (FrontendMessage::GssResponse(d), AuthContext::Gss)),
        blob().prop_map(move |d| (FrontendMessage::AuthResponse(d), u)),
    ]
}

fn field() -> impl Strategy<Value = FieldDescription> {
    (
        cstr(),
        any::<u32>(),
        any::<i16>(),
        any::<u32>(),
        any::<i16>(),
        any::<i32>(),
        any::<i16>(),
    )
        .prop_map(
            |(name, table_oid, column_id, type_oid, type_size, type_modifier, format)| {
                FieldDescription {
                    name,
                    table_oid,
                    column_id,
                    type_oid,
                    type_size,
                    type_modifier,
                    format,
                }
            },
        )
}

fn error_fields() -> impl Strategy<Value = ErrorFields> {
    prop::collection::vec((1u8..=255, cstr()), 0..8).prop_map(|fields| ErrorFields { fields })
}

fn copy_response() -> impl Strategy<Value = CopyResponse> {
    (any::<i8>(), prop::collection::vec(any::<i16>(), 0..6)).prop_map(|(format, column_formats)| {
        CopyResponse {
            format,
            column_formats,
        }
    })
}

fn authentication() -> impl Strategy<Value = Authentication> {
    prop_oneof![
        Just(Authentication::Ok),
        Just(Authentication::KerberosV5),
        Just(Authentication::CleartextPassword),
        any::<[u8; 4]>().prop_map(|salt| Authentication::Md5Password { salt }),
        Just(Authentication::ScmCredential),
        Just(Authentication::Gss),
        blob().prop_map(Authentication::GssContinue),
        Just(Authentication::Sspi),
        prop::collection::vec(nonempty_cstr(), 0..4)
            .prop_map(|mechanisms| Authentication::Sasl { mechanisms }),
        blob().prop_map(Authentication::SaslContinue),
        blob().prop_map(Authentication::SaslFinal),
    ]
}

fn backend() -> impl Strategy<Value = BackendMessage> {
    prop_oneof![
        authentication().prop_map(BackendMessage::Authentication),
        (any::<i32>(), key()).prop_map(|(process_id, secret_key)| {
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            }
        }),
        Just(BackendMessage::BindComplete),
        Just(BackendMessage::CloseComplete),
        cstr().prop_map(BackendMessage::CommandComplete),
        blob().prop_map(BackendMessage::CopyData),
        Just(BackendMessage::CopyDone),
        copy_response().prop_map(BackendMessage::CopyInResponse),
        copy_response().prop_map(BackendMessage::CopyOutResponse),
        copy_response().prop_map(BackendMessage::CopyBothResponse),
        prop::collection::vec(nullable(), 0..8).prop_map(|cells| {
            BackendMessage::DataRow(DataRow::new(cells.iter().map(|c| c.as_deref())).unwrap())
        }),
        Just(BackendMessage::EmptyQueryResponse),
        error_fields().prop_map(BackendMessage::ErrorResponse),
        nullable().prop_map(BackendMessage::FunctionCallResponse),
        (any::<u32>(), prop::collection::vec(cstr(), 0..4)).prop_map(
            |(newest_minor, unrecognized)| {
                BackendMessage::NegotiateProtocolVersion {
                    newest_minor,
                    unrecognized,
                }
            }
        ),
        Just(BackendMessage::NoData),
        error_fields().prop_map(BackendMessage::NoticeResponse),
        (any::<i32>(), cstr(), cstr()).prop_map(|(process_id, channel, payload)| {
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            }
        }),
        prop::collection::vec(any::<u32>(), 0..8).prop_map(BackendMessage::ParameterDescription),
        (cstr(), cstr()).prop_map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        Just(BackendMessage::ParseComplete),
        Just(BackendMessage::PortalSuspended),
        prop_oneof![
            Just(TransactionStatus::Idle),
            Just(TransactionStatus::InTransaction),
            Just(TransactionStatus::Failed)
        ]
        .prop_map(BackendMessage::ReadyForQuery),
        prop::collection::vec(field(), 0..6)
            .prop_map(|f| BackendMessage::RowDescription(RowDescription::new(f).unwrap())),
        any::<bool>().prop_map(BackendMessage::SslResponse),
        any::<bool>().prop_map(BackendMessage::GssEncResponse),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frontend_round_trip((msg, ctx) in frontend()) {
        let mut wire = BytesMut::new();
        msg.encode(&mut wire).unwrap();
        let encoded = wire.clone().freeze();
        let mut dec = FrontendDecoder::established(Limits::default());
        dec.set_auth_context(ctx);
        let (frame, back) = dec.decode(&mut wire).unwrap().expect("whole frame");
        prop_assert!(wire.is_empty());
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(frame.as_bytes(), &encoded);
        prop_assert_eq!(msg.to_frame().unwrap(), frame);
    }

    #[test]
    fn startup_round_trip(msg in startup()) {
        let mut wire = BytesMut::new();
        msg.encode(&mut wire).unwrap();
        let encoded = wire.clone().freeze();
        let mut dec = FrontendDecoder::new(Limits::default());
        let (frame, back) = dec.decode(&mut wire).unwrap().expect("whole frame");
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(frame.as_bytes(), &encoded);
        // Only a StartupMessage ends the startup phase.
        prop_assert_eq!(dec.in_startup(), !matches!(msg, FrontendMessage::Startup(_)));
    }

    #[test]
    fn backend_round_trip(msg in backend()) {
        let mut wire = BytesMut::new();
        msg.encode(&mut wire).unwrap();
        let encoded = wire.clone().freeze();
        let mut dec = BackendDecoder::new(Limits::default());
        match msg {
            BackendMessage::SslResponse(_) => dec.expect_ssl_response(),
            BackendMessage::GssEncResponse(_) => dec.expect_gssenc_response(),
            _ => {}
        }
        let (frame, back) = dec.decode(&mut wire).unwrap().expect("whole frame");
        prop_assert!(wire.is_empty());
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(frame.as_bytes(), &encoded);
    }

    #[test]
    fn split_anywhere_decodes_the_same(msgs in prop::collection::vec(backend(), 1..6), cut in any::<prop::sample::Index>()) {
        let msgs: Vec<_> = msgs.into_iter().filter(|m| m.tag().is_some()).collect();
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire).unwrap();
        }
        let cut = cut.index(wire.len() + 1);
        let mut rest = wire.split_off(cut);
        let mut buf = wire;
        let mut dec = BackendDecoder::new(Limits::default());
        let mut got = Vec::new();
        while let Some((_, m)) = dec.decode(&mut buf).unwrap() {
            got.push(m);
        }
        buf.unsplit(rest.split());
        while let Some((_, m)) = dec.decode(&mut buf).unwrap() {
            got.push(m);
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        wirewarden_postgres::fuzzing::frontend(&data);
        wirewarden_postgres::fuzzing::backend(&data);
        wirewarden_postgres::fuzzing::startup(&data);
    }

    #[test]
    fn arbitrary_bodies_never_panic(tag in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..128)) {
        // A well-framed message with a random body exercises every body parser.
        let mut data = vec![tag];
        data.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
        data.extend_from_slice(&body);
        wirewarden_postgres::fuzzing::frontend(&data);
        wirewarden_postgres::fuzzing::backend(&data);
        let mut startup = (i32::try_from(body.len()).unwrap() + 8).to_be_bytes().to_vec();
        startup.extend_from_slice(&[0, 3, 0, tag & 3]);
        startup.extend_from_slice(&body);
        wirewarden_postgres::fuzzing::startup(&startup);
    }
}

#[test]
fn limits_are_checked_before_reserving() {
    let limits = Limits::with_max_message_len(1024);
    let mut dec = BackendDecoder::new(limits);
    let mut b = BytesMut::from(&[b'D', 0x7f, 0xff, 0xff, 0xff][..]);
    let e = dec.decode_frame(&mut b).unwrap_err();
    assert_eq!(e.sqlstate(), "54000");
    assert!(b.capacity() < 1 << 20);
    let mut b = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
    let e = FrontendDecoder::established(limits)
        .decode_frame(&mut b)
        .unwrap_err();
    assert_eq!(e.sqlstate(), "08P01");
    let mut b = BytesMut::from(&[0, 0, 0x27, 0x11][..]); // 10001 > 10000
    assert!(FrontendDecoder::new(limits).decode_frame(&mut b).is_err());
    // The error becomes a proper ErrorResponse.
    let BackendMessage::ErrorResponse(f) = e.to_error_response() else {
        panic!()
    };
    assert_eq!(f.code(), Some("08P01"));
    assert_eq!(f.severity(), Some("FATAL"));
    let mut out = BytesMut::new();
    e.to_error_response().encode(&mut out).unwrap();
    assert_eq!(out.first(), Some(&b'E'));
}

#[test]
fn fixed_and_small_messages_are_bounded_by_their_header() {
    let limits = Limits::default();
    // A "Sync" declaring 100 MB is refused at the header, nothing buffered.
    let mut b = BytesMut::from(&[b'S', 0x06, 0, 0, 0][..]);
    assert!(
        FrontendDecoder::established(limits)
            .decode_frame(&mut b)
            .is_err()
    );
    let mut b = BytesMut::from(&[b'Z', 0, 0, 0, 6][..]);
    assert!(BackendDecoder::new(limits).decode_frame(&mut b).is_err());
    // Describe and BackendKeyData use the server's small limit.
    let mut b = BytesMut::from(&[b'D', 0, 0, 0x27, 0x11][..]);
    let e = FrontendDecoder::established(limits)
        .decode_frame(&mut b)
        .unwrap_err();
    assert_eq!(e.sqlstate(), "54000");
    let mut b = BytesMut::from(&[b'K', 0, 1, 0, 0][..]);
    assert!(BackendDecoder::new(limits).decode_frame(&mut b).is_err());
    // A large Query is fine.
    let mut b = BytesMut::from(&[b'Q', 0, 1, 0, 0][..]);
    assert!(
        FrontendDecoder::established(limits)
            .decode_frame(&mut b)
            .unwrap()
            .is_none()
    );
}
