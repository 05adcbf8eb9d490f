//! The canonical binary encoding of an [`AuditEvent`].
//!
//! JSON is not canonical (key order, number forms and escapes all vary), and a hash chain needs
//! exactly one byte string per event. This encoding is: every field in a fixed order, integers
//! little-endian with fixed width, strings and byte strings prefixed with a `u32` length,
//! optional values prefixed with a `0`/`1` tag, sets and maps in their (sorted) iteration order
//! and refused on decode when not strictly sorted. `encode(decode(b)) == b` for every `b` that
//! decodes, so a verifier can re-derive the bytes it hashes.
//!
//! The first byte is [`EVENT_ENCODING_VERSION`]; a new field means a new version. A new
//! event kind or enum variant takes a new tag: older readers report such a record as
//! unreadable rather than damaged ([`Error::is_newer_encoding`](crate::Error::is_newer_encoding)).
//! A new optional part of a kind takes a new tag too, used only when the part is present: a
//! `CommandCompleted` without a reply is tag 5 (its original layout), one with a reply is tag
//! 15 (the same fields, then the reply), so earlier records keep their bytes and each event
//! still has exactly one encoding.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use uuid::Uuid;
use wirewarden_core::{
    Access, AuditEvent, AuditEventKind, AuthMethod, Command, CommandClass, CommandDigest,
    CommandId, Decision, Direction, EventId, GrantId, MaskedCounts, ObjectKind, ObjectRef,
    Principal, Protocol, Recording, ReviewId, ReviewOutcome, ReviewRequirement, RuleId,
    SessionEndReason, SessionId, Target, Timestamp,
};

use crate::{Error, Result};

/// The version byte that starts every encoded event.
pub const EVENT_ENCODING_VERSION: u8 = 1;

// === Writer ===

/// The encoding buffer an event starts with: enough for every fixed-size event and for the
/// usual command decisions, completions and short transcripts.
const EVENT_CAPACITY: usize = 384;

/// Appends canonical fields to a byte vector.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    pub(crate) fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn bytes(&mut self, what: &'static str, v: &[u8]) -> Result<()> {
        let len = u32::try_from(v.len()).map_err(|_| Error::TooLarge {
            what,
            len: v.len() as u64,
            limit: u64::from(u32::MAX),
        })?;
        self.u32(len);
        self.raw(v);
        Ok(())
    }

    pub(crate) fn str(&mut self, what: &'static str, v: &str) -> Result<()> {
        self.bytes(what, v.as_bytes())
    }

    fn count(&mut self, what: &'static str, n: usize) -> Result<()> {
        let n = u32::try_from(n).map_err(|_| Error::TooLarge {
            what,
            len: n as u64,
            limit: u64::from(u32::MAX),
        })?;
        self.u32(n);
        Ok(())
    }

    fn opt_str(&mut self, what: &'static str, v: Option<&str>) -> Result<()> {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(what, s)?;
            }
        }
        Ok(())
    }

    fn id(&mut self, v: &[u8; 16]) {
        self.raw(v);
    }

    fn opt_id(&mut self, v: Option<&[u8; 16]>) {
        match v {
            None => self.u8(0),
            Some(id) => {
                self.u8(1);
                self.id(id);
            }
        }
    }

    fn time(&mut self, t: Timestamp) {
        self.i64(t.unix_nanos());
    }

    fn opt_time(&mut self, t: Option<Timestamp>) {
        match t {
            None => self.u8(0),
            Some(t) => {
                self.u8(1);
                self.time(t);
            }
        }
    }
}

// === Reader ===

