//! Messages sent by the client: the untagged startup packets and every tagged message of
//! protocol 3.0 and 3.2, each decoded from a [`Frame`] and encoded back to the same bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Direction, Error, Result};
use crate::frame::{CANCEL_REQUEST_CODE, Frame, FrameKind, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};
use crate::limits::Limits;
use crate::wire::{self, Reader, check_count};

/// A protocol version as sent in a StartupMessage (major 3; minor 0 or 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Major version (3).
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

impl ProtocolVersion {
    /// Protocol 3.0, spoken by every server since 7.4.
    pub const V3_0: ProtocolVersion = ProtocolVersion { major: 3, minor: 0 };
    /// Protocol 3.2 (PostgreSQL 18): variable-length cancel keys.
    pub const V3_2: ProtocolVersion = ProtocolVersion { major: 3, minor: 2 };

    /// The version as the Int32 sent on the wire.
    pub fn code(self) -> u32 {
        (u32::from(self.major) << 16) | u32::from(self.minor)
    }
}

/// How to read a `p` message: its meaning depends on the authentication request the
/// server sent last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthContext {
    /// Not known: `p` is decoded as [`FrontendMessage::AuthResponse`] with its raw body.
    #[default]
    Unknown,
    /// After AuthenticationCleartextPassword or AuthenticationMD5Password.
    Password,
    /// After AuthenticationSASL.
    SaslInitial,
    /// After AuthenticationSASLContinue.
    Sasl,
    /// After AuthenticationGSS, GSSContinue or SSPI.
    Gss,
}

/// Whether Close or Describe is about a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    /// A prepared statement (`S`).
    Statement,
    /// A portal (`P`).
    Portal,
}

impl ObjectType {
    fn byte(self) -> u8 {
        match self {
            ObjectType::Statement => b'S',
            ObjectType::Portal => b'P',
        }
    }

    fn from_byte(b: u8, message: &'static str) -> Result<ObjectType> {
        match b {
            b'S' => Ok(ObjectType::Statement),
            b'P' => Ok(ObjectType::Portal),
            other => Err(Error::InvalidField {
                message,
                field: "type",
                value: other.into(),
            }),
        }
    }
}

/// StartupMessage: protocol version and `name=value` parameters (`user`, `database`,
/// `options`, `_pq_.` protocol options…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// Requested protocol version.
    pub version: ProtocolVersion,
    /// Parameters in the order sent.
    pub parameters: Vec<(Bytes, Bytes)>,
}

impl StartupMessage {
    /// The value of a parameter.
    pub fn parameter(&self, name: &str) -> Option<&Bytes> {
        self.parameters
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// The `user` parameter as text, if present and UTF-8.
    pub fn user(&self) -> Option<&str> {
        self.parameter("user")
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The `database` parameter as text, if present and UTF-8.
    pub fn database(&self) -> Option<&str> {
        self.parameter("database")
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// CancelRequest: the backend process id and its secret key (4 bytes in protocol 3.0, up
/// to 256 bytes in 3.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CancelRequest {
    /// Process id from BackendKeyData.
    pub process_id: i32,
    /// Secret key from BackendKeyData.
    pub secret_key: Bytes,
}

/// Parse: create a prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse {
    /// Statement name (empty for the unnamed statement).
    pub name: Bytes,
    /// Query text.
    pub query: Bytes,
    /// Parameter type OIDs the client specifies (0 = let the server infer).
    pub param_types: Vec<u32>,
}

/// Bind: create a portal from a prepared statement and parameter values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Portal name (empty for the unnamed portal).
    pub portal: Bytes,
    /// Statement name.
    pub statement: Bytes,
    /// Parameter format codes: none (all text), one (for all) or one per parameter.
    pub param_formats: Vec<i16>,
    /// Parameter values; `None` is NULL.
    pub params: Vec<Option<Bytes>>,
    /// Result column format codes: none (all text), one (for all) or one per column.
    pub result_formats: Vec<i16>,
}

/// FunctionCall (the legacy fast-path interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    /// Function OID.
    pub function: u32,
    /// Argument format codes.
    pub arg_formats: Vec<i16>,
    /// Arguments; `None` is NULL.
    pub args: Vec<Option<Bytes>>,
    /// Result format code.
    pub result_format: i16,
}

