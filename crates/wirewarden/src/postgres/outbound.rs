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
///
/// Content detectors find a card number in a message, not a name: under a profile with
/// column rules, an error of a class whose messages quote the values of rows (see
/// [`quotes_values`]: `invalid input syntax for type integer: "Ada Lovelace"` for
/// `SELECT name::int`, a unique violation's `Key (name)=(…)`, a check's `Failing row
/// contains (…)`), or an error or notice raised inside a routine (it has a context field:
/// `RAISE NOTICE '%', name` chooses any text and any SQLSTATE), would hand out what the
/// rules mask in rows, and the gateway cannot tell which column a quoted value came from. Such an error keeps its SQLSTATE, severity and
/// the names of its schema, table, column, type and constraint (masked by content like any
/// text); its message becomes the condition the SQLSTATE names, and its detail, hint,
/// context and internal query are dropped.
pub(crate) fn mask_error_fields(
    profile: &Profile,
    fields: &ErrorFields,
    counts: &mut MaskedCounts,
) -> Result<Option<ErrorFields>, Unmaskable> {
    // A context (`W`) means the message was raised inside a routine (`RAISE` in PL/pgSQL,
    // an error in a SQL function) or names a bound parameter: a routine chooses its
    // SQLSTATE and its text, so the class says nothing there.
    let withhold = profile.has_column_rules()
        && (quotes_values(fields.get(b'C')) || fields.get(b'W').is_some());
    let mut changed = false;
    let mut out = Vec::with_capacity(fields.fields.len());
    for (code, value) in &fields.fields {
        // The SQLSTATE and the untranslated severity are fixed vocabularies, not data; a
        // value outside them (a hostile or broken server) is masked like any other text.
        if fixed_vocabulary(*code, value) {
            out.push((*code, value.clone()));
            continue;
        }
        if withhold {
            match code {
                b'M' => {
                    changed = true;
                    out.push((
                        *code,
                        bytes::Bytes::from(withheld_message(fields.get(b'C'))),
                    ));
                    continue;
                }
                b'D' | b'H' | b'W' | b'q' => {
                    changed = true;
                    continue;
                }
                _ => {}
            }
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

/// Whether an error with SQLSTATE `code` may quote values of the rows a statement read:
/// data exceptions (22: a value that does not convert, is out of range, does not match a
/// format), integrity and check-option violations (23, 44: the key or the failing row),
/// errors a function raises (P0, 2F, 38, 39: any text the function chose), foreign-data
/// errors (HV) and internal errors (XX). An error without a well-formed SQLSTATE counts as
/// one. The others (syntax, names, permissions, transactions, resources) quote the
/// statement's own words, not stored values.
pub(crate) fn quotes_values(code: Option<&bytes::Bytes>) -> bool {
    match code {
        Some(c) if is_sqlstate(c) => matches!(
            &c[..2],
            b"22" | b"23" | b"44" | b"P0" | b"2F" | b"38" | b"39" | b"HV" | b"XX"
        ),
        _ => true,
    }
}

/// The message an error of SQLSTATE `code` is given when its own is withheld: the
/// condition the code names (its class when it is not one of the common ones) and why.
fn withheld_message(code: Option<&bytes::Bytes>) -> String {
    let code = code.map(|c| String::from_utf8_lossy(c).into_owned());
    let condition = match code.as_deref() {
        Some("22P02") => "invalid text representation",
        Some("22003") => "numeric value out of range",
        Some("22007") => "invalid datetime format",
        Some("22008") => "datetime field overflow",
        Some("22001") => "string data right truncation",
        Some("22012") => "division by zero",
        Some("22023") => "invalid parameter value",
        Some("22021") => "character not in repertoire",
        Some("2201B") => "invalid regular expression",
        Some("22P05") => "untranslatable character",
        Some("23505") => "unique violation",
        Some("23503") => "foreign key violation",
        Some("23502") => "not null violation",
        Some("23514") => "check violation",
        Some("23P01") => "exclusion violation",
        Some("44000") => "with check option violation",
        Some("P0001") => "raise exception",
        Some("P0002") => "no data found",
        Some("P0003") => "too many rows",
        Some(c) if c.starts_with("22") => "data exception",
        Some(c) if c.starts_with("23") => "integrity constraint violation",
        Some(c) if c.starts_with("P0") => "PL/pgSQL error",
        Some(c) if c.starts_with("2F") => "SQL routine exception",
        Some(c) if c.starts_with("38") => "external routine exception",
        Some(c) if c.starts_with("39") => "external routine invocation exception",
        Some(c) if c.starts_with("HV") => "foreign data wrapper error",
        Some(c) if c.starts_with("XX") => "internal error",
        Some("00000") => "notice raised inside a routine",
        Some(c) if c.starts_with("01") => "warning raised inside a routine",
        Some(_) => "error raised inside a routine",
        None => "error",
    };
    format!(
        "{condition} (wirewarden: the server's message is withheld, it may quote a value \
         this session's column rules mask)"
    )
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
    fn under_column_rules_errors_that_quote_values_keep_only_their_condition() {
        let ruled = Profile::builder("ruled")
            .rule(FieldRule::new(Selector::column("name"), Strategy::redact()))
            .build()
            .unwrap();
        let plain = Profile::builder("plain").build().unwrap();
        let name = "Ada Lovelace";
        let conversion = ErrorFields::new(
            "ERROR",
            "22P02",
            format!("invalid input syntax for type integer: \"{name}\""),
        )
        .with(b'V', "ERROR")
        .with(b'W', format!("SQL function \"f\" statement 1: {name}"));
        let unique = ErrorFields::new("ERROR", "23505", "duplicate key value")
            .with(b'D', format!("Key (name)=({name}) already exists."))
            .with(b'H', name)
            .with(b'q', format!("SELECT '{name}'"))
            .with(b't', "customers")
            .with(b'n', "customers_name_key");
        let mut counts = MaskedCounts::new();
        for fields in [&conversion, &unique] {
            let masked = mask_error_fields(&ruled, fields, &mut counts)
                .unwrap()
                .expect("withheld");
            assert!(!format!("{masked:?}").contains(name), "{masked:?}");
            assert_eq!(masked.code(), fields.code());
            let message = String::from_utf8_lossy(masked.get(b'M').unwrap()).into_owned();
            assert!(message.contains("wirewarden"), "{message}");
            for gone in [b'D', b'H', b'W', b'q'] {
                assert!(masked.get(gone).is_none());
            }
            // Without column rules, content masking alone applies: a name is no detected
            // value, so the message stands.
            assert!(
                mask_error_fields(&plain, fields, &mut counts)
                    .unwrap()
                    .is_none()
            );
        }
        let masked = mask_error_fields(&ruled, &unique, &mut counts)
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(masked.get(b'M').unwrap()).starts_with("unique violation"));
        assert_eq!(masked.get(b't').map(|b| &b[..]), Some(&b"customers"[..]));
        assert_eq!(
            masked.get(b'n').map(|b| &b[..]),
            Some(&b"customers_name_key"[..])
        );
        // Raised inside a routine: its class is the routine's choice.
        for (code, severity) in [
            ("00000", "NOTICE"),
            ("42000", "ERROR"),
            ("01000", "WARNING"),
        ] {
            let raised = ErrorFields::new(severity, code, name)
                .with(b'W', "PL/pgSQL function leak() line 3 at RAISE");
            let masked = mask_error_fields(&ruled, &raised, &mut counts)
                .unwrap()
                .expect("withheld");
            assert!(!format!("{masked:?}").contains(name), "{masked:?}");
            assert!(
                String::from_utf8_lossy(masked.get(b'M').unwrap()).contains("inside a routine")
            );
            assert!(
                mask_error_fields(&plain, &raised, &mut counts)
                    .unwrap()
                    .is_none()
            );
        }
        // The server's own notice, outside any routine, keeps its text.
        let skipping =
            ErrorFields::new("NOTICE", "42P07", "relation \"t\" already exists, skipping");
        assert!(
            mask_error_fields(&ruled, &skipping, &mut counts)
                .unwrap()
                .is_none()
        );
        // Errors about the statement's own words keep their message.
        let undefined = ErrorFields::new("ERROR", "42703", "column \"nme\" does not exist").with(
            b'H',
            "Perhaps you meant to reference the column \"customers.name\".",
        );
        assert!(
            mask_error_fields(&ruled, &undefined, &mut counts)
                .unwrap()
                .is_none()
        );
        // No SQLSTATE, or a malformed one: counted as quoting values.
        assert!(quotes_values(None));
        assert!(quotes_values(Some(&bytes::Bytes::from_static(b"bogus"))));
        assert!(quotes_values(Some(&bytes::Bytes::from_static(b"XX000"))));
        assert!(!quotes_values(Some(&bytes::Bytes::from_static(b"42P01"))));
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
