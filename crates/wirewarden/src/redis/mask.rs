//! Masking of Redis replies: every string, number and error inside a reply (nested arrays,
//! RESP3 maps, sets, push frames and attributes included) goes through the mask profile.
//!
//! The values of a single-key command are masked as values of that key
//! ([`Field::RedisKey`]), so key-pattern rules apply; `MGET` maps each element to its own key.
//! Everything else is masked by content. A value the profile cannot process is an error the
//! caller turns into an error reply: it never leaves in clear.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use wirewarden_core::MaskedCounts;
use wirewarden_mask::{Field, Profile, ValueType};
use wirewarden_redis::{RespVersion, Value};

/// Which key the values of a reply belong to.
#[derive(Debug, Clone, Default)]
pub(crate) enum Keys {
    /// No particular key: content detection only.
    #[default]
    None,
    /// Every value of the reply is a value of this key.
    One(Bytes),
    /// Element `i` of the top-level array is the value of key `i` (`MGET`).
    PerElement(Vec<Bytes>),
    /// The reply may hold values of any of these keys, in no order the gateway can rely on
    /// (`SUNION`, `LMOVE`, `XREAD`, `LMPOP` …): masked throughout as values of the first of
    /// them a key rule applies to, so a rule on any one of them covers the whole reply; by
    /// content only if none has one.
    Several(Vec<Bytes>),
}

/// A value could not be masked.
#[derive(Debug)]
pub(crate) struct Unmaskable(pub(crate) String);

type Masked<T> = Result<Option<T>, Unmaskable>;

fn null(version: RespVersion) -> Value {
    match version {
        RespVersion::Resp2 => Value::NullBulkString,
        _ => Value::Null,
    }
}

fn field(key: Option<&Bytes>) -> Field<'_> {
    key.map_or(Field::Unknown, |k| Field::RedisKey(k))
}

/// Masks a string; `Ok(None)`: unchanged; `Ok(Some(None))`: masked to NULL.
fn string(
    profile: &Profile,
    key: Option<&Bytes>,
    b: &Bytes,
    counts: &mut MaskedCounts,
) -> Masked<Option<Bytes>> {
    let ty = if std::str::from_utf8(b).is_ok() {
        ValueType::Text
    } else {
        ValueType::Bytes
    };
    match profile.mask_value(&field(key), ty, Cow::Borrowed(&b[..]), counts) {
        Ok(Some(Cow::Borrowed(_))) => Ok(None),
        Ok(Some(Cow::Owned(v))) => Ok(Some(Some(Bytes::from(v)))),
        Ok(None) => Ok(Some(None)),
        Err(e) => Err(Unmaskable(e.to_string())),
    }
}

/// A simple string or error must stay on one line.
fn one_line(b: Bytes) -> Bytes {
    if b.iter().any(|c| matches!(c, b'\r' | b'\n')) {
        Bytes::from(
            b.iter()
                .map(|c| if matches!(c, b'\r' | b'\n') { b' ' } else { *c })
                .collect::<Vec<u8>>(),
        )
    } else {
        b
    }
}

fn number(
    profile: &Profile,
    key: Option<&Bytes>,
    text: &[u8],
    ty: ValueType,
    counts: &mut MaskedCounts,
) -> Masked<Option<Bytes>> {
    match profile.mask_value(&field(key), ty, Cow::Borrowed(text), counts) {
        Ok(Some(Cow::Borrowed(_))) => Ok(None),
        Ok(Some(Cow::Owned(v))) => Ok(Some(Some(Bytes::from(v)))),
        Ok(None) => Ok(Some(None)),
        Err(e) => Err(Unmaskable(e.to_string())),
    }
}