/// A message sent by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrontendMessage {
    /// StartupMessage (untagged).
    Startup(StartupMessage),
    /// SSLRequest (untagged).
    SslRequest,
    /// GSSENCRequest (untagged).
    GssEncRequest,
    /// CancelRequest (untagged, on a new connection).
    CancelRequest(CancelRequest),
    /// Bind (`B`).
    Bind(Bind),
    /// Close (`C`).
    Close {
        /// Statement or portal.
        kind: ObjectType,
        /// Its name.
        name: Bytes,
    },
    /// CopyData (`d`).
    CopyData(Bytes),
    /// CopyDone (`c`).
    CopyDone,
    /// CopyFail (`f`) with an error message.
    CopyFail(Bytes),
    /// Describe (`D`).
    Describe {
        /// Statement or portal.
        kind: ObjectType,
        /// Its name.
        name: Bytes,
    },
    /// Execute (`E`).
    Execute {
        /// Portal name.
        portal: Bytes,
        /// Maximum rows to return, 0 for no limit.
        max_rows: i32,
    },
    /// Flush (`H`).
    Flush,
    /// FunctionCall (`F`).
    FunctionCall(FunctionCall),
    /// Parse (`P`).
    Parse(Parse),
    /// Query (`Q`): simple query protocol.
    Query(Bytes),
    /// Sync (`S`).
    Sync,
    /// Terminate (`X`).
    Terminate,
    /// PasswordMessage (`p`): a cleartext or md5-hashed password.
    PasswordMessage(Bytes),
    /// SASLInitialResponse (`p`).
    SaslInitialResponse {
        /// Chosen mechanism (`SCRAM-SHA-256` or `SCRAM-SHA-256-PLUS`).
        mechanism: Bytes,
        /// Initial client response; `None` is sent as length -1.
        data: Option<Bytes>,
    },
    /// SASLResponse (`p`).
    SaslResponse(Bytes),
    /// GSSResponse (`p`).
    GssResponse(Bytes),
    /// A `p` message decoded without knowing which kind it is (its raw body).
    AuthResponse(Bytes),
}

const STARTUP: &str = "StartupMessage";

impl FrontendMessage {
    /// Parses a frontend frame.
    pub fn decode(frame: &Frame, auth: AuthContext, limits: &Limits) -> Result<FrontendMessage> {
        match frame.kind() {
            FrameKind::Startup => decode_startup(frame.body(), limits),
            FrameKind::Tagged(tag) => decode_tagged(tag, frame.body(), auth, limits),
            FrameKind::SslResponse | FrameKind::GssEncResponse => Err(Error::UnknownMessage {
                direction: Direction::Frontend,
                tag: '\0',
            }),
        }
    }

    /// The type byte of this message, or `None` for an untagged startup packet.
    pub fn tag(&self) -> Option<u8> {
        Some(match self {
            FrontendMessage::Startup(_)
            | FrontendMessage::SslRequest
            | FrontendMessage::GssEncRequest
            | FrontendMessage::CancelRequest(_) => return None,
            FrontendMessage::Bind(_) => b'B',
            FrontendMessage::Close { .. } => b'C',
            FrontendMessage::CopyData(_) => b'd',
            FrontendMessage::CopyDone => b'c',
            FrontendMessage::CopyFail(_) => b'f',
            FrontendMessage::Describe { .. } => b'D',
            FrontendMessage::Execute { .. } => b'E',
            FrontendMessage::Flush => b'H',
            FrontendMessage::FunctionCall(_) => b'F',
            FrontendMessage::Parse(_) => b'P',
            FrontendMessage::Query(_) => b'Q',
            FrontendMessage::Sync => b'S',
            FrontendMessage::Terminate => b'X',
            FrontendMessage::PasswordMessage(_)
            | FrontendMessage::SaslInitialResponse { .. }
            | FrontendMessage::SaslResponse(_)
            | FrontendMessage::GssResponse(_)
            | FrontendMessage::AuthResponse(_) => b'p',
        })
    }

