//! Authentication, IO-free: the client side used to log in upstream (SCRAM-SHA-256 with
//! optional `tls-server-end-point` channel binding, md5, cleartext) and the server side
//! used to authenticate clients (SCRAM-SHA-256 and -PLUS against a stored verifier, and the
//! cleartext exchange that carries a token as the password over TLS).
//!
//! SCRAM cannot be relayed: the proof binds both nonces (and, with -PLUS, the TLS
//! certificate of each hop), so a gateway runs the server side towards its client and the
//! client side towards the upstream, each on its own.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use postgres_protocol::authentication::sasl::{self, ScramSha256};
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;

use crate::backend::{Authentication, BackendMessage};
use crate::error::{Error, Result};
use crate::frontend::{AuthContext, FrontendMessage};
use crate::limits::Limits;

/// The SCRAM mechanism without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The SCRAM mechanism with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn proto(reason: &'static str) -> Error {
    Error::AuthenticationProtocol { reason }
}

/// The `tls-server-end-point` channel binding data of a certificate (RFC 5929): its hash
/// with the certificate's signature hash algorithm, SHA-256 for MD5 and SHA-1.
pub fn tls_server_end_point(cert_der: &[u8]) -> Result<Vec<u8>> {
    let bad = || proto("cannot read the certificate's signature algorithm");
    let (tag, cert, _) = der_tlv(cert_der).ok_or_else(bad)?;
    if tag != 0x30 {
        return Err(bad());
    }
    let (_, _, rest) = der_tlv(cert).ok_or_else(bad)?; // tbsCertificate
    let (tag, alg, _) = der_tlv(rest).ok_or_else(bad)?; // signatureAlgorithm
    if tag != 0x30 {
        return Err(bad());
    }
    let (tag, oid, _) = der_tlv(alg).ok_or_else(bad)?;
    if tag != 0x06 {
        return Err(bad());
    }
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let hash = match oid {
        o if o
            .strip_prefix(RSA)
            .is_some_and(|s| matches!(s, [4] | [5] | [11] | [14])) =>
        {
            256
        }
        o if o.strip_prefix(RSA) == Some(&[12]) => 384,
        o if o.strip_prefix(RSA) == Some(&[13]) => 512,
        o if o
            .strip_prefix(ECDSA)
            .is_some_and(|s| matches!(s, [1] | [3, 2] | [3, 1])) =>
        {
            256
        }
        o if o.strip_prefix(ECDSA) == Some(&[3, 3]) => 384,
        o if o.strip_prefix(ECDSA) == Some(&[3, 4]) => 512,
        _ => {
            return Err(Error::UnsupportedAuthentication {
                method: "tls-server-end-point for this certificate signature algorithm".into(),
            });
        }
    };
    Ok(match hash {
        384 => Sha384::digest(cert_der).to_vec(),
        512 => Sha512::digest(cert_der).to_vec(),
        _ => Sha256::digest(cert_der).to_vec(),
    })
}

/// One DER element: (tag, contents, rest).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l, mut b) = b.split_first()?;
    let len = if l < 0x80 {
        usize::from(l)
    } else {
        let n = usize::from(l & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (lb, rest) = b.split_at_checked(n)?;
        b = rest;
        lb.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x))
    };
    let (content, rest) = b.split_at_checked(len)?;
    Some((tag, content, rest))
}

// === client side ===

/// Client side of SCRAM-SHA-256 (built on `postgres-protocol`), with the server's
/// iteration count bounded so a hostile upstream cannot make the gateway burn CPU.
pub struct ScramClient {
    inner: ScramSha256,
    mechanism: &'static str,
    max_iterations: u32,
    step: u8,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts an exchange. `mechanisms` are those offered in AuthenticationSASL;
    /// `channel_binding` is the `tls-server-end-point` data of the upstream's certificate
    /// when the connection is TLS (see [`tls_server_end_point`]).
    pub fn new(
        password: &[u8],
        mechanisms: &[Bytes],
        channel_binding: Option<Vec<u8>>,
        limits: &Limits,
    ) -> Result<ScramClient> {
        let offers = |m: &str| mechanisms.iter().any(|x| x == m.as_bytes());
        let (cb, mechanism) = match channel_binding {
            Some(data) if offers(SCRAM_SHA_256_PLUS) => (
                sasl::ChannelBinding::tls_server_end_point(data),
                SCRAM_SHA_256_PLUS,
            ),
            Some(_) if offers(SCRAM_SHA_256) => {
                (sasl::ChannelBinding::unrequested(), SCRAM_SHA_256)
            }
            None if offers(SCRAM_SHA_256) => (sasl::ChannelBinding::unsupported(), SCRAM_SHA_256),
            _ => {
                let names: Vec<String> = mechanisms
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect();
                return Err(Error::UnsupportedAuthentication {
                    method: names.join(","),
                });
            }
        };
        Ok(ScramClient {
            inner: ScramSha256::new(password, cb),
            mechanism,
            max_iterations: limits.max_scram_iterations,
            step: 0,
        })
    }