/// Reads canonical fields from a byte slice; every read checks the remaining length first.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        match end.and_then(|e| self.buf.get(self.pos..e).map(|s| (e, s))) {
            Some((e, s)) => {
                self.pos = e;
                Ok(s)
            }
            None => Err(Error::Truncated {
                what,
                needed: n,
                remaining: self.remaining(),
            }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.take(what, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    fn bool(&mut self, what: &'static str) -> Result<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(Error::InvalidTag { what, tag }),
        }
    }

    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let len = self.u32(what)? as usize;
        // The length is checked against what is left before anything is allocated.
        self.take(what, len)
    }

    pub(crate) fn str(&mut self, what: &'static str) -> Result<String> {
        let b = self.bytes(what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Error::InvalidUtf8 { what })
    }

    /// A count of elements that each take at least `min_size` bytes.
    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize> {
        let n = self.u32(what)? as usize;
        let need = n.saturating_mul(min_size);
        if need > self.remaining() {
            return Err(Error::Truncated {
                what,
                needed: need,
                remaining: self.remaining(),
            });
        }
        Ok(n)
    }

    fn opt_tag(&mut self, what: &'static str) -> Result<bool> {
        self.bool(what)
    }

    fn opt_str(&mut self, what: &'static str) -> Result<Option<String>> {
        if self.opt_tag(what)? {
            Ok(Some(self.str(what)?))
        } else {
            Ok(None)
        }
    }

    fn uuid(&mut self, what: &'static str) -> Result<Uuid> {
        Ok(Uuid::from_bytes(self.array(what)?))
    }

    fn opt_uuid(&mut self, what: &'static str) -> Result<Option<Uuid>> {
        if self.opt_tag(what)? {
            Ok(Some(self.uuid(what)?))
        } else {
            Ok(None)
        }
    }

    fn time(&mut self, what: &'static str) -> Result<Timestamp> {
        let n = self.i64(what)?;
        Timestamp::from_unix_nanos(i128::from(n)).ok_or(Error::InvalidValue {
            what,
            reason: "timestamp out of range",
        })
    }

    fn opt_time(&mut self, what: &'static str) -> Result<Option<Timestamp>> {
        if self.opt_tag(what)? {
            Ok(Some(self.time(what)?))
        } else {
            Ok(None)
        }
    }

    pub(crate) fn finish(&self, what: &'static str) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                what,
                len: self.remaining(),
            })
        }
    }
}

// === Encoding ===

/// Encodes `event` canonically into a new vector.
///
/// # Errors
/// [`Error::Unsupported`] for an event variant this version of the crate does not know (the
/// core enums are `#[non_exhaustive]`), [`Error::TooLarge`] for a string over 4 GiB.
pub fn encode_event(event: &AuditEvent) -> Result<Vec<u8>> {
    // Most events fit: growing the buffer field by field would reallocate it several times.
    let mut w = Writer {
        buf: Vec::with_capacity(EVENT_CAPACITY),
    };
    encode_event_into(event, &mut w)?;
    Ok(w.buf)
}

pub(crate) fn encode_event_into(event: &AuditEvent, w: &mut Writer) -> Result<()> {
    w.u8(EVENT_ENCODING_VERSION);
    w.id(event.id.as_bytes());
    w.time(event.time);
    w.opt_id(event.session.as_ref().map(SessionId::as_bytes));
    encode_kind(&event.kind, w)
}

