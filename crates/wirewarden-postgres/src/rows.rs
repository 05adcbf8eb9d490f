//! Result sets: RowDescription field views, zero-copy DataRow cell views, and a rewriter
//! that replaces chosen cells (or sets them NULL) and recomputes every length.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::types::Format;
use crate::wire::{self, Reader};

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldDescription {
    /// Column name (or alias).
    pub name: Bytes,
    /// OID of the table the column comes from, or 0 if it is not a plain column.
    pub table_oid: u32,
    /// Attribute number of the column in that table, or 0.
    pub column_id: i16,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// `pg_type.typlen` (negative for variable-width types).
    pub type_size: i16,
    /// Type modifier (`atttypmod`), type specific.
    pub type_modifier: i32,
    /// Format code: 0 text, 1 binary (always 0 in a Describe Statement answer).
    pub format: i16,
}

impl FieldDescription {
    /// The column's format, or `None` for a code other than 0 or 1.
    pub fn format(&self) -> Option<Format> {
        Format::from_code(self.format)
    }

    /// The column name as text, if UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.name).ok()
    }
}

/// A RowDescription: the shape of the rows that follow.
///
/// It keeps the body it was parsed from, so an unchanged description re-encodes to the
/// same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDescription {
    body: Bytes,
    fields: Vec<FieldDescription>,
}

const ROW_DESCRIPTION: &str = "RowDescription";

impl RowDescription {
    /// Parses a RowDescription body.
    pub fn parse(body: Bytes, limits: &Limits) -> Result<RowDescription> {
        let mut r = Reader::new(body.clone(), ROW_DESCRIPTION);
        let n = r.count16("fields", limits.max_columns)?;
        let mut fields = Vec::with_capacity(n.min(r.remaining() / 19));
        for _ in 0..n {
            fields.push(FieldDescription {
                name: r.cstr("name")?,
                table_oid: r.u32("table oid")?,
                column_id: r.i16("column number")?,
                type_oid: r.u32("type oid")?,
                type_size: r.i16("type size")?,
                type_modifier: r.i32("type modifier")?,
                format: r.i16("format")?,
            });
        }
        r.finish()?;
        Ok(RowDescription { body, fields })
    }

    /// Builds a RowDescription from its fields.
    pub fn new(fields: Vec<FieldDescription>) -> Result<RowDescription> {
        let mut b = BytesMut::new();
        wire::put_count16(&mut b, fields.len(), ROW_DESCRIPTION, "fields")?;
        for f in &fields {
            wire::put_cstr(&mut b, &f.name, ROW_DESCRIPTION, "name")?;
            b.put_u32(f.table_oid);
            b.put_i16(f.column_id);
            b.put_u32(f.type_oid);
            b.put_i16(f.type_size);
            b.put_i32(f.type_modifier);
            b.put_i16(f.format);
        }
        Ok(RowDescription {
            body: b.freeze(),
            fields,
        })
    }

    /// The fields, in column order.
    pub fn fields(&self) -> &[FieldDescription] {
        &self.fields
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no columns.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The message body as parsed or built.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The same description with the result format codes of a Bind applied: none means all
    /// text, one applies to every column, otherwise one per column. A Describe Statement
    /// answer always says text; the formats the rows really use come from Bind.
    pub fn with_formats(&self, formats: &[i16]) -> Result<RowDescription> {
        let n = self.fields.len();
        if formats.len() > 1 && formats.len() != n {
            return Err(Error::InvalidField {
                message: "Bind",
                field: "result format count",
                value: i64::try_from(formats.len()).unwrap_or(i64::MAX),
            });
        }
        let mut fields = self.fields.clone();
        for (i, f) in fields.iter_mut().enumerate() {
            f.format = match formats {
                [] => 0,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(0),
            };
        }
        RowDescription::new(fields)
    }
}

/// A DataRow: a count and that many length-prefixed cells, viewed in place.
///
/// Parsing validates every length once, so the cell views afterwards cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRow {
    body: Bytes,
    count: usize,
}

const DATA_ROW: &str = "DataRow";

