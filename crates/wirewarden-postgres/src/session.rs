//! Proxy session tracking: an IO-free state machine fed with every frontend and backend
//! message of one connection, in the order each side sent them.
//!
//! It models what the server does with the client's pipeline: each frontend message that
//! expects an answer is queued, and each backend message is matched against the head of
//! the queue. An ErrorResponse in the extended protocol drops everything up to the next
//! Sync (the server discards those messages), frontend messages that arrive while the
//! server is discarding are not queued, and Sync/Flush sent during COPY FROM STDIN are
//! ignored as the server ignores them. From this it knows, for every DataRow, which
//! RowDescription applies — with the result formats chosen in Bind — so a masker knows the
//! column's table OID, column number, type and format.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use subtle::ConstantTimeEq;

use crate::backend::{Authentication, BackendMessage, TransactionStatus};
use crate::error::{Direction, Error, Result};
use crate::frontend::{AuthContext, CancelRequest, FrontendMessage, ObjectType, ProtocolVersion};
use crate::rows::RowDescription;

/// The number a [`Session`] gives each frontend message the server answers, in the order
/// they were sent (see [`Session::last_request`]).
pub type RequestId = u64;

/// What became of a request, as the server's answers tell it (see
/// [`Session::take_finished`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Answered in full: `ParseComplete`, `BindComplete`, `CloseComplete`, a `Describe`'s
    /// description, an `Execute`'s `CommandComplete` (or `PortalSuspended`,
    /// `EmptyQueryResponse`), the `ReadyForQuery` closing a simple query or `Sync`.
    Done,
    /// The server reported an error for it. A simple query that failed ran its statements
    /// up to the failing one.
    Failed,
    /// The server never acted on it: it came after a failed message of the same batch (the
    /// server discards up to `Sync`), or it was a `Sync` the server read during COPY FROM
    /// STDIN, or the connection ended first.
    Skipped,
}

/// A prepared statement known to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Query text from Parse.
    pub query: Bytes,
    /// Parameter types: from ParameterDescription once described, else as given in Parse.
    pub param_types: Vec<u32>,
    /// Result shape from a Describe: `Some(None)` means NoData, `None` means not described.
    pub row_description: Option<Option<Arc<RowDescription>>>,
}

/// A portal known to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// Statement it was bound from.
    pub statement: Bytes,
    /// Result format codes from Bind.
    pub result_formats: Vec<i16>,
    /// Result shape with the Bind formats applied: `Some(None)` means no rows, `None`
    /// means not known (the statement was never described).
    pub row_description: Option<Option<Arc<RowDescription>>>,
}

/// What the connection is doing with COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// No COPY in progress.
    None,
    /// COPY FROM STDIN: the client sends CopyData.
    In,
    /// COPY TO STDOUT: the server sends CopyData.
    Out,
    /// Both directions (replication).
    Both,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Query,
    FunctionCall,
    Parse {
        name: Bytes,
        query: Bytes,
        param_types: Vec<u32>,
    },
    Bind {
        portal: Bytes,
        statement: Bytes,
        result_formats: Vec<i16>,
    },
    DescribeStatement {
        name: Bytes,
        params: Option<Vec<u32>>,
    },
    DescribePortal {
        name: Bytes,
    },
    Execute {
        portal: Bytes,
    },
    Close {
        kind: ObjectType,
        name: Bytes,
    },
    Sync,
}

impl Pending {
    fn name(&self) -> &'static str {
        match self {
            Pending::Query => "simple query",
            Pending::FunctionCall => "function call",
            Pending::Parse { .. } => "parse",
            Pending::Bind { .. } => "bind",
            Pending::DescribeStatement { .. } => "describe statement",
            Pending::DescribePortal { .. } => "describe portal",
            Pending::Execute { .. } => "execute",
            Pending::Close { .. } => "close",
            Pending::Sync => "sync",
        }
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before or during StartupMessage and authentication.
    Startup,
    /// After AuthenticationOk, before the first ReadyForQuery.
    Initializing,
    /// Normal operation.
    Ready,
    /// Terminate sent or a fatal error received.
    Closed,
}

/// The process id and secret key a CancelRequest must present.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// Backend process id.
    pub process_id: i32,
    /// Secret key (4 bytes in protocol 3.0, up to 256 in 3.2).
    pub secret_key: Bytes,
}

impl std::fmt::Debug for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendKey")
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

impl BackendKey {
    /// The BackendKeyData message announcing this key.
    pub fn to_message(&self) -> BackendMessage {
        BackendMessage::BackendKeyData {
            process_id: self.process_id,
            secret_key: self.secret_key.clone(),
        }
    }

    /// The CancelRequest presenting this key.
    pub fn to_cancel_request(&self) -> FrontendMessage {
        FrontendMessage::CancelRequest(CancelRequest {
            process_id: self.process_id,
            secret_key: self.secret_key.clone(),
        })
    }
}