fn encode_kind(kind: &AuditEventKind, w: &mut Writer) -> Result<()> {
    match kind {
        AuditEventKind::SessionStarted {
            principal,
            target,
            client_addr,
            application,
            tls,
        } => {
            w.u8(1);
            encode_principal(principal, w)?;
            encode_target(target, w)?;
            w.opt_str("client_addr", client_addr.as_deref())?;
            w.opt_str("application", application.as_deref())?;
            w.bool(*tls);
        }
        AuditEventKind::AuthenticationFailed {
            target,
            client_addr,
            user,
            method,
            reason,
        } => {
            w.u8(2);
            encode_target(target, w)?;
            w.opt_str("client_addr", client_addr.as_deref())?;
            w.opt_str("user", user.as_deref())?;
            w.str("method", method)?;
            w.str("reason", reason)?;
        }
        AuditEventKind::SessionEnded {
            reason,
            commands,
            duration_us,
        } => {
            w.u8(3);
            match reason {
                SessionEndReason::ClientClosed => w.u8(1),
                SessionEndReason::UpstreamClosed => w.u8(2),
                SessionEndReason::CredentialExpired => w.u8(3),
                SessionEndReason::Shutdown => w.u8(4),
                SessionEndReason::Error { message } => {
                    w.u8(5);
                    w.str("end reason", message)?;
                }
                SessionEndReason::CredentialRevoked { reason } => {
                    w.u8(6);
                    w.str("end reason", reason)?;
                }
                SessionEndReason::SubscriptionWithdrawn {
                    command_id,
                    rule,
                    reason,
                } => {
                    w.u8(7);
                    w.id(command_id.as_bytes());
                    w.str("rule", rule.as_str())?;
                    w.str("end reason", reason)?;
                }
                _ => {
                    return Err(Error::Unsupported {
                        what: "session end reason",
                    });
                }
            }
            w.u64(*commands);
            w.u64(*duration_us);
        }
        AuditEventKind::CommandDecided {
            command_id,
            subject,
            command,
            decision,
            policy_version,
        } => {
            w.u8(4);
            w.id(command_id.as_bytes());
            w.str("subject", subject)?;
            encode_command(command, w)?;
            encode_decision(decision, w)?;
            w.str("policy_version", policy_version)?;
        }
        AuditEventKind::CommandCompleted {
            command_id,
            rows,
            bytes,
            masked,
            duration_us,
            error,
            reply,
        } => {
            // A completion without a reply keeps the layout it always had (tag 5); one with
            // a reply is the same fields and then the reply (tag 15), so records written
            // before replies moved here stay byte for byte what they were, and a reader that
            // predates tag 15 reports such a record as newer rather than damaged.
            w.u8(if reply.is_some() { 15 } else { 5 });
            w.id(command_id.as_bytes());
            w.u64(*rows);
            w.u64(*bytes);
            w.count("masked", masked.0.len())?;
            for (entity, n) in &masked.0 {
                w.str("masked entity", entity)?;
                w.u64(*n);
            }
            w.u64(*duration_us);
            w.opt_str("error", error.as_deref())?;
            if let Some(reply) = reply {
                w.str("reply text", &reply.text)?;
                w.bool(reply.truncated);
            }
        }
        AuditEventKind::Transcript {
            command_id,
            direction,
            elapsed_us,
            text,
            truncated,
        } => {
            w.u8(6);
            w.opt_id(command_id.as_ref().map(CommandId::as_bytes));
            encode_direction(*direction, w);
            w.u64(*elapsed_us);
            w.str("transcript text", text)?;
            w.bool(*truncated);
        }
        AuditEventKind::ReviewRequested {
            review_id,
            command_id,
            digest,
            requester,
            target,
            reason,
            requirement,
        } => {
            w.u8(7);
            w.id(review_id.as_bytes());
            w.id(command_id.as_bytes());
            w.raw(digest.as_bytes());
            w.str("requester", requester)?;
            encode_target(target, w)?;
            w.str("reason", reason)?;
            encode_requirement(requirement, w)?;
        }
        AuditEventKind::ReviewResolved {
            review_id,
            outcome,
            approvers,
            denied_by,
        } => {
            w.u8(8);
            w.id(review_id.as_bytes());
            w.u8(match outcome {
                ReviewOutcome::Approved => 1,
                ReviewOutcome::Denied => 2,
                ReviewOutcome::Expired => 3,
                ReviewOutcome::Cancelled => 4,
                _ => {
                    return Err(Error::Unsupported {
                        what: "review outcome",
                    });
                }
            });
            w.count("approvers", approvers.len())?;
            for a in approvers {
                w.str("approver", a)?;
            }
            w.opt_str("denied_by", denied_by.as_deref())?;
        }
        AuditEventKind::GrantIssued {
            grant_id,
            subject,
            target,
            scope,
            expires_at,
            issued_by,
        } => {
            w.u8(9);
            w.id(grant_id.as_bytes());
            w.str("subject", subject)?;
            w.str("target", target)?;
            w.str("scope", scope)?;
            w.time(*expires_at);
            w.str("issued_by", issued_by)?;
        }
        AuditEventKind::GrantRevoked {
            grant_id,
            revoked_by,
        } => {
            w.u8(10);
            w.id(grant_id.as_bytes());
            w.str("revoked_by", revoked_by)?;
        }
        AuditEventKind::GrantExpired { grant_id } => {
            w.u8(11);
            w.id(grant_id.as_bytes());
        }
        AuditEventKind::ApplicationChanged { application } => {
            w.u8(13);
            w.opt_str("application", application.as_deref())?;
        }
        AuditEventKind::CredentialRenewed { principal } => {
            w.u8(14);
            encode_principal(principal, w)?;
        }
        AuditEventKind::ProtocolError { direction, error } => {
            w.u8(12);
            encode_direction(*direction, w);
            w.str("protocol error", error)?;
        }
        _ => {
            return Err(Error::Unsupported {
                what: "audit event kind",
            });
        }
    }
    Ok(())
}

