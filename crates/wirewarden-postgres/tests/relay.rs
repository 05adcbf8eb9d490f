//! Integration tests through a pass-through relay built on this crate, against a real
//! PostgreSQL started by wirewarden-testkit, with real clients (psql, psycopg,
//! tokio-postgres).
//!
//! The relay authenticates its client itself (server-side SCRAM against a stored verifier,
//! or the cleartext exchange), logs in upstream with its own credential using the client-side
//! SCRAM, issues its own cancel keys, tracks the session, and masks the `ssn` column of every
//! result using the RowDescription the session says applies — so every test also checks
//! that the session tracker kept up with the real server.

use std::net::SocketAddr;
use std::process::Command as Process;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use subtle_free::ct_eq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wirewarden_postgres::auth::{CleartextServer, ClientAuthenticator, ScramServer, ScramVerifier};
use wirewarden_postgres::{
    AuthContext, BackendDecoder, BackendMessage, CancelKeys, CellEdit, Error, Format, Frame,
    FrontendDecoder, FrontendMessage, Limits, Session, StartupMessage, types,
};

mod subtle_free {
    /// Length-independent comparison for the test relay's cleartext password check.
    pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

const CLIENT_USER: &str = "agent";
const CLIENT_PASSWORD: &str = "client-side-secret";
const MASK: &str = "***-**-****";

#[derive(Clone)]
enum ClientAuth {
    Scram(ScramVerifier),
    Cleartext(Bytes),
}

struct Shared {
    upstream: SocketAddr,
    user: String,
    password: String,
    database: String,
    auth: ClientAuth,
    limits: Limits,
    cancel: Mutex<CancelKeys>,
    errors: Mutex<Vec<String>>,
    masked: AtomicUsize,
    unknown_shape_rows: AtomicUsize,
    active: AtomicUsize,
    auth_failures: AtomicUsize,
    cancels_forwarded: AtomicUsize,
    upstream_keys: Mutex<Vec<i32>>,
    mechanisms: Mutex<Vec<String>>,
    tls: Option<Tls>,
}

struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    binding: Vec<u8>,
}

fn tls() -> Tls {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        binding: wirewarden_postgres::auth::tls_server_end_point(&cert).unwrap(),
    }
}

struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Relay {
    async fn start(pg: &wirewarden_testkit::Postgres, auth: ClientAuth) -> Relay {
        Relay::start_with(pg, auth, None).await
    }

    async fn start_with(
        pg: &wirewarden_testkit::Postgres,
        auth: ClientAuth,
        tls: Option<Tls>,
    ) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: pg.addr(),
            user: pg.user().to_owned(),
            password: pg.password().to_owned(),
            database: pg.database().to_owned(),
            auth,
            limits: Limits::default(),
            cancel: Mutex::new(CancelKeys::new()),
            errors: Mutex::new(Vec::new()),
            masked: AtomicUsize::new(0),
            unknown_shape_rows: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            auth_failures: AtomicUsize::new(0),
            cancels_forwarded: AtomicUsize::new(0),
            upstream_keys: Mutex::new(Vec::new()),
            mechanisms: Mutex::new(Vec::new()),
            tls,
        });
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                s.active.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Err(e) = connection(sock, &s).await {
                        s.errors.lock().unwrap().push(format!("connection: {e}"));
                    }
                    s.active.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Relay { addr, shared }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits until every connection has ended, then returns the errors the relay saw,
    /// including DataRows whose shape the session could not tell (which a masker would
    /// have to refuse).
    async fn finish(&self) -> Vec<String> {
        for _ in 0..500 {
            if self.shared.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut errors = self.shared.errors.lock().unwrap().clone();
        let unknown = self.shared.unknown_shape_rows.load(Ordering::SeqCst);
        if unknown > 0 {
            errors.push(format!("{unknown} rows without a known RowDescription"));
        }
        errors
    }
}