fn list(
    profile: &Profile,
    keys: &Keys,
    items: &[Value],
    version: RespVersion,
    counts: &mut MaskedCounts,
) -> Masked<Vec<Value>> {
    let mut out: Option<Vec<Value>> = None;
    for (i, item) in items.iter().enumerate() {
        let key = match keys {
            Keys::None => None,
            Keys::One(k) => Some(k),
            // MGET: a nested value keeps its element's key.
            Keys::PerElement(ks) => ks.get(i),
            // Resolved by `value` before it gets here.
            Keys::Several(_) => None,
        };
        let inner = key.map_or(Keys::None, |k| Keys::One(k.clone()));
        if let Some(v) = value(profile, &inner, item, version, counts)? {
            let o = out.get_or_insert_with(|| items.get(..i).unwrap_or_default().to_vec());
            o.push(v);
        } else if let Some(o) = out.as_mut() {
            o.push(item.clone());
        }
    }
    Ok(out)
}

fn pairs(
    profile: &Profile,
    keys: &Keys,
    items: &[(Value, Value)],
    version: RespVersion,
    counts: &mut MaskedCounts,
) -> Masked<Vec<(Value, Value)>> {
    let mut out: Option<Vec<(Value, Value)>> = None;
    for (i, (k, v)) in items.iter().enumerate() {
        let mk = value(profile, keys, k, version, counts)?;
        let mv = value(profile, keys, v, version, counts)?;
        if mk.is_some() || mv.is_some() {
            let o = out.get_or_insert_with(|| items.get(..i).unwrap_or_default().to_vec());
            o.push((
                mk.unwrap_or_else(|| k.clone()),
                mv.unwrap_or_else(|| v.clone()),
            ));
        } else if let Some(o) = out.as_mut() {
            o.push((k.clone(), v.clone()));
        }
    }
    Ok(out)
}

/// Masks one reply value. `Ok(None)`: nothing changed (forward the original bytes).
pub(crate) fn value(
    profile: &Profile,
    keys: &Keys,
    v: &Value,
    version: RespVersion,
    counts: &mut MaskedCounts,
) -> Masked<Value> {
    if let Keys::Several(several) = keys {
        let ruled = several
            .iter()
            .find(|k| profile.rule_for(&Field::RedisKey(k)).is_some());
        let resolved = ruled.map_or(Keys::None, |k| Keys::One(k.clone()));
        return value(profile, &resolved, v, version, counts);
    }
    let key = match keys {
        Keys::One(k) => Some(k),
        _ => None,
    };
    Ok(match v {
        Value::SimpleString(b) => string(profile, key, b, counts)?
            .map(|m| m.map_or_else(|| null(version), |b| Value::SimpleString(one_line(b)))),
        Value::SimpleError(b) => string(profile, key, b, counts)?.map(|m| {
            Value::SimpleError(one_line(
                m.unwrap_or_else(|| Bytes::from_static(b"ERR (masked)")),
            ))
        }),
        Value::BulkString(b) => string(profile, key, b, counts)?
            .map(|m| m.map_or_else(|| null(version), Value::BulkString)),
        Value::BlobError(b) => string(profile, key, b, counts)?
            .map(|m| Value::BlobError(m.unwrap_or_else(|| Bytes::from_static(b"ERR (masked)")))),
        Value::VerbatimString { format, text } => string(profile, key, text, counts)?.map(|m| {
            m.map_or_else(
                || null(version),
                |text| Value::VerbatimString {
                    format: format.clone(),
                    text,
                },
            )
        }),
        Value::StreamedString(chunks) => {
            let whole = Bytes::from(chunks.concat());
            string(profile, key, &whole, counts)?
                .map(|m| m.map_or_else(|| null(version), Value::BulkString))
        }
        Value::Integer(n) => {
            let text = n.to_string();
            number(profile, key, text.as_bytes(), ValueType::Integer, counts)?.map(|m| match m {
                None => null(version),
                Some(b) => std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .map_or(Value::BulkString(b), Value::Integer),
            })
        }
        Value::Double(t) | Value::BigNumber(t) => {
            number(profile, key, t, ValueType::Numeric, counts)?
                .map(|m| m.map_or_else(|| null(version), Value::BulkString))
        }
        Value::Array(items) => list(profile, keys, items, version, counts)?.map(Value::Array),
        Value::StreamedArray(items) => {
            list(profile, keys, items, version, counts)?.map(Value::Array)
        }
        Value::Set(items) => list(profile, keys, items, version, counts)?.map(Value::Set),
        Value::StreamedSet(items) => list(profile, keys, items, version, counts)?.map(Value::Set),
        Value::Push(items) => list(profile, keys, items, version, counts)?.map(Value::Push),
        Value::Map(items) => pairs(profile, keys, items, version, counts)?.map(Value::Map),
        Value::StreamedMap(items) => pairs(profile, keys, items, version, counts)?.map(Value::Map),
        Value::Attributed {
            attributes,
            value: inner,
        } => {
            let a = pairs(profile, &Keys::None, attributes, version, counts)?;
            let i = value(profile, keys, inner, version, counts)?;
            if a.is_none() && i.is_none() {
                None
            } else {
                Some(Value::Attributed {
                    attributes: a.unwrap_or_else(|| attributes.clone()),
                    value: Box::new(i.unwrap_or_else(|| (**inner).clone())),
                })
            }
        }
        Value::NullBulkString | Value::NullArray | Value::Null | Value::Boolean(_) => None,
        // A kind this module does not know how to look into is never forwarded as is.
        _ => return Err(Unmaskable("unsupported reply type".into())),
    })
}