fn encode_direction(d: Direction, w: &mut Writer) {
    w.u8(match d {
        Direction::FromClient => 1,
        Direction::FromUpstream => 2,
    });
}

fn protocol_tag(p: Protocol) -> Result<u8> {
    match p {
        Protocol::Postgres => Ok(1),
        Protocol::Redis => Ok(2),
        Protocol::Http => Ok(3),
        _ => Err(Error::Unsupported { what: "protocol" }),
    }
}

fn encode_principal(p: &Principal, w: &mut Writer) -> Result<()> {
    w.str("subject", &p.subject)?;
    w.count("groups", p.groups.len())?;
    for g in &p.groups {
        w.str("group", g)?;
    }
    w.count("attributes", p.attributes.len())?;
    for (k, v) in &p.attributes {
        w.str("attribute name", k)?;
        w.str("attribute value", v)?;
    }
    match &p.auth {
        AuthMethod::StaticToken { token_id } => {
            w.u8(1);
            w.str("token_id", token_id)?;
        }
        AuthMethod::Jwt { issuer, key_id } => {
            w.u8(2);
            w.str("issuer", issuer)?;
            w.opt_str("key_id", key_id.as_deref())?;
        }
        AuthMethod::ClientCertificate { fingerprint } => {
            w.u8(3);
            w.str("fingerprint", fingerprint)?;
        }
        AuthMethod::Scram { mechanism } => {
            w.u8(4);
            w.str("mechanism", mechanism)?;
        }
        AuthMethod::External { mechanism } => {
            w.u8(5);
            w.str("mechanism", mechanism)?;
        }
        _ => {
            return Err(Error::Unsupported {
                what: "auth method",
            });
        }
    }
    w.time(p.authenticated_at);
    w.opt_time(p.expires_at);
    Ok(())
}

fn encode_target(t: &Target, w: &mut Writer) -> Result<()> {
    w.str("target name", &t.name)?;
    w.u8(protocol_tag(t.protocol)?);
    w.opt_str("database", t.database.as_deref())
}

fn class_tag(c: CommandClass) -> u8 {
    c.risk()
}

fn encode_command(c: &Command, w: &mut Writer) -> Result<()> {
    w.u8(protocol_tag(c.protocol)?);
    w.str("verb", &c.verb)?;
    w.u8(class_tag(c.class));
    w.str("command text", &c.text)?;
    w.count("objects", c.objects.len())?;
    for o in &c.objects {
        w.u8(match o.kind {
            ObjectKind::Relation => 1,
            ObjectKind::Function => 2,
            ObjectKind::Key => 3,
            ObjectKind::Channel => 4,
            ObjectKind::Path => 5,
            ObjectKind::Namespace => 6,
            ObjectKind::Role => 7,
            ObjectKind::Setting => 8,
            _ => {
                return Err(Error::Unsupported {
                    what: "object kind",
                });
            }
        });
        w.str("object name", &o.name)?;
        w.u8(match o.access {
            Access::Read => 1,
            Access::Write => 2,
            Access::Execute => 3,
            Access::Define => 4,
            _ => return Err(Error::Unsupported { what: "access" }),
        });
    }
    w.raw(c.digest.as_bytes());
    Ok(())
}

fn encode_requirement(r: &ReviewRequirement, w: &mut Writer) -> Result<()> {
    w.count("reviewer_groups", r.reviewer_groups.len())?;
    for g in &r.reviewer_groups {
        w.str("reviewer group", g)?;
    }
    w.u32(r.min_approvals);
    w.u64(r.timeout.as_secs());
    w.u32(r.timeout.subsec_nanos());
    Ok(())
}

fn encode_decision(d: &Decision, w: &mut Writer) -> Result<()> {
    match d {
        Decision::Allow { rule, mask_profile } => {
            w.u8(1);
            w.str("rule", rule.as_str())?;
            w.opt_str("mask_profile", mask_profile.as_deref())?;
        }
        Decision::Deny { rule, reason } => {
            w.u8(2);
            w.str("rule", rule.as_str())?;
            w.str("reason", reason)?;
        }
        Decision::Review {
            rule,
            reason,
            requirement,
        } => {
            w.u8(3);
            w.str("rule", rule.as_str())?;
            w.str("reason", reason)?;
            encode_requirement(requirement, w)?;
        }
        _ => return Err(Error::Unsupported { what: "decision" }),
    }
    Ok(())
}

