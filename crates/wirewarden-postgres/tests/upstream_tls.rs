//! The client side of SCRAM-SHA-256-PLUS against a real PostgreSQL over TLS, as the gateway
//! logs in upstream: `SSLRequest`, `S`, a rustls handshake trusting only the server's
//! authority, then `ClientAuthenticator` with the `tls-server-end-point` binding of the
//! certificate seen in the handshake.
//!
//! The server checks the binding itself: the same login with the binding data altered by
//! one bit is refused, so acceptance of the genuine one means the server compared it with
//! the hash of its own certificate. A man in the middle who strips `-PLUS` from the offer is
//! caught by the server from the client's `y` flag. One who talks plaintext to a server that
//! also accepts plaintext logins gets no -PLUS offered at all; only a client requiring
//! channel binding refuses that.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use wirewarden_postgres::auth::{
    ChannelBinding, ClientAuthenticator, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, tls_server_end_point,
};
use wirewarden_postgres::{
    Authentication, BackendDecoder, BackendMessage, Error, FrontendMessage, Limits,
    ProtocolVersion, StartupMessage,
};
use wirewarden_testkit::{Postgres, TlsKey};

/// How a login ended when it did not succeed.
#[derive(Debug)]
enum Refusal {
    /// The server sent an ErrorResponse.
    Server {
        code: String,
        message: String,
        detail: String,
    },
    /// The client side refused (or the stream failed).
    Client(Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Server {
                code,
                message,
                detail,
            } => write!(f, "server refused ({code}): {message} {detail}"),
            Refusal::Client(e) => write!(f, "client refused: {e}"),
        }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Client(e)
    }
}

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Self {
        Refusal::Client(e.into())
    }
}

/// What the server reports about the session after a successful login.
#[derive(Debug)]
struct Session {
    /// The SCRAM mechanism the client chose.
    mechanism: Option<&'static str>,
    /// `pg_stat_ssl.ssl` for this backend (`t` / `f`).
    ssl: String,
    /// `pg_stat_ssl.version`.
    version: String,
    /// `current_user`.
    user: String,
}

/// What the client does with channel binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// Binds to the certificate seen in the handshake.
    Genuine,
    /// Binds to that data with one bit flipped.
    Tampered,
    /// No binding data (SCRAM-SHA-256, `n` flag).
    Without,
    /// Binds, but the server's mechanism list reaches it with `-PLUS` removed.
    PlusStripped,
}

