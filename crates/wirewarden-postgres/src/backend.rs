//! Messages sent by the server: every tagged message of protocol 3.0 and 3.2 plus the
//! one-byte answers to SSLRequest and GSSENCRequest, decoded from a [`Frame`] and encoded
//! back to the same bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Direction, Error, Result};
use crate::frame::{Frame, FrameKind};
use crate::limits::Limits;
use crate::rows::{DataRow, RowDescription};
use crate::wire::{self, Reader, check_count};

/// An authentication request (`R`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// AuthenticationOk (0).
    Ok,
    /// AuthenticationKerberosV5 (2).
    KerberosV5,
    /// AuthenticationCleartextPassword (3).
    CleartextPassword,
    /// AuthenticationMD5Password (5) with its salt.
    Md5Password {
        /// Salt to hash with.
        salt: [u8; 4],
    },
    /// AuthenticationSCMCredential (6), obsolete.
    ScmCredential,
    /// AuthenticationGSS (7).
    Gss,
    /// AuthenticationGSSContinue (8).
    GssContinue(Bytes),
    /// AuthenticationSSPI (9).
    Sspi,
    /// AuthenticationSASL (10) with the mechanisms offered.
    Sasl {
        /// Mechanism names in the server's order of preference.
        mechanisms: Vec<Bytes>,
    },
    /// AuthenticationSASLContinue (11).
    SaslContinue(Bytes),
    /// AuthenticationSASLFinal (12).
    SaslFinal(Bytes),
}

impl Authentication {
    fn code(&self) -> i32 {
        match self {
            Authentication::Ok => 0,
            Authentication::KerberosV5 => 2,
            Authentication::CleartextPassword => 3,
            Authentication::Md5Password { .. } => 5,
            Authentication::ScmCredential => 6,
            Authentication::Gss => 7,
            Authentication::GssContinue(_) => 8,
            Authentication::Sspi => 9,
            Authentication::Sasl { .. } => 10,
            Authentication::SaslContinue(_) => 11,
            Authentication::SaslFinal(_) => 12,
        }
    }
}

/// Transaction status reported by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// Not in a transaction block (`I`).
    Idle,
    /// In a transaction block (`T`).
    InTransaction,
    /// In a failed transaction block (`E`): queries are rejected until the block ends.
    Failed,
}

impl TransactionStatus {
    /// The status byte.
    pub fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }

    /// Parses the status byte.
    pub fn from_byte(b: u8) -> Option<TransactionStatus> {
        match b {
            b'I' => Some(TransactionStatus::Idle),
            b'T' => Some(TransactionStatus::InTransaction),
            b'E' => Some(TransactionStatus::Failed),
            _ => None,
        }
    }
}

/// CopyInResponse, CopyOutResponse and CopyBothResponse bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResponse {
    /// Overall format: 0 textual, 1 binary.
    pub format: i8,
    /// Per-column format codes.
    pub column_formats: Vec<i16>,
}

/// The fields of an ErrorResponse or NoticeResponse, in the order sent.
///
/// Field codes are the server's: `S` severity (localized), `V` severity, `C` SQLSTATE,
/// `M` message, `D` detail, `H` hint, `P` position, `W` where, `s` schema, `t` table,
/// `c` column, `d` data type, `n` constraint, `F` file, `L` line, `R` routine…
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    /// `(code, value)` pairs.
    pub fields: Vec<(u8, Bytes)>,
}

impl ErrorFields {
    /// Fields with a severity (`S` and `V`), SQLSTATE (`C`) and message (`M`).
    pub fn new(severity: &str, code: &str, message: impl Into<String>) -> ErrorFields {
        let sev = Bytes::copy_from_slice(severity.as_bytes());
        ErrorFields {
            fields: vec![
                (b'S', sev.clone()),
                (b'V', sev),
                (b'C', Bytes::copy_from_slice(code.as_bytes())),
                (b'M', Bytes::from(message.into().replace('\0', ""))),
            ],
        }
    }

    /// Adds a field (a detail `D`, a hint `H`…).
    pub fn with(mut self, code: u8, value: impl Into<String>) -> ErrorFields {
        self.fields
            .push((code, Bytes::from(value.into().replace('\0', ""))));
        self
    }

