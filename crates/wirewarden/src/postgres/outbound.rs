//! Masking of everything that flows from the upstream to the client: DataRows (text and
//! binary formats, by source column and by content), COPY data, error and notice fields,
//! notification payloads and parameter values.
//!
//! Every function here either returns the frame unchanged (the caller forwards the original
//! bytes), a re-encoded frame, or an error — never a value it could not inspect.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use wirewarden_core::MaskedCounts;
use wirewarden_mask::{Field, FieldRule, Profile, ValueType};
use wirewarden_postgres::types::{Type, Value, encode_replacement};
use wirewarden_postgres::{CellEdit, DataRow, ErrorFields, FieldDescription, Format, RowRewriter};

use super::catalog::Catalog;

/// A column's masking plan, computed once per RowDescription.
#[derive(Debug, Clone)]
pub(crate) struct ColumnPlan {
    pub(crate) table: Option<String>,
    pub(crate) column: String,
    pub(crate) type_oid: u32,
    pub(crate) format: Format,
    pub(crate) value_type: ValueType,
    pub(crate) pg_type: Option<Type>,
    /// The column comes from a table the catalog could not name (the lookup failed): its
    /// real name is unknown, so column rules cannot be applied to it.
    pub(crate) unresolved: bool,
    /// The column's field rule, resolved on its first cell rather than for every cell.
    rule: RuleCache,
}

/// A column's field rule under the profile it was resolved with. Every row of a result is
/// masked with one profile, but a plan outlives its result (the next query may return the
/// same shape under another profile), so the profile is kept with the rule: holding the
/// `Arc` means its address cannot be reused while the cache compares against it.
#[derive(Debug, Clone, Default)]
struct RuleCache(OnceLock<(Arc<Profile>, Option<FieldRule>)>);

impl RuleCache {
    /// The rule for `field` under `profile`: cached for the first profile seen, resolved
    /// afresh for any other.
    fn get<'p>(&'p self, profile: &'p Arc<Profile>, field: &Field<'_>) -> Option<&'p FieldRule> {
        let (cached, rule) = self
            .0
            .get_or_init(|| (profile.clone(), profile.rule_for(field).cloned()));
        if Arc::ptr_eq(cached, profile) {
            rule.as_ref()
        } else {
            profile.rule_for(field)
        }
    }
}

/// The mask value type for a PostgreSQL type.
pub(crate) fn value_type(ty: Option<Type>) -> ValueType {
    match ty {
        Some(Type::Bool) => ValueType::Boolean,
        Some(Type::Int2 | Type::Int4 | Type::Int8) => ValueType::Integer,
        Some(Type::Float4 | Type::Float8 | Type::Numeric) => ValueType::Numeric,
        Some(Type::Uuid) => ValueType::Uuid,
        Some(Type::Date) => ValueType::Date,
        Some(Type::Timestamp | Type::TimestampTz) => ValueType::Timestamp,
        Some(Type::Json | Type::Jsonb) => ValueType::Json,
        Some(Type::Bytea) => ValueType::Bytes,
        Some(Type::Text | Type::Varchar | Type::Bpchar) => ValueType::Text,
        // time, arrays, composites, enums, domains …: text we can read but whose grammar we
        // do not write; a changed value becomes NULL (see `mask_cell`).
        _ => ValueType::Text,
    }
}

/// Builds the plan for each field, resolving real table and column names.
pub(crate) fn plan(fields: &[FieldDescription], catalog: &Catalog) -> Vec<ColumnPlan> {
    fields
        .iter()
        .map(|f| {
            let known = catalog.get(f.table_oid);
            let alias = || String::from_utf8_lossy(&f.name).into_owned();
            // A view column whose table column cannot be told counts as not looked up.
            let source = known.as_ref().and_then(|t| t.source(f.column_id));
            let unresolved = f.table_oid != 0 && source.is_none();
            let (table, column) = match source {
                Some((table, column)) if f.table_oid != 0 => (
                    table.map(str::to_owned),
                    column.map_or_else(alias, str::to_owned),
                ),
                _ => (None, alias()),
            };
            let pg_type = Type::from_oid(f.type_oid);
            ColumnPlan {
                table,
                column,
                type_oid: f.type_oid,
                format: f.format().unwrap_or(Format::Text),
                value_type: value_type(pg_type),
                pg_type,
                unresolved,
                rule: RuleCache::default(),
            }
        })
        .collect()
}

/// Why a value could not be masked.
#[derive(Debug)]
pub(crate) struct Unmaskable(pub(crate) String);

/// What to write for one cell.
enum CellOut {
    Keep,
    Null,
    Text(String),
}

