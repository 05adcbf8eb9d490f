//! Text and binary encodings of the common column types, so that a masker can always write
//! a value the client will accept for the column's type and format (or NULL).
//!
//! Text output follows the server's defaults (`DateStyle = ISO`, `bytea_output = hex`);
//! `timestamptz` values are written in UTC (`+00`), which every client accepts whatever the
//! session time zone.

use bytes::{BufMut, BytesMut};

use crate::error::{Error, Result};

/// Well-known type OIDs (`pg_type.oid`).
pub mod oid {
    /// `bool`
    pub const BOOL: u32 = 16;
    /// `bytea`
    pub const BYTEA: u32 = 17;
    /// `int8`
    pub const INT8: u32 = 20;
    /// `int2`
    pub const INT2: u32 = 21;
    /// `int4`
    pub const INT4: u32 = 23;
    /// `text`
    pub const TEXT: u32 = 25;
    /// `json`
    pub const JSON: u32 = 114;
    /// `float4`
    pub const FLOAT4: u32 = 700;
    /// `float8`
    pub const FLOAT8: u32 = 701;
    /// `bpchar` (`char(n)`)
    pub const BPCHAR: u32 = 1042;
    /// `varchar`
    pub const VARCHAR: u32 = 1043;
    /// `date`
    pub const DATE: u32 = 1082;
    /// `time`
    pub const TIME: u32 = 1083;
    /// `timestamp`
    pub const TIMESTAMP: u32 = 1114;
    /// `timestamptz`
    pub const TIMESTAMPTZ: u32 = 1184;
    /// `numeric`
    pub const NUMERIC: u32 = 1700;
    /// `uuid`
    pub const UUID: u32 = 2950;
    /// `jsonb`
    pub const JSONB: u32 = 3802;
}

/// A column's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Format code 0.
    Text,
    /// Format code 1.
    Binary,
}

impl Format {
    /// From a format code; `None` unless 0 or 1.
    pub fn from_code(code: i16) -> Option<Format> {
        match code {
            0 => Some(Format::Text),
            1 => Some(Format::Binary),
            _ => None,
        }
    }

    /// The format code.
    pub fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Binary => "binary",
        }
    }
}

/// The column types this module encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Type {
    /// `bool`
    Bool,
    /// `int2`
    Int2,
    /// `int4`
    Int4,
    /// `int8`
    Int8,
    /// `float4`
    Float4,
    /// `float8`
    Float8,
    /// `numeric`
    Numeric,
    /// `text`
    Text,
    /// `varchar`
    Varchar,
    /// `bpchar`
    Bpchar,
    /// `bytea`
    Bytea,
    /// `uuid`
    Uuid,
    /// `date`
    Date,
    /// `time`
    Time,
    /// `timestamp`
    Timestamp,
    /// `timestamptz`
    TimestampTz,
    /// `json`
    Json,
    /// `jsonb`
    Jsonb,
}

impl Type {
    /// The type for an OID, if this module knows it.
    pub fn from_oid(type_oid: u32) -> Option<Type> {
        Some(match type_oid {
            oid::BOOL => Type::Bool,
            oid::INT2 => Type::Int2,
            oid::INT4 => Type::Int4,
            oid::INT8 => Type::Int8,
            oid::FLOAT4 => Type::Float4,
            oid::FLOAT8 => Type::Float8,
            oid::NUMERIC => Type::Numeric,
            oid::TEXT => Type::Text,
            oid::VARCHAR => Type::Varchar,
            oid::BPCHAR => Type::Bpchar,
            oid::BYTEA => Type::Bytea,
            oid::UUID => Type::Uuid,
            oid::DATE => Type::Date,
            oid::TIME => Type::Time,
            oid::TIMESTAMP => Type::Timestamp,
            oid::TIMESTAMPTZ => Type::TimestampTz,
            oid::JSON => Type::Json,
            oid::JSONB => Type::Jsonb,
            _ => return None,
        })
    }

    /// The type's OID.
    pub fn oid(self) -> u32 {
        match self {
            Type::Bool => oid::BOOL,
            Type::Int2 => oid::INT2,
            Type::Int4 => oid::INT4,
            Type::Int8 => oid::INT8,
            Type::Float4 => oid::FLOAT4,
            Type::Float8 => oid::FLOAT8,
            Type::Numeric => oid::NUMERIC,
            Type::Text => oid::TEXT,
            Type::Varchar => oid::VARCHAR,
            Type::Bpchar => oid::BPCHAR,
            Type::Bytea => oid::BYTEA,
            Type::Uuid => oid::UUID,
            Type::Date => oid::DATE,
            Type::Time => oid::TIME,
            Type::Timestamp => oid::TIMESTAMP,
            Type::TimestampTz => oid::TIMESTAMPTZ,
            Type::Json => oid::JSON,
            Type::Jsonb => oid::JSONB,
        }
    }
}

