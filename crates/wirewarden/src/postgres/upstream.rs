//! The gateway's own connection to the upstream server: TCP, optional TLS, and a login with
//! the credential only the gateway holds (SCRAM-SHA-256, with channel binding over TLS).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wirewarden_postgres::auth::{ClientAuthenticator, auth_context_after};
use wirewarden_postgres::{
    Authentication, BackendDecoder, BackendMessage, ErrorFields, FrontendMessage, Limits,
    ProtocolVersion, StartupMessage, TransactionStatus,
};

use super::UpstreamConfig;
use crate::{Error, Result};

pub(crate) use crate::listen::BoxIo;
use crate::listen::Dial;

/// A logged-in upstream connection.
pub(crate) struct Upstream {
    pub(crate) io: BoxIo,
    /// Bytes read past ReadyForQuery (normally none).
    pub(crate) buf: BytesMut,
    pub(crate) decoder: BackendDecoder,
    /// ParameterStatus messages of the login, in order.
    pub(crate) parameters: Vec<(Bytes, Bytes)>,
    /// The upstream's cancel key.
    pub(crate) key: Option<(i32, Bytes)>,
    pub(crate) status: TransactionStatus,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("parameters", &self.parameters.len())
            .finish_non_exhaustive()
    }
}

pub(crate) async fn write_msg(
    io: &mut (impl AsyncWrite + Unpin),
    msg: &FrontendMessage,
) -> Result<()> {
    let mut out = BytesMut::new();
    msg.encode(&mut out)?;
    io.write_all(&out).await.map_err(Error::upstream_io)
}

/// Reads one backend message.
pub(crate) async fn read_backend(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    decoder: &mut BackendDecoder,
) -> Result<BackendMessage> {
    loop {
        if let Some((_, msg)) = decoder.decode(buf)? {
            return Ok(msg);
        }
        buf.reserve(8192);
        if io.read_buf(buf).await.map_err(Error::upstream_io)? == 0 {
            return Err(Error::Closed("upstream"));
        }
    }
}

/// Opens a TCP (and optionally TLS) connection to the upstream; with TLS, also returns the
/// server's leaf certificate, DER.
pub(crate) async fn open(
    cfg: &UpstreamConfig,
    limits: &Limits,
    dial: &Dial,
) -> Result<(BoxIo, Option<Vec<u8>>)> {
    if let Dial::Given(given) = dial {
        return Ok((given().map_err(Error::upstream_io)?, None));
    }
    let tcp = TcpStream::connect(&cfg.addr)
        .await
        .map_err(Error::upstream_io)?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &cfg.tls else {
        return Ok((Box::new(tcp), None));
    };
    let mut tcp = tcp;
    write_msg(&mut tcp, &FrontendMessage::SslRequest).await?;
    let mut decoder = BackendDecoder::new(*limits);
    decoder.expect_ssl_response();
    let mut buf = BytesMut::new();
    match read_backend(&mut tcp, &mut buf, &mut decoder).await? {
        BackendMessage::SslResponse(true) if buf.is_empty() => {}
        BackendMessage::SslResponse(true) => {
            return Err(Error::Tls(
                "upstream sent bytes before the TLS handshake".into(),
            ));
        }
        _ => {
            return Err(Error::Tls(format!(
                "upstream {} does not accept TLS",
                cfg.addr
            )));
        }
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    let stream = connector
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|e| Error::Tls(format!("upstream handshake: {e}")))?;
    // The leaf certificate, for tls-server-end-point channel binding (empty, and so
    // unbindable, should the server have presented none).
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map_or_else(Vec::new, |cert| cert.as_ref().to_vec());
    Ok((Box::new(stream), Some(leaf)))
}