/// State of one proxied connection.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    version: ProtocolVersion,
    startup_parameters: Vec<(Bytes, Bytes)>,
    transaction: TransactionStatus,
    parameters: HashMap<Bytes, Bytes>,
    backend_key: Option<BackendKey>,
    auth_context: AuthContext,
    statements: HashMap<Bytes, Statement>,
    portals: HashMap<Bytes, Portal>,
    pending: VecDeque<(RequestId, Pending)>,
    next_request: RequestId,
    last_request: Option<RequestId>,
    finished: VecDeque<(RequestId, Finished)>,
    /// Whether `finished` is kept (see [`Session::report_finished`]).
    reporting: bool,
    /// The simple query or function call at the head of the queue reported an error.
    head_failed: bool,
    discarding: bool,
    copy: CopyState,
    client_copying: bool,
    current: Option<Arc<RowDescription>>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

fn unexpected(tag: Option<u8>, state: &'static str) -> Error {
    Error::UnexpectedMessage {
        direction: Direction::Backend,
        tag: char::from(tag.unwrap_or(0)),
        state,
    }
}

impl Session {
    /// A session for a new connection.
    pub fn new() -> Session {
        Session {
            phase: Phase::Startup,
            version: ProtocolVersion::V3_0,
            startup_parameters: Vec::new(),
            transaction: TransactionStatus::Idle,
            parameters: HashMap::new(),
            backend_key: None,
            auth_context: AuthContext::Unknown,
            statements: HashMap::new(),
            portals: HashMap::new(),
            pending: VecDeque::new(),
            next_request: 1,
            last_request: None,
            finished: VecDeque::new(),
            reporting: false,
            head_failed: false,
            discarding: false,
            copy: CopyState::None,
            client_copying: false,
            current: None,
        }
    }

