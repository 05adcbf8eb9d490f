//! The webhook notifier against a real HTTP server on loopback, started here with hyper.
#![cfg(feature = "webhook")]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wirewarden_core::{
    AuthMethod, Command, CommandClass, CommandId, Principal, Protocol, ReviewRequirement, RuleId,
    Target, Timestamp,
};
use wirewarden_policy::MemoryGrantStore;
use wirewarden_review::{
    ApprovalScope, MemoryReviewStore, Notification, Notifier, Reviewer, Reviews, WebhookError,
    WebhookNotifier,
};

struct Received {
    method: String,
    content_type: String,
    body: serde_json::Value,
}

/// Serves HTTP/1 on loopback, answers every request with `status`, and forwards what it
/// received.
async fn serve(status: StatusCode) -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let method = req.method().to_string();
                        let content_type = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let bytes = req.into_body().collect().await.unwrap().to_bytes();
                        let body = serde_json::from_slice(&bytes).unwrap();
                        let _ = tx.send(Received {
                            method,
                            content_type,
                            body,
                        });
                        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *res.status_mut() = status;
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/hooks/reviews"), rx)
}

fn held() -> (Principal, Target, Command) {
    let agent = Principal::new(
        "agent-<7>",
        AuthMethod::External {
            mechanism: "test".into(),
        },
    )
    .unwrap();
    let crm = Target::new("crm", Protocol::Postgres).unwrap();
    let cmd = Command::new(
        Protocol::Postgres,
        "UPDATE",
        CommandClass::Write,
        "UPDATE accounts SET note = '```<b>&' WHERE id = 1",
    )
    .unwrap();
    (agent, crm, cmd)
}

#[tokio::test]
async fn posts_slack_compatible_json_for_requests_and_resolutions() {
    let (url, mut rx) = serve(StatusCode::OK).await;
    let notifier = Arc::new(WebhookNotifier::new(&url).unwrap());
    let reviews = Reviews::new(
        Arc::new(MemoryReviewStore::new()),
        Arc::new(MemoryGrantStore::new()),
    )
    .with_notifier(notifier);
    let (agent, crm, cmd) = held();
    let requested = reviews
        .request(
            &agent,
            &crm,
            &cmd,
            CommandId::new(),
            RuleId::new("writes-need-review"),
            "writes to crm need a DBA",
            ReviewRequirement::one_of("dba", Duration::from_secs(300)),
            Timestamp::now(),
        )
        .await
        .unwrap();
    assert!(
        requested.notify_error.is_none(),
        "{:?}",
        requested.notify_error
    );

    let got = rx.recv().await.unwrap();
    assert_eq!(got.method, "POST");
    assert_eq!(got.content_type, "application/json");
    let text = got.body["text"].as_str().unwrap();
    assert!(text.contains("Review requested"), "{text}");
    assert!(text.contains(&requested.review.id.to_string()), "{text}");
    let blocks = got.body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let section = blocks[1]["text"]["text"].as_str().unwrap();
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    // mrkdwn control characters are escaped and the code fence cannot be closed early.
    assert!(section.contains("agent-&lt;7&gt;"), "{section}");
    assert!(section.contains("&lt;b&gt;&amp;"), "{section}");
    assert_eq!(section.matches("```").count(), 2, "{section}");
    let fields = blocks[2]["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .any(|f| f["text"].as_str().unwrap().contains("1 from dba")),
        "{fields:?}"
    );
    let context = blocks[3]["elements"][0]["text"].as_str().unwrap();
    assert!(context.contains(&cmd.digest.to_string()), "{context}");

    reviews
        .approve(
            requested.review.id,
            &Reviewer::new("alice").with_group("dba"),
            ApprovalScope::grant(Duration::from_secs(600)),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let got = rx.recv().await.unwrap();
    let text = got.body["text"].as_str().unwrap();
    assert!(
        text.contains("approved by alice for a grant for 10 minutes"),
        "{text}"
    );
}

#[tokio::test]
async fn failures_are_reported_not_hidden() {
    let (url, _rx) = serve(StatusCode::INTERNAL_SERVER_ERROR).await;
    let notifier = WebhookNotifier::new(&url).unwrap();
    let store = MemoryReviewStore::new();
    let (agent, crm, cmd) = held();
    let reviews = Reviews::new(Arc::new(store), Arc::new(MemoryGrantStore::new()));
    let requested = reviews
        .request(
            &agent,
            &crm,
            &cmd,
            CommandId::new(),
            RuleId::new("r"),
            "why",
            ReviewRequirement::one_of("dba", Duration::from_secs(300)),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let err = notifier
        .notify(&Notification::Requested(&requested.review))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<WebhookError>(),
            Some(WebhookError::Status { status: 500 })
        ),
        "{err}"
    );

    // Nothing listens on this port any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let notifier = WebhookNotifier::new(&format!("http://{addr}/")).unwrap();
    assert!(
        notifier
            .notify(&Notification::Requested(&requested.review))
            .await
            .is_err()
    );

    for bad in [
        "https://hooks.example.com/x",
        "not a url",
        "ftp://x/",
        "/relative",
    ] {
        assert!(
            matches!(WebhookNotifier::new(bad), Err(WebhookError::BadUrl { .. })),
            "{bad}"
        );
    }
}