// === Decoding ===

/// Decodes one canonically encoded event; the whole of `bytes` must be the event.
///
/// # Errors
/// A typed [`Error`] for truncated input, an unknown version or tag, invalid UTF-8, a
/// non-canonical set or map order, or trailing bytes. Never panics.
pub fn decode_event(bytes: &[u8]) -> Result<AuditEvent> {
    let mut r = Reader::new(bytes);
    let version = r.u8("event version")?;
    if version != EVENT_ENCODING_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "event encoding",
            version: u32::from(version),
        });
    }
    let id = EventId::from_uuid(r.uuid("event id")?);
    let time = r.time("event time")?;
    let session = r.opt_uuid("session id")?.map(SessionId::from_uuid);
    let kind = decode_kind(&mut r)?;
    r.finish("event")?;
    Ok(AuditEvent {
        id,
        time,
        session,
        kind,
    })
}

fn decode_kind(r: &mut Reader<'_>) -> Result<AuditEventKind> {
    let tag = r.u8("event kind")?;
    Ok(match tag {
        1 => AuditEventKind::SessionStarted {
            principal: decode_principal(r)?,
            target: decode_target(r)?,
            client_addr: r.opt_str("client_addr")?,
            application: r.opt_str("application")?,
            tls: r.bool("tls")?,
        },
        2 => AuditEventKind::AuthenticationFailed {
            target: decode_target(r)?,
            client_addr: r.opt_str("client_addr")?,
            user: r.opt_str("user")?,
            method: r.str("method")?,
            reason: r.str("reason")?,
        },
        3 => {
            let reason = match r.u8("end reason")? {
                1 => SessionEndReason::ClientClosed,
                2 => SessionEndReason::UpstreamClosed,
                3 => SessionEndReason::CredentialExpired,
                4 => SessionEndReason::Shutdown,
                5 => SessionEndReason::Error {
                    message: r.str("end reason")?,
                },
                6 => SessionEndReason::CredentialRevoked {
                    reason: r.str("end reason")?,
                },
                7 => SessionEndReason::SubscriptionWithdrawn {
                    command_id: CommandId::from_uuid(r.uuid("command id")?),
                    rule: RuleId::new(r.str("rule")?),
                    reason: r.str("end reason")?,
                },
                tag => {
                    return Err(Error::InvalidTag {
                        what: "end reason",
                        tag,
                    });
                }
            };
            AuditEventKind::SessionEnded {
                reason,
                commands: r.u64("commands")?,
                duration_us: r.u64("duration_us")?,
            }
        }
        4 => AuditEventKind::CommandDecided {
            command_id: CommandId::from_uuid(r.uuid("command id")?),
            subject: r.str("subject")?,
            command: decode_command(r)?,
            decision: decode_decision(r)?,
            policy_version: r.str("policy_version")?,
        },
        5 | 15 => {
            let command_id = CommandId::from_uuid(r.uuid("command id")?);
            let rows = r.u64("rows")?;
            let bytes = r.u64("bytes")?;
            let n = r.count("masked", 12)?;
            let mut masked = BTreeMap::new();
            let mut last: Option<String> = None;
            for _ in 0..n {
                let entity = r.str("masked entity")?;
                let count = r.u64("masked count")?;
                if last.as_ref().is_some_and(|l| *l >= entity) {
                    return Err(Error::NotCanonical {
                        what: "masked counts",
                    });
                }
                last = Some(entity.clone());
                masked.insert(entity, count);
            }
            AuditEventKind::CommandCompleted {
                command_id,
                rows,
                bytes,
                masked: MaskedCounts(masked),
                duration_us: r.u64("duration_us")?,
                error: r.opt_str("error")?,
                reply: if tag == 15 {
                    Some(Recording {
                        text: r.str("reply text")?,
                        truncated: r.bool("truncated")?,
                    })
                } else {
                    None
                },
            }
        }
        6 => AuditEventKind::Transcript {
            command_id: r.opt_uuid("command id")?.map(CommandId::from_uuid),
            direction: decode_direction(r)?,
            elapsed_us: r.u64("elapsed_us")?,
            text: r.str("transcript text")?,
            truncated: r.bool("truncated")?,
        },
        7 => AuditEventKind::ReviewRequested {
            review_id: ReviewId::from_uuid(r.uuid("review id")?),
            command_id: CommandId::from_uuid(r.uuid("command id")?),
            digest: CommandDigest::from_bytes(r.array("digest")?),
            requester: r.str("requester")?,
            target: decode_target(r)?,
            reason: r.str("reason")?,
            requirement: decode_requirement(r)?,
        },
        8 => {
            let review_id = ReviewId::from_uuid(r.uuid("review id")?);
            let outcome = match r.u8("review outcome")? {
                1 => ReviewOutcome::Approved,
                2 => ReviewOutcome::Denied,
                3 => ReviewOutcome::Expired,
                4 => ReviewOutcome::Cancelled,
                tag => {
                    return Err(Error::InvalidTag {
                        what: "review outcome",
                        tag,
                    });
                }
            };
            let n = r.count("approvers", 4)?;
            let mut approvers = Vec::with_capacity(n);
            for _ in 0..n {
                approvers.push(r.str("approver")?);
            }
            AuditEventKind::ReviewResolved {
                review_id,
                outcome,
                approvers,
                denied_by: r.opt_str("denied_by")?,
            }
        }
        9 => AuditEventKind::GrantIssued {
            grant_id: GrantId::from_uuid(r.uuid("grant id")?),
            subject: r.str("subject")?,
            target: r.str("target")?,
            scope: r.str("scope")?,
            expires_at: r.time("expires_at")?,
            issued_by: r.str("issued_by")?,
        },
        10 => AuditEventKind::GrantRevoked {
            grant_id: GrantId::from_uuid(r.uuid("grant id")?),
            revoked_by: r.str("revoked_by")?,
        },
        11 => AuditEventKind::GrantExpired {
            grant_id: GrantId::from_uuid(r.uuid("grant id")?),
        },
        12 => AuditEventKind::ProtocolError {
            direction: decode_direction(r)?,
            error: r.str("protocol error")?,
        },
        13 => AuditEventKind::ApplicationChanged {
            application: r.opt_str("application")?,
        },
        14 => AuditEventKind::CredentialRenewed {
            principal: decode_principal(r)?,
        },
        tag => {
            return Err(Error::InvalidTag {
                what: "event kind",
                tag,
            });
        }
    })
}