    /// Appends the wire form of this message to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<()> {
        let Some(tag) = self.tag() else {
            return self.encode_startup(dst);
        };
        let start = dst.len();
        let at = wire::begin(dst, tag);
        let r = self.encode_body(dst);
        if r.is_err() {
            dst.truncate(start);
            return r;
        }
        wire::finish(dst, at, "frontend message")
    }

    /// Encodes this message into a new frame.
    pub fn to_frame(&self) -> Result<Frame> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        let kind = self.tag().map_or(FrameKind::Startup, FrameKind::Tagged);
        Ok(Frame::new(kind, b.freeze()))
    }

    fn encode_startup(&self, dst: &mut BytesMut) -> Result<()> {
        let start = dst.len();
        let at = wire::begin_untagged(dst);
        let r = match self {
            FrontendMessage::Startup(s) => (|| {
                dst.put_u32(s.version.code());
                for (k, v) in &s.parameters {
                    if k.is_empty() {
                        return Err(Error::InvalidField {
                            message: STARTUP,
                            field: "parameter name length",
                            value: 0,
                        });
                    }
                    wire::put_cstr(dst, k, STARTUP, "parameter name")?;
                    wire::put_cstr(dst, v, STARTUP, "parameter value")?;
                }
                dst.put_u8(0);
                Ok(())
            })(),
            FrontendMessage::SslRequest => {
                dst.put_u32(SSL_REQUEST_CODE);
                Ok(())
            }
            FrontendMessage::GssEncRequest => {
                dst.put_u32(GSSENC_REQUEST_CODE);
                Ok(())
            }
            FrontendMessage::CancelRequest(c) => {
                dst.put_u32(CANCEL_REQUEST_CODE);
                dst.put_i32(c.process_id);
                dst.put_slice(&c.secret_key);
                Ok(())
            }
            _ => Ok(()),
        };
        if r.is_err() {
            dst.truncate(start);
            return r;
        }
        wire::finish(dst, at, STARTUP)
    }

    fn encode_body(&self, dst: &mut BytesMut) -> Result<()> {
        match self {
            FrontendMessage::Bind(b) => {
                const M: &str = "Bind";
                wire::put_cstr(dst, &b.portal, M, "portal")?;
                wire::put_cstr(dst, &b.statement, M, "statement")?;
                put_formats(dst, &b.param_formats, M)?;
                wire::put_count16(dst, b.params.len(), M, "parameters")?;
                for p in &b.params {
                    wire::put_nullable(dst, p.as_deref(), M)?;
                }
                put_formats(dst, &b.result_formats, M)?;
            }
            FrontendMessage::Close { kind, name } | FrontendMessage::Describe { kind, name } => {
                dst.put_u8(kind.byte());
                wire::put_cstr(dst, name, "Close/Describe", "name")?;
            }
            FrontendMessage::CopyData(d)
            | FrontendMessage::SaslResponse(d)
            | FrontendMessage::GssResponse(d)
            | FrontendMessage::AuthResponse(d) => dst.put_slice(d),
            FrontendMessage::CopyFail(m) => wire::put_cstr(dst, m, "CopyFail", "message")?,
            FrontendMessage::Execute { portal, max_rows } => {
                wire::put_cstr(dst, portal, "Execute", "portal")?;
                dst.put_i32(*max_rows);
            }
            FrontendMessage::FunctionCall(f) => {
                const M: &str = "FunctionCall";
                dst.put_u32(f.function);
                put_formats(dst, &f.arg_formats, M)?;
                wire::put_count16(dst, f.args.len(), M, "arguments")?;
                for a in &f.args {
                    wire::put_nullable(dst, a.as_deref(), M)?;
                }
                dst.put_i16(f.result_format);
            }
            FrontendMessage::Parse(p) => {
                const M: &str = "Parse";
                wire::put_cstr(dst, &p.name, M, "name")?;
                wire::put_cstr(dst, &p.query, M, "query")?;
                wire::put_count16(dst, p.param_types.len(), M, "parameter types")?;
                for t in &p.param_types {
                    dst.put_u32(*t);
                }
            }
            FrontendMessage::Query(q) => wire::put_cstr(dst, q, "Query", "query")?,
            FrontendMessage::PasswordMessage(p) => {
                wire::put_cstr(dst, p, "PasswordMessage", "password")?
            }
            FrontendMessage::SaslInitialResponse { mechanism, data } => {
                wire::put_cstr(dst, mechanism, "SASLInitialResponse", "mechanism")?;
                wire::put_nullable(dst, data.as_deref(), "SASLInitialResponse")?;
            }
            FrontendMessage::CopyDone
            | FrontendMessage::Flush
            | FrontendMessage::Sync
            | FrontendMessage::Terminate
            | FrontendMessage::Startup(_)
            | FrontendMessage::SslRequest
            | FrontendMessage::GssEncRequest
            | FrontendMessage::CancelRequest(_) => {}
        }
        Ok(())
    }
}