/// The number of elements a reply carries (1 for a scalar, 0 for a null).
pub(crate) fn elements(v: &Value) -> u64 {
    match v.unattributed() {
        Value::NullBulkString | Value::NullArray | Value::Null => 0,
        Value::Array(i) | Value::Set(i) | Value::Push(i) | Value::StreamedArray(i) => {
            i.len() as u64
        }
        Value::StreamedSet(i) => i.len() as u64,
        Value::Map(p) | Value::StreamedMap(p) => p.len() as u64,
        _ => 1,
    }
}

/// A one-line rendering of a (masked) reply for the session recording, at most `limit`
/// bytes; returns whether it was cut.
pub(crate) fn render(v: &Value, out: &mut String, limit: usize) -> bool {
    fn s(out: &mut String, b: &[u8]) {
        out.push('"');
        for c in String::from_utf8_lossy(b).chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn go(v: &Value, out: &mut String, limit: usize) -> bool {
        if out.len() >= limit {
            return true;
        }
        match v {
            Value::SimpleString(b) | Value::BulkString(b) => s(out, b),
            Value::VerbatimString { text, .. } => s(out, text),
            Value::StreamedString(c) => s(out, &c.concat()),
            Value::SimpleError(b) | Value::BlobError(b) => {
                out.push_str("(error) ");
                out.push_str(&String::from_utf8_lossy(b));
            }
            Value::Integer(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Double(t) | Value::BigNumber(t) => out.push_str(&String::from_utf8_lossy(t)),
            Value::Boolean(b) => {
                let _ = write!(out, "{b}");
            }
            Value::NullBulkString | Value::NullArray | Value::Null => out.push_str("(nil)"),
            Value::Array(i)
            | Value::Set(i)
            | Value::Push(i)
            | Value::StreamedArray(i)
            | Value::StreamedSet(i) => {
                out.push(if matches!(v, Value::Push(_)) {
                    '>'
                } else {
                    '['
                });
                for (n, x) in i.iter().enumerate() {
                    if n > 0 {
                        out.push_str(", ");
                    }
                    if go(x, out, limit) {
                        return true;
                    }
                }
                out.push(']');
            }
            Value::Map(p) | Value::StreamedMap(p) => {
                out.push('{');
                for (n, (k, x)) in p.iter().enumerate() {
                    if n > 0 {
                        out.push_str(", ");
                    }
                    if go(k, out, limit) {
                        return true;
                    }
                    out.push_str(": ");
                    if go(x, out, limit) {
                        return true;
                    }
                }
                out.push('}');
            }
            Value::Attributed { value, .. } => return go(value, out, limit),
            _ => out.push_str("(?)"),
        }
        out.len() > limit
    }
    let cut = go(v, out, limit);
    if out.len() > limit {
        let mut end = limit;
        while end > 0 && !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        return true;
    }
    cut
}

#[cfg(test)]
mod tests {
    use wirewarden_mask::{FieldRule, Selector, Strategy};
    use wirewarden_redis::Limits;

    use super::*;

    fn decode(b: &[u8], version: RespVersion) -> Value {
        Value::decode(&Bytes::copy_from_slice(b), version, &Limits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn profile() -> Profile {
        Profile::builder("t")
            .rule(FieldRule::new(
                Selector::redis_key("secret:*"),
                Strategy::redact(),
            ))
            .build()
            .unwrap()
    }

    #[test]
    fn clean_values_are_untouched() {
        let p = profile();
        let mut c = MaskedCounts::new();
        let v = decode(b"*2\r\n$5\r\nhello\r\n:42\r\n", RespVersion::Resp2);
        assert!(
            value(&p, &Keys::None, &v, RespVersion::Resp2, &mut c)
                .unwrap()
                .is_none()
        );
        assert!(c.is_empty());
    }

    #[test]
    fn content_and_key_rules_reach_nested_values() {
        let p = profile();
        let mut c = MaskedCounts::new();
        let v = decode(
            b"%2\r\n$4\r\nname\r\n$3\r\nAda\r\n$4\r\ncard\r\n$19\r\n4111 1111 1111 1111\r\n",
            RespVersion::Resp3,
        );
        let m = value(&p, &Keys::None, &v, RespVersion::Resp3, &mut c)
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&m.to_bytes()).into_owned();
        assert!(text.contains("Ada"), "{text}");
        assert!(!text.contains("4111 1111"), "{text}");
        assert_eq!(c.0["card_number"], 1);

        let v = decode(b"$5\r\nhello\r\n", RespVersion::Resp2);
        let m = value(
            &p,
            &Keys::One(Bytes::from_static(b"secret:1")),
            &v,
            RespVersion::Resp2,
            &mut c,
        )
        .unwrap()
        .unwrap();
        assert_ne!(m, v);
        // MGET: only the element of the matching key.
        let v = decode(b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n", RespVersion::Resp2);
        let keys = Keys::PerElement(vec![
            Bytes::from_static(b"plain"),
            Bytes::from_static(b"secret:2"),
        ]);
        let Value::Array(m) = value(&p, &keys, &v, RespVersion::Resp2, &mut c)
            .unwrap()
            .unwrap()
        else {
            panic!("array expected")
        };
        assert_eq!(m[0], Value::BulkString(Bytes::from_static(b"hello")));
        assert_ne!(m[1], Value::BulkString(Bytes::from_static(b"world")));
    }

    #[test]
    fn a_rule_on_one_of_several_keys_covers_the_whole_reply() {
        let p = profile();
        let mut c = MaskedCounts::new();
        // SUNION secret:a plain: which member came from which set is unknown.
        let v = decode(b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n", RespVersion::Resp2);
        let keys = Keys::Several(vec![
            Bytes::from_static(b"plain"),
            Bytes::from_static(b"secret:a"),
        ]);
        let Value::Array(m) = value(&p, &keys, &v, RespVersion::Resp2, &mut c)
            .unwrap()
            .unwrap()
        else {
            panic!("array expected")
        };
        assert!(
            m.iter()
                .all(|e| !matches!(e, Value::BulkString(b) if b == "hello" || b == "world")),
            "{m:?}"
        );
        // No rule on any of them: by content only, unchanged here.
        let keys = Keys::Several(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert!(
            value(&p, &keys, &v, RespVersion::Resp2, &mut c)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn unmaskable_values_are_errors() {
        let p = Profile::builder("small")
            .limits(wirewarden_mask::Limits {
                max_value_len: 4,
                ..Default::default()
            })
            .build()
            .unwrap();
        let mut c = MaskedCounts::new();
        let v = decode(b"$10\r\n0123456789\r\n", RespVersion::Resp2);
        assert!(value(&p, &Keys::None, &v, RespVersion::Resp2, &mut c).is_err());
    }

    #[test]
    fn render_is_capped() {
        let v = decode(b"*2\r\n$5\r\nhello\r\n:42\r\n", RespVersion::Resp2);
        let mut s = String::new();
        assert!(!render(&v, &mut s, 100));
        assert_eq!(s, "[\"hello\", 42]");
        let mut s = String::new();
        assert!(render(&v, &mut s, 5));
        assert!(s.len() <= 5);
    }
}