    /// Where the connection is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The protocol version in use (the client's request, lowered by
    /// NegotiateProtocolVersion).
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.version
    }

    /// The StartupMessage parameters.
    pub fn startup_parameters(&self) -> &[(Bytes, Bytes)] {
        &self.startup_parameters
    }

    /// Transaction status from the last ReadyForQuery.
    pub fn transaction_status(&self) -> TransactionStatus {
        self.transaction
    }

    /// Current value of a server parameter (ParameterStatus).
    pub fn parameter(&self, name: &str) -> Option<&Bytes> {
        self.parameters.get(name.as_bytes())
    }

    /// The upstream's BackendKeyData.
    pub fn backend_key(&self) -> Option<&BackendKey> {
        self.backend_key.as_ref()
    }

    /// How the client's next `p` message must be read.
    pub fn auth_context(&self) -> AuthContext {
        self.auth_context
    }

    /// A prepared statement by name (empty for the unnamed one).
    pub fn statement(&self, name: &[u8]) -> Option<&Statement> {
        self.statements.get(name)
    }

    /// A portal by name (empty for the unnamed one).
    pub fn portal(&self, name: &[u8]) -> Option<&Portal> {
        self.portals.get(name)
    }

    /// COPY state.
    pub fn copy_state(&self) -> CopyState {
        self.copy
    }

    /// Whether every request sent has been answered (nothing in flight).
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.copy == CopyState::None
    }

    /// Number of frontend requests still waiting for their answers.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The number given to the last frontend message fed to
    /// [`on_frontend`](Self::on_frontend), if the server answers it or skips it (every
    /// message but `Startup`, `Terminate`, `Flush`, password and COPY messages, and a `Sync`
    /// or `Flush` the server reads during COPY FROM STDIN). What became of it is reported by
    /// [`take_finished`](Self::take_finished), in the order of the numbers.
    pub fn last_request(&self) -> Option<RequestId> {
        self.last_request
    }

    /// The request the server's next message answers, if any is waiting.
    pub fn head_request(&self) -> Option<RequestId> {
        self.pending.front().map(|(id, _)| *id)
    }

    /// Keeps a report of what became of each request, for
    /// [`take_finished`](Self::take_finished) to hand over (off by default: a caller that
    /// turns it on drains it).
    pub fn report_finished(&mut self, on: bool) {
        self.reporting = on;
        if !on {
            self.finished.clear();
        }
    }

    /// What became of requests since the last call, oldest first (a `Sync` the server
    /// ignores during COPY FROM STDIN may be reported before the COPY it follows).
    pub fn take_finished(
        &mut self,
    ) -> std::collections::vec_deque::Drain<'_, (RequestId, Finished)> {
        self.finished.drain(..)
    }

    /// Whether the server is discarding messages until the next Sync after an error.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// The RowDescription that applies to DataRows arriving now: the last one of the
    /// current simple query, or the executing portal's (with Bind formats applied). `None`
    /// when not known — a masker must then fail closed.
    pub fn row_description(&self) -> Option<&Arc<RowDescription>> {
        match self.head() {
            Some(Pending::Query) => self.current.as_ref(),
            Some(Pending::Execute { portal }) => self
                .portals
                .get(portal)
                .and_then(|p| p.row_description.as_ref())
                .and_then(Option::as_ref),
            _ => None,
        }
    }

    // === frontend ===

    /// Feeds one message sent by the client.
    pub fn on_frontend(&mut self, msg: &FrontendMessage) -> Result<()> {
        self.last_request = None;
        if self.client_copying {
            match msg {
                FrontendMessage::CopyData(_) => return Ok(()),
                FrontendMessage::CopyDone | FrontendMessage::CopyFail(_) => {
                    self.client_copying = false;
                    return Ok(());
                }
                // The server ignores these during COPY FROM STDIN.
                FrontendMessage::Sync | FrontendMessage::Flush => return Ok(()),
                // Anything else aborts the COPY with an error on the server side.
                _ => self.client_copying = false,
            }
        }
        let p = match msg {
            FrontendMessage::Startup(s) => {
                self.version = s.version;
                self.startup_parameters = s.parameters.clone();
                return Ok(());
            }
            FrontendMessage::Terminate => {
                self.phase = Phase::Closed;
                return Ok(());
            }
            FrontendMessage::Query(_) => Pending::Query,
            FrontendMessage::FunctionCall(_) => Pending::FunctionCall,
            FrontendMessage::Sync => Pending::Sync,
            FrontendMessage::Parse(p) => Pending::Parse {
                name: p.name.clone(),
                query: p.query.clone(),
                param_types: p.param_types.clone(),
            },
            FrontendMessage::Bind(b) => Pending::Bind {
                portal: b.portal.clone(),
                statement: b.statement.clone(),
                result_formats: b.result_formats.clone(),
            },
            FrontendMessage::Describe {
                kind: ObjectType::Statement,
                name,
            } => Pending::DescribeStatement {
                name: name.clone(),
                params: None,
            },
            FrontendMessage::Describe {
                kind: ObjectType::Portal,
                name,
            } => Pending::DescribePortal { name: name.clone() },
            FrontendMessage::Execute { portal, .. } => Pending::Execute {
                portal: portal.clone(),
            },
            FrontendMessage::Close { kind, name } => Pending::Close {
                kind: *kind,
                name: name.clone(),
            },
            _ => return Ok(()),
        };
        let id = self.next_request;
        self.next_request += 1;
        self.last_request = Some(id);
        if self.discarding {
            if p == Pending::Sync {
                self.discarding = false;
            } else {
                self.report(id, Finished::Skipped);
                return Ok(());
            }
        }
        self.pending.push_back((id, p));
        Ok(())
    }

    fn report(&mut self, id: RequestId, how: Finished) {
        if self.reporting {
            self.finished.push_back((id, how));
        }
    }

    fn head(&self) -> Option<&Pending> {
        self.pending.front().map(|(_, p)| p)
    }

    /// Takes the head request off the queue, reporting what became of it.
    fn finish(&mut self, how: Finished) -> Option<Pending> {
        let (id, p) = self.pending.pop_front()?;
        self.report(id, how);
        Some(p)
    }

    // === backend ===

    /// Feeds one message sent by the server. Fails if the server's answer does not fit
    /// what the client asked for.
    pub fn on_backend(&mut self, msg: &BackendMessage) -> Result<()> {
        let tag = msg.tag();
        match msg {
            BackendMessage::NoticeResponse(_) | BackendMessage::NotificationResponse { .. } => {}
            BackendMessage::ParameterStatus { name, value } => {
                self.parameters.insert(name.clone(), value.clone());
            }
            BackendMessage::SslResponse(_) | BackendMessage::GssEncResponse(_) => {}
            BackendMessage::NegotiateProtocolVersion { newest_minor, .. } => {
                self.version.minor = u16::try_from(*newest_minor)
                    .unwrap_or(u16::MAX)
                    .min(self.version.minor);
            }
            BackendMessage::Authentication(a) => {
                if self.phase != Phase::Startup {
                    return Err(unexpected(tag, "authenticated"));
                }
                self.auth_context = crate::auth::auth_context_after(a);
                if *a == Authentication::Ok {
                    self.phase = Phase::Initializing;
                }
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => {
                self.backend_key = Some(BackendKey {
                    process_id: *process_id,
                    secret_key: secret_key.clone(),
                });
            }
            BackendMessage::ReadyForQuery(status) => self.ready(*status, tag)?,
            BackendMessage::ErrorResponse(e) => self.error(e.severity())?,
            BackendMessage::ParseComplete => match self.pop(tag, "parse")? {
                Pending::Parse {
                    name,
                    query,
                    param_types,
                } => {
                    self.statements.insert(
                        name,
                        Statement {
                            query,
                            param_types,
                            row_description: None,
                        },
                    );
                }
                _ => return Err(unexpected(tag, "not parsing")),
            },
            BackendMessage::BindComplete => match self.pop(tag, "bind")? {
                Pending::Bind {
                    portal,
                    statement,
                    result_formats,
                } => {
                    let row_description = match self.statements.get(&statement) {
                        Some(Statement {
                            row_description: Some(Some(rd)),
                            ..
                        }) => Some(Some(Arc::new(rd.with_formats(&result_formats)?))),
                        Some(Statement {
                            row_description: Some(None),
                            ..
                        }) => Some(None),
                        _ => None,
                    };
                    self.portals.insert(
                        portal,
                        Portal {
                            statement,
                            result_formats,
                            row_description,
                        },
                    );
                }
                _ => return Err(unexpected(tag, "not binding")),
            },
            BackendMessage::CloseComplete => match self.pop(tag, "close")? {
                Pending::Close {
                    kind: ObjectType::Statement,
                    name,
                } => {
                    self.statements.remove(&name);
                }
                Pending::Close {
                    kind: ObjectType::Portal,
                    name,
                } => {
                    self.portals.remove(&name);
                }
                _ => return Err(unexpected(tag, "not closing")),
            },
            BackendMessage::ParameterDescription(types) => match self.pending.front_mut() {
                Some((_, Pending::DescribeStatement { params, .. })) if params.is_none() => {
                    *params = Some(types.clone());
                }
                _ => return Err(unexpected(tag, "not describing a statement")),
            },
            BackendMessage::RowDescription(rd) => self.row_description_received(Some(rd), tag)?,
            BackendMessage::NoData => self.row_description_received(None, tag)?,
            BackendMessage::DataRow(_) => match self.head() {
                Some(Pending::Query | Pending::Execute { .. }) if self.copy == CopyState::None => {}
                _ => return Err(unexpected(tag, "no query running")),
            },
            BackendMessage::CommandComplete(_)
            | BackendMessage::EmptyQueryResponse
            | BackendMessage::PortalSuspended => {
                self.copy = CopyState::None;
                self.client_copying = false;
                match self.head() {
                    Some(Pending::Query) => self.current = None,
                    Some(Pending::Execute { .. }) => {
                        self.finish(Finished::Done);
                    }
                    _ => return Err(unexpected(tag, "no query running")),
                }
            }
            BackendMessage::CopyInResponse(_)
            | BackendMessage::CopyOutResponse(_)
            | BackendMessage::CopyBothResponse(_) => {
                if !matches!(self.head(), Some(Pending::Query | Pending::Execute { .. })) {
                    return Err(unexpected(tag, "no query running"));
                }
                self.copy = match msg {
                    BackendMessage::CopyInResponse(_) => CopyState::In,
                    BackendMessage::CopyOutResponse(_) => CopyState::Out,
                    _ => CopyState::Both,
                };
                if self.copy != CopyState::Out {
                    self.client_copying = true;
                    // Sync and Flush the client pipelined behind the COPY reach the server
                    // while it is in copy-in mode, and it ignores them.
                    let head = self.pending.pop_front();
                    while let Some((id, Pending::Sync)) = self.pending.front() {
                        let id = *id;
                        self.report(id, Finished::Skipped);
                        self.pending.pop_front();
                    }
                    if let Some(h) = head {
                        self.pending.push_front(h);
                    }
                }
            }
            BackendMessage::CopyData(_) | BackendMessage::CopyDone => {
                if !matches!(self.copy, CopyState::Out | CopyState::Both) {
                    return Err(unexpected(tag, "not copying out"));
                }
            }
            BackendMessage::FunctionCallResponse(_) => match self.head() {
                Some(Pending::FunctionCall) => {}
                _ => return Err(unexpected(tag, "no function call")),
            },
        }
        Ok(())
    }

    /// Takes the request a `ReadyForQuery` closes: failed if it is a simple query or
    /// function call that reported an error.
    fn finish_ready(&mut self) -> Option<Pending> {
        let how = if std::mem::take(&mut self.head_failed) {
            Finished::Failed
        } else {
            Finished::Done
        };
        self.finish(how)
    }

    fn pop(&mut self, tag: Option<u8>, state: &'static str) -> Result<Pending> {
        self.finish(Finished::Done)
            .ok_or_else(|| unexpected(tag, state))
    }

    fn ready(&mut self, status: TransactionStatus, tag: Option<u8>) -> Result<()> {
        match self.phase {
            Phase::Initializing => self.phase = Phase::Ready,
            Phase::Ready => match self.finish_ready() {
                Some(Pending::Query) => {
                    // A simple Query destroys the unnamed statement and portal.
                    self.statements.remove(&Bytes::new());
                    self.portals.remove(&Bytes::new());
                    self.current = None;
                }
                Some(Pending::Sync | Pending::FunctionCall) => {}
                Some(p) => return Err(unexpected(tag, p.name())),
                None => return Err(unexpected(tag, "nothing pending")),
            },
            Phase::Startup | Phase::Closed => return Err(unexpected(tag, "not started")),
        }
        self.copy = CopyState::None;
        self.client_copying = false;
        self.transaction = status;
        if status == TransactionStatus::Idle {
            // Portals (other than holdable cursors, which are SQL-level) end with the
            // transaction.
            self.portals.clear();
        }
        Ok(())
    }

    fn error(&mut self, severity: Option<&str>) -> Result<()> {
        self.copy = CopyState::None;
        self.client_copying = false;
        if matches!(severity, Some("FATAL" | "PANIC")) {
            self.phase = Phase::Closed;
            let mut how = Finished::Failed;
            while self.finish(how).is_some() {
                how = Finished::Skipped;
            }
            return Ok(());
        }
        match self.head() {
            // The rest of the query string is skipped; ReadyForQuery follows.
            Some(Pending::Query | Pending::FunctionCall) => {
                self.current = None;
                self.head_failed = true;
            }
            // Extended protocol: the server discards everything up to Sync.
            Some(_) => {
                let mut how = Finished::Failed;
                while let Some(p) = self.head() {
                    if *p == Pending::Sync {
                        return Ok(());
                    }
                    self.finish(how);
                    how = Finished::Skipped;
                }
                self.discarding = true;
            }
            // An error outside any request (startup failure, shutdown notice).
            None => {}
        }
        Ok(())
    }

    fn row_description_received(
        &mut self,
        rd: Option<&RowDescription>,
        tag: Option<u8>,
    ) -> Result<()> {
        match self.head() {
            Some(Pending::Query) if rd.is_some() => {
                self.current = rd.map(|r| Arc::new(r.clone()));
            }
            Some(Pending::DescribeStatement {
                params: Some(_), ..
            }) => {
                let Some(Pending::DescribeStatement { name, params }) = self.finish(Finished::Done)
                else {
                    return Err(unexpected(tag, "describe"));
                };
                if let Some(s) = self.statements.get_mut(&name) {
                    s.row_description = Some(rd.map(|r| Arc::new(r.clone())));
                    if let Some(p) = params {
                        s.param_types = p;
                    }
                }
                // Portals bound from this statement before it was described learn their
                // shape now, with their own result formats.
                for p in self.portals.values_mut() {
                    if p.statement == name && p.row_description.is_none() {
                        p.row_description = Some(match rd {
                            Some(r) => Some(Arc::new(r.with_formats(&p.result_formats)?)),
                            None => None,
                        });
                    }
                }
            }
            Some(Pending::DescribePortal { .. }) => {
                let Some(Pending::DescribePortal { name }) = self.finish(Finished::Done) else {
                    return Err(unexpected(tag, "describe"));
                };
                if let Some(p) = self.portals.get_mut(&name) {
                    p.row_description = Some(rd.map(|r| Arc::new(r.clone())));
                }
            }
            _ => return Err(unexpected(tag, "not describing")),
        }
        Ok(())
    }
}