    /// The mechanism chosen.
    pub fn mechanism(&self) -> &'static str {
        self.mechanism
    }

    /// The SASLInitialResponse to send.
    pub fn initial_response(&mut self) -> Result<FrontendMessage> {
        if self.step != 0 {
            return Err(proto("SCRAM initial response already sent"));
        }
        self.step = 1;
        Ok(FrontendMessage::SaslInitialResponse {
            mechanism: Bytes::from_static(self.mechanism.as_bytes()),
            data: Some(Bytes::copy_from_slice(self.inner.message())),
        })
    }

    /// Handles AuthenticationSASLContinue (server-first-message) and returns the
    /// SASLResponse to send.
    pub fn on_continue(&mut self, server_first: &[u8]) -> Result<FrontendMessage> {
        if self.step != 1 {
            return Err(proto("unexpected AuthenticationSASLContinue"));
        }
        let iterations = std::str::from_utf8(server_first)
            .ok()
            .and_then(|s| s.split(',').find_map(|a| a.strip_prefix("i=")))
            .and_then(|i| i.parse::<u32>().ok())
            .ok_or(proto("server-first-message has no iteration count"))?;
        if iterations == 0 || iterations > self.max_iterations {
            return Err(proto(
                "server asks for an unacceptable SCRAM iteration count",
            ));
        }
        self.inner
            .update(server_first)
            .map_err(|_| proto("invalid server-first-message"))?;
        self.step = 2;
        Ok(FrontendMessage::SaslResponse(Bytes::copy_from_slice(
            self.inner.message(),
        )))
    }

    /// Handles AuthenticationSASLFinal: verifies the server's signature.
    pub fn on_final(&mut self, server_final: &[u8]) -> Result<()> {
        if self.step != 2 {
            return Err(proto("unexpected AuthenticationSASLFinal"));
        }
        self.inner
            .finish(server_final)
            .map_err(|_| Error::AuthenticationFailed)?;
        self.step = 3;
        Ok(())
    }

    /// Whether the server's signature has been verified.
    pub fn is_complete(&self) -> bool {
        self.step == 3
    }
}

/// The md5 password response: `"md5" + md5(md5(password + user) + salt)`.
pub fn md5_response(user: &[u8], password: &[u8], salt: [u8; 4]) -> Bytes {
    Bytes::from(postgres_protocol::authentication::md5_hash(
        user, password, salt,
    ))
}

/// Whether the client insists on SCRAM channel binding, as libpq's `channel_binding`
/// connection parameter.
///
/// With `tls-server-end-point` binding (SCRAM-SHA-256-PLUS) the proof covers the
/// certificate the client saw, so a middlebox that terminates TLS with another certificate
/// cannot carry the login. The binding only protects a client that refuses to log in
/// without it: a middlebox that talks plaintext to a server which also accepts plaintext
/// logins makes the server offer plain SCRAM-SHA-256 only, and a client that prefers
/// binding then logs in unbound through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBinding {
    /// Never bind, even over TLS: SCRAM-SHA-256 with the `n` gs2 flag.
    Disable,
    /// Bind when the connection is TLS, the certificate's binding data can be computed and
    /// the server offers SCRAM-SHA-256-PLUS; otherwise log in without binding.
    #[default]
    Prefer,
    /// Log in only with SCRAM-SHA-256-PLUS. Refused, before any proof or password is sent:
    /// a connection without TLS or whose certificate gives no binding data, a server that
    /// does not offer -PLUS, asks for md5 or a cleartext password, or reports
    /// AuthenticationOk without an exchange.
    Require,
}

