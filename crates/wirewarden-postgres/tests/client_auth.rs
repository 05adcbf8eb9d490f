//! The client side of authentication against a real PostgreSQL: the same
//! `ClientAuthenticator` logs in when the server asks for SCRAM-SHA-256, md5 or a cleartext
//! password (chosen per role in pg_hba.conf), and a wrong password is refused.

use std::os::unix::fs::PermissionsExt;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wirewarden_postgres::Authentication;
use wirewarden_postgres::auth::ClientAuthenticator;
use wirewarden_postgres::{
    BackendDecoder, BackendMessage, Error, FrontendMessage, Limits, ProtocolVersion, StartupMessage,
};

/// Logs in and returns `current_user` and the kind of the server's first authentication
/// request.
async fn login(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> Result<(String, &'static str), Error> {
    let mut sock = TcpStream::connect(addr).await?;
    let mut out = BytesMut::new();
    FrontendMessage::Startup(StartupMessage {
        version: ProtocolVersion::V3_0,
        parameters: vec![
            (
                Bytes::from_static(b"user"),
                Bytes::copy_from_slice(user.as_bytes()),
            ),
            (
                Bytes::from_static(b"database"),
                Bytes::from_static(b"postgres"),
            ),
        ],
    })
    .encode(&mut out)?;
    sock.write_all(&out).await?;
    let mut auth = ClientAuthenticator::new(
        Bytes::copy_from_slice(user.as_bytes()),
        Bytes::copy_from_slice(password.as_bytes()),
    );
    let mut dec = BackendDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut queried = false;
    let mut kind = "";
    loop {
        let Some((_, msg)) = dec.decode(&mut buf)? else {
            if sock.read_buf(&mut buf).await? == 0 {
                return Err(Error::AuthenticationProtocol {
                    reason: "server closed",
                });
            }
            continue;
        };
        match msg {
            BackendMessage::Authentication(a) => {
                if kind.is_empty() {
                    kind = match a {
                        Authentication::Sasl { .. } => "sasl",
                        Authentication::Md5Password { .. } => "md5",
                        Authentication::CleartextPassword => "cleartext",
                        _ => "other",
                    };
                }
                if let Some(reply) = auth.on_authentication(&a)? {
                    let mut out = BytesMut::new();
                    reply.encode(&mut out)?;
                    sock.write_all(&out).await?;
                }
            }
            BackendMessage::ErrorResponse(e) => {
                return Err(Error::AuthenticationProtocol {
                    reason: Box::leak(e.message().unwrap_or_default().to_owned().into_boxed_str()),
                });
            }
            BackendMessage::ReadyForQuery(_) if !queried => {
                assert!(auth.is_done());
                queried = true;
                let mut out = BytesMut::new();
                FrontendMessage::Query(Bytes::from_static(b"SELECT current_user"))
                    .encode(&mut out)?;
                sock.write_all(&out).await?;
            }
            BackendMessage::DataRow(row) => {
                let who = row.cell(0).flatten().unwrap_or_default();
                return Ok((String::from_utf8_lossy(who).into_owned(), kind));
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_md5_and_cleartext_against_a_real_server() {
    let hba = std::env::temp_dir().join(format!("wirewarden-pg-hba-{}.conf", std::process::id()));
    std::fs::write(
        &hba,
        "local all all trust\n\
         host all md5user 127.0.0.1/32 md5\n\
         host all plainuser 127.0.0.1/32 password\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    std::fs::set_permissions(&hba, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pg = wirewarden_testkit::Postgres::builder()
        .setting("hba_file", hba.to_str().unwrap())
        .superuser_sql(
            "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5-pw';
             RESET password_encryption; CREATE ROLE plainuser LOGIN PASSWORD 'plain-pw';",
        )
        .start()
        .expect("start PostgreSQL");
    let addr = pg.addr();
    let seen = login(addr, pg.user(), pg.password()).await.unwrap();
    assert_eq!(seen, (pg.user().to_owned(), "sasl"));
    let seen = login(addr, "md5user", "md5-pw").await.unwrap();
    assert_eq!(seen, ("md5user".to_owned(), "md5"));
    let seen = login(addr, "plainuser", "plain-pw").await.unwrap();
    assert_eq!(seen, ("plainuser".to_owned(), "cleartext"));
    for (user, wrong) in [
        (pg.user(), "nope"),
        ("md5user", "nope"),
        ("plainuser", "nope"),
    ] {
        let e = login(addr, user, wrong).await.unwrap_err();
        assert!(
            e.to_string().contains("password authentication failed"),
            "{user}: {e}"
        );
    }
    let _ = std::fs::remove_file(&hba);
}