fn mask_cell(
    profile: &Arc<Profile>,
    plan: &ColumnPlan,
    raw: &[u8],
    counts: &mut MaskedCounts,
) -> Result<CellOut, Unmaskable> {
    if plan.unresolved && profile.has_column_rules() {
        // Which column this is decides whether a rule hides it whole, and the client's
        // alias is no answer: fail closed.
        return Err(Unmaskable(format!(
            "the source of column {} could not be looked up",
            plan.column
        )));
    }
    let field = Field::Column {
        table: plan.table.as_deref(),
        column: &plan.column,
    };
    let rule = plan.rule.get(profile, &field);
    let err = |e: &dyn std::fmt::Display| Unmaskable(format!("column {}: {e}", plan.column));
    // The value as text: text format is text already; binary values of known types are
    // decoded; anything else is inspected as raw bytes.
    let text: Cow<'_, str> = match (plan.format, plan.pg_type) {
        (Format::Text, _) => match std::str::from_utf8(raw) {
            Ok(s) => Cow::Borrowed(s),
            Err(e) => return Err(err(&e)),
        },
        (Format::Binary, Some(Type::Bytea)) => {
            let out = profile
                .mask_value_with_rule(rule, ValueType::Bytes, Cow::Borrowed(raw), counts)
                .map_err(|e| err(&e))?;
            return Ok(match out {
                None => CellOut::Null,
                Some(Cow::Borrowed(_)) => CellOut::Keep,
                // A changed binary bytea is written back as-is (any bytes are valid).
                Some(Cow::Owned(b)) => CellOut::Text(String::from_utf8_lossy(&b).into_owned()),
            });
        }
        (Format::Binary, Some(ty)) => match Value::decode(ty, Format::Binary, raw) {
            Ok(v) => Cow::Owned(v.to_text()),
            Err(e) => return Err(err(&e)),
        },
        (Format::Binary, None) => {
            // A binary type we do not decode: scan its bytes; any finding withholds it.
            let out = profile
                .mask_value_with_rule(rule, ValueType::Opaque, Cow::Borrowed(raw), counts)
                .map_err(|e| err(&e))?;
            return Ok(match out {
                Some(Cow::Borrowed(_)) => CellOut::Keep,
                _ => CellOut::Null,
            });
        }
    };
    let vt = if plan.value_type == ValueType::Bytes {
        ValueType::Text
    } else {
        plan.value_type
    };
    let decoded = matches!(text, Cow::Owned(_));
    let out = profile
        .mask_str_with_rule(rule, vt, Cow::Borrowed(&text), counts)
        .map_err(|e| err(&e))?;
    Ok(match out {
        None => CellOut::Null,
        // Unchanged: the original bytes go out (a decoded binary value is not re-encoded).
        Some(Cow::Borrowed(_)) => CellOut::Keep,
        Some(Cow::Owned(s)) if decoded && s == *text => CellOut::Keep,
        Some(Cow::Owned(s)) => CellOut::Text(s),
    })
}

/// Masks one DataRow. Returns `None` when nothing changed (forward the original bytes), or
/// the re-encoded frame appended to `out`.
pub(crate) fn mask_row(
    profile: &Arc<Profile>,
    plans: Option<&[ColumnPlan]>,
    row: &DataRow,
    rewriter: &mut RowRewriter,
    out: &mut BytesMut,
    counts: &mut MaskedCounts,
) -> Result<bool, Unmaskable> {
    let fallback;
    let plans = match plans {
        Some(p) if p.len() == row.len() => p,
        _ => {
            // The shape is unknown: every cell is inspected as text by content only, and
            // anything that is not text is withheld (all of it, if column rules apply).
            fallback = vec![
                ColumnPlan {
                    table: None,
                    column: String::new(),
                    type_oid: 0,
                    format: Format::Text,
                    value_type: ValueType::Text,
                    pg_type: None,
                    unresolved: true,
                    rule: RuleCache::default(),
                };
                row.len()
            ];
            &fallback
        }
    };
    let mut edits: Vec<CellOut> = Vec::with_capacity(row.len());
    let mut any = false;
    for (i, cell) in row.cells().enumerate() {
        let edit = match (cell, plans.get(i)) {
            (Some(raw), Some(plan)) => mask_cell(profile, plan, raw, counts)?,
            _ => CellOut::Keep,
        };
        any |= !matches!(edit, CellOut::Keep);
        edits.push(edit);
    }
    if !any {
        return Ok(false);
    }
    let mut failure = None;
    rewriter
        .rewrite_into(row, out, |i, _, scratch| match edits.get(i) {
            Some(CellOut::Null) => CellEdit::Null,
            Some(CellOut::Text(s)) => {
                let Some(plan) = plans.get(i) else {
                    return CellEdit::Null;
                };
                match (plan.format, plan.pg_type) {
                    (_, Some(Type::Bytea)) if plan.format == Format::Binary => {
                        scratch.extend_from_slice(s.as_bytes());
                        CellEdit::Replace
                    }
                    (Format::Text, Some(Type::Text | Type::Varchar | Type::Bpchar) | None)
                        if plan.value_type == ValueType::Text && plan.pg_type.is_some() =>
                    {
                        scratch.extend_from_slice(s.as_bytes());
                        CellEdit::Replace
                    }
                    (format, Some(_)) => {
                        if encode_replacement(plan.type_oid, format, s, scratch).is_ok() {
                            CellEdit::Replace
                        } else {
                            // Not a valid value of the column's type: NULL, never the original.
                            scratch.clear();
                            CellEdit::Null
                        }
                    }
                    // A type whose grammar we do not write: withhold the value.
                    (_, None) => CellEdit::Null,
                }
            }
            _ => CellEdit::Keep,
        })
        .map_err(|e| {
            failure = Some(e.to_string());
            Unmaskable(format!("re-encoding a row: {e}"))
        })?;
    Ok(true)
}

