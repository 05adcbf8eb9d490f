//! Profiles: which detectors run, which fields are masked whatever they hold, and how each
//! entity is replaced. Masking entry points live here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wirewarden_core::MaskedCounts;

use crate::custom::CustomDetector;
use crate::detect::{Detector, DetectorSet, Finding, Kind, Scanner};
use crate::json;
use crate::rules::{Field, PathElem, Selector};
use crate::strategy::{Canon, MaskKey, Span, Strategy, ValueType, mask_span, mask_whole};
use crate::{Error, Result};

/// Bounds on what the masker agrees to process. A value beyond them is an error (and so a
/// refusal), never passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest value, in bytes.
    pub max_value_len: usize,
    /// Deepest nesting of arrays and objects in one JSON document (at most 256).
    pub max_json_depth: usize,
    /// How many levels of JSON inside JSON strings are unpacked (at most 16).
    pub max_nested_json: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_len: 64 << 20,
            max_json_depth: 64,
            max_nested_json: 4,
        }
    }
}

/// A field rule: values from `selector` are masked as `entity` with `strategy`, whatever
/// they contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    /// Which values.
    pub selector: Selector,
    /// How they are replaced.
    pub strategy: Strategy,
    /// The entity name reported in masked counts.
    pub entity: String,
}

impl FieldRule {
    /// A rule whose entity name is derived from the selector (`column:*ssn*`).
    #[must_use]
    pub fn new(selector: Selector, strategy: Strategy) -> Self {
        let entity = selector.entity();
        Self {
            selector,
            strategy,
            entity,
        }
    }
}

/// A masking profile: detectors, field rules, strategies and limits. Cheap to share
/// (`Arc<Profile>`); masking takes `&self`.
#[derive(Debug, Clone)]
pub struct Profile {
    name: String,
    scanner: Scanner,
    custom: Vec<CustomDetector>,
    /// The strategy of each built-in detector (indexed by `Detector as usize`) and of each
    /// custom detector, resolved once so that masking does no lookups by name.
    builtin_strategies: Vec<Strategy>,
    custom_strategies: Vec<Strategy>,
    rules: Vec<FieldRule>,
    has_json_rules: bool,
    json_in_text: bool,
    key: Option<Arc<MaskKey>>,
    limits: Limits,
}

/// Builds a [`Profile`].
#[derive(Debug, Clone)]
pub struct ProfileBuilder {
    name: String,
    detectors: DetectorSet,
    ssn_unformatted: bool,
    custom: Vec<CustomDetector>,
    strategies: HashMap<String, Strategy>,
    default_strategy: Strategy,
    rules: Vec<FieldRule>,
    json_in_text: bool,
    key: Option<Arc<MaskKey>>,
    limits: Limits,
}

impl ProfileBuilder {
    /// Which built-in detectors run (all of them unless set).
    #[must_use]
    pub fn detectors(mut self, set: DetectorSet) -> Self {
        self.detectors = set;
        self
    }

    /// Also treat nine bare digits with a valid SSN structure as an SSN (off by default:
    /// too many order numbers look like that).
    #[must_use]
    pub fn ssn_unformatted(mut self, on: bool) -> Self {
        self.ssn_unformatted = on;
        self
    }

    /// Adds a user-defined detector.
    #[must_use]
    pub fn custom(mut self, d: CustomDetector) -> Self {
        self.custom.push(d);
        self
    }

    /// How values of `entity` (a detector name, a custom detector name) are replaced.
    #[must_use]
    pub fn strategy(mut self, entity: impl Into<String>, s: Strategy) -> Self {
        self.strategies.insert(entity.into(), s);
        self
    }

    /// How entities without their own strategy are replaced (redaction unless set).
    #[must_use]
    pub fn default_strategy(mut self, s: Strategy) -> Self {
        self.default_strategy = s;
        self
    }