impl DataRow {
    /// Parses a DataRow body.
    pub fn parse(body: Bytes, limits: &Limits) -> Result<DataRow> {
        let mut b: &[u8] = &body;
        let count = usize::from(
            b.try_get_u16()
                .map_err(|_| Error::truncated(DATA_ROW, "count"))?,
        );
        wire::check_count(DATA_ROW, "cells", count, limits.max_columns)?;
        for _ in 0..count {
            let len = b
                .try_get_i32()
                .map_err(|_| Error::truncated(DATA_ROW, "cell length"))?;
            if len == -1 {
                continue;
            }
            let len = usize::try_from(len).map_err(|_| Error::InvalidField {
                message: DATA_ROW,
                field: "cell length",
                value: len.into(),
            })?;
            if len > b.len() {
                return Err(Error::truncated(DATA_ROW, "cell"));
            }
            b.advance(len);
        }
        if !b.is_empty() {
            return Err(Error::TrailingBytes {
                message: DATA_ROW,
                extra: b.len(),
            });
        }
        Ok(DataRow { body, count })
    }

    /// Builds a DataRow from cell values (`None` is NULL).
    pub fn new<'a>(cells: impl IntoIterator<Item = Option<&'a [u8]>>) -> Result<DataRow> {
        let mut b = BytesMut::new();
        b.put_u16(0);
        let mut count = 0usize;
        for c in cells {
            wire::put_nullable(&mut b, c, DATA_ROW)?;
            count = count.saturating_add(1);
        }
        let n = u16::try_from(count).map_err(|_| Error::TooMany {
            message: DATA_ROW,
            what: "cells",
            count,
            limit: u16::MAX as usize,
        })?;
        if let Some(w) = b.get_mut(0..2) {
            w.copy_from_slice(&n.to_be_bytes());
        }
        Ok(DataRow {
            body: b.freeze(),
            count,
        })
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the row has no cells.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The message body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The cells in order; `None` is NULL. No copying.
    pub fn cells(&self) -> Cells<'_> {
        Cells {
            rest: self.body.get(2..).unwrap_or_default(),
            left: self.count,
        }
    }

    /// One cell (`None` for NULL), or `Err` past the last column.
    pub fn cell(&self, index: usize) -> Option<Option<&[u8]>> {
        self.cells().nth(index)
    }

    /// One cell as a zero-copy `Bytes` sharing the frame's buffer.
    pub fn cell_bytes(&self, index: usize) -> Option<Option<Bytes>> {
        let base = self.body.as_ptr() as usize;
        let cell = self.cell(index)?;
        Some(cell.map(|c| {
            let start = (c.as_ptr() as usize).saturating_sub(base);
            self.body.slice(start..start.saturating_add(c.len()))
        }))
    }

    /// Appends the whole DataRow message to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<()> {
        let len = self
            .body
            .len()
            .checked_add(4)
            .and_then(|l| i32::try_from(l).ok())
            .ok_or(Error::InvalidField {
                message: DATA_ROW,
                field: "length",
                value: i64::MAX,
            })?;
        dst.reserve(self.body.len().saturating_add(5));
        dst.put_u8(b'D');
        dst.put_i32(len);
        dst.put_slice(&self.body);
        Ok(())
    }
}