impl FrontendMessage {
    /// Decodes the body of a `p` message now that its kind is known.
    pub fn decode_auth(body: Bytes, auth: AuthContext) -> Result<FrontendMessage> {
        decode_tagged(b'p', body, auth, &Limits::DEFAULT)
    }
}

fn put_formats(dst: &mut BytesMut, formats: &[i16], message: &'static str) -> Result<()> {
    wire::put_count16(dst, formats.len(), message, "format codes")?;
    for f in formats {
        dst.put_i16(*f);
    }
    Ok(())
}

fn read_formats(r: &mut Reader, limits: &Limits) -> Result<Vec<i16>> {
    let n = r.count16("format codes", limits.max_parameters)?;
    let mut v = Vec::with_capacity(n.min(r.remaining() / 2));
    for _ in 0..n {
        v.push(r.i16("format code")?);
    }
    Ok(v)
}

fn read_values(r: &mut Reader, limits: &Limits, what: &'static str) -> Result<Vec<Option<Bytes>>> {
    let n = r.count16(what, limits.max_parameters)?;
    let mut v = Vec::with_capacity(n.min(r.remaining() / 4));
    for _ in 0..n {
        v.push(r.nullable("value")?);
    }
    Ok(v)
}

fn decode_startup(body: Bytes, limits: &Limits) -> Result<FrontendMessage> {
    let mut r = Reader::new(body, STARTUP);
    let code = r.u32("protocol version")?;
    let msg = match code {
        SSL_REQUEST_CODE => FrontendMessage::SslRequest,
        GSSENC_REQUEST_CODE => FrontendMessage::GssEncRequest,
        CANCEL_REQUEST_CODE => {
            let process_id = r.i32("process id")?;
            let key = r.rest();
            if key.len() < 4 || key.len() > limits.max_cancel_key_len {
                return Err(Error::InvalidField {
                    message: "CancelRequest",
                    field: "secret key length",
                    value: i64::try_from(key.len()).unwrap_or(i64::MAX),
                });
            }
            return Ok(FrontendMessage::CancelRequest(CancelRequest {
                process_id,
                secret_key: key,
            }));
        }
        code if code >> 16 == 3 => {
            let version = ProtocolVersion {
                major: 3,
                minor: (code & 0xffff) as u16,
            };
            let mut parameters = Vec::new();
            loop {
                let name = r.cstr("parameter name")?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr("parameter value")?;
                parameters.push((name, value));
                check_count(
                    STARTUP,
                    "parameters",
                    parameters.len(),
                    limits.max_startup_parameters,
                )?;
            }
            FrontendMessage::Startup(StartupMessage {
                version,
                parameters,
            })
        }
        code => {
            return Err(Error::UnsupportedProtocol {
                major: (code >> 16) as u16,
                minor: (code & 0xffff) as u16,
            });
        }
    };
    r.finish()?;
    Ok(msg)
}