async fn read_frame(
    sock: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<Frame>, Error>,
) -> Result<Option<Frame>, Error> {
    loop {
        if let Some(f) = decode(buf)? {
            return Ok(Some(f));
        }
        if sock.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn send(
    sock: &mut (impl AsyncWriteExt + Unpin),
    msgs: &[BackendMessage],
) -> Result<(), Error> {
    let mut out = BytesMut::new();
    for m in msgs {
        m.encode(&mut out)?;
    }
    sock.write_all(&out).await?;
    Ok(())
}

async fn send_front(sock: &mut TcpStream, m: &FrontendMessage) -> Result<(), Error> {
    let mut out = BytesMut::new();
    m.encode(&mut out)?;
    sock.write_all(&out).await?;
    Ok(())
}

async fn connection(mut client: TcpStream, s: &Shared) -> Result<(), Error> {
    let limits = s.limits;
    let mut cbuf = BytesMut::with_capacity(64 * 1024);
    let mut fdec = FrontendDecoder::new(limits);
    client.set_nodelay(true)?;
    if let Some(tls) = &s.tls {
        // Peek at the first packet: an SSLRequest upgrades the connection.
        let Some(frame) = read_frame(&mut client, &mut cbuf, |b| fdec.decode_frame(b)).await?
        else {
            return Ok(());
        };
        if frame.to_frontend(AuthContext::Unknown, &limits)? == FrontendMessage::SslRequest {
            send(&mut client, &[BackendMessage::SslResponse(true)]).await?;
            if !cbuf.is_empty() {
                return Err(Error::AuthenticationProtocol {
                    reason: "data after SSLRequest",
                });
            }
            let stream = tls.acceptor.accept(client).await?;
            return serve(stream, fdec, cbuf, None, Some(tls.binding.clone()), s).await;
        }
        return serve(client, fdec, cbuf, Some(frame), None, s).await;
    }
    serve(client, fdec, cbuf, None, None, s).await
}

async fn serve<S>(
    mut client: S,
    mut fdec: FrontendDecoder,
    mut cbuf: BytesMut,
    mut first: Option<Frame>,
    binding: Option<Vec<u8>>,
    s: &Shared,
) -> Result<(), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let limits = s.limits;

    // Startup phase: refuse TLS and GSS, route cancels, take the StartupMessage.
    let startup: StartupMessage = loop {
        let frame = match first.take() {
            Some(f) => f,
            None => match read_frame(&mut client, &mut cbuf, |b| fdec.decode_frame(b)).await? {
                Some(f) => f,
                None => return Ok(()),
            },
        };
        match frame.to_frontend(AuthContext::Unknown, &limits)? {
            FrontendMessage::SslRequest => {
                send(&mut client, &[BackendMessage::SslResponse(false)]).await?
            }
            FrontendMessage::GssEncRequest => {
                send(&mut client, &[BackendMessage::GssEncResponse(false)]).await?
            }
            FrontendMessage::CancelRequest(req) => {
                let upstream = s.cancel.lock().unwrap().resolve(&req).cloned();
                if let Some(key) = upstream {
                    let mut up = TcpStream::connect(s.upstream).await?;
                    send_front(&mut up, &key.to_cancel_request()).await?;
                    let mut sink = Vec::new();
                    let _ = up.read_to_end(&mut sink).await;
                    s.cancels_forwarded.fetch_add(1, Ordering::SeqCst);
                }
                return Ok(());
            }
            FrontendMessage::Startup(st) => break st,
            other => {
                return Err(Error::AuthenticationProtocol {
                    reason: leak(format!("{other:?}")),
                });
            }
        }
    };
    assert_eq!(startup.user(), Some(CLIENT_USER));

    // Authenticate the client ourselves.
    let authenticated = match &s.auth {
        ClientAuth::Scram(v) => {
            let mut srv = ScramServer::new(v.clone(), binding.clone());
            send(&mut client, &[srv.start()]).await?;
            let mut ok = false;
            for _ in 0..2 {
                fdec.set_auth_context(srv.auth_context());
                let Some(frame) =
                    read_frame(&mut client, &mut cbuf, |b| fdec.decode_frame(b)).await?
                else {
                    return Ok(());
                };
                let msg = frame.to_frontend(fdec.auth_context(), &limits)?;
                match srv.on_response(&msg) {
                    Ok(reply) => send(&mut client, &[reply]).await?,
                    Err(e) => {
                        send(&mut client, &[e.to_error_response()]).await?;
                        break;
                    }
                }
                ok = srv.is_authenticated();
            }
            if ok {
                s.mechanisms
                    .lock()
                    .unwrap()
                    .push(srv.mechanism().unwrap_or_default().to_owned());
            }
            ok
        }
        ClientAuth::Cleartext(expected) => {
            let mut srv = CleartextServer::new();
            send(&mut client, &[srv.start()]).await?;
            fdec.set_auth_context(srv.auth_context());
            let Some(frame) = read_frame(&mut client, &mut cbuf, |b| fdec.decode_frame(b)).await?
            else {
                return Ok(());
            };
            let pw = srv.on_response(&frame.to_frontend(fdec.auth_context(), &limits)?)?;
            let ok = ct_eq(&pw, expected);
            if !ok {
                send(
                    &mut client,
                    &[Error::AuthenticationFailed.to_error_response()],
                )
                .await?;
            }
            ok
        }
    };
    if !authenticated {
        s.auth_failures.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    fdec.set_auth_context(AuthContext::Unknown);

    // Log in upstream with the relay's own credential.
    let mut up = TcpStream::connect(s.upstream).await?;
    up.set_nodelay(true)?;
    let mut parameters = vec![
        (Bytes::from_static(b"user"), Bytes::from(s.user.clone())),
        (
            Bytes::from_static(b"database"),
            Bytes::from(s.database.clone()),
        ),
    ];
    parameters.extend(
        startup
            .parameters
            .iter()
            .filter(|(k, _)| k != "user" && k != "database")
            .cloned(),
    );
    let upstream_startup = FrontendMessage::Startup(StartupMessage {
        version: startup.version,
        parameters,
    });
    let session = Arc::new(Mutex::new(Session::new()));
    session.lock().unwrap().on_frontend(&upstream_startup)?;
    send_front(&mut up, &upstream_startup).await?;
    let mut ubuf = BytesMut::with_capacity(64 * 1024);
    let mut bdec = BackendDecoder::new(limits);
    let mut login = ClientAuthenticator::new(s.user.clone(), s.password.clone());
    let mut greeting = Vec::new();
    loop {
        let Some(frame) = read_frame(&mut up, &mut ubuf, |b| bdec.decode_frame(b)).await? else {
            return Err(Error::AuthenticationProtocol {
                reason: "upstream closed during login",
            });
        };
        let msg = frame.to_backend(&limits)?;
        session.lock().unwrap().on_backend(&msg)?;
        match &msg {
            BackendMessage::Authentication(a) => {
                if let Some(reply) = login.on_authentication(a)? {
                    send_front(&mut up, &reply).await?;
                }
                if login.is_done() {
                    assert_eq!(login.mechanism(), Some("SCRAM-SHA-256"));
                    greeting.push(msg);
                }
            }
            BackendMessage::BackendKeyData { .. } => {
                let key = session
                    .lock()
                    .unwrap()
                    .backend_key()
                    .cloned()
                    .expect("key captured");
                s.upstream_keys.lock().unwrap().push(key.process_id);
                let ours = s.cancel.lock().unwrap().issue(key)?;
                greeting.push(ours.to_message());
            }
            BackendMessage::ErrorResponse(_) => {
                send(&mut client, &[msg]).await?;
                return Ok(());
            }
            BackendMessage::ReadyForQuery(_) => {
                greeting.push(msg);
                break;
            }
            _ => greeting.push(msg),
        }
    }
    send(&mut client, &greeting).await?;

    // Relay both directions, frame by frame, tracking the session.
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = up.into_split();
    let sess = session.clone();
    let to_upstream = async move {
        let mut out = BytesMut::with_capacity(64 * 1024);
        loop {
            // Forward every whole frame in the buffer, then write them in one go.
            while let Some(frame) = fdec.decode_frame(&mut cbuf)? {
                let msg = frame.to_frontend(AuthContext::Unknown, &limits)?;
                sess.lock().unwrap().on_frontend(&msg)?;
                out.extend_from_slice(frame.as_bytes());
            }
            if !out.is_empty() {
                uw.write_all(&out).await?;
                out.clear();
            }
            if cr.read_buf(&mut cbuf).await? == 0 {
                let _ = uw.shutdown().await;
                return Ok::<(), Error>(());
            }
        }
    };
    let sess = session.clone();
    let to_client = async move {
        let mut out = BytesMut::with_capacity(64 * 1024);
        let mut rewriter = wirewarden_postgres::RowRewriter::new();
        loop {
            while let Some(frame) = bdec.decode_frame(&mut ubuf)? {
                let msg = frame.to_backend(&limits)?;
                let mut sess = sess.lock().unwrap();
                if let Err(e) = sess.on_backend(&msg) {
                    s.errors
                        .lock()
                        .unwrap()
                        .push(format!("session: {e} on {msg:?}"));
                }
                match &msg {
                    BackendMessage::DataRow(row) => {
                        let Some(rd) = sess.row_description().cloned() else {
                            s.unknown_shape_rows.fetch_add(1, Ordering::SeqCst);
                            out.extend_from_slice(frame.as_bytes());
                            continue;
                        };
                        if rd.len() != row.len() {
                            s.errors.lock().unwrap().push(format!(
                                "row of {} cells, description of {}",
                                row.len(),
                                rd.len()
                            ));
                        }
                        let Some(col) = rd.fields().iter().position(|f| f.name == "ssn") else {
                            out.extend_from_slice(frame.as_bytes());
                            continue;
                        };
                        let field = &rd.fields()[col];
                        let format = field.format().unwrap_or(Format::Text);
                        let n = rewriter.rewrite_into(row, &mut out, |i, v, scratch| {
                            if i != col || v.is_none() {
                                return CellEdit::Keep;
                            }
                            match types::encode_replacement(field.type_oid, format, MASK, scratch) {
                                Ok(()) => CellEdit::Replace,
                                Err(_) => CellEdit::Null,
                            }
                        })?;
                        s.masked.fetch_add(n, Ordering::SeqCst);
                    }
                    _ => out.extend_from_slice(frame.as_bytes()),
                }
            }
            if !out.is_empty() {
                cw.write_all(&out).await?;
                out.clear();
            }
            if ur.read_buf(&mut ubuf).await? == 0 {
                let _ = cw.shutdown().await;
                return Ok::<(), Error>(());
            }
        }
    };
    let (a, b) = tokio::join!(to_upstream, to_client);
    a?;
    b?;
    Ok(())
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn server() -> wirewarden_testkit::Postgres {
    wirewarden_testkit::Postgres::builder()
        .seed_sql(
            "CREATE TABLE people(id int PRIMARY KEY, name text, ssn text, born date, score numeric(10,2));
             INSERT INTO people SELECT g, 'name' || g, lpad(g::text, 3, '0') || '-45-6789', date '1990-01-01' + g, g * 1.5 FROM generate_series(1, 50) g;
             CREATE TABLE sink(id int, note text);",
        )
        .start()
        .expect("start PostgreSQL")
}

fn scram() -> ClientAuth {
    let v = ScramVerifier::derive(CLIENT_PASSWORD.as_bytes(), b"relay-test-salt!", 4096);
    // The verifier survives its textual form, as it would in a configuration file.
    ClientAuth::Scram(v.to_string().parse().unwrap())
}

fn psql(port: u16, password: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    psql_with(port, "sslmode=prefer", password, args, stdin)
}

fn psql_with(
    port: u16,
    opts: &str,
    password: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let conn = format!("host=127.0.0.1 port={port} user={CLIENT_USER} dbname=app {opts}");
    let mut cmd = Process::new("/usr/bin/psql");
    cmd.arg(conn)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(args);
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("psql");
    {
        let mut sin = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            sin.write_all(input.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_relay_with_scram() {
    let pg = server();
    let relay = Relay::start(&pg, scram()).await;
    let port = relay.port();

    // Simple queries, masking of a text column, several statements in one Query.
    let (ok, out, err) = blocking(move || {
        psql(
            port,
            CLIENT_PASSWORD,
            &[
                "-c",
                "SELECT id, ssn FROM people WHERE id <= 2 ORDER BY id; SELECT count(*) FROM people",
            ],
            None,
        )
    })
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("1|{MASK}\n2|{MASK}\n50\n"));

    // COPY FROM STDIN and COPY TO STDOUT through the relay.
    let script = "\\copy sink FROM STDIN\n1\tone\n2\ttwo\n\\.\nCOPY (SELECT id, ssn FROM people WHERE id = 3) TO STDOUT;\nSELECT string_agg(note, ',' ORDER BY id) FROM sink;\n";
    let (ok, out, err) =
        blocking(move || psql(port, CLIENT_PASSWORD, &["-f", "-"], Some(script))).await;
    assert!(ok, "{err}");
    // COPY data is not a DataRow: the relay does not mask it here (out of scope of this test).
    assert_eq!(out, "COPY 2\n3\t003-45-6789\none,two\n");

    // A failing statement leaves the session usable; a wrong password is refused.
    let (ok, _, err) =
        blocking(move || psql(port, CLIENT_PASSWORD, &["-c", "SELECT 1/0"], None)).await;
    assert!(!ok && err.contains("division by zero"), "{err}");
    let (ok, _, err) = blocking(move || psql(port, "wrong", &["-c", "SELECT 1"], None)).await;
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    // The session counts the failure after its reply is written, so wait for it to end.
    assert_eq!(relay.finish().await, Vec::<String>::new());
    assert_eq!(relay.shared.auth_failures.load(Ordering::SeqCst), 1);
    assert_eq!(relay.shared.masked.load(Ordering::SeqCst), 2);
    // The upstream saw the relay's own user, not the client's credential.
    assert_eq!(pg.psql("SELECT count(*) FROM sink").unwrap().trim(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_relay_with_cleartext_token() {
    let pg = server();
    let relay = Relay::start(
        &pg,
        ClientAuth::Cleartext(Bytes::from_static(b"tok_abc.def")),
    )
    .await;
    let port = relay.port();
    let (ok, out, err) = blocking(move || {
        psql(
            port,
            "tok_abc.def",
            &["-c", "SELECT name, ssn FROM people WHERE id = 7"],
            None,
        )
    })
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("name7|{MASK}\n"));
    let (ok, _, err) = blocking(move || psql(port, "tok_wrong", &["-c", "SELECT 1"], None)).await;
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    assert_eq!(relay.finish().await, Vec::<String>::new());
}

async fn connect(
    relay: &Relay,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
) {
    let (client, mut conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(relay.port())
        .user(CLIENT_USER)
        .password(CLIENT_PASSWORD)
        .dbname("app")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect through relay");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n);
            }
        }
    });
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_pipelining_copy_cancel_notify() {
    let pg = server();
    let relay = Relay::start(&pg, scram()).await;
    let (client, mut notes) = connect(&relay).await;

    // Extended protocol with binary results: the masker writes a valid binary text value.
    let stmt = client
        .prepare("SELECT id, ssn, born, score FROM people WHERE id = $1")
        .await
        .unwrap();
    let row = client.query_one(&stmt, &[&5i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);
    assert_eq!(row.get::<_, &str>(1), MASK);
    assert_eq!(row.len(), 4);

    // Pipelining: many queries in flight at once, one of them failing in the middle.
    let s2 = client
        .prepare("SELECT ssn, $1::int + 1 AS n FROM people WHERE id = 1")
        .await
        .unwrap();
    let bad = client.prepare("SELECT 1 / $1::int").await.unwrap();
    let futs = (0..20).map(|i| {
        let client = &client;
        let (s2, bad) = (&s2, &bad);
        async move {
            if i == 10 {
                client.query(bad, &[&0i32]).await.map(|_| -1)
            } else {
                let rows = client.query(s2, &[&i]).await?;
                Ok(rows[0].get::<_, i32>(1))
            }
        }
    });
    let results = futures_util::future::join_all(futs).await;
    for (i, r) in results.into_iter().enumerate() {
        if i == 10 {
            assert_eq!(
                r.unwrap_err().code(),
                Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
            );
        } else {
            assert_eq!(r.unwrap(), i32::try_from(i).unwrap() + 1);
        }
    }

    // Row-limited Execute on a portal: PortalSuspended, then resume.
    let mut client = client;
    {
        let tx = client.transaction().await.unwrap();
        let portal = tx
            .bind("SELECT id, ssn FROM people ORDER BY id", &[])
            .await
            .unwrap();
        let first = tx.query_portal(&portal, 3).await.unwrap();
        assert_eq!(first.len(), 3);
        let next = tx.query_portal(&portal, 3).await.unwrap();
        assert_eq!(next[0].get::<_, i32>(0), 4);
        assert_eq!(next[0].get::<_, &str>(1), MASK);
        tx.commit().await.unwrap();
    }

    // COPY both ways.
    {
        let sink = client.copy_in("COPY sink FROM STDIN").await.unwrap();
        futures_util::pin_mut!(sink);
        for i in 0..100 {
            sink.send(Bytes::from(format!("{i}\tnote {i}\n")))
                .await
                .unwrap();
        }
        assert_eq!(sink.finish().await.unwrap(), 100);
        let stream = client
            .copy_out("COPY (SELECT id FROM sink ORDER BY id) TO STDOUT")
            .await
            .unwrap();
        let chunks: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
        let text: String = chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        assert_eq!(text.lines().count(), 100);
        assert_eq!(text.lines().last(), Some("99"));
    }

    // LISTEN / NOTIFY through the relay, notification from another relayed session.
    client.batch_execute("LISTEN events").await.unwrap();
    let (other, _) = connect(&relay).await;
    other
        .execute("SELECT pg_notify('events', 'hello')", &[])
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n.channel(), n.payload()), ("events", "hello"));

    // Cancel through the relay: the client only knows the relay's key, which the relay
    // maps to the upstream's.
    let (sleeper, _) = connect(&relay).await;
    let token = sleeper.cancel_token();
    let task = tokio::spawn(async move { sleeper.batch_execute("SELECT pg_sleep(30)").await });
    // Cancel only once the server is really running the query, however slow the machine.
    let superuser = pg.superuser_url();
    let (watch, _) = tokio_postgres::connect(&superuser, tokio_postgres::NoTls)
        .await
        .map(|(c, conn)| {
            tokio::spawn(conn);
            (c, ())
        })
        .unwrap();
    for _ in 0..200 {
        let n: i64 = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.unwrap_err().code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );

    drop(other);
    drop(client);
    assert_eq!(relay.finish().await, Vec::<String>::new());
    assert_eq!(relay.shared.cancels_forwarded.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_through_relay() {
    let pg = server();
    let relay = Relay::start(&pg, scram()).await;
    let script = format!(
        r#"
import psycopg
with psycopg.connect(host="127.0.0.1", port={port}, user="{CLIENT_USER}", password="{CLIENT_PASSWORD}", dbname="app", sslmode="prefer") as conn:
    cur = conn.cursor()
    cur.execute("SELECT id, ssn FROM people WHERE id = %s", (4,))
    print(cur.fetchall())
    cur.execute("SELECT id, ssn, score FROM people WHERE id = %s", (6,), binary=True)
    print(cur.fetchall())
    with cur.copy("COPY sink (id, note) FROM STDIN") as copy:
        copy.write_row((7, "seven"))
    with conn.pipeline():
        cur.execute("INSERT INTO sink VALUES (%s, %s)", (8, "eight"))
        cur.execute("SELECT count(*) FROM sink")
    print(cur.fetchone()[0])
    conn.commit()
    with conn.cursor(name="c1") as named:
        named.execute("SELECT id, ssn FROM people ORDER BY id")
        print(named.fetchmany(2))
"#,
        port = relay.port()
    );
    let out = blocking(move || {
        Process::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        format!(
            "[(4, '{MASK}')]\n[(6, '{MASK}', Decimal('9.00'))]\n2\n[(1, '{MASK}'), (2, '{MASK}')]\n"
        )
    );
    assert_eq!(relay.finish().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_scram_sha_256_plus_over_tls() {
    let pg = server();
    let relay = Relay::start_with(&pg, scram(), Some(tls())).await;
    let port = relay.port();
    // libpq insists on channel binding, so only SCRAM-SHA-256-PLUS bound to the relay's
    // certificate can succeed.
    let (ok, out, err) = blocking(move || {
        psql_with(
            port,
            "sslmode=require channel_binding=require",
            CLIENT_PASSWORD,
            &["-c", "SELECT ssn FROM people WHERE id = 9"],
            None,
        )
    })
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("{MASK}\n"));
    let (ok, _, err) = blocking(move || {
        psql_with(
            port,
            "sslmode=require channel_binding=require",
            "wrong",
            &["-c", "SELECT 1"],
            None,
        )
    })
    .await;
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    assert_eq!(relay.finish().await, Vec::<String>::new());
    assert_eq!(
        *relay.shared.mechanisms.lock().unwrap(),
        vec!["SCRAM-SHA-256-PLUS".to_owned()]
    );
}