/// Connects and logs in as the configured upstream user. `extra` are startup parameters
/// passed on from the client (application_name, client_encoding …).
pub(crate) async fn connect(
    cfg: &UpstreamConfig,
    limits: &Limits,
    dial: &Dial,
    extra: &[(Bytes, Bytes)],
) -> Result<Upstream> {
    let (mut io, leaf) = open(cfg, limits, dial).await?;
    let mut parameters: Vec<(Bytes, Bytes)> = vec![
        (Bytes::from_static(b"user"), Bytes::from(cfg.user.clone())),
        (
            Bytes::from_static(b"database"),
            Bytes::from(cfg.database.clone()),
        ),
    ];
    parameters.extend(extra.iter().cloned());
    let startup = FrontendMessage::Startup(StartupMessage {
        version: ProtocolVersion::V3_0,
        parameters,
    });
    write_msg(&mut io, &startup).await?;

    let mut auth = ClientAuthenticator::new(
        cfg.user.clone().into_bytes(),
        cfg.password.expose().as_bytes().to_vec(),
    )
    .scram_only()
    .with_limits(*limits)
    .with_channel_binding_policy(
        cfg.tls
            .as_ref()
            .map(|t| t.channel_binding)
            .unwrap_or_default(),
    );
    if let Some(cert) = leaf {
        auth = auth.with_server_certificate(&cert);
    }
    let mut decoder = BackendDecoder::new(*limits);
    let mut buf = BytesMut::with_capacity(8192);
    let mut up = Upstream {
        io,
        buf: BytesMut::new(),
        decoder: BackendDecoder::new(*limits),
        parameters: Vec::new(),
        key: None,
        status: TransactionStatus::Idle,
    };
    loop {
        let msg = read_backend(&mut up.io, &mut buf, &mut decoder).await?;
        match msg {
            BackendMessage::Authentication(a) => {
                if let Some(reply) = auth
                    .on_authentication(&a)
                    .map_err(|e| Error::UpstreamLogin(e.to_string()))?
                {
                    write_msg(&mut up.io, &reply).await?;
                }
                if matches!(a, Authentication::Ok) && !auth.is_done() {
                    return Err(Error::UpstreamLogin("server skipped authentication".into()));
                }
                let _ = auth_context_after(&a);
            }
            BackendMessage::ParameterStatus { name, value } => up.parameters.push((name, value)),
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => up.key = Some((process_id, secret_key)),
            BackendMessage::NoticeResponse(_) | BackendMessage::NegotiateProtocolVersion { .. } => {
            }
            BackendMessage::ReadyForQuery(status) => {
                up.status = status;
                up.buf = buf;
                up.decoder = decoder;
                return Ok(up);
            }
            BackendMessage::ErrorResponse(e) => return Err(Error::UpstreamLogin(describe(&e))),
            other => {
                return Err(Error::UpstreamLogin(format!(
                    "unexpected {other:?} during login"
                )));
            }
        }
    }
}

pub(crate) fn describe(e: &ErrorFields) -> String {
    format!(
        "{} ({})",
        e.message().unwrap_or("error"),
        e.code().unwrap_or("?????")
    )
}

/// Sends a CancelRequest for `key` on a new connection.
pub(crate) async fn cancel(
    cfg: &UpstreamConfig,
    limits: &Limits,
    dial: &Dial,
    process_id: i32,
    secret: Bytes,
) -> Result<()> {
    let (mut io, _) = open(cfg, limits, dial).await?;
    let req = FrontendMessage::CancelRequest(wirewarden_postgres::frontend::CancelRequest {
        process_id,
        secret_key: secret,
    });
    write_msg(&mut io, &req).await?;
    // The server closes the connection without a reply.
    let mut sink = [0u8; 16];
    let _ = io.read(&mut sink).await;
    Ok(())
}

/// Runs one simple query and returns its rows as text cells.
pub(crate) async fn simple_query(up: &mut Upstream, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    write_msg(
        &mut up.io,
        &FrontendMessage::Query(Bytes::from(sql.to_owned())),
    )
    .await?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        match read_backend(&mut up.io, &mut up.buf, &mut up.decoder).await? {
            BackendMessage::DataRow(row) => rows.push(
                row.cells()
                    .map(|c| c.map(|b| String::from_utf8_lossy(b).into_owned()))
                    .collect(),
            ),
            BackendMessage::ErrorResponse(e) => error = Some(describe(&e)),
            BackendMessage::ReadyForQuery(s) => {
                up.status = s;
                return match error {
                    Some(e) => Err(Error::UpstreamLogin(e)),
                    None => Ok(rows),
                };
            }
            _ => {}
        }
    }
}