fn decode_tagged(
    tag: u8,
    body: Bytes,
    auth: AuthContext,
    limits: &Limits,
) -> Result<FrontendMessage> {
    let msg = match tag {
        b'B' => {
            let mut r = Reader::new(body, "Bind");
            let portal = r.cstr("portal")?;
            let statement = r.cstr("statement")?;
            let param_formats = read_formats(&mut r, limits)?;
            let params = read_values(&mut r, limits, "parameters")?;
            let result_formats = read_formats_columns(&mut r, limits)?;
            r.finish()?;
            FrontendMessage::Bind(Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            })
        }
        b'C' | b'D' => {
            let m = if tag == b'C' { "Close" } else { "Describe" };
            let mut r = Reader::new(body, m);
            let kind = ObjectType::from_byte(r.u8("type")?, m)?;
            let name = r.cstr("name")?;
            r.finish()?;
            if tag == b'C' {
                FrontendMessage::Close { kind, name }
            } else {
                FrontendMessage::Describe { kind, name }
            }
        }
        b'd' => FrontendMessage::CopyData(body),
        b'c' => empty(body, "CopyDone", FrontendMessage::CopyDone)?,
        b'f' => {
            let mut r = Reader::new(body, "CopyFail");
            let m = r.cstr("message")?;
            r.finish()?;
            FrontendMessage::CopyFail(m)
        }
        b'E' => {
            let mut r = Reader::new(body, "Execute");
            let portal = r.cstr("portal")?;
            let max_rows = r.i32("max rows")?;
            r.finish()?;
            FrontendMessage::Execute { portal, max_rows }
        }
        b'H' => empty(body, "Flush", FrontendMessage::Flush)?,
        b'F' => {
            let mut r = Reader::new(body, "FunctionCall");
            let function = r.u32("function")?;
            let arg_formats = read_formats(&mut r, limits)?;
            let args = read_values(&mut r, limits, "arguments")?;
            let result_format = r.i16("result format")?;
            r.finish()?;
            FrontendMessage::FunctionCall(FunctionCall {
                function,
                arg_formats,
                args,
                result_format,
            })
        }
        b'P' => {
            let mut r = Reader::new(body, "Parse");
            let name = r.cstr("name")?;
            let query = r.cstr("query")?;
            let n = r.count16("parameter types", limits.max_parameters)?;
            let mut param_types = Vec::with_capacity(n.min(r.remaining() / 4));
            for _ in 0..n {
                param_types.push(r.u32("parameter type")?);
            }
            r.finish()?;
            FrontendMessage::Parse(Parse {
                name,
                query,
                param_types,
            })
        }
        b'Q' => {
            let mut r = Reader::new(body, "Query");
            let q = r.cstr("query")?;
            r.finish()?;
            FrontendMessage::Query(q)
        }
        b'S' => empty(body, "Sync", FrontendMessage::Sync)?,
        b'X' => empty(body, "Terminate", FrontendMessage::Terminate)?,
        b'p' => match auth {
            AuthContext::Unknown => FrontendMessage::AuthResponse(body),
            AuthContext::Password => {
                let mut r = Reader::new(body, "PasswordMessage");
                let p = r.cstr("password")?;
                r.finish()?;
                FrontendMessage::PasswordMessage(p)
            }
            AuthContext::SaslInitial => {
                let mut r = Reader::new(body, "SASLInitialResponse");
                let mechanism = r.cstr("mechanism")?;
                let data = r.nullable("data")?;
                r.finish()?;
                FrontendMessage::SaslInitialResponse { mechanism, data }
            }
            AuthContext::Sasl => FrontendMessage::SaslResponse(body),
            AuthContext::Gss => FrontendMessage::GssResponse(body),
        },
        other => {
            return Err(Error::UnknownMessage {
                direction: Direction::Frontend,
                tag: char::from(other),
            });
        }
    };
    Ok(msg)
}

fn read_formats_columns(r: &mut Reader, limits: &Limits) -> Result<Vec<i16>> {
    let n = r.count16("result format codes", limits.max_columns.max(1))?;
    let mut v = Vec::with_capacity(n.min(r.remaining() / 2));
    for _ in 0..n {
        v.push(r.i16("format code")?);
    }
    Ok(v)
}

fn empty(body: Bytes, message: &'static str, msg: FrontendMessage) -> Result<FrontendMessage> {
    if body.is_empty() {
        Ok(msg)
    } else {
        Err(Error::TrailingBytes {
            message,
            extra: body.len(),
        })
    }
}