fn decode_direction(r: &mut Reader<'_>) -> Result<Direction> {
    match r.u8("direction")? {
        1 => Ok(Direction::FromClient),
        2 => Ok(Direction::FromUpstream),
        tag => Err(Error::InvalidTag {
            what: "direction",
            tag,
        }),
    }
}

fn decode_protocol(r: &mut Reader<'_>) -> Result<Protocol> {
    match r.u8("protocol")? {
        1 => Ok(Protocol::Postgres),
        2 => Ok(Protocol::Redis),
        3 => Ok(Protocol::Http),
        tag => Err(Error::InvalidTag {
            what: "protocol",
            tag,
        }),
    }
}

fn decode_principal(r: &mut Reader<'_>) -> Result<Principal> {
    let subject = r.str("subject")?;
    let n = r.count("groups", 4)?;
    let mut groups = BTreeSet::new();
    let mut last: Option<String> = None;
    for _ in 0..n {
        let g = r.str("group")?;
        if last.as_ref().is_some_and(|l| *l >= g) {
            return Err(Error::NotCanonical { what: "groups" });
        }
        last = Some(g.clone());
        groups.insert(g);
    }
    let n = r.count("attributes", 8)?;
    let mut attributes = BTreeMap::new();
    let mut last: Option<String> = None;
    for _ in 0..n {
        let k = r.str("attribute name")?;
        let v = r.str("attribute value")?;
        if last.as_ref().is_some_and(|l| *l >= k) {
            return Err(Error::NotCanonical { what: "attributes" });
        }
        last = Some(k.clone());
        attributes.insert(k, v);
    }
    let auth = match r.u8("auth method")? {
        1 => AuthMethod::StaticToken {
            token_id: r.str("token_id")?,
        },
        2 => AuthMethod::Jwt {
            issuer: r.str("issuer")?,
            key_id: r.opt_str("key_id")?,
        },
        3 => AuthMethod::ClientCertificate {
            fingerprint: r.str("fingerprint")?,
        },
        4 => AuthMethod::Scram {
            mechanism: r.str("mechanism")?,
        },
        5 => AuthMethod::External {
            mechanism: r.str("mechanism")?,
        },
        tag => {
            return Err(Error::InvalidTag {
                what: "auth method",
                tag,
            });
        }
    };
    Ok(Principal {
        subject,
        groups,
        attributes,
        auth,
        authenticated_at: r.time("authenticated_at")?,
        expires_at: r.opt_time("expires_at")?,
    })
}