    /// Adds a field rule.
    #[must_use]
    pub fn rule(mut self, rule: FieldRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Whether text values that hold a JSON document are masked as JSON (on by default).
    #[must_use]
    pub fn json_in_text(mut self, on: bool) -> Self {
        self.json_in_text = on;
        self
    }

    /// The key for tokenization, hashing and format-preserving replacement.
    #[must_use]
    pub fn key(mut self, key: MaskKey) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    pub(crate) fn key_if_unset(mut self, key: Option<&Arc<MaskKey>>) -> Self {
        if self.key.is_none() {
            self.key = key.cloned();
        }
        self
    }

    /// Processing limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds the profile.
    ///
    /// # Errors
    /// [`Error::MissingKey`] if a strategy needs a key and none was given; [`Error::Config`]
    /// if two custom detectors share a name or a strategy names an unknown entity.
    pub fn build(self) -> Result<Profile> {
        let all_strategies = self
            .strategies
            .values()
            .chain(std::iter::once(&self.default_strategy))
            .chain(self.rules.iter().map(|r| &r.strategy));
        for s in all_strategies {
            if s.needs_key() && self.key.is_none() {
                return Err(Error::MissingKey { strategy: s.name() });
            }
        }
        // The JSON walker recurses once per level: keep the worst case well inside a thread's
        // stack whatever the configuration says.
        if self.limits.max_json_depth > 256 || self.limits.max_nested_json > 16 {
            return Err(Error::config(
                "limits",
                "max_json_depth is at most 256 and max_nested_json at most 16",
            ));
        }
        for (i, c) in self.custom.iter().enumerate() {
            if Detector::from_name(c.name()).is_some()
                || self.custom.iter().skip(i + 1).any(|d| d.name() == c.name())
            {
                return Err(Error::config(
                    format!("custom detector {}", c.name()),
                    "name already used",
                ));
            }
        }
        for entity in self.strategies.keys() {
            let known = Detector::from_name(entity).is_some()
                || self.custom.iter().any(|c| c.name() == entity);
            if !known {
                return Err(Error::config(
                    format!("strategy for {entity:?}"),
                    "no detector of that name",
                ));
            }
        }
        let has_json_rules = self
            .rules
            .iter()
            .any(|r| matches!(r.selector, Selector::JsonPath(_)));
        let resolve = |name: &str| {
            self.strategies
                .get(name)
                .cloned()
                .unwrap_or_else(|| self.default_strategy.clone())
        };
        let builtin_strategies = Detector::ALL.iter().map(|d| resolve(d.name())).collect();
        let custom_strategies = self.custom.iter().map(|c| resolve(c.name())).collect();
        Ok(Profile {
            name: self.name,
            scanner: Scanner {
                set: self.detectors,
                ssn_unformatted: self.ssn_unformatted,
            },
            custom: self.custom,
            builtin_strategies,
            custom_strategies,
            rules: self.rules,
            has_json_rules,
            json_in_text: self.json_in_text,
            key: self.key,
            limits: self.limits,
        })
    }
}

impl Profile {
    /// A builder for a profile named `name`: every built-in detector, redaction.
    #[must_use]
    pub fn builder(name: impl Into<String>) -> ProfileBuilder {
        ProfileBuilder {
            name: name.into(),
            detectors: DetectorSet::all(),
            ssn_unformatted: false,
            custom: Vec::new(),
            strategies: HashMap::new(),
            default_strategy: Strategy::redact(),
            rules: Vec::new(),
            json_in_text: true,
            key: None,
            limits: Limits::default(),
        }
    }