/// A decoded value of one of the supported types.
///
/// Dates count days and timestamps microseconds from 2000-01-01 (the server's epoch);
/// `i32::MAX`/`i64::MAX` is `infinity` and `MIN` is `-infinity`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// `bool`
    Bool(bool),
    /// `int2`
    Int2(i16),
    /// `int4`
    Int4(i32),
    /// `int8`
    Int8(i64),
    /// `float4`
    Float4(f32),
    /// `float8`
    Float8(f64),
    /// `numeric`, in canonical text form (`-12.340`, `NaN`, `Infinity`).
    Numeric(String),
    /// `text`, `varchar` or `bpchar`.
    Text(String),
    /// `bytea`
    Bytea(Vec<u8>),
    /// `uuid`
    Uuid([u8; 16]),
    /// `date`: days since 2000-01-01.
    Date(i32),
    /// `time`: microseconds since midnight.
    Time(i64),
    /// `timestamp`: microseconds since 2000-01-01 00:00:00.
    Timestamp(i64),
    /// `timestamptz`: microseconds since 2000-01-01 00:00:00 UTC.
    TimestampTz(i64),
    /// `json` text.
    Json(String),
    /// `jsonb` text.
    Jsonb(String),
}

fn invalid(ty: Type, format: Format, reason: &'static str) -> Error {
    Error::InvalidValue {
        type_oid: ty.oid(),
        format: format.name(),
        reason,
    }
}

impl Value {
    /// Parses a value from its textual form, as typed into SQL or a masking rule.
    pub fn parse_text(ty: Type, s: &str) -> Result<Value> {
        let bad = |reason| invalid(ty, Format::Text, reason);
        Ok(match ty {
            Type::Bool => Value::Bool(parse_bool(s).ok_or(bad("not a boolean"))?),
            Type::Int2 => Value::Int2(s.trim().parse().map_err(|_| bad("not an int2"))?),
            Type::Int4 => Value::Int4(s.trim().parse().map_err(|_| bad("not an int4"))?),
            Type::Int8 => Value::Int8(s.trim().parse().map_err(|_| bad("not an int8"))?),
            Type::Float4 => {
                let v = parse_float(s).ok_or(bad("not a float"))?;
                #[allow(clippy::cast_possible_truncation)]
                let f = v as f32;
                if f.is_infinite() && v.is_finite() {
                    return Err(bad("out of range for float4"));
                }
                Value::Float4(f)
            }
            Type::Float8 => Value::Float8(parse_float(s).ok_or(bad("not a float"))?),
            Type::Numeric => {
                Value::Numeric(Numeric::parse(s).ok_or(bad("not a numeric"))?.to_string())
            }
            Type::Text | Type::Varchar | Type::Bpchar => {
                if s.contains('\0') {
                    return Err(bad("contains NUL"));
                }
                Value::Text(s.to_owned())
            }
            Type::Bytea => Value::Bytea(parse_bytea_text(s.as_bytes()).ok_or(bad("not bytea"))?),
            Type::Uuid => Value::Uuid(parse_uuid(s).ok_or(bad("not a uuid"))?),
            Type::Date => Value::Date(parse_date(s.trim()).ok_or(bad("not an ISO date"))?),
            Type::Time => Value::Time(parse_time(s.trim()).ok_or(bad("not a time"))?),
            Type::Timestamp => {
                Value::Timestamp(parse_timestamp(s.trim(), false).ok_or(bad("not a timestamp"))?)
            }
            Type::TimestampTz => {
                Value::TimestampTz(parse_timestamp(s.trim(), true).ok_or(bad("not a timestamptz"))?)
            }
            Type::Json | Type::Jsonb => {
                if s.contains('\0') || !json_is_valid(s.as_bytes()) {
                    return Err(bad("not valid JSON"));
                }
                if ty == Type::Json {
                    Value::Json(s.to_owned())
                } else {
                    Value::Jsonb(s.to_owned())
                }
            }
        })
    }

    /// Decodes a cell of the given type and format.
    pub fn decode(ty: Type, format: Format, raw: &[u8]) -> Result<Value> {
        match format {
            Format::Text => {
                let s = std::str::from_utf8(raw).map_err(|_| invalid(ty, format, "not UTF-8"))?;
                if ty == Type::Bytea {
                    return parse_bytea_text(raw).map(Value::Bytea).ok_or(invalid(
                        ty,
                        format,
                        "not bytea",
                    ));
                }
                Value::parse_text(ty, s)
            }
            Format::Binary => decode_binary(ty, raw),
        }
    }

    /// Appends the value in the given format to `dst` (the cell bytes, without a length).
    pub fn encode(&self, format: Format, dst: &mut BytesMut) -> Result<()> {
        match format {
            Format::Text => {
                self.write_text(dst);
                Ok(())
            }
            Format::Binary => self.encode_binary(dst),
        }
    }