/// Iterator over the cells of a [`DataRow`].
#[derive(Debug, Clone)]
pub struct Cells<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Cells<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let len = self.rest.try_get_i32().ok()?;
        if len < 0 {
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        let (cell, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(Some(cell))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// What to do with one cell while rewriting a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellEdit {
    /// Keep the cell as it is.
    Keep,
    /// Replace it with NULL.
    Null,
    /// Replace it with the bytes the callback wrote into the scratch buffer.
    Replace,
}

/// Rewrites DataRows cell by cell into a caller's buffer, recomputing every length.
///
/// The scratch buffer for replacement values is reused from row to row, so rewriting
/// allocates nothing per row once the buffers have grown to the largest row seen.
#[derive(Debug, Default)]
pub struct RowRewriter {
    scratch: BytesMut,
    out: BytesMut,
}

impl RowRewriter {
    /// A rewriter with empty buffers.
    pub fn new() -> RowRewriter {
        RowRewriter::default()
    }

    /// Appends a rewritten copy of `row` (the whole DataRow message) to `dst`.
    ///
    /// `edit(column, value, scratch)` is called for every cell; to replace a value, write
    /// the new bytes into `scratch` (it is empty on entry) and return
    /// [`CellEdit::Replace`]. Returns how many cells were changed.
    pub fn rewrite_into<F>(
        &mut self,
        row: &DataRow,
        dst: &mut BytesMut,
        mut edit: F,
    ) -> Result<usize>
    where
        F: FnMut(usize, Option<&[u8]>, &mut BytesMut) -> CellEdit,
    {
        let start = dst.len();
        dst.reserve(row.body.len().saturating_add(5));
        let at = wire::begin(dst, b'D');
        let n = u16::try_from(row.count).unwrap_or(u16::MAX);
        dst.put_u16(n);
        let mut changed = 0usize;
        for (i, cell) in row.cells().enumerate() {
            self.scratch.clear();
            match edit(i, cell, &mut self.scratch) {
                CellEdit::Keep => wire::put_nullable(dst, cell, DATA_ROW)?,
                CellEdit::Null => {
                    if cell.is_some() {
                        changed = changed.saturating_add(1);
                    }
                    dst.put_i32(-1);
                }
                CellEdit::Replace => {
                    changed = changed.saturating_add(1);
                    if let Err(e) = wire::put_nullable(dst, Some(&self.scratch), DATA_ROW) {
                        dst.truncate(start);
                        return Err(e);
                    }
                }
            }
        }
        if let Err(e) = wire::finish(dst, at, DATA_ROW) {
            dst.truncate(start);
            return Err(e);
        }
        Ok(changed)
    }

    /// Rewrites `row` into a new [`DataRow`] built in the rewriter's own reused buffer.
    pub fn rewrite<F>(&mut self, row: &DataRow, edit: F) -> Result<DataRow>
    where
        F: FnMut(usize, Option<&[u8]>, &mut BytesMut) -> CellEdit,
    {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let r = self.rewrite_into(row, &mut out, edit);
        let frame = out.split().freeze();
        self.out = out;
        r?;
        Ok(DataRow {
            body: frame.slice(5.min(frame.len())..),
            count: row.count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_replaces_and_nulls() {
        let row = DataRow::new([Some(&b"1"[..]), Some(&b"secret"[..]), None]).unwrap();
        let mut rw = RowRewriter::new();
        let out = rw
            .rewrite(&row, |i, _, s| match i {
                1 => {
                    s.extend_from_slice(b"xxxxxxxxxxxx");
                    CellEdit::Replace
                }
                0 => CellEdit::Null,
                _ => CellEdit::Keep,
            })
            .unwrap();
        let cells: Vec<_> = out.cells().collect();
        assert_eq!(cells, vec![None, Some(&b"xxxxxxxxxxxx"[..]), None]);
        let reparsed = DataRow::parse(out.body().clone(), &Limits::DEFAULT).unwrap();
        assert_eq!(reparsed, out);
        assert_eq!(
            out.cell_bytes(1).unwrap().unwrap(),
            Bytes::from_static(b"xxxxxxxxxxxx")
        );
    }

    #[test]
    fn data_row_rejects_bad_lengths() {
        let l = Limits::DEFAULT;
        assert!(DataRow::parse(Bytes::from_static(&[0, 1, 0, 0, 0, 5, b'a']), &l).is_err());
        assert!(DataRow::parse(Bytes::from_static(&[0, 1, 0xff, 0xff, 0xff, 0xfe]), &l).is_err());
        assert!(DataRow::parse(Bytes::from_static(&[0, 0, 1]), &l).is_err());
        assert!(DataRow::parse(Bytes::from_static(&[0, 1, 0xff, 0xff, 0xff, 0xff]), &l).is_ok());
    }

    #[test]
    fn formats_from_bind_apply() {
        let f = |n: &str| FieldDescription {
            name: Bytes::copy_from_slice(n.as_bytes()),
            table_oid: 1,
            column_id: 1,
            type_oid: 23,
            type_size: 4,
            type_modifier: -1,
            format: 0,
        };
        let rd = RowDescription::new(vec![f("a"), f("b")]).unwrap();
        assert!(
            rd.with_formats(&[1])
                .unwrap()
                .fields()
                .iter()
                .all(|f| f.format == 1)
        );
        assert_eq!(rd.with_formats(&[0, 1]).unwrap().fields()[1].format, 1);
        assert!(rd.with_formats(&[0, 1, 1]).is_err());
    }
}