fn decode_target(r: &mut Reader<'_>) -> Result<Target> {
    Ok(Target {
        name: r.str("target name")?,
        protocol: decode_protocol(r)?,
        database: r.opt_str("database")?,
    })
}

fn decode_command(r: &mut Reader<'_>) -> Result<Command> {
    let protocol = decode_protocol(r)?;
    let verb = r.str("verb")?;
    let class_tag = r.u8("command class")?;
    let class = CommandClass::ALL
        .into_iter()
        .find(|c| c.risk() == class_tag)
        .ok_or(Error::InvalidTag {
            what: "command class",
            tag: class_tag,
        })?;
    let text = r.str("command text")?;
    let n = r.count("objects", 6)?;
    let mut objects = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = match r.u8("object kind")? {
            1 => ObjectKind::Relation,
            2 => ObjectKind::Function,
            3 => ObjectKind::Key,
            4 => ObjectKind::Channel,
            5 => ObjectKind::Path,
            6 => ObjectKind::Namespace,
            7 => ObjectKind::Role,
            8 => ObjectKind::Setting,
            tag => {
                return Err(Error::InvalidTag {
                    what: "object kind",
                    tag,
                });
            }
        };
        let name = r.str("object name")?;
        let access = match r.u8("access")? {
            1 => Access::Read,
            2 => Access::Write,
            3 => Access::Execute,
            4 => Access::Define,
            tag => {
                return Err(Error::InvalidTag {
                    what: "access",
                    tag,
                });
            }
        };
        objects.push(ObjectRef::new(kind, name, access));
    }
    let digest = CommandDigest::from_bytes(r.array("digest")?);
    Ok(Command {
        protocol,
        verb,
        class,
        text,
        objects,
        digest,
    })
}

fn decode_requirement(r: &mut Reader<'_>) -> Result<ReviewRequirement> {
    let n = r.count("reviewer_groups", 4)?;
    let mut reviewer_groups = Vec::with_capacity(n);
    for _ in 0..n {
        reviewer_groups.push(r.str("reviewer group")?);
    }
    let min_approvals = r.u32("min_approvals")?;
    let secs = r.u64("timeout")?;
    let nanos = r.u32("timeout")?;
    if nanos >= 1_000_000_000 {
        return Err(Error::InvalidValue {
            what: "timeout",
            reason: "nanoseconds out of range",
        });
    }
    Ok(ReviewRequirement {
        reviewer_groups,
        min_approvals,
        timeout: Duration::new(secs, nanos),
    })
}

