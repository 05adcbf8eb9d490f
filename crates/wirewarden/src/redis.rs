//! The Redis proxy: an embedder accepts a connection and hands the stream to
//! [`RedisProxy::serve`]; from then on every command is tied to the client's identity,
//! decided by policy, masked on the way back, and recorded.
//!
//! # A session
//!
//! 1. **TLS** (optional): Redis TLS starts with the first byte, so a target with a server
//!    configuration terminates TLS before anything else. A configuration that asks for
//!    client certificates
//!    ([`ServerTls::with_client_certs`](crate::tls::ServerTls::with_client_certs)) has rustls
//!    verify the presented chain against its trust anchors; a client without one where
//!    [`ClientCertMode::Required`](crate::tls::ClientCertMode::Required), or with one the
//!    anchors did not issue, fails the handshake, and that refusal is recorded as an
//!    `AuthenticationFailed` event (method `client_certificate`).
//! 2. **Client authentication.** A client that presented a verified certificate is logged in
//!    by it alone when the handshake completes: the pipeline's identity provider maps the
//!    chain ([`Credential::ClientCertificate`]) to a principal, and the client's first
//!    command is already decided as that identity, with no `AUTH`; a later `AUTH` is a
//!    re-authentication, accepted only as the same identity (its fresh credential then
//!    renews the session's, on record as `CredentialRenewed`). A certificate the provider does
//!    not map is recorded as a failed login, the client's first request is answered
//!    `-WRONGPASS` and the connection closed: a client that presented a certificate is never
//!    offered a password login instead. Any other client authenticates with a token. Until
//!    it does, only `AUTH`, `HELLO … AUTH` and `QUIT` are accepted; everything else is
//!    answered `-NOAUTH`, as the server does; requests are read with
//!    [`RedisTarget::login_limits`] (as tight as the server's own for unauthenticated
//!    clients), so a larger one is a protocol error before its payload is read. What was
//!    refused before login goes on record once per connection, however much the client
//!    sent (how many requests, which commands of the command table; other words are only
//!    counted): an `AuthenticationFailed` (method `none`, with the client's address) when
//!    the connection ends without a login, a `ProtocolError` from the client with the
//!    session's start when it logs in after all. The token
//!    or JWT in the password slot is verified by the pipeline's identity provider; a wrong
//!    one gets `-WRONGPASS` and an `AuthenticationFailed` audit event. A later `AUTH` with a
//!    wrong credential, or with another identity's (answered the same `-WRONGPASS`, on
//!    record as what it was), counts against [`RedisTarget::max_auth_failures`] as before
//!    login: the session ends at the limit. The name in `HELLO … AUTH … SETNAME <name>` is the
//!    session's application in `SessionStarted` (what `application_name` is for PostgreSQL),
//!    so a client can say which run or tool call it is in the handshake itself. A later
//!    `CLIENT SETNAME` or `HELLO … SETNAME` (the only way a certificate session, which starts
//!    before the client speaks, can name itself) is recorded as `ApplicationChanged` with
//!    the renaming command's intent, so every command decided after it belongs to the new
//!    name: an agent that reuses a pooled connection names each tool call.
//! 3. **Upstream login** with `AUTH` and the credential only the gateway holds. The client's
//!    `HELLO` goes upstream without its `AUTH` part, so RESP3 is negotiated end to end.
//! 4. **Relay.** Every command — each one of a pipeline and each one queued in `MULTI` — is
//!    classified, refused if it carries a refused [`Risk`], decided by policy, and its intent
//!    recorded before it is forwarded. A denied command is answered, in order, with
//!    `-ERR wirewarden: <reason> (rule <id>)`, and the connection stays usable; a command
//!    denied inside `MULTI` makes the `EXEC` answer `-EXECABORT` (the gateway sends `DISCARD`
//!    upstream), exactly as the server treats a command rejected at queue time. A command
//!    held for review waits for the replies already due, then for the reviewers. A command
//!    that reads some keys and writes what it read into others (`COPY`, `RENAME`, `LMOVE`,
//!    `BITOP`, `SUNIONSTORE`, `PFMERGE` …, found from the key specs:
//!    [`wirewarden_redis::Flow`]) is refused before policy (rule `redis-copy-across-mask`)
//!    when a destination is not covered by the same key rule as every source that has one,
//!    under the session's mask profile and the one its decision masks with: a value must
//!    not leave the rule that masks it for a key read in clear. The
//!    commands of one read (a pipeline) are decided in order and their intents appended
//!    together, so in fsync mode one `fdatasync` of the audit trail covers the whole
//!    pipeline; none of it is forwarded before its own intent is on record, and a command
//!    whose intent could not be recorded is refused in its place in the reply order.
//! 5. **Replies** are correlated with their commands ([`wirewarden_redis::Session`]), masked
//!    (by the command's key and by content; each `EXEC` element with its own command's key;
//!    other push frames by content) and recorded: `CommandCompleted` with elements, bytes,
//!    masked counts, duration and the capped masked reply. A reply that cannot be masked is
//!    replaced by an error reply. These outcome records go to a per-session writer task:
//!    they need not be durable before the next reply is relayed, and the writer appends
//!    what has queued up as one batch.
//! 6. **Subscriptions** run under the decision that allowed them. Each channel, pattern or
//!    shard channel the server confirms keeps the decision of the command that subscribed:
//!    its messages are masked with that decision's profile, recorded as `Transcript` events
//!    of that command, and charged to the exfiltration budgets. The decision is taken again
//!    at a message when it is older than [`RedisTarget::stream_recheck`] or a grant active
//!    at the time has expired since, and, when no message comes, at that interval or that
//!    expiry (a timer armed only while the session has subscriptions): refused now (a grant revoked or expired, a budget
//!    spent, a rule's hours over), the client gets `-ERR wirewarden: subscription
//!    withdrawn: …` and the session ends ([`SessionEndReason::SubscriptionWithdrawn`]), as
//!    the server ends a client whose ACL permissions were withdrawn. A subscription a
//!    reviewer approved is not ended by a later decision that asks for review again.
//!    Subscribing or unsubscribing inside `MULTI` is refused (rule
//!    `redis-subscribe-in-multi`): inside `EXEC` the server writes one reply per channel
//!    where `EXEC` counts one per command, so the replies after it would answer (and be
//!    masked as) the wrong commands, and a subscription would come untied to its decision.
//!    Should such a transaction run anyway, or any `EXEC` reply not match the commands
//!    queued, or a reply arrive that no command is owed, the session ends before that reply
//!    goes out ([`wirewarden_redis::Error::OutOfStep`]).
//! 7. **The end.** Besides the client leaving or the upstream closing, the session ends
//!    when its credential expires (`SessionEndReason::CredentialExpired`) and when replaced
//!    revocation lists refuse its client certificate (`CredentialRevoked`, through the
//!    pipeline's [client certificate
//!    verification](crate::PipelineBuilder::client_cert_verification)); the connection is
//!    closed, as the server closes a killed client. A command waiting for review then, or
//!    when the client leaves, does not run: its review is cancelled. An upstream that sends
//!    a frame the codec refuses, or a reply no command can be tied to, ends the session as
//!    well: nothing of it or after it is relayed, every command still owed a reply is
//!    answered in order with `-ERR wirewarden: the upstream sent an invalid reply; …` (one
//!    such line when none is owed), the error is recorded as a `ProtocolError` from the
//!    upstream, and the connection closes.

mod mask;
mod stream;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use wirewarden_core::{
    AuditEvent, AuditEventKind, Command, CommandClass, CommandId, Decision, Direction,
    MaskedCounts, ObjectKind, Principal, Recording, RuleId, SessionEndReason, SessionId, Target,
    Timestamp,
};
use wirewarden_identity::{AuthContext, Credential};
use wirewarden_mask::{Field, Profile};
use wirewarden_redis::{
    Correlated, Flow, Frame, OutOfBand, ReplyDecoder, Request, RequestDecoder, RespVersion,
    Session, Value, classify,
};

pub use wirewarden_redis::{Limits, Risk};

use self::mask::{Keys, Unmaskable};
use self::stream::Subscriptions;
use crate::listen::{BoxIo, Dial};
use crate::stream::Opened;
use crate::tls::{CertificateWatch, UpstreamTls};
use crate::{Error, HeldCommand, Metrics, Pipeline, Result, ReviewRefusal, Secret};

/// Hashes the relay's own command tags, a counter it assigns: nothing a client sends
/// chooses a key, so a multiplicative hash (whose high bits the table uses) is enough, and
/// costs a fraction of SipHash on every command.
#[derive(Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The relay's commands in flight, by tag.
type TagMap<V> = HashMap<u64, V, BuildHasherDefault<TagHasher>>;

/// Policy rules (TOML, for [`RuleEngine::from_toml`](wirewarden_policy::RuleEngine)) that
/// deny what an agent should never run through the gateway: scripting and functions, server
/// administration (`CONFIG`, `DEBUG`, `MODULE`, `MONITOR`, `SHUTDOWN`, replication, `ACL`,
/// `CLIENT KILL`…), commands that enumerate or wipe the keyspace, serialized values masking
/// cannot see into (`DUMP`, `RESTORE`, `MIGRATE`), `SORT` (its `BY`/`GET` options read keys
/// it does not name) and commands nobody classified. Put your own `allow` rules after these:
/// the first matching rule decides.
///
/// Some refusals come before any rule and do not depend on these: the risks of
/// [`DEFAULT_REFUSED_RISKS`] (partial reads among them), a write that would copy values out
/// of the key rule that masks them (`redis-copy-across-mask`: `RENAME`, `LMOVE`, `BITOP`,
/// every `*STORE` … between keys the session's mask profile treats differently), and
/// subscribing or unsubscribing inside `MULTI`. `COPY` is denied here as well, whatever the
/// keys.
pub const DEFAULT_REDIS_POLICY: &str = r#"
[[rule]]
id = "redis-no-scripting"
protocols = ["redis"]
class = "code"
action = "deny"
reason = "scripts and functions run code the gateway cannot inspect"

[[rule]]
id = "redis-no-admin"
protocols = ["redis"]
class = "admin"
action = "deny"
reason = "server administration is not allowed through the gateway"

[[rule]]
id = "redis-no-privilege"
protocols = ["redis"]
class = "privilege"
action = "deny"
reason = "users and credentials are managed outside the gateway"

[[rule]]
id = "redis-no-server-wide"
protocols = ["redis"]
verbs = [
  "EVAL*", "EVALSHA*", "FCALL*", "SCRIPT *", "FUNCTION *",
  "MONITOR", "CONFIG *", "DEBUG", "MODULE *", "SHUTDOWN", "FAILOVER", "SYNC", "PSYNC",
  "REPLICAOF", "SLAVEOF", "REPLCONF", "MIGRATE", "DUMP", "RESTORE", "RESTORE-ASKING",
  "KEYS", "SCAN", "RANDOMKEY", "FLUSHALL", "FLUSHDB", "SWAPDB", "SORT", "SORT_RO",
  "CLIENT KILL", "CLIENT LIST", "CLIENT PAUSE", "CLIENT UNPAUSE", "CLIENT REPLY",
  "CLIENT TRACKING", "CLIENT NO-EVICT", "CLIENT NO-TOUCH", "OBJECT *", "MEMORY *",
  "LATENCY *", "SLOWLOG *", "ACL *", "CLUSTER *", "BGSAVE", "BGREWRITEAOF", "SAVE",
  "LASTSAVE", "INFO", "WAIT", "WAITAOF", "PFDEBUG", "PFSELFTEST", "SELECT", "MOVE", "COPY",
]
action = "deny"
reason = "the command reaches beyond the keys it names or changes the server"

[[rule]]
id = "redis-no-unknown"
protocols = ["redis"]
class = "unknown"
action = "deny"
reason = "the command is not understood"
"#;

/// The risks refused by default before policy is asked: scripting, undeclared keys, the
/// whole server, serialized values, remote transfers and partial reads. Policy may be
/// written without knowing about them; these commands never reach it.
///
/// Partial reads ([`Risk::PARTIAL_VALUE`]: `GETRANGE`, `SUBSTR`, `GETBIT`, `BITFIELD`,
/// `BITFIELD_RO`, `BITPOS`, `BITCOUNT` over a range, `LCS`) are refused here rather than by a
/// rule of [`DEFAULT_REDIS_POLICY`] because no profile can mask them: a content detector
/// sees a card number, an SSN or a JSON document only whole, and a piece of one matches
/// nothing, so the value could be read out piece by piece in clear. A target whose values
/// need no masking can allow them:
/// `refused_risks = DEFAULT_REFUSED_RISKS.without(Risk::PARTIAL_VALUE)`.
pub const DEFAULT_REFUSED_RISKS: Risk = Risk::of(&[
    Risk::SCRIPTING,
    Risk::UNDECLARED_KEYS,
    Risk::WHOLE_SERVER,
    Risk::SERIALIZED,
    Risk::REMOTE,
    Risk::PARTIAL_VALUE,
]);

/// How the gateway reaches and logs in to the upstream Redis server.
#[derive(Clone)]
pub struct RedisUpstream {
    /// `host:port`.
    pub addr: String,
    /// The ACL user the gateway logs in as (`None`: `AUTH <password>` for `requirepass`).
    pub user: Option<String>,
    /// Its password; never sent to or seen by clients.
    pub password: Secret,
    /// TLS to the upstream, if wanted.
    pub tls: Option<UpstreamTls>,
}

