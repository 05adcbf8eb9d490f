//! Conversions to `redis-protocol`'s zero-copy `BytesFrame`s, for code built on that crate
//! (and as the bridge the differential tests use to compare the two decoders).
//!
//! `redis-protocol`'s frames cannot hold everything RESP can carry: its maps and sets are hash
//! based (no order, no duplicate or unhashable keys), errors must be UTF-8, verbatim strings
//! must be `txt` or `mkd`, and RESP2 has a single null. Values that do not fit give `None`.

use redis_protocol::bytes_utils::Str;
use redis_protocol::resp2::types::BytesFrame as Resp2Frame;
use redis_protocol::resp3::types::{
    BytesAttributes, BytesFrame as Resp3Frame, FrameKind as Resp3Kind, Resp3Frame as _,
    VerbatimStringFormat,
};

use crate::value::Value;

pub use redis_protocol;

fn attrs(pairs: &[(Value, Value)]) -> Option<BytesAttributes> {
    let mut map = BytesAttributes::default();
    for (k, v) in pairs {
        let k = k.to_resp3_frame()?;
        if !k.kind().can_hash() {
            return None;
        }
        if map.insert(k, v.to_resp3_frame()?).is_some() {
            return None;
        }
    }
    Some(map)
}

fn with_attributes(frame: Resp3Frame, attributes: BytesAttributes) -> Option<Resp3Frame> {
    let mut frame = frame;
    frame.add_attributes(attributes).ok()?;
    Some(frame)
}

impl Value {
    /// This value as a `redis-protocol` RESP2 frame (`None` for RESP3-only types).
    #[must_use]
    pub fn to_resp2_frame(&self) -> Option<Resp2Frame> {
        Some(match self {
            Self::SimpleString(b) => Resp2Frame::SimpleString(b.clone()),
            Self::SimpleError(b) => Resp2Frame::Error(Str::from_inner(b.clone()).ok()?),
            Self::Integer(n) => Resp2Frame::Integer(*n),
            Self::BulkString(b) => Resp2Frame::BulkString(b.clone()),
            Self::NullBulkString | Self::NullArray => Resp2Frame::Null,
            Self::Array(items) => Resp2Frame::Array(
                items
                    .iter()
                    .map(Self::to_resp2_frame)
                    .collect::<Option<_>>()?,
            ),
            _ => return None,
        })
    }

    /// This value as a `redis-protocol` RESP3 frame. Streamed strings and aggregates become
    /// their complete forms; RESP2 nulls become `Null`.
    #[must_use]
    pub fn to_resp3_frame(&self) -> Option<Resp3Frame> {
        let seq = |items: &[Value]| -> Option<Vec<Resp3Frame>> {
            items.iter().map(Self::to_resp3_frame).collect()
        };
        Some(match self {
            Self::SimpleString(b) => Resp3Frame::SimpleString {
                data: b.clone(),
                attributes: None,
            },
            Self::SimpleError(b) => Resp3Frame::SimpleError {
                data: Str::from_inner(b.clone()).ok()?,
                attributes: None,
            },
            Self::Integer(n) => Resp3Frame::Number {
                data: *n,
                attributes: None,
            },
            Self::BulkString(b) => Resp3Frame::BlobString {
                data: b.clone(),
                attributes: None,
            },
            Self::StreamedString(chunks) => Resp3Frame::BlobString {
                data: chunks.concat().into(),
                attributes: None,
            },
            Self::NullBulkString | Self::NullArray | Self::Null => Resp3Frame::Null,
            Self::Double(t) => Resp3Frame::Double {
                data: std::str::from_utf8(t).ok()?.parse().ok()?,
                attributes: None,
            },
            Self::Boolean(b) => Resp3Frame::Boolean {
                data: *b,
                attributes: None,
            },
            Self::BigNumber(b) => Resp3Frame::BigNumber {
                data: b.clone(),
                attributes: None,
            },
            Self::BlobError(b) => Resp3Frame::BlobError {
                data: b.clone(),
                attributes: None,
            },
            Self::VerbatimString { format, text } => Resp3Frame::VerbatimString {
                data: text.clone(),
                format: match &format[..] {
                    b"txt" => VerbatimStringFormat::Text,
                    b"mkd" => VerbatimStringFormat::Markdown,
                    _ => return None,
                },
                attributes: None,
            },
            Self::Array(items) | Self::StreamedArray(items) => Resp3Frame::Array {
                data: seq(items)?,
                attributes: None,
            },
            Self::Push(items) => Resp3Frame::Push {
                data: seq(items)?,
                attributes: None,
            },
            Self::Set(items) | Self::StreamedSet(items) => {
                let mut set = redis_protocol::resp3::types::FrameSet::default();
                for v in items {
                    let f = v.to_resp3_frame()?;
                    if !f.kind().can_hash() || !set.insert(f) {
                        return None;
                    }
                }
                Resp3Frame::Set {
                    data: set,
                    attributes: None,
                }
            }
            Self::Map(pairs) | Self::StreamedMap(pairs) => Resp3Frame::Map {
                data: attrs(pairs)?,
                attributes: None,
            },
            Self::Attributed { attributes, value } => {
                // redis-protocol holds one attribute map per frame.
                if matches!(**value, Self::Attributed { .. }) {
                    return None;
                }
                let inner = value.to_resp3_frame()?;
                if inner.kind() == Resp3Kind::Null {
                    return None;
                }
                with_attributes(inner, attrs(attributes)?)?
            }
        })
    }
}