impl ChannelBinding {
    /// The name libpq uses for this setting: `disable`, `prefer` or `require`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

impl std::fmt::Display for ChannelBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the client knows of the channel it could bind to.
#[derive(Debug, Clone)]
enum Channel {
    /// No TLS (or none was reported).
    Plain,
    /// TLS, with the `tls-server-end-point` data of the server's certificate.
    Bound(Vec<u8>),
    /// TLS, but no binding data can be computed from the server's certificate.
    Unbindable,
}

fn binding_required(reason: &'static str) -> Error {
    Error::ChannelBindingRequired { reason }
}

/// Logs in to a server with a user name and password: answers each authentication
/// request the server sends (SCRAM-SHA-256[-PLUS], md5, cleartext) until AuthenticationOk.
pub struct ClientAuthenticator {
    user: Bytes,
    password: Bytes,
    channel: Channel,
    policy: ChannelBinding,
    allow_plain: bool,
    limits: Limits,
    scram: Option<ScramClient>,
    done: bool,
}

impl std::fmt::Debug for ClientAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("ClientAuthenticator")
            .field("user", &self.user)
            .field("channel", &self.channel)
            .field("policy", &self.policy)
            .field("allow_plain", &self.allow_plain)
            .field("scram", &self.scram)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ClientAuthenticator {
    /// An authenticator for `user` with `password`.
    pub fn new(user: impl Into<Bytes>, password: impl Into<Bytes>) -> ClientAuthenticator {
        ClientAuthenticator {
            user: user.into(),
            password: password.into(),
            channel: Channel::Plain,
            policy: ChannelBinding::Prefer,
            allow_plain: true,
            limits: Limits::DEFAULT,
            scram: None,
            done: false,
        }
    }

    /// Use SCRAM-SHA-256-PLUS with this `tls-server-end-point` data when offered.
    pub fn with_channel_binding(mut self, data: Vec<u8>) -> ClientAuthenticator {
        self.channel = Channel::Bound(data);
        self
    }

    /// The connection is TLS and the server presented this (leaf) certificate, DER: bind
    /// to it with `tls-server-end-point` (see [`tls_server_end_point`]). A certificate whose
    /// signature algorithm gives no binding hash (RSA-PSS, Ed25519 …) leaves the connection
    /// unbindable, which [`ChannelBinding::Require`] refuses.
    pub fn with_server_certificate(mut self, cert_der: &[u8]) -> ClientAuthenticator {
        self.channel = match tls_server_end_point(cert_der) {
            Ok(data) => Channel::Bound(data),
            Err(_) => Channel::Unbindable,
        };
        self
    }

    /// Whether channel binding is disabled, preferred (the default) or required.
    pub fn with_channel_binding_policy(mut self, policy: ChannelBinding) -> ClientAuthenticator {
        self.policy = policy;
        self
    }

    /// Refuse cleartext and md5 requests (only SCRAM).
    pub fn scram_only(mut self) -> ClientAuthenticator {
        self.allow_plain = false;
        self
    }

    /// Use these limits (the SCRAM iteration bound).
    pub fn with_limits(mut self, limits: Limits) -> ClientAuthenticator {
        self.limits = limits;
        self
    }

    /// Whether AuthenticationOk has been received (and SCRAM, if used, verified).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The SCRAM mechanism used, if any.
    pub fn mechanism(&self) -> Option<&'static str> {
        self.scram.as_ref().map(ScramClient::mechanism)
    }

    /// Handles one authentication message from the server; returns the message to send
    /// back, if any.
    pub fn on_authentication(&mut self, auth: &Authentication) -> Result<Option<FrontendMessage>> {
        if self.done {
            return Err(proto("authentication message after AuthenticationOk"));
        }
        let require = self.policy == ChannelBinding::Require;
        match auth {
            Authentication::Ok => {
                // A server that skips SASLFinal would skip proving it knows the verifier.
                if self.scram.as_ref().is_some_and(|s| !s.is_complete()) {
                    return Err(proto("AuthenticationOk before SCRAM completed"));
                }
                // Without an exchange nothing proved the peer is the server (or that no one
                // sits between): libpq's require treats this as a failure too.
                if require && self.scram.is_none() {
                    return Err(binding_required(
                        "the server reported success without authenticating",
                    ));
                }
                self.done = true;
                Ok(None)
            }
            Authentication::CleartextPassword | Authentication::Md5Password { .. }
                if require && self.scram.is_none() =>
            {
                Err(binding_required(
                    "the server asked for a password instead of SCRAM-SHA-256-PLUS",
                ))
            }
            Authentication::CleartextPassword if self.allow_plain && self.scram.is_none() => Ok(
                Some(FrontendMessage::PasswordMessage(self.password.clone())),
            ),
            Authentication::Md5Password { salt } if self.allow_plain && self.scram.is_none() => {
                Ok(Some(FrontendMessage::PasswordMessage(md5_response(
                    &self.user,
                    &self.password,
                    *salt,
                ))))
            }
            Authentication::Sasl { mechanisms } if self.scram.is_none() => {
                let data = match (&self.channel, self.policy) {
                    (_, ChannelBinding::Disable) => None,
                    (Channel::Bound(data), _) => Some(data.clone()),
                    (Channel::Plain, ChannelBinding::Require) => {
                        return Err(binding_required("the connection is not TLS"));
                    }
                    (Channel::Unbindable, ChannelBinding::Require) => {
                        return Err(binding_required(
                            "the server certificate's signature algorithm defines no \
                             tls-server-end-point hash",
                        ));
                    }
                    (Channel::Plain | Channel::Unbindable, ChannelBinding::Prefer) => None,
                };
                if require
                    && !mechanisms
                        .iter()
                        .any(|m| m == SCRAM_SHA_256_PLUS.as_bytes())
                {
                    return Err(binding_required(
                        "the server did not offer SCRAM-SHA-256-PLUS",
                    ));
                }
                let mut c = ScramClient::new(&self.password, mechanisms, data, &self.limits)?;
                let m = c.initial_response()?;
                self.scram = Some(c);
                Ok(Some(m))
            }
            Authentication::SaslContinue(d) => {
                let c = self
                    .scram
                    .as_mut()
                    .ok_or(proto("SASLContinue without SASL"))?;
                c.on_continue(d).map(Some)
            }
            Authentication::SaslFinal(d) => {
                let c = self.scram.as_mut().ok_or(proto("SASLFinal without SASL"))?;
                c.on_final(d).map(|()| None)
            }
            other => Err(Error::UnsupportedAuthentication {
                method: format!("{other:?}"),
            }),
        }
    }
}

