//! Differential test: every backend message postgres-protocol knows is encoded here and
//! parsed by `postgres_protocol::message::backend::Message::parse`, and both must agree.

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message as Oracle;
use proptest::prelude::*;
use wirewarden_postgres::backend::Authentication;
use wirewarden_postgres::{
    BackendMessage, CopyResponse, DataRow, ErrorFields, FieldDescription, RowDescription,
    TransactionStatus,
};

fn text() -> impl Strategy<Value = Bytes> {
    "[a-zA-Z0-9 _.,-]{0,12}".prop_map(Bytes::from)
}

fn blob() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn msg() -> impl Strategy<Value = BackendMessage> {
    prop_oneof![
        Just(BackendMessage::Authentication(Authentication::Ok)),
        Just(BackendMessage::Authentication(
            Authentication::CleartextPassword
        )),
        any::<[u8; 4]>()
            .prop_map(|salt| BackendMessage::Authentication(Authentication::Md5Password { salt })),
        prop::collection::vec("[A-Z0-9-]{1,20}".prop_map(Bytes::from), 0..3).prop_map(
            |mechanisms| BackendMessage::Authentication(Authentication::Sasl { mechanisms })
        ),
        blob().prop_map(|d| BackendMessage::Authentication(Authentication::SaslContinue(d))),
        blob().prop_map(|d| BackendMessage::Authentication(Authentication::SaslFinal(d))),
        (any::<i32>(), any::<[u8; 4]>()).prop_map(|(process_id, k)| {
            BackendMessage::BackendKeyData {
                process_id,
                secret_key: Bytes::copy_from_slice(&k),
            }
        }),
        Just(BackendMessage::BindComplete),
        Just(BackendMessage::CloseComplete),
        text().prop_map(BackendMessage::CommandComplete),
        blob().prop_map(BackendMessage::CopyData),
        Just(BackendMessage::CopyDone),
        (0i8..=1, prop::collection::vec(0i16..=1, 0..5)).prop_map(|(format, column_formats)| {
            BackendMessage::CopyInResponse(CopyResponse {
                format,
                column_formats,
            })
        }),
        (0i8..=1, prop::collection::vec(0i16..=1, 0..5)).prop_map(|(format, column_formats)| {
            BackendMessage::CopyOutResponse(CopyResponse {
                format,
                column_formats,
            })
        }),
        prop::collection::vec(prop::option::of(blob()), 0..6).prop_map(|cells| {
            BackendMessage::DataRow(DataRow::new(cells.iter().map(|c| c.as_deref())).unwrap())
        }),
        Just(BackendMessage::EmptyQueryResponse),
        prop::collection::vec((b'A'..=b'z', text()), 0..6)
            .prop_map(|fields| BackendMessage::ErrorResponse(ErrorFields { fields })),
        prop::collection::vec((b'A'..=b'z', text()), 0..6)
            .prop_map(|fields| BackendMessage::NoticeResponse(ErrorFields { fields })),
        Just(BackendMessage::NoData),
        (any::<i32>(), text(), text()).prop_map(|(process_id, channel, payload)| {
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            }
        }),
        prop::collection::vec(any::<u32>(), 0..6).prop_map(BackendMessage::ParameterDescription),
        (text(), text()).prop_map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        Just(BackendMessage::ParseComplete),
        Just(BackendMessage::PortalSuspended),
        prop_oneof![
            Just(TransactionStatus::Idle),
            Just(TransactionStatus::InTransaction),
            Just(TransactionStatus::Failed)
        ]
        .prop_map(BackendMessage::ReadyForQuery),
        prop::collection::vec(
            (
                text(),
                any::<u32>(),
                any::<i16>(),
                any::<u32>(),
                any::<i16>(),
                any::<i32>(),
                0i16..=1
            ),
            0..5
        )
        .prop_map(|fields| {
            let fields = fields
                .into_iter()
                .map(
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
                .collect();
            BackendMessage::RowDescription(RowDescription::new(fields).unwrap())
        }),
    ]
}

fn s(b: &Bytes) -> &str {
    std::str::from_utf8(b).unwrap()
}