// === cancel keys ===

/// Issues the gateway's own cancel keys and maps them back to the upstream's, so the
/// client never learns the upstream's key and a CancelRequest can be checked before it is
/// forwarded.
#[derive(Debug, Default)]
pub struct CancelKeys {
    map: HashMap<i32, (Bytes, BackendKey)>,
}

impl CancelKeys {
    /// An empty map.
    pub fn new() -> CancelKeys {
        CancelKeys::default()
    }

    /// Issues a fresh key standing for `upstream`, with a secret of the same length
    /// (4 bytes for protocol 3.0, up to 256 for 3.2).
    pub fn issue(&mut self, upstream: BackendKey) -> Result<BackendKey> {
        let len = upstream.secret_key.len().clamp(4, 256);
        let mut key = vec![0u8; len];
        loop {
            let mut pid = [0u8; 4];
            getrandom::fill(&mut pid).map_err(|_| Error::AuthenticationProtocol {
                reason: "no randomness available",
            })?;
            getrandom::fill(&mut key).map_err(|_| Error::AuthenticationProtocol {
                reason: "no randomness available",
            })?;
            // Positive ids, like real process ids.
            let pid = i32::from_be_bytes(pid) & i32::MAX;
            if pid != 0 && !self.map.contains_key(&pid) {
                let secret = Bytes::from(key);
                self.map.insert(pid, (secret.clone(), upstream));
                return Ok(BackendKey {
                    process_id: pid,
                    secret_key: secret,
                });
            }
        }
    }