impl std::fmt::Debug for RedisUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUpstream")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// One Redis target of the gateway.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    /// The target as policy and audit name it.
    pub target: Target,
    /// The upstream.
    pub upstream: RedisUpstream,
    /// TLS towards clients (from the first byte), if set. A configuration that asks for
    /// client certificates — the [`config`](crate::tls::ServerTls::config) of
    /// [`ServerTls::with_client_certs`](crate::tls::ServerTls::with_client_certs), or any
    /// rustls configuration with a client certificate verifier — logs in a client that
    /// presents a verified certificate with it alone; the verifier decides whether one is
    /// required.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Decoder limits for both directions, once the client has authenticated.
    pub limits: Limits,
    /// Decoder limits for what a client sends before it has authenticated: a larger
    /// request is answered `-ERR Protocol error: …` and the connection closed before its
    /// payload is read, so an anonymous client cannot make the gateway hold memory.
    /// Default: [`Limits::UNAUTHENTICATED`] (10 arguments, 64 KiB each: room for a JWT).
    pub login_limits: Limits,
    /// Commands carrying any of these risks are denied before policy is asked (rule id
    /// `redis-risk`). Default: [`DEFAULT_REFUSED_RISKS`], which refuses partial reads
    /// ([`Risk::PARTIAL_VALUE`]) since no profile can mask a piece of a value.
    pub refused_risks: Risk,
    /// Cap on how much of each reply the session recording keeps, in bytes.
    pub record_limit: usize,
    /// How old the decision a subscription runs under may be when one of its messages
    /// arrives: older, and policy is asked again before the message goes out (as it is
    /// when a grant active at that decision expires). A subscription with no message is
    /// decided again at this interval too, so a revocation ends it within it. A
    /// subscription policy no longer allows ends the session
    /// ([`SessionEndReason::SubscriptionWithdrawn`]). Default: one second.
    pub stream_recheck: Duration,
    /// Failed `AUTH` attempts after which the connection is closed: before login, and
    /// again within a session (a wrong credential, or another identity's, which is answered
    /// as wrong).
    pub max_auth_failures: u32,
    /// How long a connection may stay open without authenticating (TLS handshake included);
    /// also how long the gateway waits for its own upstream connection, TLS handshake and
    /// `AUTH` reply.
    pub login_timeout: Duration,
}