    /// The value's textual form as the server would print it.
    pub fn to_text(&self) -> String {
        let mut b = BytesMut::new();
        self.write_text(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    }

    fn write_text(&self, dst: &mut BytesMut) {
        use std::fmt::Write as _;
        let mut s = String::new();
        let text: &str = match self {
            Value::Bool(b) => {
                if *b {
                    "t"
                } else {
                    "f"
                }
            }
            Value::Int2(v) => {
                let _ = write!(s, "{v}");
                &s
            }
            Value::Int4(v) => {
                let _ = write!(s, "{v}");
                &s
            }
            Value::Int8(v) => {
                let _ = write!(s, "{v}");
                &s
            }
            Value::Float4(v) => {
                format_float(f64::from(*v), Some(*v), &mut s);
                &s
            }
            Value::Float8(v) => {
                format_float(*v, None, &mut s);
                &s
            }
            Value::Numeric(v) | Value::Text(v) | Value::Json(v) | Value::Jsonb(v) => v,
            Value::Bytea(v) => {
                s.reserve(v.len().saturating_mul(2).saturating_add(2));
                s.push_str("\\x");
                for b in v {
                    let _ = write!(s, "{b:02x}");
                }
                &s
            }
            Value::Uuid(u) => {
                for (i, b) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        s.push('-');
                    }
                    let _ = write!(s, "{b:02x}");
                }
                &s
            }
            Value::Date(d) => {
                format_date(*d, &mut s);
                &s
            }
            Value::Time(t) => {
                format_time(*t, &mut s);
                &s
            }
            Value::Timestamp(t) => {
                format_timestamp(*t, false, &mut s);
                &s
            }
            Value::TimestampTz(t) => {
                format_timestamp(*t, true, &mut s);
                &s
            }
        };
        dst.put_slice(text.as_bytes());
    }

    fn encode_binary(&self, dst: &mut BytesMut) -> Result<()> {
        match self {
            Value::Bool(b) => dst.put_u8(u8::from(*b)),
            Value::Int2(v) => dst.put_i16(*v),
            Value::Int4(v) | Value::Date(v) => dst.put_i32(*v),
            Value::Int8(v) | Value::Time(v) | Value::Timestamp(v) | Value::TimestampTz(v) => {
                dst.put_i64(*v)
            }
            Value::Float4(v) => dst.put_f32(*v),
            Value::Float8(v) => dst.put_f64(*v),
            Value::Numeric(s) => Numeric::parse(s)
                .ok_or(invalid(Type::Numeric, Format::Binary, "not a numeric"))?
                .encode_binary(dst)?,
            Value::Text(s) | Value::Json(s) => dst.put_slice(s.as_bytes()),
            Value::Jsonb(s) => {
                dst.put_u8(1);
                dst.put_slice(s.as_bytes());
            }
            Value::Bytea(v) => dst.put_slice(v),
            Value::Uuid(u) => dst.put_slice(u),
        }
        Ok(())
    }
}

/// Whether `replacement` (in textual form) is a valid value for a column of type
/// `type_oid` sent in `format`.
pub fn is_valid_replacement(type_oid: u32, format: Format, replacement: &str) -> bool {
    let mut scratch = BytesMut::new();
    encode_replacement(type_oid, format, replacement, &mut scratch).is_ok()
}

/// Encodes `replacement` (in textual form) as a cell of type `type_oid` in `format`,
/// appending the bytes to `dst`. Fails, writing nothing, if the type is not supported or
/// the text is not a valid value of it; a masker should then send NULL.
pub fn encode_replacement(
    type_oid: u32,
    format: Format,
    replacement: &str,
    dst: &mut BytesMut,
) -> Result<()> {
    let ty = Type::from_oid(type_oid).ok_or(Error::UnsupportedType { type_oid })?;
    // Text-like values are written as they are, without building a `Value`: this runs
    // once per masked cell.
    match ty {
        Type::Text | Type::Varchar | Type::Bpchar | Type::Json | Type::Jsonb => {
            if replacement.contains('\0') {
                return Err(invalid(ty, format, "contains NUL"));
            }
            if matches!(ty, Type::Json | Type::Jsonb) && !json_is_valid(replacement.as_bytes()) {
                return Err(invalid(ty, format, "not valid JSON"));
            }
            if ty == Type::Jsonb && format == Format::Binary {
                dst.put_u8(1);
            }
            dst.put_slice(replacement.as_bytes());
            return Ok(());
        }
        _ => {}
    }
    let v = Value::parse_text(ty, replacement)?;
    let start = dst.len();
    let r = v.encode(format, dst);
    if r.is_err() {
        dst.truncate(start);
    }
    r
}

// === binary decoding ===

fn fixed<const N: usize>(ty: Type, raw: &[u8]) -> Result<[u8; N]> {
    <[u8; N]>::try_from(raw).map_err(|_| invalid(ty, Format::Binary, "wrong length"))
}

