//! The key set fetched over HTTPS from a real TLS server on loopback, trusting only the CA
//! that is configured.
#![cfg(feature = "jwks-fetch")]

#[path = "support/keys.rs"]
mod keys;

use std::sync::Arc;

use keys::{ISSUER, TestKey, claims, jwks};
use rcgen::{CertificateParams, CertifiedIssuer, DnType, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wirewarden_identity::{
    Error, JwksCache, JwksOptions, JwtConfig, JwtProvider, KeySource, Timestamp, TlsRoots,
};

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "JWKS test CA");
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Serves `body` as JSON over TLS to every connection, with a certificate for 127.0.0.1
/// issued by `ca`.
async fn serve_tls(ca: &CertifiedIssuer<'static, KeyPair>, body: String) -> std::net::SocketAddr {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let cert = params.signed_by(&key, ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn jwks_over_https_with_the_configured_ca_only() {
    let key = TestKey::ec("ec-1");
    let ca = ca();
    let addr = serve_tls(&ca, jwks(&[&key]).to_string()).await;
    let url = format!("https://127.0.0.1:{}/jwks", addr.port());

    let trusted = TlsRoots::from_pem(ca.pem().as_bytes()).unwrap();
    let cache = JwksCache::new(
        ISSUER,
        KeySource::Url(url.clone()),
        JwksOptions::default().tls(trusted),
    )
    .unwrap();
    let p =
        JwtProvider::with_keys(JwtConfig::new(ISSUER, &[keys::AUDIENCE]), Arc::new(cache)).unwrap();
    let principal = p
        .verify(&key.sign(&claims("a")), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(principal.subject, "a");

    // The same from configuration: a CA file named in TOML.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("idp-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let cfg = JwtConfig::from_toml(&format!(
        "issuer = \"{ISSUER}\"\naudiences = [\"{}\"]\njwks_url = \"{url}\"\ntls_ca_file = \"{}\"\n",
        keys::AUDIENCE,
        ca_file.display()
    ))
    .unwrap();
    let p = JwtProvider::new(cfg.clone()).unwrap();
    assert!(
        p.verify(&key.sign(&claims("a")), Timestamp::now())
            .await
            .is_ok()
    );
    let mut missing = cfg;
    missing.tls_ca_file = Some(dir.path().join("absent.pem"));
    assert_eq!(JwtProvider::new(missing).unwrap_err().code(), "config");

    // Another CA's roots: the TLS handshake fails, so no keys, so no identity.
    let untrusted = TlsRoots::from_pem(ca_pem_of_another().as_bytes()).unwrap();
    let cache = JwksCache::new(
        ISSUER,
        KeySource::Url(url),
        JwksOptions::default().tls(untrusted),
    )
    .unwrap();
    let p =
        JwtProvider::with_keys(JwtConfig::new(ISSUER, &[keys::AUDIENCE]), Arc::new(cache)).unwrap();
    let e = p
        .verify(&key.sign(&claims("a")), Timestamp::now())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::KeySetUnavailable { reason } if reason.contains("TLS")),
        "{e:?}"
    );
    assert!(TlsRoots::from_pem(b"no certificates here").is_err());
}

fn ca_pem_of_another() -> String {
    ca().pem()
}