impl RedisTarget {
    /// A target with default limits, the default refused risks and no TLS.
    #[must_use]
    pub fn new(target: Target, upstream: RedisUpstream) -> Self {
        Self {
            target,
            upstream,
            tls: None,
            limits: Limits::default(),
            login_limits: Limits::UNAUTHENTICATED,
            refused_risks: DEFAULT_REFUSED_RISKS,
            record_limit: 16 * 1024,
            stream_recheck: Duration::from_secs(1),
            max_auth_failures: 3,
            login_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves Redis clients for one target.
#[derive(Debug, Clone)]
pub struct RedisProxy {
    pipeline: Arc<Pipeline>,
    config: Arc<RedisTarget>,
    dial: Dial,
}

fn protocol_error(peer: &'static str, e: wirewarden_redis::Error) -> Error {
    Error::Io {
        peer,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    }
}

fn error_reply(message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 3);
    out.put_u8(b'-');
    for b in message.bytes() {
        out.put_u8(if matches!(b, b'\r' | b'\n') { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

fn lower(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

/// What an `AUTH` or `HELLO` carries.
struct Login {
    user: Option<String>,
    password: String,
    /// For `HELLO`: the command to send upstream without its `AUTH` part.
    hello: Option<Vec<Bytes>>,
    /// For `HELLO … SETNAME <name>`: the client's name, which becomes the session's
    /// application in the audit trail (as `application_name` does for PostgreSQL).
    name: Option<String>,
    /// The user name or password was not UTF-8 (both are kept lossily decoded): no identity
    /// provider is asked, and the attempt fails like any wrong credential — answered
    /// `-WRONGPASS`, recorded, and counted against `max_auth_failures`.
    unreadable: bool,
}

/// Longest client name kept as a session's application; longer names are cut (PostgreSQL
/// cuts `application_name` at 63 bytes).
const APPLICATION_MAX: usize = 256;

/// Whether the server would accept `name` for `CLIENT SETNAME`/`HELLO … SETNAME`: no
/// spaces, newlines or other characters outside `!`..=`~`.
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|c| (b'!'..=b'~').contains(c))
}

/// The name a command gives its connection, when it names it: `CLIENT SETNAME <name>` or
/// `HELLO <protover> … SETNAME <name>`. `Some(None)`: the name is cleared
/// (`CLIENT SETNAME ""`). A name the server would refuse renames nothing.
fn client_name_of(args: &[Bytes]) -> Option<Option<String>> {
    let name = match args {
        [c, sub, n]
            if c.eq_ignore_ascii_case(b"client") && sub.eq_ignore_ascii_case(b"setname") =>
        {
            n
        }
        [h, _, options @ ..] if h.eq_ignore_ascii_case(b"hello") => {
            let mut name = None;
            let mut i = 0;
            while let Some(opt) = options.get(i) {
                if opt.eq_ignore_ascii_case(b"auth") {
                    i += 3;
                } else if opt.eq_ignore_ascii_case(b"setname") {
                    name = options.get(i + 1);
                    i += 2;
                } else {
                    return None;
                }
            }
            name?
        }
        _ => return None,
    };
    if !valid_client_name(name) {
        return None;
    }
    if name.is_empty() {
        return Some(None);
    }
    let cut = name.get(..APPLICATION_MAX).unwrap_or(name);
    Some(Some(String::from_utf8_lossy(cut).into_owned()))
}

enum Parsed {
    Login(Login),
    /// A `HELLO` without `AUTH`: forward as is.
    PlainHello,
    Invalid(&'static str),
}

fn parse_login(args: &[Bytes]) -> Parsed {
    let name = lower(args.first().map(|a| &a[..]).unwrap_or_default());
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let unreadable = |parts: &[&Bytes]| parts.iter().any(|b| std::str::from_utf8(b).is_err());
    if name == b"auth" {
        return match args {
            [_, pass] => Parsed::Login(Login {
                user: None,
                password: text(pass),
                hello: None,
                name: None,
                unreadable: unreadable(&[pass]),
            }),
            [_, user, pass] => Parsed::Login(Login {
                user: Some(text(user)),
                password: text(pass),
                hello: None,
                name: None,
                unreadable: unreadable(&[user, pass]),
            }),
            _ => Parsed::Invalid("-ERR wrong number of arguments for 'auth' command"),
        };
    }
    // HELLO [protover [AUTH username password] [SETNAME clientname]]
    let mut forward = vec![Bytes::from_static(b"HELLO")];
    let mut login = None;
    let mut name = None;
    let mut i = 1;
    if let Some(v) = args.get(1) {
        if !matches!(&v[..], b"2" | b"3") {
            return Parsed::Invalid("-NOPROTO unsupported protocol version");
        }
        forward.push(v.clone());
        i = 2;
    }
    while let Some(a) = args.get(i) {
        let opt = lower(a);
        match (&opt[..], args.get(i + 1), args.get(i + 2)) {
            (b"auth", Some(u), Some(p)) => {
                login = Some((text(u), text(p), unreadable(&[u, p])));
                i += 3;
            }
            (b"setname", Some(n), _) => {
                // Checked here, as the server would, so the name recorded for the session
                // is the one the server accepts.
                if !valid_client_name(n) {
                    return Parsed::Invalid(
                        "-ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                let cut = n.get(..APPLICATION_MAX).unwrap_or(n);
                name = Some(String::from_utf8_lossy(cut).into_owned());
                forward.push(a.clone());
                forward.push(n.clone());
                i += 2;
            }
            _ => return Parsed::Invalid("-ERR Syntax error in HELLO option"),
        }
    }
    match login {
        Some((user, password, unreadable)) => Parsed::Login(Login {
            user: Some(user),
            password,
            hello: Some(forward),
            name,
            unreadable,
        }),
        None => Parsed::PlainHello,
    }
}

/// What completes a login on the wire.
enum Finish {
    /// `AUTH` succeeded: the client is answered `+OK`.
    Ok,
    /// `HELLO … AUTH` succeeded: the `HELLO`, without its `AUTH` part, goes upstream and
    /// its reply is the answer.
    Hello(Vec<Bytes>),
    /// The TLS handshake proved the identity: the client asked nothing, so nothing is
    /// answered, and its first request is its first command.
    Nothing,
}

/// A client that proved an identity.
struct LoggedIn {
    principal: Principal,
    /// How the login is answered.
    finish: Finish,
    /// The name the client gave in `HELLO … SETNAME`.
    application: Option<String>,
}

/// What a client was refused before it authenticated — requests answered `-NOAUTH`, an
/// `AUTH` or `HELLO` the server would reject before checking a credential, a request the
/// login limits refuse — kept as one summary, so the connection leaves one record however
/// much it sends: an anonymous client must not make a durable trail write (and sync) once
/// per request. Failed credentials are not counted here: each is its own
/// `AuthenticationFailed`, and [`RedisTarget::max_auth_failures`] of them end the
/// connection.
#[derive(Debug, Default)]
struct Refusals {
    /// Requests refused.
    count: u64,
    /// The first distinct commands refused (by their name in the command table), with how
    /// often each was. Names nobody knows are only counted: the trail keeps no word the
    /// client chose, which might be a secret typed in the wrong place.
    commands: Vec<(&'static str, u64)>,
    /// The protocol error that refused a request (over the login limits, or malformed) and
    /// closed the connection.
    protocol: Option<String>,
}

impl Refusals {
    /// Distinct commands named at most; others are only counted.
    const NAMED: usize = 8;

    /// A request named `name` was refused.
    fn refused(&mut self, name: &[u8]) {
        self.count = self.count.saturating_add(1);
        let Some(spec) = wirewarden_redis::lookup(name) else {
            return;
        };
        if let Some((_, n)) = self.commands.iter_mut().find(|(c, _)| *c == spec.name) {
            *n = n.saturating_add(1);
        } else if self.commands.len() < Self::NAMED {
            self.commands.push((spec.name, 1));
        }
    }

    /// The decoder refused a request, answered with the server's protocol error.
    fn protocol_error(&mut self, e: &wirewarden_redis::Error) {
        self.count = self.count.saturating_add(1);
        self.protocol = Some(e.to_string());
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `3 requests refused before authentication: GET x2, PING`, with how many were not
    /// named, and the protocol error if one ended the connection.
    fn summary(&self) -> String {
        use std::fmt::Write as _;
        let plural = if self.count == 1 { "" } else { "s" };
        let mut s = format!(
            "{} request{plural} refused before authentication",
            self.count
        );
        for (i, (command, n)) in self.commands.iter().enumerate() {
            s.push_str(if i == 0 { ": " } else { ", " });
            s.push_str(&command.to_ascii_uppercase());
            if *n > 1 {
                let _ = write!(s, " x{n}");
            }
        }
        let named: u64 = self.commands.iter().map(|(_, n)| n).sum();
        let others = self
            .count
            .saturating_sub(named)
            .saturating_sub(u64::from(self.protocol.is_some()));
        if others > 0 {
            let sep = if self.commands.is_empty() { ": " } else { ", " };
            let _ = write!(s, "{sep}{others} other");
        }
        if let Some(e) = &self.protocol {
            let _ = write!(s, "; a request refused with a protocol error: {e}");
        }
        s
    }
}

const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
const HELLO_NOAUTH: &str = "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
/// The answer to a client whose certificate maps to no identity. `WRONGPASS` is what clients
/// treat as a failed login (redis-py raises `AuthenticationError`, a connection error it does
/// not swallow during its handshake), where `NOPERM` would read as a refused command on a
/// working session.
/// The outcome of a forwarded command whose reply never came because the session ended.
const UNANSWERED: &str = "no reply: the session ended before it came; the command may have run";

/// The answer to each command still owed a reply when the upstream sends an invalid one (a
/// frame the decoder refuses, or a reply no command can be tied to); the connection then
/// closes.
const INVALID_REPLY: &str =
    "ERR wirewarden: the upstream sent an invalid reply; the connection is closed";
/// The start of the outcome of a command unanswered because the upstream sent an invalid
/// reply, and of the session's end reason then.
const INVALID_REPLY_OUTCOME: &str = "the upstream sent an invalid reply";

/// The error a session ends with once the upstream sent an invalid reply: `why` is the
/// codec's or the correlator's typed error, as text.
fn upstream_invalid_error(why: &str) -> Error {
    Error::Io {
        peer: "upstream",
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{INVALID_REPLY_OUTCOME}: {why}"),
        ),
    }
}

const CERT_REFUSED: &[u8] = b"-WRONGPASS client certificate not accepted or user is disabled.\r\n";

struct Client {
    io: BoxIo,
    buf: BytesMut,
    decoder: RequestDecoder,
    tls: bool,
}

impl Client {
    async fn next(&mut self) -> Result<Option<Request>> {
        self.next_or_refused()
            .await?
            .map_err(|e| protocol_error("client", e))
    }

    /// The next request; `Ok(Err(_))`: one the decoder refused, already answered with the
    /// server's protocol error.
    async fn next_or_refused(
        &mut self,
    ) -> Result<std::result::Result<Option<Request>, wirewarden_redis::Error>> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(r)) => return Ok(Ok(Some(r))),
                Ok(None) => {}
                Err(e) => {
                    let _ = self.io.write_all(&e.to_reply()).await;
                    return Ok(Err(e));
                }
            }
            self.buf.reserve(16 * 1024);
            if self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(Error::client_io)?
                == 0
            {
                return Ok(Ok(None));
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.write_all(bytes).await.map_err(Error::client_io)?;
        self.io.flush().await.map_err(Error::client_io)
    }
}

impl RedisProxy {
    /// A proxy for `config`, deciding through `pipeline`.
    #[must_use]
    pub fn new(pipeline: Arc<Pipeline>, config: RedisTarget) -> Self {
        Self {
            pipeline,
            config: Arc::new(config),
            dial: Dial::Tcp,
        }
    }

    /// The same proxy, its upstream connections taken from `dial`.
    pub(crate) fn with_dial(mut self, dial: Dial) -> Self {
        self.dial = dial;
        self
    }

    /// The target this proxy serves.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.config.target
    }

    /// Accepts connections from `listener`, serving each on its own task. Accept errors are
    /// retried after a short pause; the loop runs until the task is dropped.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for listeners that can fail for good.
    pub async fn listen(self, listener: tokio::net::TcpListener) -> Result<()> {
        crate::listen::accept_loop(listener, move |stream, peer| {
            let proxy = self.clone();
            async move {
                let _ = proxy.serve(stream, Some(peer)).await;
            }
        })
        .await
    }

    /// Serves one client connection to completion.
    ///
    /// # Errors
    /// Protocol, I/O, authentication and audit failures; the client has been sent an error
    /// reply where the protocol allowed one.
    pub async fn serve<S>(&self, stream: S, peer: Option<SocketAddr>) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // One deadline for the TLS handshake and the login: a client that opens a connection
        // and never finishes either holds nothing for longer than the login timeout.
        let deadline = tokio::time::Instant::now() + self.config.login_timeout;
        let (io, tls, chain): (BoxIo, bool, _) = match &self.config.tls {
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let accepted = tokio::time::timeout_at(deadline, acceptor.accept(stream))
                    .await
                    .map_err(|_| Error::Tls("no TLS handshake within the login timeout".into()))?;
                let s = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // rustls has already sent the alert (certificate_required, bad
                        // certificate…), which is all TLS lets the server say.
                        if let Some(reason) = crate::tls::certificate_refusal(&e) {
                            let event = self.auth_failed(peer, None, "client_certificate", reason);
                            let _ = self.pipeline.record(&event).await;
                        }
                        return Err(Error::Tls(e.to_string()));
                    }
                };
                let chain = crate::tls::presented_chain(s.get_ref().1);
                (Box::new(s), true, chain)
            }
            None => (Box::new(stream), false, None),
        };
        // Tight limits until the client has proved an identity; the session's from then on
        // (`Relay::run`).
        let mut client = Client {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
            decoder: RequestDecoder::new(self.config.login_limits),
            tls,
        };
        // Taken before the chain maps to an identity: lists replaced from here on are
        // checked by the watch.
        let certificate = match &chain {
            Some(chain) => self.pipeline.certificate_watch(chain),
            None => CertificateWatch::inert(),
        };
        let mut refused = Refusals::default();
        let login = tokio::time::timeout_at(deadline, async {
            match chain {
                Some(chain) => self.certificate_login(&mut client, peer, chain).await,
                None => self.login(&mut client, peer, &mut refused).await,
            }
        })
        .await;
        let login = match login {
            Ok(Ok(Some(login))) => login,
            Ok(Ok(None)) => {
                self.unauthenticated_end(peer, &refused, "the client left")
                    .await;
                return Ok(());
            }
            Ok(Err(e)) => {
                let end = if refused.protocol.is_some() {
                    "closed after the protocol error".to_owned()
                } else {
                    e.to_string()
                };
                self.unauthenticated_end(peer, &refused, &end).await;
                return Err(e);
            }
            Err(_) => {
                let why = "no AUTH within the login timeout";
                self.unauthenticated_end(peer, &refused, why).await;
                return Err(Error::Authentication(why.into()));
            }
        };
        self.session(client, peer, login, certificate, refused)
            .await
    }

    /// Records what a connection that ended without authenticating was refused, as one
    /// `AuthenticationFailed` (method `none`: it presented no credential that was accepted)
    /// with the client's address; nothing when it was refused nothing (a failed credential
    /// is on record already).
    async fn unauthenticated_end(&self, peer: Option<SocketAddr>, refused: &Refusals, end: &str) {
        if refused.is_empty() {
            return;
        }
        Metrics::add(&self.pipeline.metrics().refused_before_login, refused.count);
        let event = AuditEvent::new(
            None,
            AuditEventKind::AuthenticationFailed {
                target: self.config.target.clone(),
                client_addr: peer.map(|p| p.to_string()),
                user: None,
                method: "none".to_owned(),
                reason: format!(
                    "{}; the connection ended unauthenticated: {end}",
                    refused.summary()
                ),
            },
        );
        let _ = self.pipeline.record(&event).await;
    }

    /// Records what a client was refused before it logged in when its session then did not
    /// start (`why`): with no session to carry it, as a protocol error of its own, naming
    /// the client and who it logged in as. Nothing when it was refused nothing.
    async fn refused_before_no_session(
        &self,
        peer: Option<SocketAddr>,
        principal: &Principal,
        refused: &Refusals,
        why: &str,
    ) {
        if refused.is_empty() {
            return;
        }
        let client = peer.map_or_else(|| "a client".to_owned(), |p| format!("client {p}"));
        let event = AuditEvent::new(
            None,
            AuditEventKind::ProtocolError {
                direction: Direction::FromClient,
                error: format!(
                    "{client} (logged in as {}): {}; the session did not start: {why}",
                    principal.subject,
                    refused.summary()
                ),
            },
        );
        let _ = self.pipeline.record(&event).await;
    }

    fn auth_failed(
        &self,
        peer: Option<SocketAddr>,
        user: Option<&str>,
        method: &str,
        reason: String,
    ) -> AuditEvent {
        Metrics::add(&self.pipeline.metrics().auth_failures, 1);
        AuditEvent::new(
            None,
            AuditEventKind::AuthenticationFailed {
                target: self.config.target.clone(),
                client_addr: peer.map(|p| p.to_string()),
                user: user.map(str::to_owned),
                method: method.to_owned(),
                reason,
            },
        )
    }

    /// What the identity provider is told about a login to this target from `peer`.
    fn auth_context(&self, peer: Option<SocketAddr>) -> AuthContext {
        let ctx = AuthContext::new().with_target(self.config.target.name.clone());
        match peer {
            Some(p) => ctx.with_client_addr(p),
            None => ctx,
        }
    }

    async fn verify(
        &self,
        login: &Login,
        peer: Option<SocketAddr>,
    ) -> std::result::Result<Principal, String> {
        let verified = if login.unreadable {
            Err("the user name or password is not valid UTF-8".to_owned())
        } else {
            let credential = Credential::password(login.user.as_deref(), login.password.clone());
            let ctx = self.auth_context(peer);
            self.pipeline
                .authenticate(&credential, &ctx)
                .await
                .map_err(|e| e.to_string())
        };
        match verified {
            Ok(p) => Ok(p),
            Err(reason) => {
                let _ = self
                    .pipeline
                    .record(&self.auth_failed(peer, login.user.as_deref(), "token", reason.clone()))
                    .await;
                Err(reason)
            }
        }
    }

    /// A client that presented a verified certificate: the identity provider maps it to a
    /// principal, or the login fails for good. Redis has no way to refuse a connection
    /// before the client speaks, so the refusal answers its first request and the
    /// connection closes; no password login follows.
    async fn certificate_login(
        &self,
        client: &mut Client,
        peer: Option<SocketAddr>,
        chain: Vec<Vec<u8>>,
    ) -> Result<Option<LoggedIn>> {
        let credential = Credential::ClientCertificate(chain);
        let ctx = self.auth_context(peer);
        match self.pipeline.authenticate(&credential, &ctx).await {
            Ok(principal) => Ok(Some(LoggedIn {
                principal,
                finish: Finish::Nothing,
                application: None,
            })),
            Err(e) => {
                let reason = e.to_string();
                let event = self.auth_failed(peer, None, "client_certificate", reason.clone());
                let _ = self.pipeline.record(&event).await;
                if client.next().await?.is_some() {
                    client.send(CERT_REFUSED).await?;
                }
                let _ = client.io.shutdown().await;
                Err(Error::Authentication(reason))
            }
        }
    }

    /// Until the client proves an identity. `None`: the client left.
    async fn login(
        &self,
        client: &mut Client,
        peer: Option<SocketAddr>,
        refused: &mut Refusals,
    ) -> Result<Option<LoggedIn>> {
        let mut failures = 0u32;
        loop {
            let req = match client.next_or_refused().await? {
                Ok(Some(req)) => req,
                Ok(None) => return Ok(None),
                Err(e) => {
                    refused.protocol_error(&e);
                    return Err(protocol_error("client", e));
                }
            };
            let name = lower(req.name());
            match &name[..] {
                b"quit" => {
                    client.send(b"+OK\r\n").await?;
                    return Ok(None);
                }
                b"auth" | b"hello" => match parse_login(req.args()) {
                    Parsed::Login(login) => match self.verify(&login, peer).await {
                        Ok(principal) => {
                            return Ok(Some(LoggedIn {
                                principal,
                                finish: login.hello.map_or(Finish::Ok, Finish::Hello),
                                application: login.name,
                            }));
                        }
                        Err(reason) => {
                            failures += 1;
                            client.send(WRONGPASS).await?;
                            if failures >= self.config.max_auth_failures {
                                return Err(Error::Authentication(reason));
                            }
                        }
                    },
                    Parsed::PlainHello => {
                        refused.refused(req.name());
                        client.send(&error_reply(&HELLO_NOAUTH[1..])).await?;
                    }
                    Parsed::Invalid(reply) => {
                        refused.refused(req.name());
                        client.send(&error_reply(&reply[1..])).await?;
                    }
                },
                _ => {
                    refused.refused(req.name());
                    client.send(NOAUTH).await?;
                }
            }
        }
    }

    async fn dial_tcp(addr: &str) -> Result<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(Error::upstream_io)?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn connect_upstream(&self) -> Result<(BoxIo, BytesMut)> {
        let up = &self.config.upstream;
        let mut io: BoxIo = match (&self.dial, &up.tls) {
            (Dial::Given(dial), _) => dial().map_err(Error::upstream_io)?,
            (Dial::Tcp, Some(tls)) => {
                let tcp = Self::dial_tcp(&up.addr).await?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                Box::new(
                    connector
                        .connect(tls.server_name.clone(), tcp)
                        .await
                        .map_err(|e| Error::Tls(e.to_string()))?,
                )
            }
            (Dial::Tcp, None) => Box::new(Self::dial_tcp(&up.addr).await?),
        };
        let mut auth = BytesMut::new();
        match &up.user {
            Some(u) => wirewarden_redis::encode_args(
                &[
                    b"AUTH".as_slice(),
                    u.as_bytes(),
                    up.password.expose().as_bytes(),
                ],
                &mut auth,
            ),
            None => wirewarden_redis::encode_args(
                &[b"AUTH".as_slice(), up.password.expose().as_bytes()],
                &mut auth,
            ),
        }
        io.write_all(&auth).await.map_err(Error::upstream_io)?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut decoder = ReplyDecoder::new(self.config.limits);
        loop {
            if let Some(f) = decoder
                .decode(&mut buf, RespVersion::Resp2)
                .map_err(|e| protocol_error("upstream", e))?
            {
                if f.simple_text() == Some(b"OK") {
                    return Ok((io, buf));
                }
                let why = f
                    .error_text()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_else(|| "unexpected reply to AUTH".into());
                return Err(Error::UpstreamLogin(why));
            }
            if io.read_buf(&mut buf).await.map_err(Error::upstream_io)? == 0 {
                return Err(Error::Closed("upstream"));
            }
        }
    }

    async fn session(
        &self,
        mut client: Client,
        peer: Option<SocketAddr>,
        login: LoggedIn,
        certificate: CertificateWatch,
        refused: Refusals,
    ) -> Result<()> {
        let LoggedIn {
            principal,
            finish,
            application,
        } = login;
        let target = self.config.target.clone();
        if !refused.is_empty() {
            Metrics::add(&self.pipeline.metrics().refused_before_login, refused.count);
        }
        // Bounded: a TLS upstream that never answers the ClientHello (a plaintext Redis
        // waits for a newline the hello may not contain) would otherwise hold the client.
        let connected = crate::listen::upstream_within(
            self.config.login_timeout,
            self.connect_upstream(),
            "no connection, TLS handshake and AUTH reply within the login timeout",
        )
        .await;
        let (up, up_buf) = match connected {
            Ok(x) => x,
            Err(e) => {
                self.pipeline
                    .upstream_failed(&target, &self.config.upstream.addr, &e)
                    .await;
                self.refused_before_no_session(
                    peer,
                    &principal,
                    &refused,
                    "the upstream could not be reached",
                )
                .await;
                client
                    .send(b"-ERR wirewarden could not reach the upstream server\r\n")
                    .await?;
                return Err(e);
            }
        };
        let profile = match self.pipeline.mask_profile(&target, &principal, None) {
            Ok(p) => p,
            Err(e) => {
                self.refused_before_no_session(
                    peer,
                    &principal,
                    &refused,
                    "its mask profile is missing",
                )
                .await;
                client
                    .send(b"-ERR wirewarden mask profile unavailable\r\n")
                    .await?;
                return Err(e);
            }
        };
        let session_id = SessionId::new();
        let started = AuditEvent::new(
            Some(session_id),
            AuditEventKind::SessionStarted {
                principal: principal.clone(),
                target: target.clone(),
                client_addr: peer.map(|p| p.to_string()),
                application: application.clone(),
                tls: client.tls,
            },
        );
        // What the client was refused before it logged in: one record of the session (whose
        // start has its address), appended with the start.
        let recorded = if refused.is_empty() {
            self.pipeline.record(&started).await
        } else {
            let before_login = AuditEvent::new(
                Some(session_id),
                AuditEventKind::ProtocolError {
                    direction: Direction::FromClient,
                    error: refused.summary(),
                },
            );
            match self.pipeline.record_batch(&[started, before_login]).await {
                0 => Err(Error::Audit("the session's start was not recorded".into())),
                _ => Ok(()),
            }
        };
        if let Err(e) = recorded {
            client
                .send(b"-ERR wirewarden audit trail unavailable\r\n")
                .await?;
            return Err(e);
        }
        let metrics = self.pipeline.metrics();
        Metrics::add(&metrics.sessions_started, 1);
        metrics.sessions_active.fetch_add(1, Ordering::Relaxed);
        let (outcomes, rx) = mpsc::channel(OUTCOME_QUEUE);
        let spare_batches = SpareBatches::default();
        let writer = tokio::spawn(outcome_writer(
            self.pipeline.clone(),
            rx,
            spare_batches.clone(),
        ));
        let principal_expiry = principal.expires_at;
        let mut relay = Relay {
            proxy: self,
            outcomes,
            outcome_batch: Vec::new(),
            spare_batches,
            steps: Vec::new(),
            intents: Vec::new(),
            principal,
            target,
            session_id,
            profile,
            application,
            started: Instant::now(),
            session: Session::new(),
            replies: ReplyDecoder::new(self.config.limits),
            slots: VecDeque::new(),
            pending: HashMap::default(),
            queued: Vec::new(),
            next_tag: 0,
            commands: 0,
            client_multi: false,
            multi_decided: false,
            quit: false,
            auth_failures: 0,
            multi_poisoned: false,
            to_client: BytesMut::with_capacity(64 * 1024),
            to_upstream: BytesMut::with_capacity(64 * 1024),
            completed: Vec::new(),
            client,
            up,
            up_buf,
            certificate,
            ended: None,
            expiry: crate::listen::credential_expiry(principal_expiry),
            subscriptions: Subscriptions::default(),
            stream_wake: None,
            stream_records: Vec::new(),
            stream_charge: (0, 0),
            upstream_invalid: None,
        };
        let first = match finish {
            // The HELLO that authenticated goes upstream (without AUTH) as a command.
            Finish::Hello(args) => match relay.on_request(Request::from_args(args)).await {
                Ok(()) => {
                    relay.commit().await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Finish::Ok => {
                relay.to_client.extend_from_slice(b"+OK\r\n");
                Ok(())
            }
            Finish::Nothing => Ok(()),
        };
        let outcome = match first {
            Ok(()) => relay.run().await,
            Err(e) => Err(e),
        };
        metrics.sessions_active.fetch_sub(1, Ordering::Relaxed);
        let reason = match (&outcome, &relay.upstream_invalid) {
            (Ok(r), _) => r.clone(),
            (Err(_), Some(why)) => SessionEndReason::Error {
                message: format!("{INVALID_REPLY_OUTCOME}: {why}"),
            },
            (Err(e), None) => SessionEndReason::Error {
                message: e.to_string(),
            },
        };
        let end = AuditEvent::new(
            Some(session_id),
            AuditEventKind::SessionEnded {
                reason,
                commands: relay.commands,
                duration_us: micros(relay.started),
            },
        );
        // The end goes after every outcome of the session (those of replies that were never
        // flushed too); then the writer stops.
        for p in std::mem::take(&mut relay.completed) {
            relay.record_completion(p);
        }
        // Commands forwarded whose replies never came (the session ended first: revoked,
        // expired, the upstream gone): they may have run, and their outcome is unknown — on
        // record as such, so every intent has its outcome.
        let mut unanswered: Vec<_> = relay.pending.drain().collect();
        unanswered.sort_unstable_by_key(|(tag, _)| *tag);
        for (_, mut p) in unanswered {
            p.error.get_or_insert_with(|| UNANSWERED.to_owned());
            relay.record_completion(p);
        }
        let mut last = std::mem::take(&mut relay.outcome_batch);
        last.push(end);
        let outcomes = relay.outcomes.clone();
        drop(relay);
        let _ = outcomes.send(last).await;
        drop(outcomes);
        let _ = writer.await;
        let _ = self.pipeline.audit_sink().flush().await;
        outcome.map(|_| ())
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

// === relay ===

/// What the client is owed, in order.
#[derive(Debug)]
enum Slot {
    /// The reply (or replies) of a forwarded command; `rewrite` replaces its reply.
    Upstream { tag: u64, rewrite: Option<Bytes> },
    /// A reply the gateway gives itself (a denial).
    Local(Bytes),
}

/// A forwarded command until its outcome is recorded.
#[derive(Debug)]
struct Pending {
    id: CommandId,
    keys: Keys,
    profile: Arc<Profile>,
    started: Instant,
    elements: u64,
    bytes: u64,
    masked: MaskedCounts,
    error: Option<String>,
    recording: String,
    truncated: bool,
    /// `DISCARD`, `RESET` or a failed `EXEC`: what was queued does not run.
    drops_queue: bool,
    /// Whether what it returns counts against exfiltration budgets.
    charged: bool,
    /// The decision of a command that subscribes, for the subscriptions it opens.
    opened: Option<Box<Opened>>,
}

/// A command that policy allowed, until it is forwarded.
#[derive(Debug)]
struct Allowed {
    req: Request,
    verb: Verb,
    id: CommandId,
    profile: Arc<Profile>,
    keys: Keys,
    /// Whether what it returns counts against exfiltration budgets.
    charged: bool,
    /// Its intent record in [`Relay::intents`]; `None`: already on record.
    intent: Option<usize>,
    /// The decision of a command that subscribes, for the subscriptions it opens.
    opened: Option<Box<Opened>>,
}

/// What one request of a pipelined batch comes to, in order. The intents of the batch are
/// recorded together before any of it is forwarded.
#[derive(Debug)]
enum Step {
    Forward(Allowed),
    /// A denial: `-ERR <message>`, and the open transaction fails.
    Refuse(String),
    /// A reply the gateway gives itself (`AUTH`, `QUIT`, a bad `HELLO`).
    Reply(Bytes),
}

/// The few commands the relay treats specially, recognised without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Multi,
    Exec,
    Discard,
    Reset,
    Mget,
    /// `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`.
    Subscribe,
    /// `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `SUNSUBSCRIBE`.
    Unsubscribe,
    Other,
}

impl Verb {
    fn of(name: &[u8]) -> Self {
        let is = |v: &[u8]| name.eq_ignore_ascii_case(v);
        if is(b"multi") {
            Self::Multi
        } else if is(b"exec") {
            Self::Exec
        } else if is(b"discard") {
            Self::Discard
        } else if is(b"reset") {
            Self::Reset
        } else if is(b"mget") {
            Self::Mget
        } else if is(b"subscribe") || is(b"psubscribe") || is(b"ssubscribe") {
            Self::Subscribe
        } else if is(b"unsubscribe") || is(b"punsubscribe") || is(b"sunsubscribe") {
            Self::Unsubscribe
        } else {
            Self::Other
        }
    }
}

/// How many batches of outcome records (one per flush of replies to the client) may wait for
/// the session's audit writer before the relay waits for it.
const OUTCOME_QUEUE: usize = 64;
/// How many requests of one pipelined read are decided before their intents are recorded and
/// they are forwarded.
const STEP_BATCH: usize = 256;

/// Appends a session's outcome records (completions, transcripts, the session's end) in
/// order, off the relay's path: only intents must be on record before a command is
/// forwarded. They are appended unawaited: in fsync mode they reach the disk with the next
/// intent's sync (or within the sink's write delay) rather than with one of their own, and
/// for a sink that waits anyway what queued up meanwhile goes as one batch. The relay hands
/// over one batch per flush, so the writer is woken once per pipeline, not once per record.
async fn outcome_writer(
    pipeline: Arc<Pipeline>,
    mut rx: mpsc::Receiver<Vec<AuditEvent>>,
    spares: SpareBatches,
) {
    let mut batches = Vec::with_capacity(OUTCOME_QUEUE);
    let mut events = Vec::new();
    while rx.recv_many(&mut batches, OUTCOME_QUEUE).await > 0 {
        if let [batch] = &batches[..] {
            // The usual case: one flush's records, appended where they are.
            pipeline.record_batch_unawaited(batch).await;
        } else {
            for batch in &mut batches {
                events.append(batch);
            }
            pipeline.record_batch_unawaited(&events).await;
            events.clear();
        }
        for batch in batches.drain(..) {
            spares.give_back(batch);
        }
    }
}

/// Emptied outcome batches the writer hands back to its relay, so that a flush does not
/// allocate a fresh list for its records each time.
#[derive(Debug, Clone, Default)]
struct SpareBatches(Arc<std::sync::Mutex<Vec<Vec<AuditEvent>>>>);

impl SpareBatches {
    /// Batches kept at most; a list grown by a long pipeline is let go instead.
    const KEPT: usize = 4;
    const KEPT_CAPACITY: usize = 2 * STEP_BATCH;

    fn give_back(&self, mut batch: Vec<AuditEvent>) {
        batch.clear();
        if batch.capacity() == 0 || batch.capacity() > Self::KEPT_CAPACITY {
            return;
        }
        let mut spares = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spares.len() < Self::KEPT {
            spares.push(batch);
        }
    }

    fn take(&self) -> Vec<AuditEvent> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }
}

struct Relay<'p> {
    proxy: &'p RedisProxy,
    /// The session's outcome writer.
    outcomes: mpsc::Sender<Vec<AuditEvent>>,
    /// Outcome records of the replies being flushed, handed to the writer together.
    outcome_batch: Vec<AuditEvent>,
    /// Lists the writer has emptied, for the next flush's records.
    spare_batches: SpareBatches,
    /// The decided, not yet forwarded requests of the current batch, in order.
    steps: Vec<Step>,
    /// The intent records the batch's steps wait for.
    intents: Vec<AuditEvent>,
    principal: Principal,
    target: Target,
    session_id: SessionId,
    profile: Arc<Profile>,
    /// The session's application: the name of `SessionStarted`, then of the last
    /// `CLIENT SETNAME` or `HELLO … SETNAME` forwarded.
    application: Option<String>,
    started: Instant,
    session: Session<u64>,
    replies: ReplyDecoder,
    slots: VecDeque<Slot>,
    pending: TagMap<Pending>,
    /// Tags of commands the server queued in the open transaction.
    queued: Vec<u64>,
    next_tag: u64,
    commands: u64,
    /// A `MULTI` was forwarded and no `EXEC`/`DISCARD`/`RESET` since.
    client_multi: bool,
    /// A `MULTI` was decided and no `EXEC`/`DISCARD`/`RESET` since (ahead of
    /// [`Relay::client_multi`], which follows what is forwarded).
    multi_decided: bool,
    /// The client sent `QUIT`.
    quit: bool,
    /// Failed `AUTH` attempts in this session (see [`RedisTarget::max_auth_failures`]).
    auth_failures: u32,
    /// A command of the open transaction was denied: `EXEC` must fail.
    multi_poisoned: bool,
    to_client: BytesMut,
    to_upstream: BytesMut,
    completed: Vec<Pending>,
    client: Client,
    up: BoxIo,
    up_buf: BytesMut,
    /// The session's client certificate, if it logged in with one: when replaced
    /// revocation lists refuse it, the session ends.
    certificate: CertificateWatch,
    /// Set when the credential was withdrawn (certificate refused) or expired while a
    /// command waited for review: the session ends so, once the replies owed are sent; or
    /// when the client left meanwhile: it ends then, with nothing sent.
    ended: Option<SessionEndReason>,
    /// Fires when the credential the session logged in with expires: the session ends.
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The channels, patterns and shard channels the server confirmed, with the decisions
    /// their messages go out under.
    subscriptions: Subscriptions,
    /// Wakes the session when a subscription's decision falls due with no message to
    /// bring it: armed only while there are subscriptions.
    stream_wake: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The `Transcript` records of the messages relayed since the last flush.
    stream_records: Vec<AuditEvent>,
    /// Messages and bytes relayed since the last flush, for the budgets.
    stream_charge: (u64, u64),
    /// Set when the upstream sent an invalid reply (the typed error, as text): the owed
    /// commands were answered with errors and the session ends; nothing more is read.
    upstream_invalid: Option<String>,
}

impl Relay<'_> {
    fn pipeline(&self) -> &Pipeline {
        &self.proxy.pipeline
    }

    async fn run(&mut self) -> Result<SessionEndReason> {
        // Logged in: the session's limits replace the login's. A fresh decoder scans what is
        // buffered from its start, so a request pipelined behind the login is read with
        // them.
        let limit = self.proxy.config.limits;
        let mut client_buf = std::mem::take(&mut self.client.buf);
        let mut decoder = RequestDecoder::new(limit);
        self.client.decoder = RequestDecoder::new(limit);
        let mut client_open = true;
        loop {
            // Every complete request, in order.
            if client_open {
                while !self.quit && self.ended.is_none() {
                    match decoder.decode(&mut client_buf) {
                        Ok(Some(req)) => {
                            self.on_request(req).await?;
                            // What the client sent while a command waited for review.
                            if !self.client.buf.is_empty() {
                                client_buf.extend_from_slice(&self.client.buf);
                                self.client.buf.clear();
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.commit().await;
                            self.protocol_event(Direction::FromClient, &e).await;
                            self.push_local(e.to_reply());
                            self.flush().await?;
                            return Err(protocol_error("client", e));
                        }
                    }
                }
            }
            // The batch's intents on record, its commands forwarded; then replies already read.
            self.commit().await;
            if self.ended == Some(SessionEndReason::ClientClosed) {
                // It left while a command waited: nobody to answer.
                let _ = self.up.shutdown().await;
                return Ok(SessionEndReason::ClientClosed);
            }
            self.on_upstream_bytes().await?;
            self.flush().await?;
            if let Some(reason) = self.ended.take() {
                let _ = self.client.io.shutdown().await;
                let _ = self.up.shutdown().await;
                return Ok(reason);
            }
            if (!client_open || self.quit) && self.slots.is_empty() {
                let _ = self.up.shutdown().await;
                return Ok(SessionEndReason::ClientClosed);
            }
            client_buf.reserve(16 * 1024);
            self.up_buf.reserve(64 * 1024);
            if !self.subscriptions.is_empty() || self.stream_wake.is_some() {
                self.arm_stream_wake();
            }
            tokio::select! {
                n = self.client.io.read_buf(&mut client_buf), if client_open && !self.quit => {
                    if n.map_err(Error::client_io)? == 0 {
                        client_open = false;
                        if self.slots.is_empty() {
                            return Ok(SessionEndReason::ClientClosed);
                        }
                    }
                }
                () = &mut self.expiry => {
                    // Every command would be refused from now on: the connection closes, as
                    // for a revoked certificate.
                    let _ = self.client.io.shutdown().await;
                    let _ = self.up.shutdown().await;
                    return Ok(SessionEndReason::CredentialExpired);
                }
                reason = self.certificate.refused() => {
                    // As the server ends a killed client: the connection closes; replies
                    // still in flight are not relayed.
                    let _ = self.client.io.shutdown().await;
                    let _ = self.up.shutdown().await;
                    return Ok(SessionEndReason::CredentialRevoked { reason });
                }
                () = crate::stream::wake(&mut self.stream_wake) => {
                    self.stream_wake = None;
                    self.recheck_idle().await;
                }
                n = self.up.read_buf(&mut self.up_buf) => {
                    if n.map_err(Error::upstream_io)? == 0 {
                        self.on_upstream_bytes().await?;
                        self.flush().await?;
                        // After QUIT the server closes: that is the client leaving.
                        return Ok(if client_open && !self.quit {
                            SessionEndReason::UpstreamClosed
                        } else {
                            SessionEndReason::ClientClosed
                        });
                    }
                }
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.to_upstream.is_empty() {
            self.up
                .write_all(&self.to_upstream)
                .await
                .map_err(Error::upstream_io)?;
            self.up.flush().await.map_err(Error::upstream_io)?;
            self.to_upstream.clear();
        }
        // Budgets are charged before the client sees the result, so its next command is
        // decided against the updated counters.
        // Session housekeeping (`COMMAND DOCS`, `HELLO`, `PING`) carries no keyspace data.
        for p in self.completed.iter().filter(|p| p.charged) {
            self.proxy
                .pipeline
                .charge(&self.principal, &self.target, p.elements, p.bytes);
        }
        // Published messages count as what their subscription returned.
        let (messages, bytes) = std::mem::take(&mut self.stream_charge);
        if messages > 0 {
            self.proxy
                .pipeline
                .charge(&self.principal, &self.target, messages, bytes);
        }
        if !self.to_client.is_empty() {
            self.client.send(&self.to_client).await?;
            self.to_client.clear();
        }
        // The list keeps its capacity from flush to flush; each command leaves at most two
        // records (its completion and, if it has a recording, its transcript).
        let mut completed = std::mem::take(&mut self.completed);
        if self.outcome_batch.capacity() == 0 && !completed.is_empty() {
            self.outcome_batch = self.spare_batches.take();
        }
        self.outcome_batch.reserve(2 * completed.len());
        for p in completed.drain(..) {
            self.record_completion(p);
        }
        self.completed = completed;
        self.outcome_batch.append(&mut self.stream_records);
        if !self.outcome_batch.is_empty() {
            let batch = std::mem::take(&mut self.outcome_batch);
            // The writer stops only when the session ends; a send can fail only then.
            let _ = self.outcomes.send(batch).await;
        }
        Ok(())
    }

    /// Sends what is due and waits until every reply owed to the client has been sent, so
    /// a command held for review does not hold back the replies of earlier ones.
    async fn drain(&mut self) -> Result<()> {
        loop {
            self.on_upstream_bytes().await?;
            self.flush().await?;
            if !self
                .slots
                .iter()
                .any(|s| matches!(s, Slot::Upstream { .. }))
            {
                return Ok(());
            }
            self.up_buf.reserve(64 * 1024);
            if self
                .up
                .read_buf(&mut self.up_buf)
                .await
                .map_err(Error::upstream_io)?
                == 0
            {
                return Err(Error::Closed("upstream"));
            }
        }
    }

    fn push_local(&mut self, reply: Bytes) {
        if self.slots.is_empty() {
            self.to_client.extend_from_slice(&reply);
        } else {
            self.slots.push_back(Slot::Local(reply));
        }
    }

    fn refuse(&mut self, message: &str) {
        if self.client_multi {
            self.multi_poisoned = true;
        }
        self.push_local(error_reply(&format!("ERR {message}")));
    }

    async fn protocol_event(&mut self, direction: Direction, e: &wirewarden_redis::Error) {
        Metrics::add(&self.pipeline().metrics().protocol_errors, 1);
        let event = AuditEvent::new(
            Some(self.session_id),
            AuditEventKind::ProtocolError {
                direction,
                error: e.to_string(),
            },
        );
        let _ = self.pipeline().record(&event).await;
    }

    // === requests ===

    async fn on_request(&mut self, req: Request) -> Result<()> {
        self.commands += 1;
        let mut req = req;
        let name = req.name();
        if name.eq_ignore_ascii_case(b"auth") {
            // Re-authentication: only as the same identity; never forwarded.
            let reply = self.reauth(req.args()).await;
            self.steps.push(Step::Reply(reply));
            return Ok(());
        }
        if name.eq_ignore_ascii_case(b"quit") {
            // Answered here once every earlier reply is out; the session then ends.
            self.quit = true;
            self.steps.push(Step::Reply(Bytes::from_static(b"+OK\r\n")));
            return Ok(());
        }
        if name.eq_ignore_ascii_case(b"hello") {
            match parse_login(req.args()) {
                Parsed::Login(login) => {
                    let reply = self
                        .reauth_login(&Login {
                            user: login.user.clone(),
                            password: login.password.clone(),
                            hello: None,
                            name: None,
                            unreadable: login.unreadable,
                        })
                        .await;
                    if reply.first() == Some(&b'-') {
                        self.steps.push(Step::Reply(reply));
                        return Ok(());
                    }
                    req = Request::from_args(login.hello.unwrap_or_default());
                }
                Parsed::Invalid(reply) => {
                    self.steps.push(Step::Reply(error_reply(&reply[1..])));
                    return Ok(());
                }
                Parsed::PlainHello => {}
            }
        }
        let name = req.name();
        let verb = Verb::of(name);
        let classified = classify(req.args());
        let flow = classified.flow;
        let command = classified.command;
        let command_id = CommandId::new();
        // Whether the client has a transaction open, as the commands decided so far say.
        let in_multi = self.multi_decided;
        match verb {
            Verb::Multi => self.multi_decided = true,
            Verb::Exec | Verb::Discard | Verb::Reset => self.multi_decided = false,
            _ => {}
        }
        let builtin = if name.eq_ignore_ascii_case(b"client")
            && req
                .args()
                .get(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"reply"))
        {
            // Replies the gateway does not see cannot be correlated or masked.
            Some((
                "redis-client-reply",
                "CLIENT REPLY is not allowed through the gateway",
            ))
        } else if matches!(verb, Verb::Subscribe | Verb::Unsubscribe) && in_multi {
            // Inside EXEC the server writes one reply per channel where EXEC's header
            // counts one per command: the replies after it would answer the wrong
            // commands (and be masked as theirs). A subscription would also come untied to
            // the decision its messages must go out under.
            Some((
                "redis-subscribe-in-multi",
                "subscribing or unsubscribing inside MULTI is not allowed through the gateway; do it outside the transaction",
            ))
        } else if verb == Verb::Reset {
            // RESET would log the upstream connection out of the gateway's own user.
            Some((
                "redis-reset",
                "RESET is not allowed through the gateway; reconnect instead",
            ))
        } else if flow
            .as_ref()
            .is_some_and(|f| crosses_mask(&self.profile, f))
        {
            Some((COPY_RULE, COPY_REASON))
        } else {
            None
        };
        if let Some((rule, reason)) = builtin {
            self.deny(
                command,
                command_id,
                RuleId::new(rule),
                reason.into(),
                "builtin".into(),
            );
        } else if self.proxy.config.refused_risks.intersects(classified.risk) {
            let reason = format!(
                "{} is refused ({})",
                command.verb,
                classified.risk.names().collect::<Vec<_>>().join(", ")
            );
            self.deny(
                command,
                command_id,
                RuleId::new("redis-risk"),
                reason,
                "builtin".into(),
            );
        } else {
            self.decide(req, verb, command, command_id, flow).await?;
        }
        if self.steps.len() >= STEP_BATCH {
            self.commit().await;
        }
        Ok(())
    }

    /// Records (with the batch) a denial the proxy or policy took, and answers it in order.
    fn deny(
        &mut self,
        command: Command,
        command_id: CommandId,
        rule: RuleId,
        reason: String,
        policy_version: String,
    ) {
        let message = format!("wirewarden: {reason} (rule {rule})");
        let event = AuditEvent::new(
            Some(self.session_id),
            AuditEventKind::CommandDecided {
                command_id,
                subject: self.principal.subject.clone(),
                command,
                decision: Decision::Deny { rule, reason },
                policy_version,
            },
        );
        // A denial's record is best effort: the command is refused either way.
        self.intents.push(event);
        Metrics::add(&self.pipeline().metrics().commands_denied, 1);
        self.steps.push(Step::Refuse(message));
    }

    /// Asks policy about one command and stages what follows: its intent record and its
    /// forwarding, or its denial. A command held for review is settled before this returns.
    async fn decide(
        &mut self,
        req: Request,
        verb: Verb,
        command: Command,
        command_id: CommandId,
        flow: Option<Flow>,
    ) -> Result<()> {
        let now = Timestamp::now();
        if self.principal.is_expired_at(now) {
            // The expiry timer ends the session; a command read in the same turn is refused
            // here, on record like any denial: no policy was asked, so no policy version.
            self.deny(
                command,
                command_id,
                RuleId::new("credential-expired"),
                "the credential of this session has expired".into(),
                "builtin".into(),
            );
            return Ok(());
        }
        let decided = self
            .pipeline()
            .decide(&self.principal, &self.target, &command, now)
            .await;
        // A subscription keeps its decision, to take it again while messages arrive.
        let opened = (verb == Verb::Subscribe)
            .then(|| Box::new(Opened::new(command.clone(), &decided.grants)));
        let evaluation = decided.evaluation;
        let keys = keys_of(&command, verb == Verb::Mget);
        let charged = command.class != CommandClass::Session;
        let held = matches!(evaluation.decision, Decision::Review { .. });
        // A review settles the batch so far: what came before goes out before the hold.
        if held {
            self.commit().await;
        }
        let event = AuditEvent::new(
            Some(self.session_id),
            AuditEventKind::CommandDecided {
                command_id,
                subject: self.principal.subject.clone(),
                command: if held { command.clone() } else { command },
                // Moved, not cloned: what follows reads it back from the record.
                decision: evaluation.decision,
                policy_version: evaluation.policy_version.as_str().to_owned(),
            },
        );
        let AuditEventKind::CommandDecided { decision, .. } = &event.kind else {
            return Ok(());
        };
        let proxy = self.proxy;
        let metrics = proxy.pipeline.metrics();
        match decision {
            Decision::Allow { mask_profile, .. } => {
                // The intent is on record before anything is forwarded, or nothing is: it
                // goes with the batch, and `commit` forwards only what was recorded.
                match self.pipeline().mask_profile(
                    &self.target,
                    &self.principal,
                    mask_profile.as_deref(),
                ) {
                    // The profile the decision masks with may have key rules the session's
                    // has not: data may only move between keys it treats alike too.
                    Ok(profile)
                        if !Arc::ptr_eq(&profile, &self.profile)
                            && flow.as_ref().is_some_and(|f| crosses_mask(&profile, f)) =>
                    {
                        let policy_version = evaluation.policy_version.as_str().to_owned();
                        let AuditEventKind::CommandDecided { command, .. } = event.kind else {
                            return Ok(());
                        };
                        self.deny(
                            command,
                            command_id,
                            RuleId::new(COPY_RULE),
                            COPY_REASON.into(),
                            policy_version,
                        );
                    }
                    Ok(profile) => {
                        self.intents.push(event);
                        let intent = Some(self.intents.len() - 1);
                        // Goes with the intent, so every later command's intent follows it.
                        if let Some(renamed) = self.renamed(req.args()) {
                            self.intents.push(renamed);
                        }
                        self.steps.push(Step::Forward(Allowed {
                            req,
                            verb,
                            id: command_id,
                            profile,
                            keys,
                            charged,
                            intent,
                            opened,
                        }));
                    }
                    Err(_) => {
                        self.intents.push(event);
                        Metrics::add(&metrics.commands_denied, 1);
                        self.steps.push(Step::Refuse(
                            "wirewarden: the mask profile for this command is missing, command refused"
                                .into(),
                        ));
                    }
                }
            }
            Decision::Deny { rule, reason } => {
                let message = format!("wirewarden: {reason} (rule {rule})");
                self.intents.push(event);
                Metrics::add(&metrics.commands_denied, 1);
                self.steps.push(Step::Refuse(message));
            }
            Decision::Review {
                rule,
                reason,
                requirement,
            } => {
                let (rule, reason, requirement) =
                    (rule.clone(), reason.clone(), requirement.clone());
                if self.pipeline().record(&event).await.is_err() {
                    Metrics::add(&metrics.commands_denied, 1);
                    self.refuse("wirewarden: the audit trail is unavailable, command refused");
                    return Ok(());
                }
                Metrics::add(&metrics.commands_reviewed, 1);
                // Replies already owed go out before the hold.
                self.drain().await?;
                let command = match event.kind {
                    AuditEventKind::CommandDecided { command, .. } => command,
                    _ => return Ok(()),
                };
                match self
                    .review(&command, command_id, rule, &reason, requirement)
                    .await
                {
                    Ok(()) => {
                        if let Some(renamed) = self.renamed(req.args()) {
                            // The command is forwarded whether or not this is on record: its
                            // approval and intent are.
                            let _ = self.pipeline().record(&renamed).await;
                        }
                        self.forward(Allowed {
                            req,
                            verb,
                            id: command_id,
                            profile: self.profile.clone(),
                            keys,
                            charged,
                            intent: None,
                            // The reviewers approved it: a later decision that asks for
                            // review again does not end it.
                            opened: opened.map(|mut o| {
                                o.reviewed = true;
                                o.decided = Instant::now();
                                o
                            }),
                        });
                    }
                    Err(message) => self.refuse(&message),
                }
            }
            _ => {
                self.intents.push(event);
                Metrics::add(&metrics.commands_denied, 1);
                self.steps
                    .push(Step::Refuse("wirewarden: unsupported decision".into()));
            }
        }
        Ok(())
    }

    /// The `ApplicationChanged` record of a command about to be forwarded that renames the
    /// connection to something new, and the new name taken as the session's.
    fn renamed(&mut self, args: &[Bytes]) -> Option<AuditEvent> {
        let name = client_name_of(args)?;
        if name == self.application {
            return None;
        }
        self.application.clone_from(&name);
        Some(AuditEvent::new(
            Some(self.session_id),
            AuditEventKind::ApplicationChanged { application: name },
        ))
    }

    /// Records the batch's intents, all at once, then forwards each staged command whose
    /// intent is on record and answers the rest, in the order the client sent them.
    async fn commit(&mut self) {
        if self.steps.is_empty() && self.intents.is_empty() {
            return;
        }
        let mut intents = std::mem::take(&mut self.intents);
        // The sink records a prefix of the batch: intents from `recorded` on are not.
        let recorded = self.pipeline().record_batch(&intents).await;
        let mut steps = std::mem::take(&mut self.steps);
        for step in steps.drain(..) {
            match step {
                Step::Forward(allowed) => {
                    let on_record = allowed.intent.is_none_or(|i| i < recorded);
                    let metrics = self.pipeline().metrics();
                    if on_record {
                        Metrics::add(&metrics.commands_allowed, 1);
                        self.forward(allowed);
                    } else {
                        Metrics::add(&metrics.commands_denied, 1);
                        self.refuse("wirewarden: the audit trail is unavailable, command refused");
                    }
                }
                Step::Refuse(message) => self.refuse(&message),
                Step::Reply(reply) => self.push_local(reply),
            }
        }
        intents.clear();
        self.intents = intents;
        self.steps = steps;
    }

    /// Sends an allowed command whose intent is on record upstream and sets up what its
    /// reply is owed.
    fn forward(&mut self, allowed: Allowed) {
        let Allowed {
            req,
            verb,
            id,
            profile,
            keys,
            charged,
            intent: _,
            opened,
        } = allowed;
        let poisoned_exec = verb == Verb::Exec && self.client_multi && self.multi_poisoned;
        let tag = self.next_tag;
        self.next_tag += 1;
        let (forward, rewrite) = if poisoned_exec {
            // The server must drop the transaction too: DISCARD, answered as the server
            // answers an EXEC after a command rejected at queue time.
            (
                Request::from_args([Bytes::from_static(b"DISCARD")]),
                Some(Bytes::from_static(
                    b"-EXECABORT Transaction discarded because of previous errors.\r\n",
                )),
            )
        } else {
            (req, None)
        };
        match verb {
            Verb::Multi => {
                self.client_multi = true;
                self.multi_poisoned = false;
            }
            Verb::Exec | Verb::Discard | Verb::Reset => {
                self.client_multi = false;
                self.multi_poisoned = false;
            }
            Verb::Mget | Verb::Subscribe | Verb::Unsubscribe | Verb::Other => {}
        }
        let drops_queue = matches!(verb, Verb::Exec | Verb::Discard | Verb::Reset);
        let expects = self.session.on_request(forward.args(), tag);
        self.to_upstream.extend_from_slice(forward.raw());
        let mut p = Pending {
            id,
            keys,
            profile,
            started: Instant::now(),
            elements: 0,
            bytes: 0,
            masked: MaskedCounts::new(),
            error: None,
            recording: String::new(),
            truncated: false,
            drops_queue,
            charged,
            opened,
        };
        if poisoned_exec {
            p.error = Some("EXECABORT: a queued command was denied".into());
        }
        if expects {
            self.pending.insert(tag, p);
            self.slots.push_back(Slot::Upstream { tag, rewrite });
        } else {
            self.completed.push(p);
        }
    }

    async fn reauth(&mut self, args: &[Bytes]) -> Bytes {
        match parse_login(args) {
            Parsed::Login(login) => self.reauth_login(&login).await,
            Parsed::Invalid(r) => error_reply(&r[1..]),
            Parsed::PlainHello => Bytes::from_static(WRONGPASS),
        }
    }

    /// A mid-session `AUTH`: only as the same identity, whose fresh credential then renews
    /// the session's (its groups, attributes, and the expiry at which the session ends),
    /// on record as `CredentialRenewed` first; refused if that cannot be recorded.
    ///
    /// Another identity's valid credential is answered exactly as a wrong one
    /// (`-WRONGPASS`), so the session is no oracle for which tokens are valid; the trail
    /// records what it was. Failures count against [`RedisTarget::max_auth_failures`], as
    /// before login: the session ends at the limit, once the replies owed before it are
    /// sent.
    async fn reauth_login(&mut self, login: &Login) -> Bytes {
        // What came before the AUTH was decided under the old credential: it is settled
        // (recorded and forwarded) first, so the trail keeps the order.
        self.commit().await;
        let verified = self.proxy.verify(login, None).await;
        if let Ok(p) = &verified
            && p.subject != self.principal.subject
        {
            let reason = format!(
                "a valid credential of {} on a session of {}: a session keeps the identity it authenticated with (answered as a wrong password)",
                p.subject, self.principal.subject
            );
            let mut event = self
                .proxy
                .auth_failed(None, login.user.as_deref(), "token", reason);
            event.session = Some(self.session_id);
            let _ = self.pipeline().record(&event).await;
        }
        match verified {
            Ok(p) if p.subject == self.principal.subject => {
                let renewed = AuditEvent::new(
                    Some(self.session_id),
                    AuditEventKind::CredentialRenewed {
                        principal: p.clone(),
                    },
                );
                if self.pipeline().record(&renewed).await.is_err() {
                    return error_reply("ERR wirewarden: the audit trail is unavailable");
                }
                self.expiry = crate::listen::credential_expiry(p.expires_at);
                self.principal = p;
                Bytes::from_static(b"+OK\r\n")
            }
            Ok(_) | Err(_) => {
                self.auth_failures += 1;
                if self.auth_failures >= self.proxy.config.max_auth_failures {
                    // The replies owed before this AUTH go out first; the refusal follows
                    // them and the session ends.
                    let _ = self.drain().await;
                    self.ended = Some(SessionEndReason::Error {
                        message: format!("{} failed AUTH attempts", self.auth_failures),
                    });
                }
                Bytes::from_static(WRONGPASS)
            }
        }
    }

    async fn review(
        &mut self,
        command: &Command,
        command_id: CommandId,
        rule: RuleId,
        reason: &str,
        requirement: wirewarden_core::ReviewRequirement,
    ) -> std::result::Result<(), String> {
        let pipeline = &self.proxy.pipeline;
        let held = HeldCommand {
            principal: &self.principal,
            target: &self.target,
            session: self.session_id,
            command,
            command_id,
        };
        let refusal = |r: ReviewRefusal| match r {
            ReviewRefusal::Unavailable(_) => format!("wirewarden: command needs review but {r}"),
            ReviewRefusal::AuditUnavailable => {
                "wirewarden: the audit trail is unavailable, command refused".to_owned()
            }
            _ => format!("wirewarden: {r}"),
        };
        let pending = pipeline
            .request_review(&held, rule, reason, requirement)
            .await
            .map_err(refusal)?;
        // A certificate revoked, or a credential expiring, while its command waits ends the
        // wait: the command does not run, and the session ends once the refusal is sent.
        // The client is read meanwhile (what it sends is kept in `client.buf`, which the
        // relay decodes next): one that leaves gives up the wait. Either way the review is
        // cancelled.
        tokio::select! {
            approved = pipeline.await_review(&held, pending) => approved.map_err(refusal),
            reason = self.certificate.refused() => {
                self.ended = Some(SessionEndReason::CredentialRevoked { reason });
                Err("wirewarden: the client certificate of this session is no longer accepted".into())
            }
            () = &mut self.expiry => {
                self.ended = Some(SessionEndReason::CredentialExpired);
                Err("wirewarden: the credential of this session expired".into())
            }
            () = crate::listen::client_gone(&mut self.client.io, &mut self.client.buf) => {
                self.ended = Some(SessionEndReason::ClientClosed);
                Err("wirewarden: the client left while the command waited for review".into())
            }
        }
    }

    // === replies ===

    async fn on_upstream_bytes(&mut self) -> Result<()> {
        if let Some(why) = &self.upstream_invalid {
            // Answered and on record when it came: nothing the upstream sends after an
            // invalid reply is read.
            return Err(upstream_invalid_error(why));
        }
        match self.relay_replies().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.on_invalid_reply(e).await),
        }
    }

    /// Relays every complete reply in the upstream buffer, in order. An error: the upstream
    /// sent a frame the decoder refuses, or one the correlator cannot tie to a command; it
    /// has not been relayed, nor anything after it.
    async fn relay_replies(&mut self) -> std::result::Result<(), wirewarden_redis::Error> {
        loop {
            let version = self.session.reply_version();
            let Some(frame) = self.replies.decode(&mut self.up_buf, version)? else {
                return Ok(());
            };
            match self.session.on_reply(&frame)? {
                Correlated::Reply {
                    tag,
                    queued,
                    complete,
                    confirms,
                } => self.on_reply(tag, &frame, version, queued, complete, confirms)?,
                Correlated::Exec {
                    tag,
                    results,
                    aborted,
                } => self.on_exec(tag, &frame, version, &results, aborted)?,
                Correlated::OutOfBand(OutOfBand::Message) => {
                    self.on_message(&frame, version).await;
                    if self.ended.is_some() {
                        // Policy withdrew a subscription: nothing more goes out.
                        return Ok(());
                    }
                }
                Correlated::OutOfBand(_) => {
                    if !self.subscriptions.is_empty()
                        && let Ok(v) = frame.value()
                    {
                        // A server-initiated `unsubscribe` push ends a subscription.
                        self.subscriptions.confirmed(&v, None);
                    }
                    let profile = self.profile.clone();
                    let mut counts = MaskedCounts::new();
                    match self.masked(&profile, &Keys::None, &frame, version, &mut counts) {
                        Ok((bytes, _)) => self.to_client.extend_from_slice(&bytes),
                        // A message that cannot be masked is dropped: an error here would
                        // be read as the reply to a command.
                        Err(_) => Metrics::add(&self.pipeline().metrics().results_withheld, 1),
                    }
                    Metrics::add(&self.pipeline().metrics().values_masked, counts.total());
                }
                _ => {
                    return Err(wirewarden_redis::Error::Unexpected {
                        what: "reply nothing was waiting for",
                        offset: 0,
                    });
                }
            }
        }
    }

    /// The upstream sent a frame the decoder refuses or a reply that cannot be tied to its
    /// command: from here on no reply can be, so the session ends. Nothing of that frame or
    /// after it is relayed; the replies relayed before it were whole and placed.
    ///
    /// Every command still owed a reply is answered, in order, with an `-ERR` (and the
    /// gateway's own replies queued between them go out in their places), then the
    /// connection closes. One error per owed command rather than a single line: a
    /// pipelining client reads each of its replies in turn, and an `-ERR` for each tells it
    /// these commands failed, where a short stream reads as a dropped connection that a
    /// client may retry on a fresh one (the commands may have run). When nothing is owed (a
    /// frame nobody asked for, a subscriber's message) one `-ERR` still goes out before the
    /// close, as the server itself writes an error to a client it drops. Commands staged and
    /// not yet written upstream are not sent: the upstream gets nothing more.
    async fn on_invalid_reply(&mut self, e: wirewarden_redis::Error) -> Error {
        self.protocol_event(Direction::FromUpstream, &e).await;
        let why = e.to_string();
        self.up_buf.clear();
        self.to_upstream.clear();
        let reply = error_reply(INVALID_REPLY);
        let outcome =
            format!("no reply: {INVALID_REPLY_OUTCOME} ({why}); the command may have run");
        let mut answered = false;
        while let Some(slot) = self.slots.pop_front() {
            match slot {
                Slot::Upstream { tag, .. } => {
                    self.to_client.extend_from_slice(&reply);
                    answered = true;
                    if let Some(mut p) = self.pending.remove(&tag) {
                        p.error.get_or_insert_with(|| outcome.clone());
                        p.bytes += reply.len() as u64;
                        self.completed.push(p);
                    }
                }
                Slot::Local(b) => self.to_client.extend_from_slice(&b),
            }
        }
        if !answered {
            self.to_client.extend_from_slice(&reply);
        }
        // Commands the server queued: their results would have come with `EXEC`.
        self.drop_queue(&outcome);
        // Best effort: the client may be gone too; the session ends either way.
        let _ = self.flush().await;
        let _ = self.client.io.shutdown().await;
        let _ = self.up.shutdown().await;
        let error = upstream_invalid_error(&why);
        self.upstream_invalid = Some(why);
        error
    }

    /// Relays a published message under its subscription's decision: taken again first if
    /// it is due, masked with its profile, recorded as a `Transcript` of the command that
    /// subscribed, and charged to the budgets. A message of no subscription the gateway saw
    /// confirmed goes out under the session's profile, recorded without a command.
    async fn on_message(&mut self, frame: &Frame, version: RespVersion) {
        if self.ended.is_some() {
            // The session is ending (a subscription withdrawn while a command waited for
            // review, say): no message goes out any more.
            return;
        }
        let raw = match frame.value() {
            Ok(v) => v,
            Err(_) => {
                Metrics::add(&self.pipeline().metrics().results_withheld, 1);
                return;
            }
        };
        let key = Subscriptions::key_of_message(&raw);
        let every = self.proxy.config.stream_recheck;
        let due = key
            .as_ref()
            .and_then(|k| self.subscriptions.get_mut(k))
            .is_some_and(|s| s.opened.due(Instant::now(), Timestamp::now(), every));
        if let (true, Some(key)) = (due, key.as_ref()) {
            self.recheck(key).await;
            if self.ended.is_some() {
                return;
            }
        }
        let (id, profile) = match key.as_ref().and_then(|k| self.subscriptions.get_mut(k)) {
            Some(s) => (Some(s.id), s.profile.clone()),
            None => (None, self.profile.clone()),
        };
        let mut counts = MaskedCounts::new();
        let proxy = self.proxy;
        let metrics = proxy.pipeline.metrics();
        match mask::value(&profile, &Keys::None, &raw, version, &mut counts) {
            Ok(masked) => {
                let (bytes, shown) = match &masked {
                    Some(m) => (m.to_bytes(), m),
                    None => (frame.raw().clone(), &raw),
                };
                self.to_client.extend_from_slice(&bytes);
                self.stream_charge.0 += 1;
                self.stream_charge.1 += bytes.len() as u64;
                let mut text = String::new();
                let truncated = mask::render(shown, &mut text, self.proxy.config.record_limit);
                self.stream_records.push(AuditEvent::new(
                    Some(self.session_id),
                    AuditEventKind::Transcript {
                        command_id: id,
                        direction: Direction::FromUpstream,
                        elapsed_us: micros(self.started),
                        text,
                        truncated,
                    },
                ));
                Metrics::add(&metrics.values_masked, counts.total());
            }
            // A message that cannot be masked is dropped: an error here would be read as
            // the reply to a command.
            Err(_) => Metrics::add(&metrics.results_withheld, 1),
        }
    }

    /// Asks policy again about the command that opened the subscription `key`. Still allowed: its messages go out under the new decision's profile. Refused
    /// (or held for review, unless a reviewer approved the subscription): the client is
    /// told why and the session ends, as the server ends a client whose permissions were
    /// withdrawn.
    async fn recheck(&mut self, key: &stream::Key) {
        let Some(s) = self.subscriptions.get_mut(key) else {
            return;
        };
        let (id, command) = (s.id, s.opened.command.clone());
        let decided = self
            .pipeline()
            .decide(&self.principal, &self.target, &command, Timestamp::now())
            .await;
        let proxy = self.proxy;
        let Some(s) = self.subscriptions.get_mut(key) else {
            return;
        };
        match s
            .opened
            .redecided(&proxy.pipeline, &self.target, &self.principal, decided)
        {
            Ok(profile) => {
                // The command's other channels run under the same decision.
                let opened = s.opened.clone();
                let profile = profile.unwrap_or_else(|| s.profile.clone());
                for s in self.subscriptions.of_command(id) {
                    s.opened = opened.clone();
                    s.profile = profile.clone();
                }
            }
            Err((rule, reason)) => {
                let shown =
                    format!("ERR wirewarden: subscription withdrawn: {reason} (rule {rule})");
                self.to_client.extend_from_slice(&error_reply(&shown));
                Metrics::add(&self.pipeline().metrics().commands_denied, 1);
                self.ended = Some(SessionEndReason::SubscriptionWithdrawn {
                    command_id: id,
                    rule,
                    reason,
                });
            }
        }
    }

    /// Arms (or moves) the timer that wakes the session when a subscription's decision
    /// falls due without a message; disarms it once there are none.
    fn arm_stream_wake(&mut self) {
        match self
            .subscriptions
            .next_due(self.proxy.config.stream_recheck)
        {
            None => self.stream_wake = None,
            Some(at) => crate::stream::arm(&mut self.stream_wake, at),
        }
    }

    /// Takes again the decisions of the subscriptions that fell due with no message.
    async fn recheck_idle(&mut self) {
        let every = self.proxy.config.stream_recheck;
        let due = self
            .subscriptions
            .due(Instant::now(), Timestamp::now(), every);
        for key in due {
            self.recheck(&key).await;
            if self.ended.is_some() {
                break;
            }
        }
    }

    /// The bytes to send for `frame` masked with `keys`, and its value.
    fn masked(
        &self,
        profile: &Profile,
        keys: &Keys,
        frame: &Frame,
        version: RespVersion,
        counts: &mut MaskedCounts,
    ) -> std::result::Result<(Bytes, Value), Unmaskable> {
        let v = frame.value().map_err(|e| Unmaskable(e.to_string()))?;
        match mask::value(profile, keys, &v, version, counts)? {
            None => Ok((frame.raw().clone(), v)),
            Some(m) => Ok((m.to_bytes(), m)),
        }
    }

    fn front_is(&self, tag: u64) -> std::result::Result<(), wirewarden_redis::Error> {
        match self.slots.front() {
            Some(Slot::Upstream { tag: t, .. }) if *t == tag => Ok(()),
            _ => Err(wirewarden_redis::Error::Unexpected {
                what: "reply out of order",
                offset: 0,
            }),
        }
    }

    /// Pops the front slot and sends the local replies behind it.
    fn complete_front(&mut self) {
        self.slots.pop_front();
        while let Some(Slot::Local(_)) = self.slots.front() {
            if let Some(Slot::Local(b)) = self.slots.pop_front() {
                self.to_client.extend_from_slice(&b);
            }
        }
    }

    fn drop_queue(&mut self, why: &str) {
        for t in std::mem::take(&mut self.queued) {
            if let Some(mut p) = self.pending.remove(&t) {
                p.error.get_or_insert_with(|| why.to_owned());
                self.completed.push(p);
            }
        }
    }

    /// Relays the reply (or one of the replies) of the command `tag`. `confirms`: the
    /// correlator took it for a pub/sub confirmation, the only kind of reply that opens or
    /// ends a subscription.
    fn on_reply(
        &mut self,
        tag: u64,
        frame: &Frame,
        version: RespVersion,
        queued: bool,
        complete: bool,
        confirms: bool,
    ) -> std::result::Result<(), wirewarden_redis::Error> {
        self.front_is(tag)?;
        let rewrite = match self.slots.front() {
            Some(Slot::Upstream { rewrite, .. }) => rewrite.clone(),
            _ => None,
        };
        if queued {
            // `+QUEUED`: the result comes with EXEC.
            self.to_client.extend_from_slice(frame.raw());
            self.queued.push(tag);
            self.complete_front();
            return Ok(());
        }
        let limit = self.proxy.config.record_limit;
        let Some(mut p) = self.pending.remove(&tag) else {
            // A slot and its command go in together and leave together: a reply with no
            // command to mask it as is out of step, and never relayed unread.
            return Err(wirewarden_redis::Error::OutOfStep {
                what: "a reply to no recorded command",
            });
        };
        if let Some(bytes) = rewrite {
            self.to_client.extend_from_slice(&bytes);
            p.bytes += bytes.len() as u64;
        } else {
            let profile = p.profile.clone();
            // Only what the correlator tied to a pending (un)subscribe: an ordinary
            // command's reply can read like a confirmation (`COMMAND GETKEYS MSET
            // unsubscribe 1 news 1`) and must not end a subscription's record, whose
            // messages would then go out without their decision taken again.
            if confirms && let Ok(v) = frame.value() {
                // A confirmation, read before masking: messages name the channel as sent.
                let opened = p.opened.as_deref().map(|o| (p.id, &profile, o));
                self.subscriptions.confirmed(&v, opened);
            }
            match self.masked(&profile, &p.keys, frame, version, &mut p.masked) {
                Ok((bytes, v)) => {
                    self.to_client.extend_from_slice(&bytes);
                    p.bytes += bytes.len() as u64;
                    p.elements += mask::elements(&v);
                    if v.is_error() {
                        p.error = Some(render_error(&v));
                    }
                    record(&mut p, &v, limit);
                }
                Err(Unmaskable(why)) => {
                    let reply =
                        error_reply("ERR wirewarden: reply withheld, a value could not be masked");
                    self.to_client.extend_from_slice(&reply);
                    p.error = Some(format!("withheld: {why}"));
                    Metrics::add(&self.pipeline().metrics().results_withheld, 1);
                }
            }
        }
        if p.drops_queue {
            // DISCARD, RESET, or EXEC without a transaction: nothing queued will run.
            self.drop_queue("transaction discarded");
        }
        if complete {
            self.completed.push(p);
            self.complete_front();
        } else {
            self.pending.insert(tag, p);
        }
        Ok(())
    }

    fn on_exec(
        &mut self,
        tag: u64,
        frame: &Frame,
        version: RespVersion,
        results: &[u64],
        aborted: bool,
    ) -> std::result::Result<(), wirewarden_redis::Error> {
        self.front_is(tag)?;
        let limit = self.proxy.config.record_limit;
        self.queued.retain(|t| !results.contains(t));
        if aborted {
            self.drop_queue("transaction aborted");
            let _ = self.on_reply(tag, frame, version, false, true, false);
            return Ok(());
        }
        let elements = frame.elements()?.unwrap_or_default();
        if elements.len() != results.len() {
            // The correlator refuses such a reply; an element without its command would
            // otherwise be masked without its key.
            return Err(wirewarden_redis::Error::OutOfStep {
                what: "EXEC reply with more or fewer elements than commands queued",
            });
        }
        let mut out: Vec<Bytes> = Vec::with_capacity(elements.len());
        let mut changed = false;
        for (i, raw) in elements.iter().enumerate() {
            let t = results.get(i).copied();
            let mut p = t.and_then(|t| self.pending.remove(&t));
            let (profile, keys) = match &p {
                Some(p) => (p.profile.clone(), p.keys.clone()),
                None => (self.profile.clone(), Keys::None),
            };
            let mut counts = MaskedCounts::new();
            let el = Value::decode(raw, version, &Limits::default())
                .ok()
                .flatten()
                .map(|(v, _)| v);
            let result = match &el {
                Some(v) => mask::value(&profile, &keys, v, version, &mut counts)
                    .map(|m| m.map_or((raw.clone(), v.clone()), |m| (m.to_bytes(), m))),
                None => Err(Unmaskable("element does not decode".into())),
            };
            let bytes = match result {
                Ok((bytes, v)) => {
                    if let Some(p) = p.as_mut() {
                        p.elements += mask::elements(&v);
                        if v.is_error() {
                            p.error = Some(render_error(&v));
                        }
                        record(p, &v, limit);
                    }
                    bytes
                }
                Err(Unmaskable(why)) => {
                    Metrics::add(&self.pipeline().metrics().results_withheld, 1);
                    if let Some(p) = p.as_mut() {
                        p.error = Some(format!("withheld: {why}"));
                    }
                    error_reply("ERR wirewarden: reply withheld, a value could not be masked")
                }
            };
            if bytes != *raw {
                changed = true;
            }
            if let Some(mut p) = p {
                p.bytes += bytes.len() as u64;
                p.masked.merge(&counts);
                self.completed.push(p);
            }
            out.push(bytes);
        }
        let mut reply = BytesMut::new();
        if changed {
            reply.extend_from_slice(format!("*{}\r\n", out.len()).as_bytes());
            for b in &out {
                reply.extend_from_slice(b);
            }
        } else {
            reply.extend_from_slice(frame.raw());
        }
        self.to_client.extend_from_slice(&reply);
        if let Some(mut p) = self.pending.remove(&tag) {
            p.elements += out.len() as u64;
            p.bytes += reply.len() as u64;
            self.completed.push(p);
        }
        self.drop_queue("not executed");
        self.complete_front();
        Ok(())
    }

    /// Queues a command's outcome records for the session's audit writer: they need not be
    /// on disk before the next reply is relayed, only intents must be before forwarding.
    fn record_completion(&mut self, p: Pending) {
        let metrics = self.pipeline().metrics();
        Metrics::add(&metrics.rows, p.elements);
        Metrics::add(&metrics.values_masked, p.masked.total());
        let duration_us = micros(p.started);
        // The reply as the client saw it travels in the completion: one record per outcome.
        let reply = (!p.recording.is_empty()).then(|| Recording::new(p.recording, p.truncated));
        let completed = AuditEvent::new(
            Some(self.session_id),
            AuditEventKind::CommandCompleted {
                command_id: p.id,
                rows: p.elements,
                bytes: p.bytes,
                masked: p.masked,
                duration_us,
                error: p.error,
                reply,
            },
        );
        self.outcome_batch.push(completed);
    }
}

fn render_error(v: &Value) -> String {
    let mut s = String::new();
    mask::render(v, &mut s, 512);
    s
}

fn record(p: &mut Pending, v: &Value, limit: usize) {
    if p.recording.len() >= limit {
        p.truncated = true;
        return;
    }
    if !p.recording.is_empty() {
        p.recording.push('\n');
    }
    // Rendered in place: `render` keeps the whole recording within `limit`.
    if mask::render(v, &mut p.recording, limit) {
        p.truncated = true;
    }
}

/// The rule of the built-in refusal of a command that would copy data out of its mask.
const COPY_RULE: &str = "redis-copy-across-mask";
const COPY_REASON: &str = "the command would copy values into a key the mask profile treats differently; copy only between keys the same key rule covers";

/// Whether `flow` would move a value out of the key rule that masks it under `profile`: some
/// source key has a key rule, and some destination is not covered by that same rule (a key
/// with another rule, or none, would then hand the value out masked differently or in
/// clear). Sources without a rule constrain nothing: their values are masked by content
/// wherever they go, and a destination with a rule masks them more.
fn crosses_mask(profile: &Profile, flow: &Flow) -> bool {
    let rule = |k: &Bytes| profile.rule_for(&Field::RedisKey(k));
    let mut ruled = flow.sources.iter().filter_map(rule).peekable();
    if ruled.peek().is_none() {
        return false;
    }
    ruled.any(|source| {
        flow.destinations
            .iter()
            .any(|d| !rule(d).is_some_and(|r| std::ptr::eq(r, source)))
    })
}

/// The key the values of a reply belong to: the one key of a single-key command, each key of
/// `MGET`, or none.
fn keys_of(command: &Command, mget: bool) -> Keys {
    let mut keys = command.objects_of(ObjectKind::Key);
    let key = |o: &wirewarden_core::ObjectRef| Bytes::copy_from_slice(o.name.as_bytes());
    match (keys.next(), keys.next()) {
        (Some(one), None) => Keys::One(key(one)),
        (Some(first), Some(second)) if mget => {
            Keys::PerElement([first, second].into_iter().chain(keys).map(key).collect())
        }
        (Some(first), Some(second)) => {
            Keys::Several([first, second].into_iter().chain(keys).map(key).collect())
        }
        (None, _) => Keys::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirewarden_core::{AuthMethod, Protocol};
    use wirewarden_policy::{PolicyEngine, Request as PolicyRequest, RuleEngine};
    use wirewarden_redis::COMMANDS;

    /// The summary of what a client was refused before login names known commands only,
    /// at most [`Refusals::NAMED`] of them, and counts the rest.
    #[test]
    fn refusals_before_login_name_known_commands_and_count_the_rest() {
        let mut r = Refusals::default();
        assert!(r.is_empty());
        r.refused(b"get");
        r.refused(b"GET");
        r.refused(b"tok-typed-as-a-command");
        assert_eq!(
            r.summary(),
            "3 requests refused before authentication: GET x2, 1 other"
        );
        let mut r = Refusals::default();
        for name in COMMANDS.iter().take(Refusals::NAMED + 2) {
            r.refused(name.name.as_bytes());
        }
        r.refused(b"\r\nnot-a-command");
        r.protocol_error(&wirewarden_redis::Error::TooManyElements {
            count: 11,
            limit: 10,
        });
        let summary = r.summary();
        assert!(
            summary.starts_with("12 requests refused before authentication: "),
            "{summary}"
        );
        assert_eq!(summary.matches(", ").count(), Refusals::NAMED, "{summary}");
        assert!(
            summary.ends_with(
                ", 3 other; a request refused with a protocol error: invalid multibulk length: 11 elements exceed the limit of 10"
            ),
            "{summary}"
        );
        assert!(!summary.contains("not-a-command"), "{summary}");
    }

    #[test]
    fn tag_hashes_are_distinct_and_spread_over_the_high_bits() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<TagHasher>::default();
        let hashes: Vec<u64> = (0..100_000u64).map(|t| build.hash_one(t)).collect();
        let distinct: std::collections::HashSet<_> = hashes.iter().collect();
        assert_eq!(distinct.len(), hashes.len());
        // The table's control bytes come from the top seven bits: a run of tags uses them all.
        let top: std::collections::HashSet<_> = hashes[..1024].iter().map(|h| h >> 57).collect();
        assert_eq!(top.len(), 128);
        let mut map: TagMap<u64> = TagMap::default();
        for t in 0..10_000 {
            map.insert(t, t * 2);
        }
        for t in (0..10_000).step_by(3) {
            assert_eq!(map.remove(&t), Some(t * 2));
        }
        assert_eq!(map.len(), 10_000 - 3334);
    }

    #[test]
    fn spare_batches_come_back_empty_and_are_bounded() {
        let spares = SpareBatches::default();
        assert_eq!(spares.take().capacity(), 0, "none given back yet");
        let event = || {
            AuditEvent::new(
                None,
                AuditEventKind::ProtocolError {
                    direction: Direction::FromClient,
                    error: "x".into(),
                },
            )
        };
        for _ in 0..SpareBatches::KEPT + 2 {
            let mut batch = Vec::with_capacity(8);
            batch.push(event());
            spares.give_back(batch);
        }
        // A list grown past what a flush needs is let go.
        spares.give_back(Vec::with_capacity(SpareBatches::KEPT_CAPACITY + 1));
        let mut kept = 0;
        loop {
            let batch = spares.take();
            if batch.capacity() == 0 {
                break;
            }
            assert!(batch.is_empty());
            assert_eq!(batch.capacity(), 8);
            kept += 1;
        }
        assert_eq!(kept, SpareBatches::KEPT);
    }

    fn args_for(spec: &wirewarden_redis::CommandSpec, container: Option<&str>) -> Vec<Bytes> {
        let mut args: Vec<Bytes> = Vec::new();
        match container {
            Some(c) => {
                args.push(Bytes::copy_from_slice(c.as_bytes()));
                let sub = spec.name.rsplit('|').next().unwrap_or_default();
                args.push(Bytes::copy_from_slice(sub.as_bytes()));
            }
            None => args.push(Bytes::copy_from_slice(spec.name.as_bytes())),
        }
        let want = usize::try_from(spec.arity.unsigned_abs()).unwrap_or(2);
        while args.len() < want {
            args.push(Bytes::from_static(b"k"));
        }
        args
    }

    #[test]
    fn default_policy_denies_every_risky_command() {
        let engine = RuleEngine::from_toml(&format!(
            "{DEFAULT_REDIS_POLICY}\n[[rule]]\nid = \"agents\"\nmax_class = \"write\"\naction = \"allow\"\n"
        ))
        .unwrap();
        let agent = Principal::new(
            "a",
            AuthMethod::External {
                mechanism: "t".into(),
            },
        )
        .unwrap();
        let target = Target::new("cache", Protocol::Redis).unwrap();
        let now = Timestamp::now();
        let risky = Risk::of(&[
            Risk::SCRIPTING,
            Risk::ADMIN,
            Risk::DANGEROUS,
            Risk::UNDECLARED_KEYS,
            Risk::WHOLE_KEYSPACE,
            Risk::WHOLE_SERVER,
            Risk::SERIALIZED,
            Risk::REMOTE,
        ]);
        let mut checked = 0;
        for top in COMMANDS {
            let mut specs: Vec<(Option<&str>, &wirewarden_redis::CommandSpec)> = vec![(None, top)];
            specs.extend(top.subcommands.iter().map(|s| (Some(top.name), s)));
            for (container, spec) in specs {
                if container.is_none() && !spec.subcommands.is_empty() {
                    continue;
                }
                let c = classify(&args_for(spec, container));
                if !c.risk.intersects(risky) {
                    continue;
                }
                checked += 1;
                let d = engine
                    .evaluate(&PolicyRequest::new(&agent, &target, &c.command, now))
                    .decision;
                assert!(
                    !d.is_allow(),
                    "{} ({:?}) is allowed by the default policy",
                    c.command.verb,
                    c.risk
                );
            }
        }
        assert!(checked > 50, "{checked}");
        for ok in ["GET k", "SET k v", "HGETALL k", "PING", "MULTI", "EXEC"] {
            let args: Vec<Bytes> = ok
                .split(' ')
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect();
            let c = classify(&args);
            let d = engine
                .evaluate(&PolicyRequest::new(&agent, &target, &c.command, now))
                .decision;
            assert!(d.is_allow(), "{ok}: {d:?}");
        }
    }

    #[test]
    fn client_names_are_read_as_the_server_takes_them() {
        let a = |s: &str| -> Vec<Bytes> {
            s.split(' ')
                .map(|w| Bytes::copy_from_slice(w.replace('_', " ").as_bytes()))
                .collect()
        };
        let named = |n: &str| Some(Some(n.to_owned()));
        assert_eq!(client_name_of(&a("CLIENT SETNAME run=1")), named("run=1"));
        assert_eq!(client_name_of(&a("client setname run=1")), named("run=1"));
        assert_eq!(
            client_name_of(&[
                Bytes::from_static(b"CLIENT"),
                Bytes::from_static(b"SETNAME"),
                Bytes::new()
            ]),
            Some(None)
        );
        assert_eq!(
            client_name_of(&a("CLIENT SETNAME a_b")),
            None,
            "spaces are refused"
        );
        assert_eq!(client_name_of(&a("CLIENT GETNAME")), None);
        assert_eq!(client_name_of(&a("HELLO 3 SETNAME me")), named("me"));
        assert_eq!(
            client_name_of(&a("HELLO 2 AUTH u p SETNAME me")),
            named("me")
        );
        assert_eq!(
            client_name_of(&a("HELLO 3 SETNAME me AUTH u p")),
            named("me")
        );
        assert_eq!(client_name_of(&a("HELLO 3")), None);
        assert_eq!(client_name_of(&a("HELLO 3 BOGUS me")), None);
        assert_eq!(client_name_of(&a("HELLO 3 SETNAME")), None);
        let long = format!("CLIENT SETNAME {}", "x".repeat(APPLICATION_MAX + 10));
        assert_eq!(
            client_name_of(&a(&long)).flatten().map(|n| n.len()),
            Some(APPLICATION_MAX)
        );
    }

    #[test]
    fn logins_are_parsed_like_the_server() {
        let a = |s: &str| -> Vec<Bytes> {
            s.split(' ')
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect()
        };
        let Parsed::Login(l) = parse_login(&a("AUTH tok")) else {
            panic!()
        };
        assert_eq!((l.user, l.password.as_str()), (None, "tok"));
        let Parsed::Login(l) = parse_login(&a("HELLO 3 AUTH u tok SETNAME me")) else {
            panic!()
        };
        assert_eq!(l.user.as_deref(), Some("u"));
        assert_eq!(l.hello.unwrap(), a("HELLO 3 SETNAME me"));
        assert!(matches!(parse_login(&a("HELLO 3")), Parsed::PlainHello));
        assert!(matches!(
            parse_login(&a("HELLO 4 AUTH u p")),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse_login(&a("AUTH a b c")), Parsed::Invalid(_)));
        assert!(!unreadable_login(&a("AUTH tok")));
        let bad = |parts: &[&[u8]]| -> Vec<Bytes> {
            parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
        };
        for args in [
            bad(&[b"AUTH", b"\xfftok"]),
            bad(&[b"AUTH", b"\xffu", b"tok"]),
            bad(&[b"HELLO", b"3", b"AUTH", b"u", b"\xc3("]),
        ] {
            assert!(unreadable_login(&args), "{args:?}");
        }
    }

    /// Whether `args` parse to a login whose credential is not UTF-8.
    fn unreadable_login(args: &[Bytes]) -> bool {
        matches!(
            parse_login(args),
            Parsed::Login(Login {
                unreadable: true,
                ..
            })
        )
    }
}