    /// The upstream key for a client's CancelRequest, if it presents a key this map
    /// issued (compared in constant time).
    pub fn resolve(&self, req: &CancelRequest) -> Option<&BackendKey> {
        let (secret, upstream) = self.map.get(&req.process_id)?;
        bool::from(secret.as_ref().ct_eq(req.secret_key.as_ref())).then_some(upstream)
    }

    /// Forgets a key when its connection ends.
    pub fn remove(&mut self, process_id: i32) {
        self.map.remove(&process_id);
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no live keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CopyResponse, ErrorFields};
    use crate::frontend::{Bind, Parse, StartupMessage};
    use crate::rows::{DataRow, FieldDescription};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn ready() -> Session {
        let mut s = Session::new();
        s.on_frontend(&FrontendMessage::Startup(StartupMessage {
            version: ProtocolVersion::V3_0,
            parameters: vec![(b("user"), b("u"))],
        }))
        .unwrap();
        s.on_backend(&BackendMessage::Authentication(Authentication::Ok))
            .unwrap();
        s.on_backend(&BackendMessage::BackendKeyData {
            process_id: 7,
            secret_key: b("abcd"),
        })
        .unwrap();
        s.on_backend(&BackendMessage::ReadyForQuery(TransactionStatus::Idle))
            .unwrap();
        assert_eq!(s.phase(), Phase::Ready);
        s
    }

    fn rd(types: &[u32]) -> RowDescription {
        RowDescription::new(
            types
                .iter()
                .enumerate()
                .map(|(i, t)| FieldDescription {
                    name: b(&format!("c{i}")),
                    table_oid: 99,
                    column_id: i16::try_from(i + 1).unwrap(),
                    type_oid: *t,
                    type_size: -1,
                    type_modifier: -1,
                    format: 0,
                })
                .collect(),
        )
        .unwrap()
    }

    fn row() -> BackendMessage {
        BackendMessage::DataRow(DataRow::new([Some(&b"1"[..])]).unwrap())
    }

    fn err() -> BackendMessage {
        BackendMessage::ErrorResponse(ErrorFields::new("ERROR", "22012", "division by zero"))
    }

    fn parse(name: &str) -> FrontendMessage {
        FrontendMessage::Parse(Parse {
            name: b(name),
            query: b("SELECT 1"),
            param_types: vec![],
        })
    }