fn decode_binary(ty: Type, raw: &[u8]) -> Result<Value> {
    let bad = |reason| invalid(ty, Format::Binary, reason);
    Ok(match ty {
        Type::Bool => match raw {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            _ => return Err(bad("not a boolean")),
        },
        Type::Int2 => Value::Int2(i16::from_be_bytes(fixed(ty, raw)?)),
        Type::Int4 => Value::Int4(i32::from_be_bytes(fixed(ty, raw)?)),
        Type::Int8 => Value::Int8(i64::from_be_bytes(fixed(ty, raw)?)),
        Type::Float4 => Value::Float4(f32::from_be_bytes(fixed(ty, raw)?)),
        Type::Float8 => Value::Float8(f64::from_be_bytes(fixed(ty, raw)?)),
        Type::Numeric => Value::Numeric(
            Numeric::decode_binary(raw)
                .ok_or(bad("not a numeric"))?
                .to_string(),
        ),
        Type::Text | Type::Varchar | Type::Bpchar => {
            Value::Text(String::from_utf8(raw.to_vec()).map_err(|_| bad("not UTF-8"))?)
        }
        Type::Json => Value::Json(String::from_utf8(raw.to_vec()).map_err(|_| bad("not UTF-8"))?),
        Type::Jsonb => match raw.split_first() {
            Some((1, rest)) => {
                Value::Jsonb(String::from_utf8(rest.to_vec()).map_err(|_| bad("not UTF-8"))?)
            }
            _ => return Err(bad("unknown jsonb version")),
        },
        Type::Bytea => Value::Bytea(raw.to_vec()),
        Type::Uuid => Value::Uuid(fixed(ty, raw)?),
        Type::Date => Value::Date(i32::from_be_bytes(fixed(ty, raw)?)),
        Type::Time => {
            let t = i64::from_be_bytes(fixed(ty, raw)?);
            if !(0..=USECS_PER_DAY).contains(&t) {
                return Err(bad("out of range"));
            }
            Value::Time(t)
        }
        Type::Timestamp => Value::Timestamp(i64::from_be_bytes(fixed(ty, raw)?)),
        Type::TimestampTz => Value::TimestampTz(i64::from_be_bytes(fixed(ty, raw)?)),
    })
}

// === bool, float ===

fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() {
        return None;
    }
    // As the server's boolin: any prefix of true/false/yes/no, "on"/"off" with at least
    // two letters, and 1/0.
    let t = "true".starts_with(&s) || "yes".starts_with(&s) || s == "on" || s == "1";
    let f = "false".starts_with(&s)
        || "no".starts_with(&s)
        || (s.len() >= 2 && "off".starts_with(&s))
        || s == "0";
    match (t, f) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => return Some(f64::NAN),
        "infinity" | "inf" | "+infinity" | "+inf" => return Some(f64::INFINITY),
        "-infinity" | "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust's parser also takes "inf" spellings handled above; reject anything else alphabetic.
    if t.bytes()
        .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
    {
        return None;
    }
    t.parse().ok()
}

fn format_float(v: f64, f32v: Option<f32>, s: &mut String) {
    use std::fmt::Write as _;
    if v.is_nan() {
        s.push_str("NaN");
    } else if v.is_infinite() {
        s.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let a = v.abs();
        let sci = a != 0.0 && !(1e-4..1e15).contains(&a);
        let _ = match (f32v, sci) {
            (Some(f), true) => write!(s, "{f:e}"),
            (Some(f), false) => write!(s, "{f}"),
            (None, true) => write!(s, "{v:e}"),
            (None, false) => write!(s, "{v}"),
        };
    }
}

// === numeric ===

/// A decimal number in the server's base-10000 representation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Numeric {
    special: Option<u16>, // 0xC000 NaN, 0xD000 +Inf, 0xF000 -Inf
    negative: bool,
    weight: i16,
    dscale: u16,
    digits: Vec<i16>,
}

const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
const NUMERIC_NEG: u16 = 0x4000;
// The server's limits: 131072 digits before the point, 16383 after.
const NUMERIC_MAX_WEIGHT_DIGITS: i64 = 131_072;
const NUMERIC_MAX_DSCALE: i64 = 16_383;

impl Numeric {
    fn special(kind: u16) -> Numeric {
        // The server's numeric_send reports dscale 32 for the infinities (an artefact of
        // reading the scale bits of the special header); match it so that our encoding is
        // byte for byte the server's. numeric_recv ignores it.
        let dscale = if kind == NUMERIC_NAN { 0 } else { 32 };
        Numeric {
            special: Some(kind),
            negative: false,
            weight: 0,
            dscale,
            digits: Vec::new(),
        }
    }