    /// The value of the first field with this code.
    pub fn get(&self, code: u8) -> Option<&Bytes> {
        self.fields.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    /// The SQLSTATE (`C`), if present and UTF-8.
    pub fn code(&self) -> Option<&str> {
        self.get(b'C').and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The primary message (`M`), if present and UTF-8.
    pub fn message(&self) -> Option<&str> {
        self.get(b'M').and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The non-localized severity (`V`), or the localized one (`S`) if absent.
    pub fn severity(&self) -> Option<&str> {
        self.get(b'V')
            .or_else(|| self.get(b'S'))
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn decode(body: Bytes, message: &'static str, limits: &Limits) -> Result<ErrorFields> {
        let mut r = Reader::new(body, message);
        let mut fields = Vec::new();
        loop {
            let code = r.u8("field type")?;
            if code == 0 {
                break;
            }
            let v = r.cstr("field value")?;
            fields.push((code, v));
            check_count(message, "fields", fields.len(), limits.max_error_fields)?;
        }
        r.finish()?;
        Ok(ErrorFields { fields })
    }

    fn encode(&self, dst: &mut BytesMut, message: &'static str) -> Result<()> {
        for (code, v) in &self.fields {
            if *code == 0 {
                return Err(Error::InvalidField {
                    message,
                    field: "field type",
                    value: 0,
                });
            }
            dst.put_u8(*code);
            wire::put_cstr(dst, v, message, "field value")?;
        }
        dst.put_u8(0);
        Ok(())
    }
}

/// A message sent by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendMessage {
    /// An authentication request or result (`R`).
    Authentication(Authentication),
    /// BackendKeyData (`K`): what a CancelRequest must present.
    BackendKeyData {
        /// Backend process id.
        process_id: i32,
        /// Secret key: 4 bytes in protocol 3.0, up to 256 bytes in 3.2.
        secret_key: Bytes,
    },
    /// BindComplete (`2`).
    BindComplete,
    /// CloseComplete (`3`).
    CloseComplete,
    /// CommandComplete (`C`) with its command tag (`SELECT 3`, `INSERT 0 1`…).
    CommandComplete(Bytes),
    /// CopyData (`d`).
    CopyData(Bytes),
    /// CopyDone (`c`).
    CopyDone,
    /// CopyInResponse (`G`).
    CopyInResponse(CopyResponse),
    /// CopyOutResponse (`H`).
    CopyOutResponse(CopyResponse),
    /// CopyBothResponse (`W`).
    CopyBothResponse(CopyResponse),
    /// DataRow (`D`).
    DataRow(DataRow),
    /// EmptyQueryResponse (`I`).
    EmptyQueryResponse,
    /// ErrorResponse (`E`).
    ErrorResponse(ErrorFields),
    /// FunctionCallResponse (`V`); `None` is a NULL result.
    FunctionCallResponse(Option<Bytes>),
    /// NegotiateProtocolVersion (`v`).
    NegotiateProtocolVersion {
        /// Newest minor protocol version the server supports for the requested major.
        newest_minor: u32,
        /// Protocol options (`_pq_.…`) the server did not recognize.
        unrecognized: Vec<Bytes>,
    },
    /// NoData (`n`).
    NoData,
    /// NoticeResponse (`N`).
    NoticeResponse(ErrorFields),
    /// NotificationResponse (`A`).
    NotificationResponse {
        /// Process id of the notifying backend.
        process_id: i32,
        /// Channel name.
        channel: Bytes,
        /// Payload.
        payload: Bytes,
    },
    /// ParameterDescription (`t`) with parameter type OIDs.
    ParameterDescription(Vec<u32>),
    /// ParameterStatus (`S`).
    ParameterStatus {
        /// Parameter name.
        name: Bytes,
        /// Its current value.
        value: Bytes,
    },
    /// ParseComplete (`1`).
    ParseComplete,
    /// PortalSuspended (`s`): an Execute's row limit was reached.
    PortalSuspended,
    /// ReadyForQuery (`Z`).
    ReadyForQuery(TransactionStatus),
    /// RowDescription (`T`).
    RowDescription(RowDescription),
    /// The one-byte answer to SSLRequest: `true` for `S` (go ahead with TLS).
    SslResponse(bool),
    /// The one-byte answer to GSSENCRequest: `true` for `G`.
    GssEncResponse(bool),
}

impl BackendMessage {
    /// The type byte of this message, or `None` for the one-byte TLS/GSS answers.
    pub fn tag(&self) -> Option<u8> {
        Some(match self {
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::BackendKeyData { .. } => b'K',
            BackendMessage::BindComplete => b'2',
            BackendMessage::CloseComplete => b'3',
            BackendMessage::CommandComplete(_) => b'C',
            BackendMessage::CopyData(_) => b'd',
            BackendMessage::CopyDone => b'c',
            BackendMessage::CopyInResponse(_) => b'G',
            BackendMessage::CopyOutResponse(_) => b'H',
            BackendMessage::CopyBothResponse(_) => b'W',
            BackendMessage::DataRow(_) => b'D',
            BackendMessage::EmptyQueryResponse => b'I',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::FunctionCallResponse(_) => b'V',
            BackendMessage::NegotiateProtocolVersion { .. } => b'v',
            BackendMessage::NoData => b'n',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::NotificationResponse { .. } => b'A',
            BackendMessage::ParameterDescription(_) => b't',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::ParseComplete => b'1',
            BackendMessage::PortalSuspended => b's',
            BackendMessage::ReadyForQuery(_) => b'Z',
            BackendMessage::RowDescription(_) => b'T',
            BackendMessage::SslResponse(_) | BackendMessage::GssEncResponse(_) => return None,
        })
    }

    /// Parses a backend frame.
    pub fn decode(frame: &Frame, limits: &Limits) -> Result<BackendMessage> {
        match frame.kind() {
            FrameKind::Tagged(tag) => decode_tagged(tag, frame.body(), limits),
            FrameKind::SslResponse => match frame.as_bytes().as_ref() {
                b"S" => Ok(BackendMessage::SslResponse(true)),
                b"N" => Ok(BackendMessage::SslResponse(false)),
                other => Err(single_byte_error("SSL response", other)),
            },
            FrameKind::GssEncResponse => match frame.as_bytes().as_ref() {
                b"G" => Ok(BackendMessage::GssEncResponse(true)),
                b"N" => Ok(BackendMessage::GssEncResponse(false)),
                other => Err(single_byte_error("GSSENC response", other)),
            },
            FrameKind::Startup => Err(Error::UnknownMessage {
                direction: Direction::Backend,
                tag: '\0',
            }),
        }
    }

    /// Appends the wire form of this message to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<()> {
        let Some(tag) = self.tag() else {
            let b = match self {
                BackendMessage::SslResponse(true) => b'S',
                BackendMessage::GssEncResponse(true) => b'G',
                _ => b'N',
            };
            dst.put_u8(b);
            return Ok(());
        };
        // Rows are the hot path: they know their own length.
        if let BackendMessage::DataRow(row) = self {
            return row.encode(dst);
        }
        let start = dst.len();
        let at = wire::begin(dst, tag);
        let r = self.encode_body(dst);
        if r.is_err() {
            dst.truncate(start);
            return r;
        }
        wire::finish(dst, at, "backend message")
    }

    /// Encodes this message into a new frame.
    pub fn to_frame(&self) -> Result<Frame> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        let kind = match self {
            BackendMessage::SslResponse(_) => FrameKind::SslResponse,
            BackendMessage::GssEncResponse(_) => FrameKind::GssEncResponse,
            _ => FrameKind::Tagged(self.tag().unwrap_or(0)),
        };
        Ok(Frame::new(kind, b.freeze()))
    }

    fn encode_body(&self, dst: &mut BytesMut) -> Result<()> {
        match self {
            BackendMessage::Authentication(a) => {
                dst.put_i32(a.code());
                match a {
                    Authentication::Md5Password { salt } => dst.put_slice(salt),
                    Authentication::GssContinue(d)
                    | Authentication::SaslContinue(d)
                    | Authentication::SaslFinal(d) => dst.put_slice(d),
                    Authentication::Sasl { mechanisms } => {
                        for m in mechanisms {
                            if m.is_empty() {
                                return Err(Error::InvalidField {
                                    message: "AuthenticationSASL",
                                    field: "mechanism length",
                                    value: 0,
                                });
                            }
                            wire::put_cstr(dst, m, "AuthenticationSASL", "mechanism")?;
                        }
                        dst.put_u8(0);
                    }
                    _ => {}
                }
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => {
                dst.put_i32(*process_id);
                dst.put_slice(secret_key);
            }
            BackendMessage::CommandComplete(tag) => {
                wire::put_cstr(dst, tag, "CommandComplete", "tag")?
            }
            BackendMessage::CopyData(d) => dst.put_slice(d),
            BackendMessage::CopyInResponse(c)
            | BackendMessage::CopyOutResponse(c)
            | BackendMessage::CopyBothResponse(c) => {
                dst.put_i8(c.format);
                wire::put_count16(dst, c.column_formats.len(), "CopyResponse", "columns")?;
                for f in &c.column_formats {
                    dst.put_i16(*f);
                }
            }
            BackendMessage::ErrorResponse(e) => e.encode(dst, "ErrorResponse")?,
            BackendMessage::NoticeResponse(e) => e.encode(dst, "NoticeResponse")?,
            BackendMessage::FunctionCallResponse(v) => {
                wire::put_nullable(dst, v.as_deref(), "FunctionCallResponse")?
            }
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            } => {
                const M: &str = "NegotiateProtocolVersion";
                dst.put_u32(*newest_minor);
                let n = i32::try_from(unrecognized.len()).map_err(|_| Error::TooMany {
                    message: M,
                    what: "options",
                    count: unrecognized.len(),
                    limit: i32::MAX as usize,
                })?;
                dst.put_i32(n);
                for o in unrecognized {
                    wire::put_cstr(dst, o, M, "option")?;
                }
            }
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            } => {
                dst.put_i32(*process_id);
                wire::put_cstr(dst, channel, "NotificationResponse", "channel")?;
                wire::put_cstr(dst, payload, "NotificationResponse", "payload")?;
            }
            BackendMessage::ParameterDescription(types) => {
                wire::put_count16(dst, types.len(), "ParameterDescription", "parameters")?;
                for t in types {
                    dst.put_u32(*t);
                }
            }
            BackendMessage::ParameterStatus { name, value } => {
                wire::put_cstr(dst, name, "ParameterStatus", "name")?;
                wire::put_cstr(dst, value, "ParameterStatus", "value")?;
            }
            BackendMessage::ReadyForQuery(s) => dst.put_u8(s.byte()),
            BackendMessage::RowDescription(rd) => dst.put_slice(rd.body()),
            BackendMessage::DataRow(_)
            | BackendMessage::BindComplete
            | BackendMessage::CloseComplete
            | BackendMessage::CopyDone
            | BackendMessage::EmptyQueryResponse
            | BackendMessage::NoData
            | BackendMessage::ParseComplete
            | BackendMessage::PortalSuspended
            | BackendMessage::SslResponse(_)
            | BackendMessage::GssEncResponse(_) => {}
        }
        Ok(())
    }
}

