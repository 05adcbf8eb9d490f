//! The Postgres result path: every DataRow from the upstream is decoded, looked at and
//! re-encoded (or rewritten when a cell is masked) on its way to the client.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirewarden_postgres::bytes::{Bytes, BytesMut};
use wirewarden_postgres::{
    BackendDecoder, BackendMessage, CellEdit, DataRow, FieldDescription, Format, Limits,
    RowDescription, RowRewriter, Session, TransactionStatus, types,
};

/// A result set as the server sends it: RowDescription, `rows` DataRows of 8 columns
/// (~120 bytes each), CommandComplete, ReadyForQuery.
fn result_set(rows: usize) -> Bytes {
    let names = [
        "id", "email", "ssn", "name", "city", "created", "score", "active",
    ];
    let types = [23u32, 25, 25, 25, 25, 1114, 1700, 16];
    let fields = names
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (n, t))| FieldDescription {
            name: Bytes::copy_from_slice(n.as_bytes()),
            table_oid: 16_384,
            column_id: i16::try_from(i + 1).unwrap(),
            type_oid: t,
            type_size: -1,
            type_modifier: -1,
            format: 0,
        })
        .collect();
    let mut out = BytesMut::new();
    BackendMessage::RowDescription(RowDescription::new(fields).unwrap())
        .encode(&mut out)
        .unwrap();
    for i in 0..rows {
        let cells = [
            i.to_string(),
            format!("user{i}@example.com"),
            format!("{:03}-45-{:04}", i % 1000, i % 10_000),
            format!("Person Number {i}"),
            "Springfield".to_owned(),
            "2024-05-17 10:11:12.123456".to_owned(),
            format!("{}.{:02}", i * 3, i % 100),
            "t".to_owned(),
        ];
        let row = DataRow::new(cells.iter().map(|c| Some(c.as_bytes()))).unwrap();
        BackendMessage::DataRow(row).encode(&mut out).unwrap();
    }
    BackendMessage::CommandComplete(Bytes::from(format!("SELECT {rows}")))
        .encode(&mut out)
        .unwrap();
    BackendMessage::ReadyForQuery(TransactionStatus::Idle)
        .encode(&mut out)
        .unwrap();
    out.freeze()
}

fn rows(c: &mut Criterion) {
    let input = result_set(10_000);
    let limits = Limits::default();
    let mut g = c.benchmark_group("postgres_datarows");
    g.throughput(Throughput::Bytes(input.len() as u64));

    // Framing only: what a relay does for frames nothing needs to look at.
    g.bench_function("frame_forward_10k_rows", |b| {
        let mut out = BytesMut::with_capacity(input.len());
        b.iter(|| {
            let mut src = BytesMut::from(&input[..]);
            let mut dec = BackendDecoder::new(limits);
            out.clear();
            while let Some(frame) = dec.decode_frame(&mut src).unwrap() {
                out.extend_from_slice(frame.as_bytes());
            }
            black_box(out.len())
        })
    });

    // Typed decode of every message (cell lengths validated) and re-encode.
    g.bench_function("decode_reencode_10k_rows", |b| {
        let mut out = BytesMut::with_capacity(input.len());
        b.iter(|| {
            let mut src = BytesMut::from(&input[..]);
            let mut dec = BackendDecoder::new(limits);
            out.clear();
            while let Some((_, msg)) = dec.decode(&mut src).unwrap() {
                msg.encode(&mut out).unwrap();
            }
            black_box(out.len())
        })
    });

    // Decode, track the session, and rewrite the `ssn` cell of every row with a value
    // encoded for the column's type.
    g.bench_function("decode_rewrite_one_cell_10k_rows", |b| {
        let mut out = BytesMut::with_capacity(input.len());
        let mut rewriter = RowRewriter::new();
        b.iter(|| {
            let mut src = BytesMut::from(&input[..]);
            let mut dec = BackendDecoder::new(limits);
            let mut session = Session::new();
            session
                .on_frontend(&wirewarden_postgres::FrontendMessage::Startup(
                    wirewarden_postgres::StartupMessage {
                        version: wirewarden_postgres::ProtocolVersion::V3_0,
                        parameters: vec![],
                    },
                ))
                .unwrap();
            session
                .on_backend(&BackendMessage::Authentication(
                    wirewarden_postgres::Authentication::Ok,
                ))
                .unwrap();
            session
                .on_backend(&BackendMessage::ReadyForQuery(TransactionStatus::Idle))
                .unwrap();
            session
                .on_frontend(&wirewarden_postgres::FrontendMessage::Query(
                    Bytes::from_static(b"SELECT"),
                ))
                .unwrap();
            out.clear();
            while let Some((frame, msg)) = dec.decode(&mut src).unwrap() {
                session.on_backend(&msg).unwrap();
                if let BackendMessage::DataRow(row) = &msg {
                    let rd = session.row_description().unwrap();
                    let field = &rd.fields()[2];
                    rewriter
                        .rewrite_into(row, &mut out, |i, _, scratch| {
                            if i != 2 {
                                return CellEdit::Keep;
                            }
                            match types::encode_replacement(
                                field.type_oid,
                                Format::Text,
                                "***-**-****",
                                scratch,
                            ) {
                                Ok(()) => CellEdit::Replace,
                                Err(_) => CellEdit::Null,
                            }
                        })
                        .unwrap();
                } else {
                    out.extend_from_slice(frame.as_bytes());
                }
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, rows);
criterion_main!(benches);