fn client_config(
    pg: &Postgres,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let tls = pg.tls().expect("a TLS server");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(tls.ca_der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

async fn write(io: &mut (impl AsyncWrite + Unpin), msg: &FrontendMessage) -> Result<(), Refusal> {
    let mut out = BytesMut::new();
    msg.encode(&mut out)?;
    io.write_all(&out).await?;
    Ok(())
}

async fn read(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    dec: &mut BackendDecoder,
) -> Result<BackendMessage, Refusal> {
    loop {
        if let Some((_, msg)) = dec.decode(buf)? {
            return Ok(msg);
        }
        if io.read_buf(buf).await? == 0 {
            return Err(Refusal::Client(Error::AuthenticationProtocol {
                reason: "server closed the connection",
            }));
        }
    }
}

/// `SSLRequest`, `S`, and a handshake that verifies the server against its authority.
async fn tls_connect(
    pg: &Postgres,
    version: &'static rustls::SupportedProtocolVersion,
) -> TlsStream<TcpStream> {
    let mut tcp = TcpStream::connect(pg.addr()).await.unwrap();
    write(&mut tcp, &FrontendMessage::SslRequest).await.unwrap();
    let mut dec = BackendDecoder::new(Limits::default());
    dec.expect_ssl_response();
    let mut buf = BytesMut::new();
    let answer = read(&mut tcp, &mut buf, &mut dec).await.unwrap();
    assert_eq!(answer, BackendMessage::SslResponse(true));
    assert!(buf.is_empty(), "bytes after S, before the handshake");
    let name = ServerName::try_from(pg.tls().unwrap().server_name()).unwrap();
    tokio_rustls::TlsConnector::from(client_config(pg, version))
        .connect(name, tcp)
        .await
        .expect("handshake verifies against the server's authority")
}

/// The `tls-server-end-point` data of the certificate the server presented.
fn binding_of(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate");
    tls_server_end_point(cert.as_ref()).unwrap()
}

/// Logs in as `user` and asks the server about the session.
async fn login(
    io: &mut (impl AsyncRead + AsyncWrite + Unpin),
    binding: Option<Vec<u8>>,
    policy: ChannelBinding,
    strip_plus: bool,
    database: &str,
    user: &str,
    password: &str,
) -> Result<Session, Refusal> {
    write(
        io,
        &FrontendMessage::Startup(StartupMessage {
            version: ProtocolVersion::V3_0,
            parameters: vec![
                (Bytes::from_static(b"user"), Bytes::from(user.to_owned())),
                (
                    Bytes::from_static(b"database"),
                    Bytes::from(database.to_owned()),
                ),
            ],
        }),
    )
    .await?;
    let mut auth = ClientAuthenticator::new(
        Bytes::from(user.to_owned()),
        Bytes::from(password.to_owned()),
    )
    .scram_only()
    .with_channel_binding_policy(policy);
    if let Some(b) = binding {
        auth = auth.with_channel_binding(b);
    }
    let mut dec = BackendDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut row = None;
    let mut queried = false;
    loop {
        match read(io, &mut buf, &mut dec).await? {
            BackendMessage::Authentication(a) => {
                let a = match a {
                    Authentication::Sasl { mechanisms } if strip_plus => Authentication::Sasl {
                        mechanisms: mechanisms
                            .into_iter()
                            .filter(|m| m != SCRAM_SHA_256_PLUS.as_bytes())
                            .collect(),
                    },
                    other => other,
                };
                if let Some(reply) = auth.on_authentication(&a)? {
                    write(io, &reply).await?;
                }
            }
            BackendMessage::ErrorResponse(e) => {
                let field = |c: u8| {
                    e.get(c)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                return Err(Refusal::Server {
                    code: field(b'C'),
                    message: field(b'M'),
                    detail: field(b'D'),
                });
            }
            BackendMessage::ReadyForQuery(_) if !queried => {
                assert!(auth.is_done(), "ReadyForQuery before authentication ended");
                queried = true;
                write(
                    io,
                    &FrontendMessage::Query(Bytes::from_static(
                        b"SELECT ssl::text, version, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    )),
                )
                .await?;
            }
            BackendMessage::DataRow(r) => {
                let cell = |i| {
                    r.cell(i)
                        .flatten()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                row = Some((cell(0), cell(1), cell(2)));
            }
            BackendMessage::ReadyForQuery(_) => {
                let (ssl, version, user) = row.expect("one pg_stat_ssl row");
                write(io, &FrontendMessage::Terminate).await?;
                return Ok(Session {
                    mechanism: auth.mechanism(),
                    ssl,
                    version,
                    user,
                });
            }
            _ => {}
        }
    }
}

/// A TLS connection to `pg` and a login as its role with `binding`.
async fn attempt(
    pg: &Postgres,
    version: &'static rustls::SupportedProtocolVersion,
    binding: Binding,
    password: &str,
) -> Result<Session, Refusal> {
    let mut stream = tls_connect(pg, version).await;
    let genuine = binding_of(&stream);
    let data = match binding {
        Binding::Genuine | Binding::PlusStripped => Some(genuine),
        Binding::Tampered => {
            let mut d = genuine;
            if let Some(last) = d.last_mut() {
                *last ^= 1;
            }
            Some(d)
        }
        Binding::Without => None,
    };
    login(
        &mut stream,
        data,
        ChannelBinding::Prefer,
        binding == Binding::PlusStripped,
        pg.database(),
        pg.user(),
        password,
    )
    .await
}

fn start(key: TlsKey) -> Postgres {
    Postgres::builder()
        .tls_only()
        .tls_key(key)
        .start()
        .expect("start PostgreSQL with TLS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_plus_over_tls_to_a_real_server() {
    for (key, hash_len) in [(TlsKey::EcdsaP256, 32), (TlsKey::EcdsaP384, 48)] {
        let pg = tokio::task::spawn_blocking(move || start(key))
            .await
            .unwrap();
        // The binding the handshake yields is that of the certificate the testkit issued,
        // hashed as its signature algorithm says (SHA-256 or SHA-384).
        let stream = tls_connect(&pg, &rustls::version::TLS13).await;
        let seen = binding_of(&stream);
        drop(stream);
        let issued = tls_server_end_point(pg.tls().unwrap().cert_der()).unwrap();
        assert_eq!(seen, issued, "{key:?}");
        assert_eq!(seen.len(), hash_len, "{key:?}");

        for (version, name) in [
            (&rustls::version::TLS13, "TLSv1.3"),
            (&rustls::version::TLS12, "TLSv1.2"),
        ] {
            let s = attempt(&pg, version, Binding::Genuine, pg.password())
                .await
                .unwrap_or_else(|e| panic!("{key:?} {name}: {e}"));
            assert_eq!(s.mechanism, Some(SCRAM_SHA_256_PLUS), "{key:?} {name}");
            assert_eq!(s.ssl, "true", "{key:?} {name}");
            assert_eq!(s.version, name, "{key:?} {name}");
            assert_eq!(s.user, pg.user(), "{key:?} {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_a_tampered_binding_and_a_wrong_password() {
    let pg = tokio::task::spawn_blocking(|| start(TlsKey::EcdsaP256))
        .await
        .unwrap();
    let tls13 = &rustls::version::TLS13;

    match attempt(&pg, tls13, Binding::Tampered, pg.password()).await {
        Err(Refusal::Server { code, message, .. }) => {
            assert_eq!(code, "28000", "{message}");
            assert_eq!(message, "SCRAM channel binding check failed");
        }
        other => panic!("a tampered binding was not refused: {other:?}"),
    }

    match attempt(&pg, tls13, Binding::Genuine, "not-the-password").await {
        Err(Refusal::Server { code, message, .. }) => {
            assert_eq!(code, "28P01", "{message}");
            assert!(
                message.contains("password authentication failed"),
                "{message}"
            );
        }
        other => panic!("a wrong password was not refused: {other:?}"),
    }

    // The genuine binding on the same server and password is accepted, so the refusal
    // above came from the altered bit alone.
    let s = attempt(&pg, tls13, Binding::Genuine, pg.password())
        .await
        .unwrap();
    assert_eq!(s.mechanism, Some(SCRAM_SHA_256_PLUS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_plus_offer_is_caught_and_no_binding_still_logs_in() {
    let pg = tokio::task::spawn_blocking(|| start(TlsKey::EcdsaP256))
        .await
        .unwrap();
    let tls13 = &rustls::version::TLS13;

    // The client can bind but is told the server cannot: it falls back to SCRAM-SHA-256
    // with the `y` flag, and the server, which did offer -PLUS over TLS, refuses.
    match attempt(&pg, tls13, Binding::PlusStripped, pg.password()).await {
        Err(Refusal::Server {
            code,
            message,
            detail,
        }) => {
            assert_eq!(code, "28000", "{message}");
            assert_eq!(message, "SCRAM channel binding negotiation error");
            assert!(detail.contains("thinks the server does not"), "{detail}");
        }
        other => panic!("a downgrade was not refused: {other:?}"),
    }

    // A client without binding data says so (`n`) and logs in with plain SCRAM-SHA-256,
    // still over TLS.
    let s = attempt(&pg, tls13, Binding::Without, pg.password())
        .await
        .unwrap();
    assert_eq!(s.mechanism, Some(SCRAM_SHA_256));
    assert_eq!(s.ssl, "true");

    // The server accepts TCP logins only over TLS.
    let mut tcp = TcpStream::connect(pg.addr()).await.unwrap();
    match login(
        &mut tcp,
        None,
        ChannelBinding::Prefer,
        false,
        pg.database(),
        pg.user(),
        pg.password(),
    )
    .await
    {
        Err(Refusal::Server { code, message, .. }) => {
            assert_eq!(code, "28000", "{message}");
            assert!(message.contains("no encryption"), "{message}");
        }
        other => panic!("a plaintext login was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_binding_refuses_a_server_reached_in_plaintext() {
    // TLS on, and plaintext TCP logins still accepted: what a client behind a middlebox
    // that talks plaintext to the server is offered.
    let pg = tokio::task::spawn_blocking(|| {
        Postgres::builder()
            .tls()
            .start()
            .expect("start PostgreSQL with TLS")
    })
    .await
    .unwrap();
    let genuine = tls_server_end_point(pg.tls().unwrap().cert_der()).unwrap();
    let plaintext = |policy| {
        let genuine = genuine.clone();
        let pg = &pg;
        async move {
            let mut tcp = TcpStream::connect(pg.addr()).await.unwrap();
            login(
                &mut tcp,
                Some(genuine),
                policy,
                false,
                pg.database(),
                pg.user(),
                pg.password(),
            )
            .await
        }
    };

    // Required: the offer has no -PLUS, and the client stops before sending a proof.
    match plaintext(ChannelBinding::Require).await {
        Err(Refusal::Client(Error::ChannelBindingRequired { reason })) => {
            assert!(
                reason.contains("did not offer SCRAM-SHA-256-PLUS"),
                "{reason}"
            );
        }
        other => panic!("an unbound login was not refused: {other:?}"),
    }

    // Preferred: the same login goes through unbound (the `y` flag, which this server,
    // without TLS on the connection, accepts), and the session is not encrypted.
    let s = plaintext(ChannelBinding::Prefer).await.unwrap();
    assert_eq!(s.mechanism, Some(SCRAM_SHA_256));
    assert_eq!(s.ssl, "false");

    // Required over TLS to the same server: bound.
    let mut stream = tls_connect(&pg, &rustls::version::TLS13).await;
    let binding = binding_of(&stream);
    let s = login(
        &mut stream,
        Some(binding),
        ChannelBinding::Require,
        false,
        pg.database(),
        pg.user(),
        pg.password(),
    )
    .await
    .unwrap();
    assert_eq!(s.mechanism, Some(SCRAM_SHA_256_PLUS));
    assert_eq!(s.ssl, "true");
}
