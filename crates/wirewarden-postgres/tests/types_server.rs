//! The type encodings checked against a real PostgreSQL: for every supported type, the
//! server's own text and binary output decodes to the value we parse from the literal, our
//! binary encoding is byte-for-byte what the server sends, and the server accepts our binary
//! encoding as a parameter and prints it back as the same value.

use bytes::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type as PgType, to_sql_checked};
use wirewarden_postgres::types::{Format, Type, Value, encode_replacement};

#[derive(Debug)]
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(
        _: &PgType,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &PgType) -> bool {
        true
    }
}

/// A parameter sent in binary exactly as our encoder wrote it.
#[derive(Debug)]
struct Ours(Vec<u8>);

impl ToSql for Ours {
    fn to_sql(
        &self,
        _: &PgType,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &PgType) -> bool {
        true
    }

    to_sql_checked!();
}

const CASES: &[(&str, Type, &str)] = &[
    ("bool", Type::Bool, "t"),
    ("bool", Type::Bool, "off"),
    ("int2", Type::Int2, "-32768"),
    ("int4", Type::Int4, "2147483647"),
    ("int8", Type::Int8, "-9223372036854775808"),
    ("float4", Type::Float4, "3.25"),
    ("float4", Type::Float4, "-Infinity"),
    ("float8", Type::Float8, "1e300"),
    ("float8", Type::Float8, "0.1"),
    ("float8", Type::Float8, "NaN"),
    ("numeric", Type::Numeric, "12345.678"),
    ("numeric", Type::Numeric, "-0.000012"),
    ("numeric", Type::Numeric, "0"),
    ("numeric", Type::Numeric, "0.00"),
    ("numeric", Type::Numeric, "100000000"),
    ("numeric", Type::Numeric, "1.5e-3"),
    (
        "numeric",
        Type::Numeric,
        "123456789012345678901234567890.123456789",
    ),
    ("numeric", Type::Numeric, "NaN"),
    ("numeric", Type::Numeric, "-Infinity"),
    ("text", Type::Text, "héllo, wörld"),
    ("varchar", Type::Varchar, "***-**-****"),
    ("bpchar", Type::Bpchar, "abc"),
    ("bytea", Type::Bytea, "\\xdeadbeef00"),
    ("uuid", Type::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ("date", Type::Date, "2024-02-29"),
    ("date", Type::Date, "1900-03-01"),
    ("date", Type::Date, "0044-03-15 BC"),
    ("date", Type::Date, "infinity"),
    ("time", Type::Time, "13:45:07.25"),
    ("time", Type::Time, "00:00:00"),
    ("timestamp", Type::Timestamp, "2024-02-29 23:59:59.000001"),
    ("timestamp", Type::Timestamp, "1970-01-01 00:00:00"),
    ("timestamp", Type::Timestamp, "-infinity"),
    (
        "timestamptz",
        Type::TimestampTz,
        "2024-01-01 01:30:00+01:30",
    ),
    ("timestamptz", Type::TimestampTz, "1999-12-31 23:59:59.5-08"),
    (
        "json",
        Type::Json,
        "{\"a\": [1, 2.5e3, null], \"b\": \"x\"}",
    ),
    (
        "jsonb",
        Type::Jsonb,
        "{\"a\": [1, 2], \"b\": {\"c\": true}}",
    ),
];

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encodings_agree_with_the_server() {
    let pg = wirewarden_testkit::Postgres::builder()
        .start()
        .expect("start PostgreSQL");
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        .await
        .unwrap();

    for (name, ty, literal) in CASES {
        let ours =
            Value::parse_text(*ty, literal).unwrap_or_else(|e| panic!("{name} {literal}: {e}"));
        let sql = format!("SELECT {}::{name}", quote(literal));

        // Text format (simple query): the server's output parses to the same value, and for
        // everything but floats our canonical text is the server's.
        let rows = client.simple_query(&sql).await.unwrap();
        let server_text = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap();
        let from_server = Value::decode(*ty, Format::Text, server_text.as_bytes()).unwrap();
        same(&from_server, &ours, name, literal);
        if !matches!(ty, Type::Float4 | Type::Float8 | Type::Json | Type::Jsonb) {
            assert_eq!(ours.to_text(), server_text, "{name} {literal}");
        }

        // Binary format (extended query): the same value, and our encoding is byte for byte
        // the server's.
        let row = client.query_one(&sql, &[]).await.unwrap();
        let raw: Raw = row.get(0);
        let decoded = Value::decode(*ty, Format::Binary, &raw.0).unwrap();
        same(&decoded, &ours, name, literal);
        let mut mine = BytesMut::new();
        ours.encode(Format::Binary, &mut mine).unwrap();
        if *ty != Type::Json {
            assert_eq!(&mine[..], &raw.0[..], "binary {name} {literal}");
        }

        // The server accepts our binary encoding as a parameter of that type.
        let mut param = BytesMut::new();
        encode_replacement(ty.oid(), Format::Binary, literal, &mut param).unwrap();
        let stmt = client
            .prepare(&format!("SELECT ($1::{name})::text"))
            .await
            .unwrap();
        let row = client
            .query_one(&stmt, &[&Ours(param.to_vec())])
            .await
            .unwrap();
        let echoed: String = row.get(0);
        let echoed = Value::decode(*ty, Format::Text, echoed.as_bytes()).unwrap();
        same(&echoed, &ours, name, literal);
    }
}

/// Equality that treats NaN as equal to itself and ignores JSON spacing.
fn same(a: &Value, b: &Value, name: &str, literal: &str) {
    match (a, b) {
        (Value::Float4(x), Value::Float4(y)) if x.is_nan() && y.is_nan() => {}
        (Value::Float8(x), Value::Float8(y)) if x.is_nan() && y.is_nan() => {}
        (Value::Json(x), Value::Json(y)) | (Value::Jsonb(x), Value::Jsonb(y)) => {
            // The server normalises the spacing of jsonb output.
            let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            assert_eq!(strip(x), strip(y), "{name} {literal}");
        }
        _ => assert_eq!(a, b, "{name} {literal}"),
    }
}