    fn bind(portal: &str, stmt: &str, formats: Vec<i16>) -> FrontendMessage {
        FrontendMessage::Bind(Bind {
            portal: b(portal),
            statement: b(stmt),
            param_formats: vec![],
            params: vec![],
            result_formats: formats,
        })
    }

    fn execute(portal: &str, max_rows: i32) -> FrontendMessage {
        FrontendMessage::Execute {
            portal: b(portal),
            max_rows,
        }
    }

    fn feed_front(s: &mut Session, msgs: &[FrontendMessage]) {
        for m in msgs {
            s.on_frontend(m).unwrap();
        }
    }

    fn feed_back(s: &mut Session, msgs: &[BackendMessage]) {
        for m in msgs {
            s.on_backend(m).unwrap();
        }
    }

    #[test]
    fn simple_query_with_two_result_sets() {
        let mut s = ready();
        assert_eq!(s.backend_key().unwrap().process_id, 7);
        s.on_frontend(&FrontendMessage::Query(b("SELECT 1; SELECT 1, 2")))
            .unwrap();
        s.on_backend(&BackendMessage::RowDescription(rd(&[23])))
            .unwrap();
        s.on_backend(&row()).unwrap();
        assert_eq!(s.row_description().unwrap().len(), 1);
        s.on_backend(&BackendMessage::CommandComplete(b("SELECT 1")))
            .unwrap();
        assert!(s.row_description().is_none());
        s.on_backend(&BackendMessage::RowDescription(rd(&[23, 25])))
            .unwrap();
        assert_eq!(s.row_description().unwrap().len(), 2);
        feed_back(&mut s, &[BackendMessage::CommandComplete(b("SELECT 0"))]);
        s.on_backend(&BackendMessage::ReadyForQuery(
            TransactionStatus::InTransaction,
        ))
        .unwrap();
        assert_eq!(s.transaction_status(), TransactionStatus::InTransaction);
        assert!(s.is_idle());
    }

    #[test]
    fn described_statement_gives_rows_their_bind_formats() {
        let mut s = ready();
        feed_front(
            &mut s,
            &[
                parse("s1"),
                FrontendMessage::Describe {
                    kind: ObjectType::Statement,
                    name: b("s1"),
                },
                bind("", "s1", vec![1]),
                execute("", 0),
                FrontendMessage::Sync,
            ],
        );
        feed_back(
            &mut s,
            &[
                BackendMessage::ParseComplete,
                BackendMessage::ParameterDescription(vec![23]),
                BackendMessage::RowDescription(rd(&[23, 25])),
                BackendMessage::BindComplete,
            ],
        );
        assert_eq!(s.statement(b"s1").unwrap().param_types, vec![23]);
        s.on_backend(&row()).unwrap();
        let d = s.row_description().unwrap();
        assert!(d.fields().iter().all(|f| f.format == 1));
        assert_eq!(d.fields()[1].type_oid, 25);
        feed_back(
            &mut s,
            &[
                BackendMessage::CommandComplete(b("SELECT 1")),
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            ],
        );
        assert!(s.is_idle());
        // The portal ended with the transaction; the named statement lives on.
        assert!(s.portal(b"").is_none());
        assert!(s.statement(b"s1").is_some());
    }

    #[test]
    fn error_discards_until_sync_exactly_as_the_server() {
        let mut s = ready();
        // Two pipelined batches; the first fails at Bind.
        feed_front(
            &mut s,
            &[
                parse("a"),
                bind("", "a", vec![]),
                execute("", 0),
                FrontendMessage::Sync,
                parse("b"),
                bind("", "b", vec![]),
                FrontendMessage::Describe {
                    kind: ObjectType::Portal,
                    name: b(""),
                },
                execute("", 0),
                FrontendMessage::Sync,
            ],
        );
        assert_eq!(s.in_flight(), 9);
        feed_back(&mut s, &[BackendMessage::ParseComplete, err()]);
        // Bind and Execute of the first batch are gone; its Sync remains.
        assert_eq!(s.in_flight(), 6);
        feed_back(
            &mut s,
            &[
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
                BackendMessage::ParseComplete,
                BackendMessage::BindComplete,
                BackendMessage::RowDescription(rd(&[23])),
                row(),
            ],
        );
        assert_eq!(s.row_description().unwrap().fields()[0].type_oid, 23);
        feed_back(
            &mut s,
            &[
                BackendMessage::CommandComplete(b("SELECT 1")),
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            ],
        );
        assert!(s.is_idle());
        assert!(s.statement(b"a").is_some() && s.statement(b"b").is_some());
    }

    #[test]
    fn messages_sent_while_the_server_discards_are_not_expected() {
        let mut s = ready();
        feed_front(&mut s, &[parse("x"), FrontendMessage::Flush]);
        s.on_backend(&err()).unwrap();
        assert!(s.is_discarding());
        // The client, not yet knowing, goes on; the server drops these until Sync.
        feed_front(
            &mut s,
            &[bind("", "x", vec![]), execute("", 0), FrontendMessage::Sync],
        );
        assert!(!s.is_discarding());
        assert_eq!(s.in_flight(), 1);
        s.on_backend(&BackendMessage::ReadyForQuery(TransactionStatus::Idle))
            .unwrap();
        assert!(s.is_idle());
        // An answer nobody asked for is a protocol violation.
        assert!(s.on_backend(&BackendMessage::ParseComplete).is_err());
        assert!(s.on_backend(&BackendMessage::BindComplete).is_err());
        assert!(s.on_backend(&row()).is_err());
    }