/// Masks the text fields of an ErrorResponse or NoticeResponse. `None` when unchanged.
pub(crate) fn mask_error_fields(
    profile: &Profile,
    fields: &ErrorFields,
    counts: &mut MaskedCounts,
) -> Result<Option<ErrorFields>, Unmaskable> {
    let mut changed = false;
    let mut out = Vec::with_capacity(fields.fields.len());
    for (code, value) in &fields.fields {
        // The SQLSTATE and the untranslated severity are fixed vocabularies, not data; a
        // value outside them (a hostile or broken server) is masked like any other text.
        if fixed_vocabulary(*code, value) {
            out.push((*code, value.clone()));
            continue;
        }
        match mask_bytes_as_text(profile, value, counts)? {
            Some(masked) => {
                changed = true;
                out.push((*code, bytes::Bytes::from(masked)));
            }
            None => out.push((*code, value.clone())),
        }
    }
    Ok(changed.then_some(ErrorFields { fields: out }))
}

/// Whether `value` is a SQLSTATE: five digits or upper-case letters.
pub(crate) fn is_sqlstate(value: &[u8]) -> bool {
    value.len() == 5
        && value
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// Whether an error or notice field holds one of its fixed values: a SQLSTATE (`C`, five
/// digits or upper-case letters) or an untranslated severity (`V`).
fn fixed_vocabulary(code: u8, value: &[u8]) -> bool {
    match code {
        b'C' => is_sqlstate(value),
        b'V' => matches!(
            value,
            b"ERROR" | b"FATAL" | b"PANIC" | b"WARNING" | b"NOTICE" | b"DEBUG" | b"INFO" | b"LOG"
        ),
        _ => false,
    }
}

/// Masks free text by content. `None` when unchanged; a NULL strategy yields an empty
/// string (messages cannot be NULL).
pub(crate) fn mask_bytes_as_text(
    profile: &Profile,
    value: &[u8],
    counts: &mut MaskedCounts,
) -> Result<Option<String>, Unmaskable> {
    let text =
        std::str::from_utf8(value).map_err(|e| Unmaskable(format!("text is not UTF-8: {e}")))?;
    match profile.mask_text(&Field::Unknown, Cow::Borrowed(text), counts) {
        Ok(Some(Cow::Borrowed(_))) => Ok(None),
        Ok(Some(Cow::Owned(s))) => Ok(Some(s)),
        Ok(None) => Ok(Some(String::new())),
        Err(e) => Err(Unmaskable(e.to_string())),
    }
}

/// Masks one COPY data message (a line of text-format COPY, or a chunk of binary COPY).
pub(crate) fn mask_copy_data(
    profile: &Profile,
    data: &[u8],
    binary: bool,
    counts: &mut MaskedCounts,
) -> Result<Option<Vec<u8>>, Unmaskable> {
    if profile.has_column_rules() {
        // COPY's data names no column: a rule for `customers.name` could not be applied to
        // the field that holds the name, and content detection alone would let it out.
        return Err(Unmaskable(
            "COPY output names no columns, and the mask profile has column rules".into(),
        ));
    }
    if binary {
        // Binary COPY is a framed stream we do not rewrite: scan it, and withhold it if
        // anything is found.
        let out = profile
            .mask_value(
                &Field::Unknown,
                ValueType::Bytes,
                Cow::Borrowed(data),
                counts,
            )
            .map_err(|e| Unmaskable(e.to_string()))?;
        return match out {
            Some(Cow::Borrowed(_)) => Ok(None),
            _ => Err(Unmaskable(
                "binary COPY data contains values that must be masked".into(),
            )),
        };
    }
    // Text COPY: one line, fields separated by tabs. Each field is masked on its own so
    // a finding can never swallow a delimiter.
    let (line, newline) = match data.strip_suffix(b"\n") {
        Some(l) => (l, true),
        None => (data, false),
    };
    let mut out = Vec::with_capacity(data.len());
    let mut changed = false;
    for (i, field) in line.split(|b| *b == b'\t').enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match mask_bytes_as_text(profile, field, counts)? {
            Some(masked) => {
                changed = true;
                out.extend(
                    masked
                        .bytes()
                        .map(|b| if matches!(b, b'\t' | b'\n') { b'*' } else { b }),
                );
            }
            None => out.extend_from_slice(field),
        }
    }
    if newline {
        out.push(b'\n');
    }
    Ok(changed.then_some(out))
}