    fn parse(s: &str) -> Option<Numeric> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "nan" => return Some(Numeric::special(NUMERIC_NAN)),
            "infinity" | "+infinity" | "inf" | "+inf" => {
                return Some(Numeric::special(NUMERIC_PINF));
            }
            "-infinity" | "-inf" => return Some(Numeric::special(NUMERIC_NINF)),
            _ => {}
        }
        let (negative, t) = match t.as_bytes().first() {
            Some(b'-') => (true, t.get(1..)?),
            Some(b'+') => (false, t.get(1..)?),
            _ => (false, t),
        };
        let (mantissa, exp) = match t.find(['e', 'E']) {
            Some(i) => (t.get(..i)?, t.get(i + 1..)?.parse::<i64>().ok()?),
            None => (t, 0),
        };
        let (int, frac) = match mantissa.find('.') {
            Some(i) => (mantissa.get(..i)?, mantissa.get(i + 1..)?),
            None => (mantissa, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !(-1_000_000..=1_000_000).contains(&exp) {
            return None;
        }
        let frac_len = i64::try_from(frac.len()).ok()?;
        let dscale = (frac_len - exp).max(0);
        // Position of the decimal point counted in digits from the start of int+frac.
        let point = i64::try_from(int.len()).ok()? + exp;
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        // Trim leading zeros (moving nothing: the point is fixed relative to the digits).
        let lead = digits.iter().take_while(|d| **d == 0).count();
        let trail = digits.iter().rev().take_while(|d| **d == 0).count();
        if lead == digits.len() {
            if dscale > NUMERIC_MAX_DSCALE {
                return None;
            }
            return Some(Numeric {
                special: None,
                negative: false,
                weight: 0,
                dscale: u16::try_from(dscale).ok()?,
                digits: Vec::new(),
            });
        }
        let first = i64::try_from(lead).ok()?; // index of first significant digit
        let last = i64::try_from(digits.len() - trail).ok()?; // one past the last one
        if point - first > NUMERIC_MAX_WEIGHT_DIGITS || dscale > NUMERIC_MAX_DSCALE {
            return None;
        }
        if last - point > NUMERIC_MAX_DSCALE {
            return None;
        }
        // Base-10000 groups are aligned so that the point falls on a group boundary. Digit
        // index i belongs to group floor((i - point) / 4) relative to the point.
        let group_of = |i: i64| (i - point).div_euclid(4);
        let g_first = group_of(first);
        let g_last = group_of(last - 1);
        let mut groups = Vec::with_capacity(usize::try_from(g_last - g_first + 1).ok()?);
        for g in g_first..=g_last {
            let mut v: i16 = 0;
            for k in 0..4 {
                let i = point + g * 4 + k;
                let d = usize::try_from(i)
                    .ok()
                    .and_then(|i| digits.get(i))
                    .copied()
                    .unwrap_or(0);
                v = v * 10 + i16::from(d);
            }
            groups.push(v);
        }
        // Group -1 is the first after the point; weight is the index of the first group
        // counted from the one just before the point (weight 0).
        let weight = i16::try_from(-g_first - 1).ok()?;
        Some(Numeric {
            special: None,
            negative,
            weight,
            dscale: u16::try_from(dscale).ok()?,
            digits: groups,
        })
    }

    fn decode_binary(raw: &[u8]) -> Option<Numeric> {
        let mut b = raw;
        use bytes::Buf;
        let ndigits = usize::try_from(b.try_get_i16().ok()?).ok()?;
        let weight = b.try_get_i16().ok()?;
        let sign = b.try_get_u16().ok()?;
        let dscale = b.try_get_u16().ok()?;
        if b.len() != ndigits.checked_mul(2)? {
            return None;
        }
        match sign {
            NUMERIC_NAN | NUMERIC_PINF | NUMERIC_NINF => {
                return (ndigits == 0).then(|| Numeric::special(sign));
            }
            0 | NUMERIC_NEG => {}
            _ => return None,
        }
        if i64::from(dscale) > NUMERIC_MAX_DSCALE {
            return None;
        }
        let mut digits = Vec::with_capacity(ndigits);
        for _ in 0..ndigits {
            let d = b.try_get_i16().ok()?;
            if !(0..10000).contains(&d) {
                return None;
            }
            digits.push(d);
        }
        Some(Numeric {
            special: None,
            negative: sign == NUMERIC_NEG,
            weight,
            dscale,
            digits,
        })
    }

    fn encode_binary(&self, dst: &mut BytesMut) -> Result<()> {
        let n = i16::try_from(self.digits.len())
            .map_err(|_| invalid(Type::Numeric, Format::Binary, "too many digits"))?;
        dst.put_i16(n);
        dst.put_i16(self.weight);
        dst.put_u16(match (self.special, self.negative) {
            (Some(s), _) => s,
            (None, true) => NUMERIC_NEG,
            (None, false) => 0,
        });
        dst.put_u16(self.dscale);
        for d in &self.digits {
            dst.put_i16(*d);
        }
        Ok(())
    }
}