    #[test]
    fn describing_the_statement_after_bind_still_gives_the_shape() {
        let mut s = ready();
        feed_front(
            &mut s,
            &[
                parse("q"),
                bind("", "q", vec![1]),
                FrontendMessage::Describe {
                    kind: ObjectType::Statement,
                    name: b("q"),
                },
                execute("", 0),
                FrontendMessage::Sync,
            ],
        );
        feed_back(
            &mut s,
            &[
                BackendMessage::ParseComplete,
                BackendMessage::BindComplete,
                BackendMessage::ParameterDescription(vec![]),
                BackendMessage::RowDescription(rd(&[25])),
                row(),
            ],
        );
        let d = s.row_description().unwrap();
        assert_eq!((d.fields()[0].type_oid, d.fields()[0].format), (25, 1));
    }

    #[test]
    fn execute_without_any_describe_has_no_known_shape() {
        let mut s = ready();
        feed_front(
            &mut s,
            &[
                parse(""),
                bind("", "", vec![]),
                execute("", 0),
                FrontendMessage::Sync,
            ],
        );
        feed_back(
            &mut s,
            &[
                BackendMessage::ParseComplete,
                BackendMessage::BindComplete,
                row(),
            ],
        );
        assert!(
            s.row_description().is_none(),
            "a masker must fail closed here"
        );
    }

    #[test]
    fn portal_suspended_and_resumed() {
        let mut s = ready();
        feed_front(
            &mut s,
            &[
                FrontendMessage::Query(b("BEGIN")),
                parse(""),
                FrontendMessage::Describe {
                    kind: ObjectType::Statement,
                    name: b(""),
                },
                bind("p", "", vec![]),
                execute("p", 1),
                FrontendMessage::Sync,
            ],
        );
        feed_back(
            &mut s,
            &[
                BackendMessage::CommandComplete(b("BEGIN")),
                BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
                BackendMessage::ParseComplete,
                BackendMessage::ParameterDescription(vec![]),
                BackendMessage::RowDescription(rd(&[20])),
                BackendMessage::BindComplete,
                row(),
                BackendMessage::PortalSuspended,
                BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
            ],
        );
        assert!(
            s.portal(b"p").is_some(),
            "the portal survives inside the transaction"
        );
        feed_front(&mut s, &[execute("p", 1), FrontendMessage::Sync]);
        s.on_backend(&row()).unwrap();
        assert_eq!(s.row_description().unwrap().fields()[0].type_oid, 20);
        feed_back(
            &mut s,
            &[
                BackendMessage::CommandComplete(b("SELECT 1")),
                BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
            ],
        );
        feed_front(
            &mut s,
            &[
                FrontendMessage::Close {
                    kind: ObjectType::Portal,
                    name: b("p"),
                },
                FrontendMessage::Sync,
            ],
        );
        feed_back(
            &mut s,
            &[
                BackendMessage::CloseComplete,
                BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
            ],
        );
        assert!(s.portal(b"p").is_none());
    }

    #[test]
    fn copy_in_over_extended_protocol_ignores_the_early_sync() {
        let mut s = ready();
        s.report_finished(true);
        feed_front(
            &mut s,
            &[
                parse(""),
                bind("", "", vec![]),
                execute("", 0),
                FrontendMessage::Sync,
            ],
        );
        feed_back(
            &mut s,
            &[
                BackendMessage::ParseComplete,
                BackendMessage::BindComplete,
                BackendMessage::CopyInResponse(CopyResponse {
                    format: 0,
                    column_formats: vec![0],
                }),
            ],
        );
        assert_eq!(s.copy_state(), CopyState::In);
        // libpq sends another Sync after CopyDone in extended mode; the first was ignored.
        feed_front(
            &mut s,
            &[
                FrontendMessage::CopyData(b("1\n")),
                FrontendMessage::CopyDone,
                FrontendMessage::Sync,
            ],
        );
        feed_back(
            &mut s,
            &[
                BackendMessage::CommandComplete(b("COPY 1")),
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            ],
        );
        assert!(s.is_idle());
        // The early Sync is reported skipped as the copy starts, before the COPY is done.
        let how: Vec<Finished> = s.take_finished().map(|(_, how)| how).collect();
        assert_eq!(
            how,
            [
                Finished::Done,
                Finished::Done,
                Finished::Skipped,
                Finished::Done,
                Finished::Done
            ]
        );
    }

    #[test]
    fn copy_out_and_async_messages_at_any_time() {
        let mut s = ready();
        s.on_frontend(&FrontendMessage::Query(b("COPY t TO STDOUT")))
            .unwrap();
        feed_back(
            &mut s,
            &[
                BackendMessage::CopyOutResponse(CopyResponse {
                    format: 0,
                    column_formats: vec![0],
                }),
                BackendMessage::NoticeResponse(ErrorFields::new("NOTICE", "00000", "hi")),
                BackendMessage::CopyData(b("1\n")),
                BackendMessage::ParameterStatus {
                    name: b("TimeZone"),
                    value: b("UTC"),
                },
                BackendMessage::NotificationResponse {
                    process_id: 1,
                    channel: b("c"),
                    payload: b("p"),
                },
                BackendMessage::CopyDone,
                BackendMessage::CommandComplete(b("COPY 1")),
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            ],
        );
        assert_eq!(s.parameter("TimeZone").map(|v| &v[..]), Some(&b"UTC"[..]));
        assert!(s.is_idle());
        assert!(s.on_backend(&BackendMessage::CopyData(b("x"))).is_err());
    }