    /// The profile's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limits it enforces.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Masks free text (a message, a Redis reply, a body). Returns `None` when a Null
    /// strategy applies, the input itself (borrowed, uncopied) when nothing matched.
    ///
    /// # Errors
    /// See [`Error`]: a value that cannot be processed must be refused by the caller.
    pub fn mask_text<'a>(
        &self,
        field: &Field<'_>,
        text: Cow<'a, str>,
        counts: &mut MaskedCounts,
    ) -> Result<Option<Cow<'a, str>>> {
        self.check_len(text.len())?;
        if let Some(rule) = self.rule_for(field) {
            counts.add(&rule.entity, 1);
            let out = mask_whole(
                &rule.strategy,
                self.key(),
                &rule.entity,
                ValueType::Text,
                text.as_bytes(),
            )?;
            // Text in, text out: a whole text value is masked into a string.
            return out
                .map(|b| {
                    String::from_utf8(b)
                        .map(Cow::Owned)
                        .map_err(|e| Error::InvalidUtf8 {
                            offset: e.utf8_error().valid_up_to(),
                        })
                })
                .transpose();
        }
        // Already text: no validation, in or out.
        Ok(match self.text(&text, 0, counts)? {
            Edit::Unchanged => Some(text),
            Edit::Changed(s) => Some(Cow::Owned(s)),
            Edit::Null => None,
        })
    }

    /// Whether any field rule selects columns: a caller that cannot tell which column a
    /// value came from must then withhold it rather than mask it by content alone.
    #[must_use]
    pub fn has_column_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.selector, Selector::Column { .. }))
    }

    /// The field rule that applies to values from `field`, if any: the first rule whose
    /// selector matches it (JSON-path rules apply inside JSON documents, not to fields).
    ///
    /// Resolve it once per field and pass it to [`Self::mask_value_with_rule`] for every
    /// value from that field — a result-set column, a header — instead of matching the
    /// rules' globs again for each value.
    #[must_use]
    pub fn rule_for(&self, field: &Field<'_>) -> Option<&FieldRule> {
        if matches!(field, Field::Unknown) {
            return None;
        }
        self.rules.iter().find(|r| r.selector.matches_field(field))
    }

    /// Masks one value from `field` that must stay a valid `ty`. Returns `None` for NULL,
    /// the input itself (uncopied) when nothing matched.
    ///
    /// # Errors
    /// See [`Error`]: a value that cannot be processed must be refused by the caller.
    pub fn mask_value<'a>(
        &self,
        field: &Field<'_>,
        ty: ValueType,
        value: Cow<'a, [u8]>,
        counts: &mut MaskedCounts,
    ) -> Result<Option<Cow<'a, [u8]>>> {
        self.check_len(value.len())?;
        self.mask_value_with_rule(self.rule_for(field), ty, value, counts)
    }

    /// [`Self::mask_value`] for a value whose field rule was resolved beforehand with
    /// [`Self::rule_for`] (`None`: no rule applies, the value is masked by content). The
    /// result is the same as `mask_value` with the field the rule was resolved for.
    ///
    /// # Errors
    /// See [`Error`]: a value that cannot be processed must be refused by the caller.
    pub fn mask_value_with_rule<'a>(
        &self,
        rule: Option<&FieldRule>,
        ty: ValueType,
        value: Cow<'a, [u8]>,
        counts: &mut MaskedCounts,
    ) -> Result<Option<Cow<'a, [u8]>>> {
        self.check_len(value.len())?;
        if let Some(rule) = rule {
            counts.add(&rule.entity, 1);
            let out = mask_whole(&rule.strategy, self.key(), &rule.entity, ty, &value)?;
            return Ok(out.map(Cow::Owned));
        }
        match ty {
            ValueType::Text => {
                let text = std::str::from_utf8(&value).map_err(|e| Error::InvalidUtf8 {
                    offset: e.valid_up_to(),
                })?;
                match self.text(text, 0, counts)? {
                    Edit::Unchanged => Ok(Some(value)),
                    Edit::Changed(s) => Ok(Some(Cow::Owned(s.into_bytes()))),
                    Edit::Null => Ok(None),
                }
            }
            ValueType::Bytes => match self.spans(&value, counts)? {
                Edit::Unchanged => Ok(Some(value)),
                Edit::Changed(b) => Ok(Some(Cow::Owned(b))),
                Edit::Null => Ok(None),
            },
            ValueType::Json => {
                let text = std::str::from_utf8(&value).map_err(|e| Error::InvalidUtf8 {
                    offset: e.valid_up_to(),
                })?;
                match json::mask(self, text, 0, counts)? {
                    Edit::Unchanged => Ok(Some(value)),
                    Edit::Changed(s) => Ok(Some(Cow::Owned(s.into_bytes()))),
                    Edit::Null => Ok(None),
                }
            }
            _ => match self.typed(ty, &value, counts)? {
                None => Ok(Some(value)),
                Some(out) => Ok(out.map(Cow::Owned)),
            },
        }
    }

    /// A value of a type with a grammar (a number, a date, a UUID …) is masked whole, by the
    /// strategy of the first entity found in it. `None`: nothing found, the value stands;
    /// `Some(None)`: NULL.
    fn typed(
        &self,
        ty: ValueType,
        value: &[u8],
        counts: &mut MaskedCounts,
    ) -> Result<Option<Option<Vec<u8>>>> {
        let findings = self.find(value);
        let Some(first) = findings.first() else {
            return Ok(None);
        };
        for f in &findings {
            counts.add(self.entity(f.kind), 1);
        }
        let entity = self.entity(first.kind);
        let strategy = self.strategy_of(first.kind);
        mask_whole(strategy, self.key(), entity, ty, value).map(Some)
    }

    /// [`Self::mask_value_with_rule`] for a value that is already text: the same result, as
    /// text, without validating the input or the output as UTF-8 again (a caller that holds
    /// a `str` saves two passes over every value). [`ValueType::Bytes`] is masked as text.
    ///
    /// # Errors
    /// See [`Error`]: a value that cannot be processed must be refused by the caller.
    pub fn mask_str_with_rule<'a>(
        &self,
        rule: Option<&FieldRule>,
        ty: ValueType,
        value: Cow<'a, str>,
        counts: &mut MaskedCounts,
    ) -> Result<Option<Cow<'a, str>>> {
        self.check_len(value.len())?;
        let whole = |out: Option<Vec<u8>>| -> Result<Option<Cow<'a, str>>> {
            out.map(|b| {
                String::from_utf8(b)
                    .map(Cow::Owned)
                    .map_err(|e| Error::InvalidUtf8 {
                        offset: e.utf8_error().valid_up_to(),
                    })
            })
            .transpose()
        };
        if let Some(rule) = rule {
            counts.add(&rule.entity, 1);
            let out = mask_whole(
                &rule.strategy,
                self.key(),
                &rule.entity,
                ty,
                value.as_bytes(),
            )?;
            return whole(out);
        }
        let edit = match ty {
            ValueType::Text | ValueType::Bytes => self.text(&value, 0, counts)?,
            ValueType::Json => json::mask(self, &value, 0, counts)?,
            _ => {
                return match self.typed(ty, value.as_bytes(), counts)? {
                    None => Ok(Some(value)),
                    Some(out) => whole(out),
                };
            }
        };
        Ok(match edit {
            Edit::Unchanged => Some(value),
            Edit::Changed(s) => Some(Cow::Owned(s)),
            Edit::Null => None,
        })
    }

    /// Masks a JSON document: by JSON-path rules and by content, re-serialised as valid
    /// JSON. Returns the input (uncopied) when nothing matched, `None` for NULL.
    ///
    /// # Errors
    /// [`Error::InvalidJson`], [`Error::JsonTooDeep`] and the others of [`Error`].
    pub fn mask_json<'a>(
        &self,
        field: &Field<'_>,
        json: Cow<'a, str>,
        counts: &mut MaskedCounts,
    ) -> Result<Option<Cow<'a, str>>> {
        self.check_len(json.len())?;
        if let Some(rule) = self.rule_for(field) {
            counts.add(&rule.entity, 1);
            let out = mask_whole(
                &rule.strategy,
                self.key(),
                &rule.entity,
                ValueType::Json,
                json.as_bytes(),
            )?;
            return Ok(out.map(|b| Cow::Owned(String::from_utf8_lossy(&b).into_owned())));
        }
        Ok(match json::mask(self, &json, 0, counts)? {
            Edit::Unchanged => Some(json),
            Edit::Changed(s) => Some(Cow::Owned(s)),
            Edit::Null => None,
        })
    }

    /// The entities in `value` and where they are (byte ranges), without masking anything:
    /// for dry runs and reports. Field rules do not apply here.
    #[must_use]
    pub fn detect(&self, value: &[u8]) -> Vec<(std::ops::Range<usize>, &str)> {
        self.find(value)
            .into_iter()
            .map(|f| (f.start..f.end, self.entity(f.kind)))
            .collect()
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.limits.max_value_len {
            return Err(Error::ValueTooLarge {
                len,
                limit: self.limits.max_value_len,
            });
        }
        Ok(())
    }

    pub(crate) fn key(&self) -> Option<&MaskKey> {
        self.key.as_deref()
    }

    pub(crate) fn has_json_rules(&self) -> bool {
        self.has_json_rules
    }

    /// The JSON-path rule for a value at `path`, if any.
    pub(crate) fn json_rule(&self, path: &[PathElem<'_>]) -> Option<&FieldRule> {
        self.rules.iter().find(|r| match &r.selector {
            Selector::JsonPath(p) => p.matches(path),
            _ => false,
        })
    }

    pub(crate) fn entity(&self, kind: Kind) -> &str {
        match kind {
            Kind::Builtin(d) => d.name(),
            Kind::Custom(i) => self.custom.get(i).map_or("custom", CustomDetector::name),
        }
    }

    pub(crate) fn strategy_of(&self, kind: Kind) -> &Strategy {
        let s = match kind {
            Kind::Builtin(d) => self.builtin_strategies.get(d as usize),
            Kind::Custom(i) => self.custom_strategies.get(i),
        };
        // Both tables are built from the same lists the kinds index; redaction is the safe
        // answer should that ever not hold.
        s.unwrap_or(&REDACT)
    }

    /// Every finding in `bytes`, in order, without overlaps.
    pub(crate) fn find(&self, bytes: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        self.scanner.scan(bytes, &mut out);
        if !self.custom.is_empty() {
            let builtin = out.len();
            for (i, c) in self.custom.iter().enumerate() {
                c.scan(i, bytes, &mut out);
            }
            if out.len() > builtin {
                out.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
                let mut end = 0;
                out.retain(|f| {
                    let keep = f.start >= end;
                    if keep {
                        end = f.end;
                    }
                    keep
                });
            }
        }
        out
    }

    /// Masks text that may hold JSON; `nested` counts JSON levels already unpacked.
    pub(crate) fn text(
        &self,
        text: &str,
        nested: usize,
        counts: &mut MaskedCounts,
    ) -> Result<Edit> {
        if self.json_in_text && looks_like_json(text) {
            if nested >= self.limits.max_nested_json {
                return Err(Error::JsonTooDeep {
                    limit: self.limits.max_nested_json,
                });
            }
            // Count into a scratch map: if the text is not JSON after all, the text pass
            // below does the counting.
            let mut scratch = MaskedCounts::new();
            match json::mask(self, text, nested + 1, &mut scratch) {
                Ok(e) => {
                    counts.merge(&scratch);
                    return Ok(e);
                }
                Err(Error::InvalidJson { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.spans_text(text, counts)
    }

    /// Replaces every finding in `text` by its strategy's output, written straight into one
    /// pre-sized string; the text between findings is kept exactly. Text in, text out: no
    /// validation is needed on either side.
    fn spans_text(&self, text: &str, counts: &mut MaskedCounts) -> Result<Edit> {
        let findings = self.find(text.as_bytes());
        if findings.is_empty() {
            return Ok(Edit::Unchanged);
        }
        let mut out = String::with_capacity(text.len() + text.len() / 4 + 16);
        let mut tally = Tally::new(self);
        let mut last = 0;
        for f in &findings {
            tally.add(f.kind);
            // Findings start and end on character boundaries; should one ever not, that is
            // an error (a refusal), never a split character.
            let (Some(gap), Some(span)) = (text.get(last..f.start), text.get(f.start..f.end))
            else {
                return Err(Error::InvalidUtf8 { offset: f.start });
            };
            out.push_str(gap);
            let strategy = self.strategy_of(f.kind);
            let entity = self.entity(f.kind);
            if mask_span(strategy, self.key(), entity, canon(f.kind), span, &mut out)? == Span::Null
            {
                tally.flush(self, counts);
                return Ok(Edit::Null);
            }
            last = f.end;
        }
        tally.flush(self, counts);
        out.push_str(text.get(last..).unwrap_or_default());
        Ok(Edit::Changed(out))
    }

    /// Replaces every finding in `bytes` by its strategy's output; the bytes between findings
    /// are kept exactly.
    pub(crate) fn spans(&self, bytes: &[u8], counts: &mut MaskedCounts) -> Result<Edit<Vec<u8>>> {
        let findings = self.find(bytes);
        if findings.is_empty() {
            return Ok(Edit::Unchanged);
        }
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 4 + 16);
        let mut repl = String::new();
        let mut tally = Tally::new(self);
        let mut last = 0;
        for f in &findings {
            tally.add(f.kind);
            out.extend_from_slice(bytes.get(last..f.start).unwrap_or_default());
            let raw = bytes.get(f.start..f.end).unwrap_or_default();
            let span = String::from_utf8_lossy(raw);
            repl.clear();
            let strategy = self.strategy_of(f.kind);
            let entity = self.entity(f.kind);
            if mask_span(
                strategy,
                self.key(),
                entity,
                canon(f.kind),
                &span,
                &mut repl,
            )? == Span::Null
            {
                tally.flush(self, counts);
                return Ok(Edit::Null);
            }
            out.extend_from_slice(repl.as_bytes());
            last = f.end;
        }
        tally.flush(self, counts);
        out.extend_from_slice(bytes.get(last..).unwrap_or_default());
        Ok(Edit::Changed(out))
    }
}

/// What one masking call found, per entity, added to the caller's counts once at the end:
/// one map update per entity rather than one per finding.
struct Tally {
    builtin: [u64; Detector::ALL.len()],
    custom: Vec<u64>,
}

impl Tally {
    fn new(p: &Profile) -> Self {
        Self {
            builtin: [0; Detector::ALL.len()],
            custom: vec![0; p.custom.len()],
        }
    }

    fn add(&mut self, kind: Kind) {
        let n = match kind {
            Kind::Builtin(d) => self.builtin.get_mut(d as usize),
            Kind::Custom(i) => self.custom.get_mut(i),
        };
        if let Some(n) = n {
            *n += 1;
        }
    }

    fn flush(&self, p: &Profile, counts: &mut MaskedCounts) {
        for (d, n) in Detector::ALL.iter().zip(self.builtin) {
            counts.add(d.name(), n);
        }
        for (c, n) in p.custom.iter().zip(&self.custom) {
            counts.add(c.name(), *n);
        }
    }
}

static REDACT: Strategy = Strategy::Redact { text: None };

/// The outcome of masking a piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Edit<T = String> {
    Unchanged,
    Changed(T),
    Null,
}

fn canon(kind: Kind) -> Canon {
    match kind {
        Kind::Builtin(Detector::CardNumber | Detector::Ssn | Detector::Phone) => Canon::Digits,
        Kind::Builtin(Detector::Email | Detector::Iban) => Canon::Folded,
        _ => Canon::Raw,
    }
}

fn looks_like_json(text: &str) -> bool {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    (t.starts_with('{') && t.ends_with('}')) || (t.starts_with('[') && t.ends_with(']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_rules_are_told_apart_from_other_rules() {
        let headers = Profile::builder("h")
            .rule(FieldRule::new(
                Selector::header("x-api-key"),
                Strategy::redact(),
            ))
            .rule(FieldRule::new(
                Selector::redis_key("secret:*"),
                Strategy::redact(),
            ))
            .build()
            .unwrap();
        assert!(!headers.has_column_rules());
        let columns = Profile::builder("c")
            .rule(FieldRule::new(
                Selector::column("*ssn*"),
                Strategy::redact(),
            ))
            .build()
            .unwrap();
        assert!(columns.has_column_rules());
    }

    #[test]
    fn a_rule_resolved_once_masks_as_the_field_does() {
        let profile = Profile::builder("t")
            .key(MaskKey::new([3; 32]))
            .strategy("email", Strategy::Tokenize)
            .rule(FieldRule::new(
                Selector::column("customers.*ssn*"),
                Strategy::keep_last(4),
            ))
            .rule(FieldRule::new(
                Selector::header("x-api-key"),
                Strategy::Hash,
            ))
            .rule(FieldRule::new(
                Selector::redis_key("sess:*"),
                Strategy::Null,
            ))
            .build()
            .unwrap();
        let fields = [
            Field::Unknown,
            Field::Column {
                table: Some("Customers"),
                column: "tax_SSN",
            },
            Field::Column {
                table: Some("orders"),
                column: "tax_ssn",
            },
            Field::Column {
                table: None,
                column: "ssn",
            },
            Field::Header("X-Api-Key"),
            Field::RedisKey(b"sess:1"),
            Field::RedisKey(b"cache:1"),
        ];
        let values = ["123-45-6789", "mail bob@example.com", "42", "nothing", ""];
        for field in &fields {
            let rule = profile.rule_for(field);
            for ty in [
                ValueType::Text,
                ValueType::Bytes,
                ValueType::Integer,
                ValueType::Uuid,
                ValueType::Opaque,
            ] {
                for v in values {
                    let (mut a, mut b) = (MaskedCounts::new(), MaskedCounts::new());
                    let x = profile.mask_value(field, ty, Cow::Borrowed(v.as_bytes()), &mut a);
                    let y =
                        profile.mask_value_with_rule(rule, ty, Cow::Borrowed(v.as_bytes()), &mut b);
                    assert_eq!(x, y, "{field:?} {ty} {v:?}");
                    assert_eq!(a, b, "{field:?} {ty} {v:?}");
                }
            }
        }
        let entity = |f: &Field<'_>| profile.rule_for(f).map(|r| r.entity.clone());
        assert_eq!(entity(&fields[0]), None);
        assert_eq!(
            entity(&fields[1]).as_deref(),
            Some("column:customers.*ssn*")
        );
        assert_eq!(entity(&fields[2]), None);
        // A rule for one table also covers an unqualified column (fail closed).
        assert_eq!(
            entity(&fields[3]).as_deref(),
            Some("column:customers.*ssn*")
        );
        assert_eq!(entity(&fields[4]).as_deref(), Some("header:x-api-key"));
        assert_eq!(entity(&fields[5]).as_deref(), Some("redis_key:sess:*"));
        assert_eq!(entity(&fields[6]), None);
    }

    #[test]
    fn text_masks_as_the_value_path_does() {
        let profile = Profile::builder("t")
            .key(MaskKey::new([3; 32]))
            .strategy("email", Strategy::Tokenize)
            .strategy("card_number", Strategy::keep_last(4))
            .strategy("ssn", Strategy::FormatPreserving)
            .build()
            .unwrap();
        for text in [
            "",
            "nothing here",
            "card ４１１１ １１１１ １１１１ １１１１, mail Jörg@Bücher.de, ssn 123-45-6789",
            "{\"a\": \"4111111111111111\"}",
            "ip 10.0.0.1 and ::1, key AKIAIOSFODNN7EXAMPLE",
        ] {
            let (mut a, mut b) = (MaskedCounts::new(), MaskedCounts::new());
            let t = profile
                .mask_text(&Field::Unknown, Cow::Borrowed(text), &mut a)
                .unwrap()
                .map(|c| c.into_owned().into_bytes());
            let v = profile
                .mask_value(
                    &Field::Unknown,
                    ValueType::Bytes,
                    Cow::Borrowed(text.as_bytes()),
                    &mut b,
                )
                .unwrap()
                .map(Cow::into_owned);
            // Bytes are not unpacked as JSON; text that is not JSON masks the same.
            if !text.starts_with('{') {
                assert_eq!(t, v, "{text:?}");
                assert_eq!(a, b, "{text:?}");
            }
        }
    }
}