impl std::fmt::Display for Numeric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.special {
            Some(NUMERIC_NAN) => return f.write_str("NaN"),
            Some(NUMERIC_PINF) => return f.write_str("Infinity"),
            Some(_) => return f.write_str("-Infinity"),
            None => {}
        }
        let group = |i: i32| -> i16 {
            // Group with weight w is digits[weight - w].
            usize::try_from(i32::from(self.weight) - i)
                .ok()
                .and_then(|k| self.digits.get(k))
                .copied()
                .unwrap_or(0)
        };
        if self.negative && !self.digits.is_empty() {
            f.write_str("-")?;
        }
        if self.weight < 0 {
            f.write_str("0")?;
        } else {
            write!(f, "{}", group(i32::from(self.weight)))?;
            for w in (0..i32::from(self.weight)).rev() {
                write!(f, "{:04}", group(w))?;
            }
        }
        if self.dscale > 0 {
            f.write_str(".")?;
            let mut left = usize::from(self.dscale);
            let mut w = -1i32;
            while left > 0 {
                let g = format!("{:04}", group(w));
                let take = left.min(4);
                f.write_str(g.get(..take).unwrap_or("0000"))?;
                left -= take;
                w -= 1;
            }
        }
        Ok(())
    }
}

// === bytea, uuid ===

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Hex format (`\x…`, whitespace between bytes allowed) or the older escape format.
fn parse_bytea_text(s: &[u8]) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix(b"\\x") {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut it = hex.iter().copied().filter(|b| !b.is_ascii_whitespace());
        while let Some(hi) = it.next() {
            let lo = it.next()?;
            out.push(hex_val(hi)? << 4 | hex_val(lo)?);
        }
        return Some(out);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match s.get(i + 1..i + 4) {
            Some([b'\\', ..]) => {
                out.push(b'\\');
                i += 2;
            }
            Some(&[a, b, c])
                if (b'0'..=b'3').contains(&a)
                    && (b'0'..=b'7').contains(&b)
                    && (b'0'..=b'7').contains(&c) =>
            {
                out.push((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0'));
                i += 4;
            }
            _ => {
                if s.get(i + 1) == Some(&b'\\') {
                    out.push(b'\\');
                    i += 2;
                } else {
                    return None;
                }
            }
        }
    }
    Some(out)
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let t = s.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(t);
    let hex: Vec<u8> = t.bytes().filter(|b| *b != b'-').collect();
    // Hyphens only after groups of four hex digits, as the server accepts.
    if hex.len() != 32 || t.starts_with('-') || t.ends_with('-') || t.contains("--") {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_val(*hex.get(2 * i)?)? << 4 | hex_val(*hex.get(2 * i + 1)?)?;
    }
    Some(out)
}

// === dates and times ===

const USECS_PER_DAY: i64 = 86_400_000_000;
// Days from 1970-01-01 to 2000-01-01.
const UNIX_TO_PG_DAYS: i64 = 10_957;

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year numbering).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits_num(s: &str, min: usize, max: usize) -> Option<i64> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD` with an optional ` BC`, or `infinity`/`-infinity`; days since 2000-01-01.
fn parse_date(s: &str) -> Option<i32> {
    match s.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Some(i32::MAX),
        "-infinity" => return Some(i32::MIN),
        _ => {}
    }
    let (s, bc) = match s.strip_suffix(" BC").or_else(|| s.strip_suffix(" bc")) {
        Some(r) => (r, true),
        None => (s, false),
    };
    let mut parts = s.splitn(3, '-');
    let y = digits_num(parts.next()?, 1, 7)?;
    let m = digits_num(parts.next()?, 1, 2)?;
    let d = digits_num(parts.next()?, 1, 2)?;
    if y == 0 || !(1..=12).contains(&m) || d < 1 || d > days_in_month(if bc { 1 - y } else { y }, m)
    {
        return None;
    }
    let y = if bc { 1 - y } else { y };
    let days = days_from_civil(y, m, d) - UNIX_TO_PG_DAYS;
    // The server's date range: 4713 BC to 5874897 AD.
    if !(-2_451_545..=2_147_483_494).contains(&days) {
        return None;
    }
    i32::try_from(days).ok()
}

fn format_date(days: i32, s: &mut String) {
    use std::fmt::Write as _;
    match days {
        i32::MAX => s.push_str("infinity"),
        i32::MIN => s.push_str("-infinity"),
        d => {
            let (y, m, dd) = civil_from_days(i64::from(d) + UNIX_TO_PG_DAYS);
            if y <= 0 {
                let _ = write!(s, "{:04}-{m:02}-{dd:02} BC", 1 - y);
            } else {
                let _ = write!(s, "{y:04}-{m:02}-{dd:02}");
            }
        }
    }
}

/// `HH:MM[:SS[.ffffff]]`; microseconds since midnight.
fn parse_time(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, ':');
    let h = digits_num(parts.next()?, 1, 2)?;
    let m = digits_num(parts.next()?, 1, 2)?;
    let (sec, usec) = match parts.next() {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = match sec.split_once('.') {
                Some((w, f)) => (w, f),
                None => (sec, ""),
            };
            let w = digits_num(whole, 1, 2)?;
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Round to microseconds as the server does.
            let mut us: i64 = 0;
            for (i, b) in frac.bytes().take(7).enumerate() {
                if i < 6 {
                    us = us * 10 + i64::from(b - b'0');
                } else if b >= b'5' {
                    us += 1;
                }
            }
            for _ in frac.len()..6 {
                us *= 10;
            }
            (w, us)
        }
    };
    if h > 24 || m > 59 || sec > 60 {
        return None;
    }
    let t = ((h * 60 + m) * 60 + sec) * 1_000_000 + usec;
    (t <= USECS_PER_DAY).then_some(t)
}

fn format_time(t: i64, s: &mut String) {
    use std::fmt::Write as _;
    let secs = t.div_euclid(1_000_000);
    let us = t.rem_euclid(1_000_000);
    let _ = write!(
        s,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    if us != 0 {
        let frac = format!("{us:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
}

/// `YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]]`, with a UTC offset (`Z`, `±HH`, `±HH:MM`,
/// `±HH:MM:SS`) when `tz`, and an optional ` BC`; microseconds since 2000-01-01 (UTC).
fn parse_timestamp(s: &str, tz: bool) -> Option<i64> {
    match s.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (s, bc) = match s.strip_suffix(" BC").or_else(|| s.strip_suffix(" bc")) {
        Some(r) => (r, true),
        None => (s, false),
    };
    let split = s.find([' ', 'T'])?;
    let date = s.get(..split)?;
    let mut rest = s.get(split + 1..)?.trim_start();
    let mut offset_secs = 0i64;
    if tz {
        if let Some(r) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix("UTC")) {
            rest = r.trim_end();
        } else if let Some(i) = rest.rfind(['+', '-']) {
            let (t, off) = (rest.get(..i)?.trim_end(), rest.get(i..)?);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let mut p = off.get(1..)?.split(':');
            let oh = digits_num(p.next()?, 1, 2)?;
            let om = p.next().map_or(Some(0), |m| digits_num(m, 2, 2))?;
            let os = p.next().map_or(Some(0), |x| digits_num(x, 2, 2))?;
            if p.next().is_some() || oh > 15 || om > 59 || os > 59 {
                return None;
            }
            offset_secs = sign * (oh * 3600 + om * 60 + os);
            rest = t;
        } else {
            return None;
        }
    }
    let date = if bc {
        format!("{date} BC")
    } else {
        date.to_owned()
    };
    let days = i64::from(parse_date(&date).filter(|d| *d != i32::MAX && *d != i32::MIN)?);
    let t = parse_time(rest)?;
    let v = days
        .checked_mul(USECS_PER_DAY)?
        .checked_add(t)?
        .checked_sub(offset_secs * 1_000_000)?;
    // Keep clear of the infinity sentinels.
    (v != i64::MAX && v != i64::MIN).then_some(v)
}

fn format_timestamp(v: i64, tz: bool, s: &mut String) {
    match v {
        i64::MAX => s.push_str("infinity"),
        i64::MIN => s.push_str("-infinity"),
        v => {
            let days = v.div_euclid(USECS_PER_DAY);
            let t = v.rem_euclid(USECS_PER_DAY);
            let mut date = String::new();
            format_date(i32::try_from(days).unwrap_or(0), &mut date);
            let (d, bc) = match date.strip_suffix(" BC") {
                Some(d) => (d.to_owned(), true),
                None => (date, false),
            };
            s.push_str(&d);
            s.push(' ');
            format_time(t, s);
            if tz {
                s.push_str("+00");
            }
            if bc {
                s.push_str(" BC");
            }
        }
    }
}

// === json ===

/// Whether `s` is one JSON value (RFC 8259), with nesting bounded.
fn json_is_valid(s: &[u8]) -> bool {
    let mut p = JsonCheck { s, i: 0 };
    p.ws();
    if !p.value(0) {
        return false;
    }
    p.ws();
    p.i == s.len()
}

struct JsonCheck<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonCheck<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn lit(&mut self, w: &[u8]) -> bool {
        if self.s.get(self.i..self.i + w.len()) == Some(w) {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        if depth > 256 {
            return false;
        }
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return true;
                }
                loop {
                    self.ws();
                    if !self.string() {
                        return false;
                    }
                    self.ws();
                    if !self.lit(b":") {
                        return false;
                    }
                    self.ws();
                    if !self.value(depth + 1) {
                        return false;
                    }
                    self.ws();
                    if self.lit(b"}") {
                        return true;
                    }
                    if !self.lit(b",") {
                        return false;
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return true;
                }
                loop {
                    self.ws();
                    if !self.value(depth + 1) {
                        return false;
                    }
                    self.ws();
                    if self.lit(b"]") {
                        return true;
                    }
                    if !self.lit(b",") {
                        return false;
                    }
                }
            }
            Some(b'"') => self.string(),
            Some(b't') => self.lit(b"true"),
            Some(b'f') => self.lit(b"false"),
            Some(b'n') => self.lit(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn string(&mut self) -> bool {
        if !self.lit(b"\"") {
            return false;
        }
        loop {
            match self.peek() {
                None => return false,
                Some(b'"') => {
                    self.i += 1;
                    return true;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                                    return false;
                                }
                                self.i += 1;
                            }
                        }
                        _ => return false,
                    }
                }
                Some(b) if b < 0x20 => return false,
                Some(_) => self.i += 1,
            }
        }
    }

    fn number(&mut self) -> bool {
        let _ = self.lit(b"-");
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.i += 1;
                }
            }
            _ => return false,
        }
        if self.lit(b".") {
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return false;
            }
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return false;
            }
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.i += 1;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_round(ty: Type, s: &str) -> String {
        Value::parse_text(ty, s).unwrap().to_text()
    }

    fn bin_round(ty: Type, s: &str) {
        let v = Value::parse_text(ty, s).unwrap();
        let mut b = BytesMut::new();
        v.encode(Format::Binary, &mut b).unwrap();
        assert_eq!(Value::decode(ty, Format::Binary, &b).unwrap(), v, "{s}");
    }

    #[test]
    fn numeric_text_and_binary() {
        assert_eq!(text_round(Type::Numeric, "12.340"), "12.340");
        assert_eq!(text_round(Type::Numeric, "-0.0001"), "-0.0001");
        assert_eq!(text_round(Type::Numeric, "1e5"), "100000");
        assert_eq!(text_round(Type::Numeric, "1.5e-3"), "0.0015");
        assert_eq!(
            text_round(Type::Numeric, "123456789.123456789"),
            "123456789.123456789"
        );
        assert_eq!(text_round(Type::Numeric, "0.00"), "0.00");
        assert_eq!(text_round(Type::Numeric, "NaN"), "NaN");
        assert!(Value::parse_text(Type::Numeric, "1.2.3").is_err());
        for s in [
            "0",
            "1",
            "-1",
            "10000",
            "9999.9999",
            "0.000012",
            "123456789012345678901234567890.5",
            "-Infinity",
        ] {
            bin_round(Type::Numeric, s);
        }
        // 12345.678 is weight 1, digits [1, 2345, 6780], dscale 3 on the wire.
        let mut b = BytesMut::new();
        Value::parse_text(Type::Numeric, "12345.678")
            .unwrap()
            .encode(Format::Binary, &mut b)
            .unwrap();
        assert_eq!(
            &b[..],
            &[0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]
        );
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(
            Value::parse_text(Type::Date, "2000-01-01").unwrap(),
            Value::Date(0)
        );
        assert_eq!(text_round(Type::Date, "1999-12-31"), "1999-12-31");
        assert_eq!(text_round(Type::Date, "0044-03-15 BC"), "0044-03-15 BC");
        assert!(Value::parse_text(Type::Date, "2023-02-29").is_err());
        assert_eq!(text_round(Type::Time, "13:45:07.250"), "13:45:07.25");
        assert_eq!(
            text_round(Type::Timestamp, "2024-02-29 23:59:59.000001"),
            "2024-02-29 23:59:59.000001"
        );
        assert_eq!(
            text_round(Type::TimestampTz, "2024-01-01 01:30:00+01:30"),
            "2024-01-01 00:00:00+00"
        );
        assert_eq!(text_round(Type::TimestampTz, "infinity"), "infinity");
        bin_round(Type::Timestamp, "1970-01-01 00:00:00");
        assert_eq!(
            Value::parse_text(Type::Timestamp, "1970-01-01 00:00:00").unwrap(),
            Value::Timestamp(-946_684_800_000_000)
        );
    }

    #[test]
    fn misc_types() {
        assert_eq!(text_round(Type::Bytea, "\\xDEad"), "\\xdead");
        assert_eq!(
            Value::decode(Type::Bytea, Format::Text, b"a\\\\b\\001").unwrap(),
            Value::Bytea(b"a\\b\x01".to_vec())
        );
        assert_eq!(
            text_round(Type::Uuid, "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}"),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        assert_eq!(text_round(Type::Bool, "yes"), "t");
        assert_eq!(text_round(Type::Float8, "1e300"), "1e300");
        assert_eq!(text_round(Type::Float8, "-inf"), "-Infinity");
        assert!(Value::parse_text(Type::Float4, "1e300").is_err());
        assert!(Value::parse_text(Type::Int2, "40000").is_err());
        let mut b = BytesMut::new();
        encode_replacement(oid::JSONB, Format::Binary, "{\"a\":[1,2.5e3,null]}", &mut b).unwrap();
        assert_eq!(b.first(), Some(&1));
        assert!(!is_valid_replacement(oid::JSON, Format::Text, "{a:1}"));
        assert!(!is_valid_replacement(oid::INT4, Format::Binary, "***"));
        assert!(is_valid_replacement(oid::TEXT, Format::Binary, "***"));
        assert!(!is_valid_replacement(600, Format::Text, "(1,2)"));
    }
}
