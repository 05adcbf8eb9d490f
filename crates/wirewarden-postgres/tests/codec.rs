//! The tokio-util layer: `Framed` over an in-memory duplex stream carries frames and
//! messages both ways, unchanged frames are forwarded as the same bytes, and a hostile
//! length surfaces as the crate's typed error.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;
use wirewarden_postgres::codec::{BackendCodec, FrontendCodec};
use wirewarden_postgres::{
    AuthContext, BackendDecoder, BackendMessage, Error, FrontendDecoder, FrontendMessage, Limits,
    StartupMessage, TransactionStatus,
};

#[tokio::test]
async fn framed_both_directions() {
    let (a, b) = tokio::io::duplex(1024);
    // `a` is the client's end, `b` the server's.
    let mut client = Framed::new(a, BackendCodec::new(BackendDecoder::new(Limits::default())));
    let mut server = Framed::new(
        b,
        FrontendCodec::new(FrontendDecoder::new(Limits::default())),
    );

    let startup = FrontendMessage::Startup(StartupMessage {
        version: wirewarden_postgres::ProtocolVersion::V3_2,
        parameters: vec![(Bytes::from_static(b"user"), Bytes::from_static(b"agent"))],
    });
    client.send(startup.clone()).await.unwrap();
    client
        .send(FrontendMessage::Query(Bytes::from_static(b"SELECT 1")))
        .await
        .unwrap();
    let f = server.next().await.unwrap().unwrap();
    assert_eq!(
        f.to_frontend(AuthContext::Unknown, &Limits::default())
            .unwrap(),
        startup
    );
    let q = server.next().await.unwrap().unwrap();
    assert_eq!(q.tag(), Some(b'Q'));

    server
        .send(BackendMessage::ReadyForQuery(TransactionStatus::Idle))
        .await
        .unwrap();
    // Forwarding a frame sends its exact bytes.
    server.send(&q).await.unwrap();
    let z = client.next().await.unwrap().unwrap();
    assert_eq!(
        z.to_backend(&Limits::default()).unwrap(),
        BackendMessage::ReadyForQuery(TransactionStatus::Idle)
    );
    // The server's decoder reads `Q` as unknown in the backend direction.
    let echoed = client.next().await.unwrap().unwrap();
    assert_eq!(echoed.as_bytes(), q.as_bytes());
    assert!(echoed.to_backend(&Limits::default()).is_err());
}

#[tokio::test]
async fn hostile_length_is_a_typed_error() {
    let (mut a, b) = tokio::io::duplex(64);
    let mut server = Framed::new(
        b,
        FrontendCodec::new(FrontendDecoder::established(Limits::default())),
    );
    a.write_all(&[b'Q', 0x7f, 0, 0, 0]).await.unwrap();
    match server.next().await.unwrap() {
        Err(Error::MessageTooLarge { tag: 'Q', .. }) => {}
        other => panic!("{other:?}"),
    }
}