/// How the client's next `p` message must be read after this server request.
pub fn auth_context_after(auth: &Authentication) -> AuthContext {
    match auth {
        Authentication::CleartextPassword | Authentication::Md5Password { .. } => {
            AuthContext::Password
        }
        Authentication::Sasl { .. } => AuthContext::SaslInitial,
        Authentication::SaslContinue(_) => AuthContext::Sasl,
        Authentication::Gss | Authentication::GssContinue(_) | Authentication::Sspi => {
            AuthContext::Gss
        }
        _ => AuthContext::Unknown,
    }
}

// === server side ===

/// A stored SCRAM-SHA-256 verifier, as in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for ScramVerifier {
    type Err = Error;

    fn from_str(s: &str) -> Result<ScramVerifier> {
        let bad = |reason| Error::InvalidVerifier { reason };
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(bad("not SCRAM-SHA-256"))?;
        let (params, keys) = rest.split_once('$').ok_or(bad("missing keys"))?;
        let (iter, salt) = params.split_once(':').ok_or(bad("missing salt"))?;
        let (stored, server) = keys.split_once(':').ok_or(bad("missing server key"))?;
        let iterations: u32 = iter.parse().map_err(|_| bad("bad iteration count"))?;
        if iterations == 0 {
            return Err(bad("bad iteration count"));
        }
        let salt = B64.decode(salt).map_err(|_| bad("salt is not base64"))?;
        let key = |k: &str| -> Result<[u8; 32]> {
            let v = B64.decode(k).map_err(|_| bad("key is not base64"))?;
            <[u8; 32]>::try_from(v.as_slice()).map_err(|_| bad("key is not 32 bytes"))
        };
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

impl std::fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl ScramVerifier {
    /// Derives a verifier from a password (used as-is: callers that want SASLprep
    /// normalisation apply it first), a salt and an iteration count.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramVerifier {
        // Hi(password, salt, i) from RFC 5802: PBKDF2 with HMAC-SHA-256, one block.
        let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
        let mut salted = u;
        for _ in 1..iterations.max(1) {
            u = hmac(password, &[&u]);
            for (s, x) in salted.iter_mut().zip(u) {
                *s ^= x;
            }
        }
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramVerifier {
            iterations: iterations.max(1),
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }
}

#[derive(Debug)]
enum ServerState {
    Start,
    SentFirst {
        client_first_bare: String,
        server_first: String,
        nonce: String,
        cbind_input: Vec<u8>,
    },
    SentFinal,
    Failed,
}

/// Server side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS against a stored verifier.
///
/// ```text
/// let mut s = ScramServer::new(verifier, cert_binding);
/// send(s.start());                              // AuthenticationSASL
/// send(s.on_response(&client_msg)?);            // AuthenticationSASLContinue
/// send(s.on_response(&client_msg)?);            // AuthenticationSASLFinal
/// send(AuthenticationOk)
/// ```
#[derive(Debug)]
pub struct ScramServer {
    verifier: ScramVerifier,
    channel_binding: Option<Vec<u8>>,
    state: ServerState,
    mechanism: Option<&'static str>,
}

impl ScramServer {
    /// A server exchange. `channel_binding` is the `tls-server-end-point` data of the
    /// certificate this side presents when it terminates TLS; with it, SCRAM-SHA-256-PLUS
    /// is offered first.
    pub fn new(verifier: ScramVerifier, channel_binding: Option<Vec<u8>>) -> ScramServer {
        ScramServer {
            verifier,
            channel_binding,
            state: ServerState::Start,
            mechanism: None,
        }
    }

    /// The AuthenticationSASL request that opens the exchange.
    pub fn start(&self) -> BackendMessage {
        let mut mechanisms = Vec::with_capacity(2);
        if self.channel_binding.is_some() {
            mechanisms.push(Bytes::from_static(SCRAM_SHA_256_PLUS.as_bytes()));
        }
        mechanisms.push(Bytes::from_static(SCRAM_SHA_256.as_bytes()));
        BackendMessage::Authentication(Authentication::Sasl { mechanisms })
    }

    /// How the client's next `p` message must be read.
    pub fn auth_context(&self) -> AuthContext {
        match self.state {
            ServerState::Start => AuthContext::SaslInitial,
            _ => AuthContext::Sasl,
        }
    }

    /// The mechanism the client chose, once it has sent its initial response.
    pub fn mechanism(&self) -> Option<&'static str> {
        self.mechanism
    }

    /// Whether the client has been authenticated.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ServerState::SentFinal)
    }

    /// Handles the client's SASLInitialResponse or SASLResponse and returns the answer
    /// (AuthenticationSASLContinue, then AuthenticationSASLFinal). After the final answer
    /// the caller sends AuthenticationOk. Any error ends the exchange.
    pub fn on_response(&mut self, msg: &FrontendMessage) -> Result<BackendMessage> {
        let r = self.step(msg);
        if r.is_err() {
            self.state = ServerState::Failed;
        }
        r
    }

    fn step(&mut self, msg: &FrontendMessage) -> Result<BackendMessage> {
        match (&self.state, msg) {
            (ServerState::Start, FrontendMessage::SaslInitialResponse { mechanism, data }) => {
                let data = data.as_ref().ok_or(proto("no initial response"))?;
                let first = self.client_first(mechanism, data)?;
                Ok(first)
            }
            (ServerState::Start, FrontendMessage::AuthResponse(body)) => {
                let m = FrontendMessage::decode_auth(body.clone(), AuthContext::SaslInitial)?;
                self.step(&m)
            }
            (
                ServerState::SentFirst { .. },
                FrontendMessage::SaslResponse(d) | FrontendMessage::AuthResponse(d),
            ) => self.client_final(d),
            _ => Err(proto("unexpected message in SCRAM exchange")),
        }
    }

    fn client_first(&mut self, mechanism: &[u8], data: &[u8]) -> Result<BackendMessage> {
        let plus = match mechanism {
            m if m == SCRAM_SHA_256.as_bytes() => false,
            m if m == SCRAM_SHA_256_PLUS.as_bytes() => true,
            _ => {
                return Err(Error::UnsupportedAuthentication {
                    method: String::from_utf8_lossy(mechanism).into_owned(),
                });
            }
        };
        self.mechanism = Some(if plus {
            SCRAM_SHA_256_PLUS
        } else {
            SCRAM_SHA_256
        });
        let s =
            std::str::from_utf8(data).map_err(|_| proto("client-first-message is not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = s.split_once(',').ok_or(proto("malformed gs2 header"))?;
        let (authzid, bare) = rest.split_once(',').ok_or(proto("malformed gs2 header"))?;
        if !authzid.is_empty() {
            return Err(Error::UnsupportedAuthentication {
                method: "SCRAM authorization identity".into(),
            });
        }
        let gs2_header = s
            .get(..s.len() - bare.len())
            .ok_or(proto("malformed gs2 header"))?;
        let mut cbind_input = gs2_header.as_bytes().to_vec();
        match flag {
            "p=tls-server-end-point" => {
                if !plus {
                    return Err(proto(
                        "channel binding requested without SCRAM-SHA-256-PLUS",
                    ));
                }
                let cb = self
                    .channel_binding
                    .as_ref()
                    .ok_or(proto("channel binding not available"))?;
                cbind_input.extend_from_slice(cb);
            }
            f if f.starts_with("p=") => {
                return Err(Error::UnsupportedAuthentication {
                    method: format!("channel binding {f}"),
                });
            }
            "y" if plus => return Err(proto("malformed gs2 header")),
            // The client could have bound the channel but thought we could not: a downgrade.
            "y" if self.channel_binding.is_some() => {
                return Err(proto("channel binding negotiation failed"));
            }
            "y" | "n" if !plus => {}
            _ => return Err(proto("malformed gs2 header")),
        }
        let mut attrs = bare.split(',');
        let user = attrs.next().ok_or(proto("missing user name"))?;
        if user.starts_with("m=") {
            return Err(Error::UnsupportedAuthentication {
                method: "SCRAM extension".into(),
            });
        }
        if !user.starts_with("n=") {
            return Err(proto("missing user name"));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(proto("missing client nonce"))?;
        if nonce.is_empty()
            || !nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(proto("invalid client nonce"));
        }
        let mut raw = [0u8; 18];
        getrandom::fill(&mut raw).map_err(|_| proto("no randomness available"))?;
        let nonce = format!("{nonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let msg = BackendMessage::Authentication(Authentication::SaslContinue(Bytes::from(
            server_first.clone().into_bytes(),
        )));
        self.state = ServerState::SentFirst {
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
            cbind_input,
        };
        Ok(msg)
    }

    fn client_final(&mut self, data: &[u8]) -> Result<BackendMessage> {
        let ServerState::SentFirst {
            client_first_bare,
            server_first,
            nonce,
            cbind_input,
        } = &self.state
        else {
            return Err(proto("unexpected SASLResponse"));
        };
        let s =
            std::str::from_utf8(data).map_err(|_| proto("client-final-message is not UTF-8"))?;
        let proof_at = s.rfind(",p=").ok_or(proto("missing proof"))?;
        let without_proof = s.get(..proof_at).ok_or(proto("missing proof"))?;
        let proof_b64 = s.get(proof_at + 3..).ok_or(proto("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let c = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(proto("missing channel binding"))?;
        let c = B64
            .decode(c)
            .map_err(|_| proto("channel binding is not base64"))?;
        if !bool::from(c.as_slice().ct_eq(cbind_input.as_slice())) {
            return Err(proto("SCRAM channel binding check failed"));
        }
        let r = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(proto("missing nonce"))?;
        if !bool::from(r.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(proto("nonce mismatch"));
        }
        let proof = B64
            .decode(proof_b64)
            .map_err(|_| proto("proof is not base64"))?;
        let proof = <[u8; 32]>::try_from(proof.as_slice())
            .map_err(|_| proto("proof has the wrong length"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for ((k, p), s) in client_key.iter_mut().zip(proof).zip(signature) {
            *k = p ^ s;
        }
        let check: [u8; 32] = Sha256::digest(client_key).into();
        if !bool::from(check.ct_eq(&self.verifier.stored_key)) {
            return Err(Error::AuthenticationFailed);
        }
        let server_sig = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        self.state = ServerState::SentFinal;
        Ok(BackendMessage::Authentication(Authentication::SaslFinal(
            Bytes::from(format!("v={}", B64.encode(server_sig)).into_bytes()),
        )))
    }
}

/// Server side of the cleartext password exchange, used to receive a token (or JWT) as the
/// password over TLS; the caller verifies it with its identity provider.
#[derive(Debug, Default)]
pub struct CleartextServer {
    received: bool,
}

impl CleartextServer {
    /// A new exchange.
    pub fn new() -> CleartextServer {
        CleartextServer::default()
    }

    /// The AuthenticationCleartextPassword request.
    pub fn start(&self) -> BackendMessage {
        BackendMessage::Authentication(Authentication::CleartextPassword)
    }

    /// How the client's answer must be read.
    pub fn auth_context(&self) -> AuthContext {
        AuthContext::Password
    }

    /// Takes the password out of the client's PasswordMessage.
    pub fn on_response(&mut self, msg: &FrontendMessage) -> Result<Bytes> {
        if self.received {
            return Err(proto("password already received"));
        }
        let p = match msg {
            FrontendMessage::PasswordMessage(p) => p.clone(),
            FrontendMessage::AuthResponse(body) => {
                match FrontendMessage::decode_auth(body.clone(), AuthContext::Password)? {
                    FrontendMessage::PasswordMessage(p) => p,
                    _ => return Err(proto("expected a password")),
                }
            }
            _ => return Err(proto("expected a password")),
        };
        self.received = true;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_matches_postgres_protocol() {
        let s = postgres_protocol::password::scram_sha_256(b"hunter2");
        let v: ScramVerifier = s.parse().unwrap();
        assert_eq!(v.to_string(), s);
        let again = ScramVerifier::derive(b"hunter2", &v.salt, v.iterations);
        assert_eq!(again, v);
        assert!("md5abc".parse::<ScramVerifier>().is_err());
        assert!(
            "SCRAM-SHA-256$0:AAAA$AAAA:AAAA"
                .parse::<ScramVerifier>()
                .is_err()
        );
    }

    fn run(
        server_pw: &[u8],
        client_pw: &[u8],
        server_cb: Option<Vec<u8>>,
        client_cb: Option<Vec<u8>>,
    ) -> (Result<()>, Option<&'static str>) {
        let mut client = ClientAuthenticator::new("u", Bytes::copy_from_slice(client_pw));
        if let Some(cb) = client_cb {
            client = client.with_channel_binding(cb);
        }
        run_with(server_pw, server_cb, client)
    }

    fn run_with(
        server_pw: &[u8],
        server_cb: Option<Vec<u8>>,
        mut client: ClientAuthenticator,
    ) -> (Result<()>, Option<&'static str>) {
        let verifier = ScramVerifier::derive(server_pw, b"0123456789abcdef", 4096);
        let mut server = ScramServer::new(verifier, server_cb);
        let BackendMessage::Authentication(a) = server.start() else {
            unreachable!()
        };
        let mut next = client.on_authentication(&a);
        let r = (|| loop {
            let Some(m) = next? else { return Ok(()) };
            let reply = server.on_response(&m)?;
            let BackendMessage::Authentication(a) = reply else {
                unreachable!()
            };
            let final_ = matches!(a, Authentication::SaslFinal(_));
            next = client.on_authentication(&a);
            if final_ {
                next?;
                return client.on_authentication(&Authentication::Ok).map(|_| ());
            }
        })();
        (r, client.mechanism())
    }

    #[test]
    fn scram_client_and_server_agree() {
        let (r, m) = run(b"pw", b"pw", None, None);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(m, Some(SCRAM_SHA_256));
        let (r, _) = run(b"pw", b"wrong", None, None);
        assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    }

    #[test]
    fn scram_plus() {
        let cb = vec![7u8; 32];
        let (r, m) = run(b"pw", b"pw", Some(cb.clone()), Some(cb.clone()));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(m, Some(SCRAM_SHA_256_PLUS));
        // A different certificate on each side (a man in the middle) fails.
        let (r, _) = run(b"pw", b"pw", Some(cb.clone()), Some(vec![8u8; 32]));
        assert!(r.is_err());
        // A client able to bind that sees no PLUS offered says "y"; fine without TLS here.
        let (r, m) = run(b"pw", b"pw", None, Some(cb));
        assert!(r.is_ok());
        assert_eq!(m, Some(SCRAM_SHA_256));
    }

    #[test]
    fn downgrade_is_refused() {
        let verifier = ScramVerifier::derive(b"pw", b"salt", 4096);
        let mut server = ScramServer::new(verifier, Some(vec![1; 32]));
        let m = FrontendMessage::SaslInitialResponse {
            mechanism: Bytes::from_static(b"SCRAM-SHA-256"),
            data: Some(Bytes::from_static(b"y,,n=,r=abcdef")),
        };
        assert!(server.on_response(&m).is_err());
    }

    #[test]
    fn client_refuses_huge_iteration_counts() {
        let mut c = ClientAuthenticator::new("u", "pw");
        let m = c
            .on_authentication(&Authentication::Sasl {
                mechanisms: vec![Bytes::from_static(b"SCRAM-SHA-256")],
            })
            .unwrap();
        let Some(FrontendMessage::SaslInitialResponse { data: Some(d), .. }) = m else {
            unreachable!()
        };
        let nonce = std::str::from_utf8(&d)
            .unwrap()
            .rsplit("r=")
            .next()
            .unwrap()
            .to_owned();
        let first = format!("r={nonce}xyz,s=c2FsdA==,i=2000000000");
        assert!(
            c.on_authentication(&Authentication::SaslContinue(Bytes::from(first)))
                .is_err()
        );
    }

    #[test]
    fn ok_without_final_is_refused() {
        let mut c = ClientAuthenticator::new("u", "pw");
        c.on_authentication(&Authentication::Sasl {
            mechanisms: vec![Bytes::from_static(b"SCRAM-SHA-256")],
        })
        .unwrap();
        assert!(c.on_authentication(&Authentication::Ok).is_err());
    }

    fn sasl(mechanisms: &[&'static str]) -> Authentication {
        Authentication::Sasl {
            mechanisms: mechanisms
                .iter()
                .map(|m| Bytes::from_static(m.as_bytes()))
                .collect(),
        }
    }

    fn requiring() -> ClientAuthenticator {
        ClientAuthenticator::new("u", "pw").with_channel_binding_policy(ChannelBinding::Require)
    }

    fn refused(r: Result<Option<FrontendMessage>>) -> &'static str {
        match r {
            Err(Error::ChannelBindingRequired { reason }) => reason,
            other => panic!("not refused for channel binding: {other:?}"),
        }
    }

    /// A certificate skeleton whose signatureAlgorithm is `oid`: all
    /// `tls_server_end_point` reads.
    fn certificate_signed_with(oid: &[u8]) -> Vec<u8> {
        let tlv = |tag: u8, content: &[u8]| {
            let mut v = vec![tag, u8::try_from(content.len()).unwrap()];
            v.extend_from_slice(content);
            v
        };
        let alg = tlv(0x30, &tlv(0x06, oid));
        let body = [tlv(0x30, &[]), alg, tlv(0x03, &[0, 1, 2, 3])].concat();
        tlv(0x30, &body)
    }

    /// RSASSA-PSS, 1.2.840.113549.1.1.10: its hash lives in the parameters, and RFC 5929
    /// defines no binding hash for it.
    const RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    /// ecdsa-with-SHA256, 1.2.840.10045.4.3.2.
    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

    fn ed25519_certificate() -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn require_binds_when_the_server_offers_plus() {
        let cb = vec![7u8; 32];
        let client = requiring().with_channel_binding(cb.clone());
        let (r, m) = run_with(b"pw", Some(cb.clone()), client);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(m, Some(SCRAM_SHA_256_PLUS));
        // Bound to a certificate the server does not have: the server refuses.
        let client = requiring().with_channel_binding(vec![8u8; 32]);
        let (r, _) = run_with(b"pw", Some(cb), client);
        assert!(
            matches!(r, Err(Error::AuthenticationProtocol { reason }) if reason.contains("channel binding")),
            "{r:?}"
        );
    }

    #[test]
    fn require_refuses_a_server_that_does_not_offer_plus() {
        // What a middlebox speaking plaintext to the server gets offered.
        let mut c = requiring().with_channel_binding(vec![7u8; 32]);
        let reason = refused(c.on_authentication(&sasl(&[SCRAM_SHA_256])));
        assert!(
            reason.contains("did not offer SCRAM-SHA-256-PLUS"),
            "{reason}"
        );
        assert_eq!(c.mechanism(), None);
        // Preferring binding, the same offer is taken, announcing with `y` that this side
        // could have bound.
        let mut c = ClientAuthenticator::new("u", "pw").with_channel_binding(vec![7u8; 32]);
        let Ok(Some(FrontendMessage::SaslInitialResponse { data: Some(d), .. })) =
            c.on_authentication(&sasl(&[SCRAM_SHA_256]))
        else {
            panic!("prefer did not answer")
        };
        assert!(d.starts_with(b"y,,"), "{d:?}");
    }

    #[test]
    fn require_refuses_a_connection_without_tls() {
        let mut c = requiring();
        let reason = refused(c.on_authentication(&sasl(&[SCRAM_SHA_256_PLUS, SCRAM_SHA_256])));
        assert!(reason.contains("not TLS"), "{reason}");
    }

    #[test]
    fn require_refuses_certificates_without_a_binding_hash() {
        let server = sasl(&[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
        for cert in [certificate_signed_with(RSA_PSS), ed25519_certificate()] {
            assert!(tls_server_end_point(&cert).is_err());
            let mut c = requiring().with_server_certificate(&cert);
            let reason = refused(c.on_authentication(&server));
            assert!(reason.contains("tls-server-end-point"), "{reason}");
            // Preferring binding, the login goes on unbound, saying `n` (not `y`, which
            // the server would rightly take for a downgrade since it offered -PLUS).
            let mut c = ClientAuthenticator::new("u", "pw").with_server_certificate(&cert);
            let Ok(Some(FrontendMessage::SaslInitialResponse {
                mechanism,
                data: Some(d),
            })) = c.on_authentication(&server)
            else {
                panic!("prefer did not answer")
            };
            assert_eq!(&mechanism[..], SCRAM_SHA_256.as_bytes());
            assert!(d.starts_with(b"n,,"), "{d:?}");
        }
        // A certificate that has a binding hash is bound to.
        let cert = certificate_signed_with(ECDSA_SHA256);
        let client = requiring().with_server_certificate(&cert);
        let binding = tls_server_end_point(&cert).unwrap();
        let (r, m) = run_with(b"pw", Some(binding), client);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(m, Some(SCRAM_SHA_256_PLUS));
    }

    #[test]
    fn require_refuses_md5_and_cleartext_requests() {
        for request in [
            Authentication::CleartextPassword,
            Authentication::Md5Password { salt: [1, 2, 3, 4] },
        ] {
            let mut c = requiring().with_channel_binding(vec![7u8; 32]);
            let reason = refused(c.on_authentication(&request));
            assert!(reason.contains("password"), "{reason}");
            // The same request is answered when binding is only preferred.
            let mut c = ClientAuthenticator::new("u", "pw").with_channel_binding(vec![7u8; 32]);
            assert!(matches!(
                c.on_authentication(&request),
                Ok(Some(FrontendMessage::PasswordMessage(_)))
            ));
        }
    }

    #[test]
    fn require_refuses_a_server_that_skips_authentication() {
        let mut c = requiring().with_channel_binding(vec![7u8; 32]);
        let reason = refused(c.on_authentication(&Authentication::Ok));
        assert!(reason.contains("without authenticating"), "{reason}");
        assert!(!c.is_done());
        let mut c = ClientAuthenticator::new("u", "pw");
        assert!(matches!(c.on_authentication(&Authentication::Ok), Ok(None)));
        assert!(c.is_done());
    }

    #[test]
    fn disable_never_binds() {
        let cb = vec![7u8; 32];
        let client = ClientAuthenticator::new("u", "pw")
            .with_channel_binding(cb.clone())
            .with_channel_binding_policy(ChannelBinding::Disable);
        let (r, m) = run_with(b"pw", Some(cb.clone()), client);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(m, Some(SCRAM_SHA_256));
        let mut c = ClientAuthenticator::new("u", "pw")
            .with_channel_binding(cb)
            .with_channel_binding_policy(ChannelBinding::Disable);
        let Ok(Some(FrontendMessage::SaslInitialResponse { data: Some(d), .. })) =
            c.on_authentication(&sasl(&[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]))
        else {
            panic!("disable did not answer")
        };
        assert!(d.starts_with(b"n,,"), "{d:?}");
    }

    #[test]
    fn channel_binding_names_are_libpqs() {
        assert_eq!(ChannelBinding::default(), ChannelBinding::Prefer);
        let names: Vec<String> = [
            ChannelBinding::Disable,
            ChannelBinding::Prefer,
            ChannelBinding::Require,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(names, ["disable", "prefer", "require"]);
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let c = ClientAuthenticator::new("u", "hunter2-secret");
        assert!(!format!("{c:?}").contains("hunter2-secret"));
    }

    #[test]
    fn md5_matches_known_value() {
        // md5(md5("pw" + "u") + salt), as libpq computes it.
        let r = md5_response(b"u", b"pw", [1, 2, 3, 4]);
        assert!(r.starts_with(b"md5") && r.len() == 35);
    }
}