fn check(ours: &BackendMessage, theirs: Oracle) {
    match (ours, theirs) {
        (BackendMessage::Authentication(Authentication::Ok), Oracle::AuthenticationOk)
        | (
            BackendMessage::Authentication(Authentication::CleartextPassword),
            Oracle::AuthenticationCleartextPassword,
        )
        | (BackendMessage::BindComplete, Oracle::BindComplete)
        | (BackendMessage::CloseComplete, Oracle::CloseComplete)
        | (BackendMessage::CopyDone, Oracle::CopyDone)
        | (BackendMessage::EmptyQueryResponse, Oracle::EmptyQueryResponse)
        | (BackendMessage::NoData, Oracle::NoData)
        | (BackendMessage::ParseComplete, Oracle::ParseComplete)
        | (BackendMessage::PortalSuspended, Oracle::PortalSuspended) => {}
        (
            BackendMessage::Authentication(Authentication::Md5Password { salt }),
            Oracle::AuthenticationMd5Password(b),
        ) => {
            assert_eq!(*salt, b.salt())
        }
        (
            BackendMessage::Authentication(Authentication::Sasl { mechanisms }),
            Oracle::AuthenticationSasl(b),
        ) => {
            let theirs: Vec<String> = b.mechanisms().map(|m| Ok(m.to_owned())).collect().unwrap();
            let ours: Vec<&str> = mechanisms.iter().map(s).collect();
            assert_eq!(ours, theirs);
        }
        (
            BackendMessage::Authentication(Authentication::SaslContinue(d)),
            Oracle::AuthenticationSaslContinue(b),
        ) => {
            assert_eq!(&d[..], b.data())
        }
        (
            BackendMessage::Authentication(Authentication::SaslFinal(d)),
            Oracle::AuthenticationSaslFinal(b),
        ) => {
            assert_eq!(&d[..], b.data())
        }
        (
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            },
            Oracle::BackendKeyData(b),
        ) => {
            assert_eq!(*process_id, b.process_id());
            assert_eq!(&secret_key[..], &b.secret_key().to_be_bytes());
        }
        (BackendMessage::CommandComplete(t), Oracle::CommandComplete(b)) => {
            assert_eq!(s(t), b.tag().unwrap())
        }
        (BackendMessage::CopyData(d), Oracle::CopyData(b)) => assert_eq!(&d[..], b.data()),
        (BackendMessage::CopyInResponse(c), Oracle::CopyInResponse(b)) => {
            assert_eq!(c.format as u8, b.format());
            let f: Vec<i16> = b.column_formats().map(|f| Ok(f as i16)).collect().unwrap();
            assert_eq!(c.column_formats, f);
        }
        (BackendMessage::CopyOutResponse(c), Oracle::CopyOutResponse(b)) => {
            assert_eq!(c.format as u8, b.format());
            let f: Vec<i16> = b.column_formats().map(|f| Ok(f as i16)).collect().unwrap();
            assert_eq!(c.column_formats, f);
        }
        (BackendMessage::DataRow(row), Oracle::DataRow(b)) => {
            let buf = b.buffer();
            let theirs: Vec<Option<&[u8]>> = b
                .ranges()
                .map(|r| Ok(r.map(|r| &buf[r])))
                .collect()
                .unwrap();
            let ours: Vec<Option<&[u8]>> = row.cells().collect();
            assert_eq!(ours, theirs);
        }
        (BackendMessage::ErrorResponse(e), Oracle::ErrorResponse(b)) => fields(e, b.fields()),
        (BackendMessage::NoticeResponse(e), Oracle::NoticeResponse(b)) => fields(e, b.fields()),
        (
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            },
            Oracle::NotificationResponse(b),
        ) => {
            assert_eq!(*process_id, b.process_id());
            assert_eq!(s(channel), b.channel().unwrap());
            assert_eq!(s(payload), b.message().unwrap());
        }
        (BackendMessage::ParameterDescription(t), Oracle::ParameterDescription(b)) => {
            let theirs: Vec<u32> = b.parameters().collect().unwrap();
            assert_eq!(t, &theirs);
        }
        (BackendMessage::ParameterStatus { name, value }, Oracle::ParameterStatus(b)) => {
            assert_eq!(s(name), b.name().unwrap());
            assert_eq!(s(value), b.value().unwrap());
        }
        (BackendMessage::ReadyForQuery(st), Oracle::ReadyForQuery(b)) => {
            assert_eq!(st.byte(), b.status())
        }
        (BackendMessage::RowDescription(rd), Oracle::RowDescription(b)) => {
            let theirs: Vec<FieldDescription> = b
                .fields()
                .map(|f| {
                    Ok(FieldDescription {
                        name: Bytes::copy_from_slice(f.name().as_bytes()),
                        table_oid: f.table_oid(),
                        column_id: f.column_id(),
                        type_oid: f.type_oid(),
                        type_size: f.type_size(),
                        type_modifier: f.type_modifier(),
                        format: f.format(),
                    })
                })
                .collect()
                .unwrap();
            assert_eq!(rd.fields(), &theirs[..]);
        }
        (ours, _) => panic!("postgres-protocol parsed {ours:?} as something else"),
    }
}

fn fields(ours: &ErrorFields, mut theirs: postgres_protocol::message::backend::ErrorFields<'_>) {
    let mut t = Vec::new();
    while let Some(f) = theirs.next().unwrap() {
        t.push((f.type_(), f.value_bytes().to_vec()));
    }
    let o: Vec<(u8, Vec<u8>)> = ours.fields.iter().map(|(c, v)| (*c, v.to_vec())).collect();
    assert_eq!(o, t);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn postgres_protocol_agrees(m in msg()) {
        let mut wire = BytesMut::new();
        m.encode(&mut wire).unwrap();
        let theirs = Oracle::parse(&mut wire).unwrap().expect("whole message");
        prop_assert!(wire.is_empty());
        check(&m, theirs);
    }
}