#[cfg(test)]
mod tests {
    use wirewarden_mask::{Selector, Strategy};

    use super::*;

    fn text_column(column: &str) -> ColumnPlan {
        ColumnPlan {
            table: Some("customers".into()),
            column: column.into(),
            type_oid: 25,
            format: Format::Text,
            value_type: ValueType::Text,
            pg_type: Some(Type::Text),
            unresolved: false,
            rule: RuleCache::default(),
        }
    }

    #[test]
    fn error_fields_outside_their_vocabulary_are_masked() {
        let profile = Profile::builder("p").build().unwrap();
        let ssn = "123-45-6789";
        let fields = ErrorFields::new("ERROR", "42703", "no such column")
            .with(b'V', "ERROR")
            .with(b'D', format!("the value {ssn}"));
        let mut counts = MaskedCounts::new();
        let masked = mask_error_fields(&profile, &fields, &mut counts)
            .unwrap()
            .expect("the detail is masked");
        assert_eq!(masked.code(), Some("42703"));
        assert!(!format!("{masked:?}").contains(ssn));
        // A server that puts data where a SQLSTATE or a severity belongs has it masked too.
        let hostile = ErrorFields::new("ERROR", ssn, "x").with(b'V', ssn);
        let masked = mask_error_fields(&profile, &hostile, &mut counts)
            .unwrap()
            .expect("masked");
        assert!(!format!("{masked:?}").contains(ssn), "{masked:?}");
        assert!(fixed_vocabulary(b'C', b"XX000"));
        assert!(!fixed_vocabulary(b'C', b"xx000"));
        assert!(!fixed_vocabulary(b'V', b"FEHLER"));
    }

    #[test]
    fn a_column_rule_is_resolved_once_per_profile() {
        let ruled = Arc::new(
            Profile::builder("ruled")
                .rule(FieldRule::new(
                    Selector::column("*ssn*"),
                    Strategy::redact(),
                ))
                .build()
                .unwrap(),
        );
        let plain = Arc::new(Profile::builder("plain").build().unwrap());
        let plan = text_column("tax_ssn");
        let field = Field::Column {
            table: plan.table.as_deref(),
            column: &plan.column,
        };
        let entity = |p: &Arc<Profile>| plan.rule.get(p, &field).map(|r| r.entity.clone());
        assert_eq!(entity(&ruled).as_deref(), Some("column:*ssn*"));
        // A plan outlives its result: the same shape under another profile gets that
        // profile's answer, not the cached one.
        assert_eq!(entity(&plain), None);
        assert_eq!(entity(&ruled).as_deref(), Some("column:*ssn*"));

        let mut counts = MaskedCounts::new();
        let out = mask_cell(&ruled, &plan, b"no sensitive content", &mut counts).unwrap();
        assert!(matches!(&out, CellOut::Text(s) if s == "[REDACTED]"));
        let out = mask_cell(&plain, &plan, b"no sensitive content", &mut counts).unwrap();
        assert!(matches!(out, CellOut::Keep));
        let out = mask_cell(&plain, &plan, b"ssn 123-45-6789", &mut counts).unwrap();
        assert!(matches!(&out, CellOut::Text(s) if s == "ssn [REDACTED]"));
        assert_eq!(counts.0.get("column:*ssn*"), Some(&1));
        assert_eq!(counts.0.get("ssn"), Some(&1));
    }
}
