//! Shared by the integration tests: signing keys generated in-process, token minting, and a
//! real HTTP server publishing a JWKS on loopback.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use wirewarden_identity::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

pub const ISSUER: &str = "https://idp.wirewarden.test";
pub const AUDIENCE: &str = "https://crm.wirewarden.test";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
    /// The public key's raw bytes (RSA modulus, EC point, Ed25519 key): what an attacker
    /// would use as an HMAC secret.
    pub public_bytes: Vec<u8>,
}

impl TestKey {
    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        // RSA key generation is slow in a debug build: one key per test binary, reused.
        static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
        let key = KEY.get_or_init(|| {
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key")
        });
        let der = key.to_pkcs1_der().expect("DER");
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(&n), "e": b64(&e)}),
            public_bytes: n,
        }
    }

    pub fn ec(kid: &str) -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
        let raw = kp.public_key_raw().to_vec();
        let (x, y) = raw[1..].split_at(32);
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&kp.serialize_der()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "x": b64(x), "y": b64(y)}),
            public_bytes: raw,
        }
    }

    pub fn ed(kid: &str) -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        let raw = kp.public_key_raw().to_vec();
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&kp.serialize_der()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&raw)}),
            public_bytes: raw,
        }
    }

    /// Signs `claims` with this key, naming its kid, `typ: at+jwt`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        encode(&header, claims, &self.encoding).expect("signing")
    }
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

pub fn now_secs() -> i64 {
    wirewarden_identity::Timestamp::now().unix_secs()
}

/// Typical RFC 9068 claims, valid for five minutes.
pub fn claims(sub: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "client_id": sub,
        "iat": now,
        "exp": now + 300,
        "jti": "j1",
        "scope": "read write",
        "groups": ["analysts", "agents"],
    })
}

/// Builds an unsigned compact JWS from raw header/payload JSON and signature bytes.
pub fn raw_token(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(signature)
    )
}

/// An HMAC-SHA256 token whose secret is `secret`, with the given header fields.
pub fn hmac_token(kid: &str, secret: &[u8], payload: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    encode(&header, payload, &EncodingKey::from_secret(secret)).expect("HMAC signing")
}

/// A real HTTP/1.1 server on loopback that serves a JWKS at `/jwks` and a discovery document
/// at `/.well-known/openid-configuration`, and counts JWKS requests.
pub struct JwksServer {
    pub addr: SocketAddr,
    pub jwks: Arc<Mutex<Value>>,
    pub discovery_issuer: Arc<Mutex<String>>,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(jwks: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let jwks = Arc::new(Mutex::new(jwks));
        let hits = Arc::new(AtomicUsize::new(0));
        let discovery_issuer = Arc::new(Mutex::new(format!("http://{addr}")));
        let (j, h, d) = (jwks.clone(), hits.clone(), discovery_issuer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (j, h, d) = (j.clone(), h.clone(), d.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (j, h, d) = (j.clone(), h.clone(), d.clone());
                        async move {
                            let body = match req.uri().path() {
                                "/jwks" => {
                                    h.fetch_add(1, Ordering::SeqCst);
                                    j.lock().unwrap().to_string()
                                }
                                "/.well-known/openid-configuration" => {
                                    let iss = d.lock().unwrap().clone();
                                    json!({"issuer": iss, "jwks_uri": format!("http://{addr}/jwks")})
                                        .to_string()
                                }
                                _ => {
                                    return Ok::<_, Infallible>(
                                        Response::builder()
                                            .status(404)
                                            .body(Full::new(Bytes::new()))
                                            .unwrap(),
                                    );
                                }
                            };
                            Ok(Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            jwks,
            discovery_issuer,
            hits,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_jwks(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