    fn finished(s: &mut Session) -> Vec<(RequestId, Finished)> {
        s.take_finished().collect()
    }

    /// Feeds `msg` and returns the number it was given.
    fn sent(s: &mut Session, msg: FrontendMessage) -> Option<RequestId> {
        s.on_frontend(&msg).unwrap();
        s.last_request()
    }

    #[test]
    fn each_request_is_reported_done_failed_or_skipped_as_the_server_answers() {
        let mut s = ready();
        s.report_finished(true);
        let p1 = sent(&mut s, parse("s1")).unwrap();
        let b1 = sent(&mut s, bind("", "s1", vec![])).unwrap();
        let e1 = sent(&mut s, execute("", 0)).unwrap();
        let p2 = sent(&mut s, parse("s2")).unwrap();
        let q = sent(&mut s, FrontendMessage::Query(b("SELECT 'skipped'"))).unwrap();
        let sync = sent(&mut s, FrontendMessage::Sync).unwrap();
        assert_eq!(sent(&mut s, FrontendMessage::Flush), None);
        assert_eq!(s.head_request(), Some(p1));
        feed_back(
            &mut s,
            &[
                BackendMessage::ParseComplete,
                BackendMessage::BindComplete,
                err(),
            ],
        );
        // The failed Execute, and the rest of its batch, a simple query too, up to Sync.
        assert_eq!(
            finished(&mut s),
            [
                (p1, Finished::Done),
                (b1, Finished::Done),
                (e1, Finished::Failed),
                (p2, Finished::Skipped),
                (q, Finished::Skipped),
            ]
        );
        feed_back(
            &mut s,
            &[BackendMessage::ReadyForQuery(TransactionStatus::Idle)],
        );
        assert_eq!(finished(&mut s), [(sync, Finished::Done)]);
        // A simple query that fails part way is failed at its ReadyForQuery.
        let q = sent(&mut s, FrontendMessage::Query(b("SELECT 1; SELECT 1/0"))).unwrap();
        feed_back(
            &mut s,
            &[
                BackendMessage::CommandComplete(b("SELECT 1")),
                err(),
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            ],
        );
        assert_eq!(finished(&mut s), [(q, Finished::Failed)]);
        assert!(s.is_idle());
    }

    #[test]
    fn a_message_sent_while_the_server_discards_is_skipped_at_once() {
        let mut s = ready();
        s.report_finished(true);
        let p1 = sent(&mut s, parse("s1")).unwrap();
        feed_back(&mut s, &[err()]);
        assert_eq!(finished(&mut s), [(p1, Finished::Failed)]);
        let b1 = sent(&mut s, bind("", "s1", vec![])).unwrap();
        assert_eq!(finished(&mut s), [(b1, Finished::Skipped)]);
        let sync = sent(&mut s, FrontendMessage::Sync).unwrap();
        feed_back(
            &mut s,
            &[BackendMessage::ReadyForQuery(TransactionStatus::Idle)],
        );
        assert_eq!(finished(&mut s), [(sync, Finished::Done)]);
    }

    #[test]
    fn nothing_is_reported_unless_asked() {
        let mut s = ready();
        sent(&mut s, FrontendMessage::Sync).unwrap();
        feed_back(
            &mut s,
            &[BackendMessage::ReadyForQuery(TransactionStatus::Idle)],
        );
        assert!(finished(&mut s).is_empty());
    }

    #[test]
    fn fatal_error_closes() {
        let mut s = ready();
        s.on_frontend(&FrontendMessage::Query(b("SELECT 1")))
            .unwrap();
        s.on_backend(&BackendMessage::ErrorResponse(ErrorFields::new(
            "FATAL", "57P01", "bye",
        )))
        .unwrap();
        assert_eq!(s.phase(), Phase::Closed);
    }

    #[test]
    fn cancel_keys_map_and_check() {
        let mut keys = CancelKeys::new();
        let upstream = BackendKey {
            process_id: 4242,
            secret_key: b("k3y!"),
        };
        let ours = keys.issue(upstream.clone()).unwrap();
        assert_ne!(ours.secret_key, upstream.secret_key);
        assert_eq!(ours.secret_key.len(), 4);
        let req = CancelRequest {
            process_id: ours.process_id,
            secret_key: ours.secret_key.clone(),
        };
        assert_eq!(keys.resolve(&req), Some(&upstream));
        let forged = CancelRequest {
            process_id: ours.process_id,
            secret_key: b("xxxx"),
        };
        assert_eq!(keys.resolve(&forged), None);
        // Protocol 3.2 keys keep their length.
        let long = keys
            .issue(BackendKey {
                process_id: 1,
                secret_key: Bytes::from(vec![9u8; 32]),
            })
            .unwrap();
        assert_eq!(long.secret_key.len(), 32);
        keys.remove(ours.process_id);
        assert_eq!(keys.resolve(&req), None);
        assert_eq!(keys.len(), 1);
    }
}
