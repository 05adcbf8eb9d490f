//! Bounds-checked readers and writers for message bodies. Nothing here slices by an
//! untrusted index: every read goes through `Buf::try_get_*` or a length checked first.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

/// Reads fields out of one message body, naming the message in every error.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    message: &'static str,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, message: &'static str) -> Reader {
        Reader { buf, message }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        self.buf
            .try_get_u8()
            .map_err(|_| Error::truncated(self.message, field))
    }

    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16> {
        self.buf
            .try_get_i16()
            .map_err(|_| Error::truncated(self.message, field))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32> {
        self.buf
            .try_get_i32()
            .map_err(|_| Error::truncated(self.message, field))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32> {
        self.buf
            .try_get_u32()
            .map_err(|_| Error::truncated(self.message, field))
    }

    /// A count stored in an Int16 word, which the server reads as unsigned (up to 65 535
    /// bind parameters), and that must not be above `limit`.
    pub(crate) fn count16(&mut self, what: &'static str, limit: usize) -> Result<usize> {
        let n = usize::from(
            self.buf
                .try_get_u16()
                .map_err(|_| Error::truncated(self.message, what))?,
        );
        check_count(self.message, what, n, limit)?;
        Ok(n)
    }

    /// A NUL-terminated string, without its terminator.
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<Bytes> {
        let Some(pos) = memchr::memchr(0, &self.buf) else {
            return Err(Error::MissingNul {
                message: self.message,
                field,
            });
        };
        let s = self.buf.split_to(pos);
        self.buf.advance(1);
        Ok(s)
    }

    /// Exactly `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes> {
        if n > self.buf.len() {
            return Err(Error::truncated(self.message, field));
        }
        Ok(self.buf.split_to(n))
    }

    /// A value prefixed by an Int32 length, where -1 means NULL.
    pub(crate) fn nullable(&mut self, field: &'static str) -> Result<Option<Bytes>> {
        let len = self.i32(field)?;
        if len == -1 {
            return Ok(None);
        }
        let n = usize::try_from(len).map_err(|_| Error::InvalidField {
            message: self.message,
            field,
            value: len.into(),
        })?;
        self.bytes(n, field).map(Some)
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// Fails if anything is left.
    pub(crate) fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                message: self.message,
                extra: self.buf.len(),
            })
        }
    }
}

pub(crate) fn check_count(
    message: &'static str,
    what: &'static str,
    count: usize,
    limit: usize,
) -> Result<()> {
    if count > limit {
        Err(Error::TooMany {
            message,
            what,
            count,
            limit,
        })
    } else {
        Ok(())
    }
}

/// Starts a tagged message in `dst` and returns the offset of its length word.
pub(crate) fn begin(dst: &mut BytesMut, tag: u8) -> usize {
    dst.put_u8(tag);
    let at = dst.len();
    dst.put_i32(0);
    at
}

/// Starts an untagged startup packet in `dst` and returns the offset of its length word.
pub(crate) fn begin_untagged(dst: &mut BytesMut) -> usize {
    let at = dst.len();
    dst.put_i32(0);
    at
}

/// Patches the length word at `at` to cover everything written since.
pub(crate) fn finish(dst: &mut BytesMut, at: usize, message: &'static str) -> Result<()> {
    let len = dst.len().saturating_sub(at);
    let len = i32::try_from(len).map_err(|_| Error::InvalidField {
        message,
        field: "length",
        value: i64::try_from(len).unwrap_or(i64::MAX),
    })?;
    if let Some(word) = dst.get_mut(at..at.saturating_add(4)) {
        word.copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

pub(crate) fn put_cstr(
    dst: &mut BytesMut,
    s: &[u8],
    message: &'static str,
    field: &'static str,
) -> Result<()> {
    if memchr::memchr(0, s).is_some() {
        return Err(Error::InteriorNul { message, field });
    }
    dst.put_slice(s);
    dst.put_u8(0);
    Ok(())
}

pub(crate) fn put_count16(
    dst: &mut BytesMut,
    n: usize,
    message: &'static str,
    what: &'static str,
) -> Result<()> {
    let v = u16::try_from(n).map_err(|_| Error::TooMany {
        message,
        what,
        count: n,
        limit: u16::MAX as usize,
    })?;
    dst.put_u16(v);
    Ok(())
}

/// A value with an Int32 length prefix, or -1 for NULL.
pub(crate) fn put_nullable(
    dst: &mut BytesMut,
    v: Option<&[u8]>,
    message: &'static str,
) -> Result<()> {
    match v {
        None => dst.put_i32(-1),
        Some(v) => {
            let len = i32::try_from(v.len()).map_err(|_| Error::InvalidField {
                message,
                field: "value length",
                value: i64::try_from(v.len()).unwrap_or(i64::MAX),
            })?;
            dst.put_i32(len);
            dst.put_slice(v);
        }
    }
    Ok(())
}