fn decode_decision(r: &mut Reader<'_>) -> Result<Decision> {
    match r.u8("decision")? {
        1 => Ok(Decision::Allow {
            rule: RuleId::new(r.str("rule")?),
            mask_profile: r.opt_str("mask_profile")?.map(std::sync::Arc::from),
        }),
        2 => Ok(Decision::Deny {
            rule: RuleId::new(r.str("rule")?),
            reason: r.str("reason")?,
        }),
        3 => Ok(Decision::Review {
            rule: RuleId::new(r.str("rule")?),
            reason: r.str("reason")?,
            requirement: decode_requirement(r)?,
        }),
        tag => Err(Error::InvalidTag {
            what: "decision",
            tag,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_events;

    #[test]
    fn every_kind_round_trips_byte_for_byte() {
        for event in sample_events() {
            let bytes = encode_event(&event).unwrap();
            let back = decode_event(&bytes).unwrap();
            assert_eq!(back, event);
            assert_eq!(encode_event(&back).unwrap(), bytes);
        }
    }

    #[test]
    fn every_end_reason_round_trips() {
        for reason in [
            SessionEndReason::ClientClosed,
            SessionEndReason::UpstreamClosed,
            SessionEndReason::CredentialExpired,
            SessionEndReason::Shutdown,
            SessionEndReason::Error {
                message: "reset".into(),
            },
            SessionEndReason::CredentialRevoked {
                reason: "invalid peer certificate: Revoked".into(),
            },
            SessionEndReason::SubscriptionWithdrawn {
                command_id: CommandId::new(),
                rule: RuleId::new("default"),
                reason: "no rule allows this command".into(),
            },
        ] {
            let event = AuditEvent::new(
                Some(SessionId::new()),
                AuditEventKind::SessionEnded {
                    reason: reason.clone(),
                    commands: 3,
                    duration_us: 7,
                },
            );
            let bytes = encode_event(&event).unwrap();
            assert_eq!(decode_event(&bytes).unwrap(), event, "{reason:?}");
        }
    }

    fn completion(reply: Option<Recording>) -> AuditEvent {
        let mut masked = MaskedCounts::new();
        masked.add("email", 1);
        AuditEvent::new(
            Some(SessionId::new()),
            AuditEventKind::CommandCompleted {
                command_id: CommandId::new(),
                rows: 1,
                bytes: 21,
                masked,
                duration_us: 40,
                error: None,
                reply,
            },
        )
    }

    /// The fields every completion has, after the event header and kind tag, as the first
    /// encoding laid them out.
    fn completion_fields(event: &AuditEvent) -> Vec<u8> {
        let AuditEventKind::CommandCompleted { command_id, .. } = &event.kind else {
            unreachable!()
        };
        let mut b = command_id.as_bytes().to_vec();
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&21u64.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&5u32.to_le_bytes());
        b.extend_from_slice(b"email");
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&40u64.to_le_bytes());
        b.push(0);
        b
    }

    #[test]
    fn a_completion_without_a_reply_keeps_its_first_layout() {
        let event = completion(None);
        let bytes = encode_event(&event).unwrap();
        // version, id, time, session tag and id, then the kind.
        let header = 1 + 16 + 8 + 1 + 16;
        assert_eq!(bytes[header], 5);
        assert_eq!(bytes[header + 1..], completion_fields(&event)[..]);
        assert_eq!(decode_event(&bytes).unwrap(), event);
    }

    #[test]
    fn a_completion_with_a_reply_is_tag_15_and_only_then() {
        let event = completion(Some(Recording::new("\"j***@example.com\"", true)));
        let bytes = encode_event(&event).unwrap();
        let header = 1 + 16 + 8 + 1 + 16;
        assert_eq!(bytes[header], 15);
        let mut expected = completion_fields(&event);
        expected.extend_from_slice(&18u32.to_le_bytes());
        expected.extend_from_slice(b"\"j***@example.com\"");
        expected.push(1);
        assert_eq!(bytes[header + 1..], expected[..]);
        assert_eq!(decode_event(&bytes).unwrap(), event);
        // Tag 5 followed by a reply is trailing bytes, tag 15 without one is truncated:
        // neither is another spelling of an event.
        let mut five = bytes.clone();
        five[header] = 5;
        assert!(matches!(
            decode_event(&five),
            Err(Error::TrailingBytes { .. })
        ));
        let plain = encode_event(&completion(None)).unwrap();
        let mut fifteen = plain.clone();
        fifteen[header] = 15;
        assert!(matches!(
            decode_event(&fifteen),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn every_prefix_is_a_typed_error() {
        for event in sample_events() {
            let bytes = encode_event(&event).unwrap();
            for n in 0..bytes.len() {
                assert!(decode_event(bytes.get(..n).unwrap()).is_err());
            }
        }
    }

    #[test]
    fn unsorted_groups_are_not_canonical() {
        let mut w = Writer::default();
        w.str("s", "subject").unwrap();
        w.u32(2);
        w.str("g", "b").unwrap();
        w.str("g", "a").unwrap();
        let mut r = Reader::new(&w.buf);
        assert!(matches!(
            decode_principal(&mut r),
            Err(Error::NotCanonical { what: "groups" })
        ));
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        let mut bytes = vec![EVENT_ENCODING_VERSION];
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&0i64.to_le_bytes());
        bytes.push(0);
        bytes.push(8); // review resolved
        bytes.extend_from_slice(&[0; 16]);
        bytes.push(1);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_event(&bytes),
            Err(Error::Truncated {
                what: "approvers",
                ..
            })
        ));
    }
}