/// Serves HTTPS on loopback with a fresh self-signed certificate for `localhost`; returns
/// the URL and the certificate to trust.
async fn serve_tls() -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    mpsc::UnboundedReceiver<Received>,
) {
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
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let method = req.method().to_string();
                        let content_type = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let host = req.headers().get("host").cloned();
                        let path = req.uri().path().to_owned();
                        let bytes = req.into_body().collect().await.unwrap().to_bytes();
                        let mut body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                        body["_seen"] = serde_json::json!({
                            "host": host.and_then(|h| h.to_str().ok().map(str::to_owned)),
                            "path": path,
                        });
                        let _ = tx.send(Received {
                            method,
                            content_type,
                            body,
                        });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (
        format!("https://localhost:{port}/services/T0/B0/secret"),
        cert,
        rx,
    )
}

fn client_config(
    trusted: Option<rustls::pki_types::CertificateDer<'static>>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(cert) = trusted {
        roots.add(cert).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[tokio::test]
async fn posts_over_https_to_a_trusted_server_only() {
    let (url, cert, mut rx) = serve_tls().await;
    let store = MemoryReviewStore::new();
    let (agent, crm, cmd) = held();
    let reviews = Reviews::new(Arc::new(store), Arc::new(MemoryGrantStore::new()));
    let requested = reviews
        .request(
            &agent,
            &crm,
            &cmd,
            CommandId::new(),
            RuleId::new("r"),
            "why",
            ReviewRequirement::one_of("dba", Duration::from_secs(300)),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let note = Notification::Requested(&requested.review);

    // https without a TLS configuration is refused up front, never sent in clear.
    assert!(matches!(
        WebhookNotifier::new(&url),
        Err(WebhookError::BadUrl { .. })
    ));

    let trusted = WebhookNotifier::with_tls(&url, client_config(Some(cert))).unwrap();
    assert!(
        !format!("{trusted:?}").contains("secret"),
        "Debug leaks the webhook path"
    );
    trusted.notify(&note).await.unwrap();
    let got = rx.recv().await.unwrap();
    assert_eq!(got.method, "POST");
    assert_eq!(got.content_type, "application/json");
    assert!(
        got.body["text"]
            .as_str()
            .unwrap()
            .contains("Review requested")
    );
    assert_eq!(got.body["_seen"]["path"], "/services/T0/B0/secret");
    assert!(
        got.body["_seen"]["host"]
            .as_str()
            .unwrap()
            .starts_with("localhost:"),
        "{:?}",
        got.body["_seen"]
    );

    // A server the configuration does not trust gets nothing.
    let untrusted = WebhookNotifier::with_tls(&url, client_config(None)).unwrap();
    assert!(untrusted.notify(&note).await.is_err());
    assert!(
        rx.try_recv().is_err(),
        "an untrusted server received the message"
    );
}