fn single_byte_error(message: &'static str, got: &[u8]) -> Error {
    Error::InvalidField {
        message,
        field: "answer",
        value: got.first().copied().unwrap_or(0).into(),
    }
}

fn empty(body: Bytes, message: &'static str, msg: BackendMessage) -> Result<BackendMessage> {
    if body.is_empty() {
        Ok(msg)
    } else {
        Err(Error::TrailingBytes {
            message,
            extra: body.len(),
        })
    }
}

fn copy_response(body: Bytes, message: &'static str, limits: &Limits) -> Result<CopyResponse> {
    let mut r = Reader::new(body, message);
    let format = r.u8("format")? as i8;
    let n = r.count16("columns", limits.max_columns)?;
    let mut column_formats = Vec::with_capacity(n.min(r.remaining() / 2));
    for _ in 0..n {
        column_formats.push(r.i16("column format")?);
    }
    r.finish()?;
    Ok(CopyResponse {
        format,
        column_formats,
    })
}

fn decode_tagged(tag: u8, body: Bytes, limits: &Limits) -> Result<BackendMessage> {
    let msg = match tag {
        b'R' => {
            const M: &str = "Authentication";
            let mut r = Reader::new(body, M);
            let code = r.i32("code")?;
            let a = match code {
                0 => Authentication::Ok,
                2 => Authentication::KerberosV5,
                3 => Authentication::CleartextPassword,
                5 => {
                    let s = r.bytes(4, "salt")?;
                    let mut salt = [0u8; 4];
                    salt.copy_from_slice(&s);
                    Authentication::Md5Password { salt }
                }
                6 => Authentication::ScmCredential,
                7 => Authentication::Gss,
                8 => Authentication::GssContinue(r.rest()),
                9 => Authentication::Sspi,
                10 => {
                    let mut mechanisms = Vec::new();
                    loop {
                        let m = r.cstr("mechanism")?;
                        if m.is_empty() {
                            break;
                        }
                        mechanisms.push(m);
                        check_count(M, "mechanisms", mechanisms.len(), limits.max_list_items)?;
                    }
                    Authentication::Sasl { mechanisms }
                }
                11 => Authentication::SaslContinue(r.rest()),
                12 => Authentication::SaslFinal(r.rest()),
                other => {
                    return Err(Error::InvalidField {
                        message: M,
                        field: "code",
                        value: other.into(),
                    });
                }
            };
            r.finish()?;
            BackendMessage::Authentication(a)
        }
        b'K' => {
            let mut r = Reader::new(body, "BackendKeyData");
            let process_id = r.i32("process id")?;
            let secret_key = r.rest();
            if secret_key.len() < 4 || secret_key.len() > limits.max_cancel_key_len {
                return Err(Error::InvalidField {
                    message: "BackendKeyData",
                    field: "secret key length",
                    value: i64::try_from(secret_key.len()).unwrap_or(i64::MAX),
                });
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            }
        }
        b'2' => empty(body, "BindComplete", BackendMessage::BindComplete)?,
        b'3' => empty(body, "CloseComplete", BackendMessage::CloseComplete)?,
        b'C' => {
            let mut r = Reader::new(body, "CommandComplete");
            let t = r.cstr("tag")?;
            r.finish()?;
            BackendMessage::CommandComplete(t)
        }
        b'd' => BackendMessage::CopyData(body),
        b'c' => empty(body, "CopyDone", BackendMessage::CopyDone)?,
        b'G' => BackendMessage::CopyInResponse(copy_response(body, "CopyInResponse", limits)?),
        b'H' => BackendMessage::CopyOutResponse(copy_response(body, "CopyOutResponse", limits)?),
        b'W' => BackendMessage::CopyBothResponse(copy_response(body, "CopyBothResponse", limits)?),
        b'D' => BackendMessage::DataRow(DataRow::parse(body, limits)?),
        b'I' => empty(
            body,
            "EmptyQueryResponse",
            BackendMessage::EmptyQueryResponse,
        )?,
        b'E' => BackendMessage::ErrorResponse(ErrorFields::decode(body, "ErrorResponse", limits)?),
        b'N' => {
            BackendMessage::NoticeResponse(ErrorFields::decode(body, "NoticeResponse", limits)?)
        }
        b'V' => {
            let mut r = Reader::new(body, "FunctionCallResponse");
            let v = r.nullable("result")?;
            r.finish()?;
            BackendMessage::FunctionCallResponse(v)
        }
        b'v' => {
            const M: &str = "NegotiateProtocolVersion";
            let mut r = Reader::new(body, M);
            let newest_minor = r.u32("newest minor version")?;
            let n = r.i32("option count")?;
            let n = usize::try_from(n).map_err(|_| Error::InvalidField {
                message: M,
                field: "option count",
                value: n.into(),
            })?;
            check_count(M, "options", n, limits.max_list_items)?;
            let mut unrecognized = Vec::with_capacity(n);
            for _ in 0..n {
                unrecognized.push(r.cstr("option")?);
            }
            r.finish()?;
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            }
        }
        b'n' => empty(body, "NoData", BackendMessage::NoData)?,
        b'A' => {
            let mut r = Reader::new(body, "NotificationResponse");
            let process_id = r.i32("process id")?;
            let channel = r.cstr("channel")?;
            let payload = r.cstr("payload")?;
            r.finish()?;
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            }
        }
        b't' => {
            let mut r = Reader::new(body, "ParameterDescription");
            let n = r.count16("parameters", limits.max_parameters)?;
            let mut types = Vec::with_capacity(n.min(r.remaining() / 4));
            for _ in 0..n {
                types.push(r.u32("parameter type")?);
            }
            r.finish()?;
            BackendMessage::ParameterDescription(types)
        }
        b'S' => {
            let mut r = Reader::new(body, "ParameterStatus");
            let name = r.cstr("name")?;
            let value = r.cstr("value")?;
            r.finish()?;
            BackendMessage::ParameterStatus { name, value }
        }
        b'1' => empty(body, "ParseComplete", BackendMessage::ParseComplete)?,
        b's' => empty(body, "PortalSuspended", BackendMessage::PortalSuspended)?,
        b'Z' => {
            let mut r = Reader::new(body, "ReadyForQuery");
            let b = r.u8("status")?;
            r.finish()?;
            let s = TransactionStatus::from_byte(b).ok_or_else(|| Error::InvalidField {
                message: "ReadyForQuery",
                field: "status",
                value: b.into(),
            })?;
            BackendMessage::ReadyForQuery(s)
        }
        b'T' => BackendMessage::RowDescription(RowDescription::parse(body, limits)?),
        other => {
            return Err(Error::UnknownMessage {
                direction: Direction::Backend,
                tag: char::from(other),
            });
        }
    };
    Ok(msg)
}
