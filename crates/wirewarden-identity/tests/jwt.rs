//! JWT access tokens signed in-process (RS256, ES256, EdDSA) and verified against a JWKS served
//! by a real HTTP server on loopback; hostile tokens of every kind the issue names.
#![cfg(feature = "jwks-fetch")]

#[path = "support/keys.rs"]
mod keys;

use std::sync::Arc;
use std::time::Duration;

use keys::{AUDIENCE, ISSUER, JwksServer, TestKey, claims, hmac_token, jwks, now_secs, raw_token};
use serde_json::json;
use wirewarden_identity::jsonwebtoken;
use wirewarden_identity::{
    AuthContext, AuthMethod, Credential, Error, IdentityProvider, JwksCache, JwksOptions,
    JwtConfig, JwtProvider, KeySource, Timestamp, error_code,
};

fn config() -> JwtConfig {
    let mut c = JwtConfig::new(ISSUER, &[AUDIENCE]);
    c.attribute_claims
        .insert("client".into(), "client_id".into());
    c
}

fn provider_for(server: &JwksServer, options: JwksOptions) -> JwtProvider {
    let cache = JwksCache::new(ISSUER, KeySource::Url(server.url()), options).unwrap();
    JwtProvider::with_keys(config(), Arc::new(cache)).unwrap()
}

async fn verify(p: &JwtProvider, token: &str) -> Result<wirewarden_identity::Principal, Error> {
    p.verify(token, Timestamp::now()).await
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_verify_and_map_claims() {
    let (rsa, ec, ed) = (
        TestKey::rsa("rsa-1"),
        TestKey::ec("ec-1"),
        TestKey::ed("ed-1"),
    );
    let server = JwksServer::start(jwks(&[&rsa, &ec, &ed])).await;
    let p = provider_for(&server, JwksOptions::default());
    for key in [&rsa, &ec, &ed] {
        let token = key.sign(&claims("agent-7"));
        let principal = verify(&p, &token).await.unwrap();
        assert_eq!(principal.subject, "agent-7");
        assert!(principal.in_group("analysts") && principal.in_group("agents"));
        assert!(principal.in_group("scope:read") && principal.in_group("scope:write"));
        assert_eq!(principal.attributes["client"], "agent-7");
        assert_eq!(
            principal.auth,
            AuthMethod::Jwt {
                issuer: ISSUER.into(),
                key_id: Some(key.kid.clone()),
            }
        );
        assert!(principal.expires_at.is_some());
    }
    // One fetch served all three keys.
    assert_eq!(server.hits(), 1);

    // Through the trait object, too.
    let dynp: &dyn IdentityProvider = &p;
    let cred = Credential::bearer(ec.sign(&claims("agent-8")));
    assert!(dynp.accepts(&cred));
    assert_eq!(
        dynp.authenticate(&cred, &AuthContext::new())
            .await
            .unwrap()
            .subject,
        "agent-8"
    );
}

#[tokio::test]
async fn hostile_tokens_are_refused_with_the_right_reason() {
    let (rsa, ec) = (TestKey::rsa("rsa-1"), TestKey::ec("ec-1"));
    let server = JwksServer::start(jwks(&[&rsa, &ec])).await;
    let p = provider_for(&server, JwksOptions::default());
    let now = now_secs();

    // Wrong audience, wrong issuer (the latter refused before any key is fetched).
    let mut c = claims("a");
    c["aud"] = json!(["https://other.test"]);
    assert!(matches!(
        verify(&p, &ec.sign(&c)).await,
        Err(Error::WrongAudience { found }) if found == ["https://other.test"]
    ));
    let mut c = claims("a");
    c["iss"] = json!("https://evil.test");
    assert!(matches!(
        verify(&p, &ec.sign(&c)).await,
        Err(Error::WrongIssuer { .. })
    ));
    let mut c = claims("a");
    c.as_object_mut().unwrap().remove("aud");
    assert!(matches!(
        verify(&p, &ec.sign(&c)).await,
        Err(Error::WrongAudience { .. })
    ));

    // alg: none, with and without a signature part.
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": "rsa-1"});
        for sig in [&b""[..], b"x"] {
            let t = raw_token(&header, &claims("admin"), sig);
            let e = verify(&p, &t).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::DisallowedAlgorithm { .. } | Error::Malformed { .. }
                ),
                "{alg}: {e:?}"
            );
        }
    }
    let t = raw_token(&json!({"alg": "none"}), &claims("admin"), b"sig");
    assert!(matches!(
        verify(&p, &t).await,
        Err(Error::DisallowedAlgorithm { .. })
    ));

    // An HMAC token keyed with the RSA public key (the classic confusion attack), with the
    // modulus and with the JWK text as the secret.
    for secret in [rsa.public_bytes.clone(), rsa.jwk.to_string().into_bytes()] {
        let t = hmac_token("rsa-1", &secret, &claims("admin"));
        assert!(matches!(
            verify(&p, &t).await,
            Err(Error::DisallowedAlgorithm { .. })
        ));
    }

    // A header that claims another asymmetric algorithm than the key's.
    let mut t = ec.sign(&claims("admin"));
    let (_, rest) = t.split_once('.').unwrap();
    let forged_header = json!({"alg": "RS256", "typ": "at+jwt", "kid": "ec-1"});
    t = format!(
        "{}.{rest}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            forged_header.to_string()
        )
    );
    assert!(matches!(
        verify(&p, &t).await,
        Err(Error::DisallowedAlgorithm { reason, .. }) if reason.contains("key")
    ));

    // Expired, beyond the leeway; inside the leeway it still passes.
    let mut c = claims("a");
    c["exp"] = json!(now - 31);
    assert!(matches!(
        verify(&p, &ec.sign(&c)).await,
        Err(Error::Expired { .. })
    ));
    c["exp"] = json!(now - 5);
    let inside = verify(&p, &ec.sign(&c)).await.unwrap();
    // The principal lives until exp plus the leeway, not a moment less or more.
    assert_eq!(inside.expires_at.map(|t| t.unix_secs()), Some(now - 5 + 30));
    assert!(!inside.is_expired_at(Timestamp::now()));
    // Without exp.
    c.as_object_mut().unwrap().remove("exp");
    assert!(matches!(
        verify(&p, &ec.sign(&c)).await,
        Err(Error::InvalidClaim { claim }) if claim == "exp"
    ));
    c["exp"] = json!("tomorrow");
    assert!(matches!(
        verify(&p, &ec.sign(&c)).await,
        Err(Error::InvalidClaim { .. })
    ));

    // Not yet valid.
    let mut c = claims("a");
    c["nbf"] = json!(now + 120);
    assert!(matches!(
        verify(&p, &ec.sign(&c)).await,
        Err(Error::NotYetValid { .. })
    ));
    let mut c = claims("a");
    c["iat"] = json!(now + 3600);
    assert!(matches!(
        verify(&p, &ec.sign(&c)).await,
        Err(Error::NotYetValid { .. })
    ));

    // No subject, an empty one.
    let mut c = claims("a");
    c["sub"] = json!("");
    assert!(matches!(
        verify(&p, &ec.sign(&c)).await,
        Err(Error::InvalidClaim { .. })
    ));

    // Tampered signature and tampered payload.
    let good = ec.sign(&claims("agent"));
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let t = format!("{head}.{}", String::from_utf8(sig).unwrap());
    assert_eq!(verify(&p, &t).await.unwrap_err(), Error::BadSignature);
    let mut c = claims("agent");
    c["sub"] = json!("admin");
    let other = ec.sign(&c);
    let parts: Vec<&str> = good.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert_eq!(verify(&p, &spliced).await.unwrap_err(), Error::BadSignature);
    // A signature by another key under the real kid.
    let impostor = TestKey::ec("ec-1");
    assert_eq!(
        verify(&p, &impostor.sign(&claims("a"))).await.unwrap_err(),
        Error::BadSignature
    );

    // Token types: an ID token is not an access token.
    let mut h = jsonwebtoken::Header::new(ec.alg);
    h.kid = Some("ec-1".into());
    h.typ = Some("dpop+jwt".into());
    let t = jsonwebtoken::encode(&h, &claims("a"), &ec.encoding).unwrap();
    assert!(matches!(verify(&p, &t).await, Err(Error::WrongType { .. })));

    // Critical header extensions we do not understand.
    let t = raw_token(
        &json!({"alg": "ES256", "kid": "ec-1", "crit": ["exp"]}),
        &claims("a"),
        b"s",
    );
    assert!(matches!(verify(&p, &t).await, Err(Error::Malformed { .. })));

    // Garbage.
    for g in [
        "",
        "x",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "eyJ.eyJ.eyJ",
        "....",
        "e30.e30.e30",
    ] {
        let e = verify(&p, g).await.unwrap_err();
        assert!(
            matches!(e, Error::Missing | Error::Malformed { .. }),
            "{g:?}: {e:?}"
        );
    }
    let huge = format!("{}.{}.{}", "a".repeat(20_000), "b", "c");
    assert!(matches!(
        verify(&p, &huge).await,
        Err(Error::Malformed { .. })
    ));

    // None of this needed more than the one fetch.
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn unknown_kid_refreshes_at_most_once_per_interval() {
    let ec = TestKey::ec("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let p = provider_for(
        &server,
        JwksOptions::default().min_refresh_interval(Duration::from_secs(3600)),
    );
    assert!(verify(&p, &ec.sign(&claims("a"))).await.is_ok());
    assert_eq!(server.hits(), 1);

    // A flood of invented kids: refused, and the issuer is not asked again.
    for i in 0..20 {
        let stranger = TestKey::ec(&format!("invented-{i}"));
        let e = verify(&p, &stranger.sign(&claims("a"))).await.unwrap_err();
        assert_eq!(
            e,
            Error::UnknownKey {
                kid: Some(format!("invented-{i}"))
            }
        );
    }
    assert_eq!(server.hits(), 1);
    assert_eq!(p.keys().fetch_count().await, 1);

    // Concurrent lookups of an unknown kid share one refresh as well.
    let p = Arc::new(provider_for(
        &server,
        JwksOptions::default().min_refresh_interval(Duration::from_secs(3600)),
    ));
    let stranger = TestKey::ec("stranger");
    let token = stranger.sign(&claims("a"));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (p, t) = (p.clone(), token.clone());
            tokio::spawn(async move { p.verify(&t, Timestamp::now()).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(Error::UnknownKey { .. })));
    }
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn rotated_keys_are_picked_up_on_an_unknown_kid() {
    let (old, new) = (TestKey::ec("2026-old"), TestKey::ed("2026-new"));
    let server = JwksServer::start(jwks(&[&old])).await;
    let p = provider_for(
        &server,
        JwksOptions::default().min_refresh_interval(Duration::ZERO),
    );
    assert!(verify(&p, &old.sign(&claims("a"))).await.is_ok());
    server.set_jwks(jwks(&[&new]));
    // The old key is still cached; the new kid triggers a refresh and verifies.
    assert!(verify(&p, &new.sign(&claims("a"))).await.is_ok());
    assert_eq!(server.hits(), 2);
    // After the rotation the old key is gone.
    let e = verify(&p, &old.sign(&claims("a"))).await.unwrap_err();
    assert_eq!(
        e,
        Error::UnknownKey {
            kid: Some("2026-old".into())
        }
    );
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_checks_the_issuer() {
    let ec = TestKey::ec("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let issuer = format!("http://{}", server.addr);
    let mut cfg = JwtConfig::new(issuer.clone(), &[AUDIENCE]);
    cfg.jwks_url = None;
    let p = JwtProvider::new(cfg.clone()).unwrap();
    let mut c = claims("a");
    c["iss"] = json!(issuer);
    assert_eq!(verify(&p, &ec.sign(&c)).await.unwrap().subject, "a");

    // A discovery document naming another issuer is not trusted.
    *server.discovery_issuer.lock().unwrap() = "https://impostor.test".into();
    let p = JwtProvider::new(cfg).unwrap();
    let e = verify(&p, &ec.sign(&c)).await.unwrap_err();
    assert!(
        matches!(&e, Error::KeySetUnavailable { reason } if reason.contains("impostor")),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_unreachable_key_set_fails_closed() {
    let port = wirewarden_testkit::free_port().unwrap();
    let mut cfg = config();
    cfg.jwks_url = Some(format!("http://127.0.0.1:{port}/jwks"));
    let p = JwtProvider::new(cfg).unwrap();
    let e = verify(&p, &TestKey::ec("ec-1").sign(&claims("a")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::KeySetUnavailable { .. }), "{e:?}");
    assert_eq!(e.client_message(), "authentication failed");

    // A key set that is not JSON, or has no keys array.
    let server = JwksServer::start(json!({"nokeys": true})).await;
    let p = provider_for(&server, JwksOptions::default());
    let e = verify(&p, &TestKey::ec("ec-1").sign(&claims("a")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::KeySetUnavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn a_silent_or_oversized_key_set_is_bounded() {
    // A server that accepts and never answers: the fetch deadline ends the wait.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let cache = JwksCache::new(
        ISSUER,
        KeySource::Url(format!("http://{addr}/jwks")),
        JwksOptions::default().fetch_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let p = JwtProvider::with_keys(config(), Arc::new(cache)).unwrap();
    let e = verify(&p, &TestKey::ec("ec-1").sign(&claims("a")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::KeySetUnavailable { reason } if reason.contains("timed out")),
        "{e:?}"
    );
    hold.abort();

    // A key set larger than the limit is not read to the end.
    let ec = TestKey::ec("ec-1");
    let mut set = jwks(&[&ec]);
    set["padding"] = json!("x".repeat(4096));
    let server = JwksServer::start(set).await;
    let mut options = JwksOptions::default();
    options.max_document_size = 1024;
    let p = provider_for(&server, options);
    let e = verify(&p, &ec.sign(&claims("a"))).await.unwrap_err();
    assert!(
        matches!(&e, Error::KeySetUnavailable { reason } if reason.contains("limit")),
        "{e:?}"
    );
}

#[tokio::test]
async fn unusable_keys_in_the_set_are_ignored() {
    let ec = TestKey::ec("ec-1");
    let mut set = jwks(&[&ec]);
    let keys = set["keys"].as_array_mut().unwrap();
    // A symmetric key, an encryption key, an unknown key type, a weak RSA key, an EC key
    // declared for the wrong algorithm, and junk.
    keys.push(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
    keys.push(json!({"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": ec.jwk["x"], "y": ec.jwk["y"]}));
    keys.push(json!({"kty": "PQC", "kid": "future"}));
    keys.push(json!({"kty": "RSA", "kid": "weak", "n": "AQAB", "e": "AQAB"}));
    keys.push(json!({"kty": "EC", "crv": "P-256", "kid": "mislabelled", "alg": "RS256", "x": ec.jwk["x"], "y": ec.jwk["y"]}));
    keys.push(json!(42));
    // Key material of the wrong length (a verifier that slices by length would panic).
    keys.push(json!({"kty": "OKP", "crv": "Ed25519", "kid": "short-ed", "x": "AAAA"}));
    keys.push(json!({"kty": "EC", "crv": "P-256", "kid": "short-ec", "x": "AAAA", "y": "AAAA"}));
    let server = JwksServer::start(set).await;
    let p = provider_for(&server, JwksOptions::default());
    assert!(verify(&p, &ec.sign(&claims("a"))).await.is_ok());
    let t = hmac_token("hmac", b"secret", &claims("a"));
    assert!(matches!(
        verify(&p, &t).await,
        Err(Error::DisallowedAlgorithm { .. })
    ));
    let mut enc = ec.clone();
    enc.kid = "enc".into();
    assert!(matches!(
        verify(&p, &enc.sign(&claims("a"))).await,
        Err(Error::UnknownKey { .. })
    ));
    let mut short = TestKey::ed("short-ed");
    assert!(matches!(
        verify(&p, &short.sign(&claims("a"))).await,
        Err(Error::UnknownKey { .. })
    ));
    short = TestKey::ec("short-ec");
    assert!(matches!(
        verify(&p, &short.sign(&claims("a"))).await,
        Err(Error::UnknownKey { .. })
    ));
    enc.kid = "mislabelled".into();
    assert!(matches!(
        verify(&p, &enc.sign(&claims("a"))).await,
        Err(Error::UnknownKey { .. })
    ));
}

#[tokio::test]
async fn tokens_without_kid_need_a_single_key() {
    let ec = TestKey::ec("only");
    let mut h = jsonwebtoken::Header::new(ec.alg);
    h.typ = Some("at+jwt".into());
    let t = jsonwebtoken::encode(&h, &claims("a"), &ec.encoding).unwrap();
    let one = JwksCache::new(
        ISSUER,
        KeySource::Static(serde_json::from_value(jwks(&[&ec])).unwrap()),
        JwksOptions::default(),
    )
    .unwrap();
    let p = JwtProvider::with_keys(config(), Arc::new(one)).unwrap();
    assert!(verify(&p, &t).await.is_ok());
    let other = TestKey::ec("other");
    let two = JwksCache::new(
        ISSUER,
        KeySource::Static(serde_json::from_value(jwks(&[&ec, &other])).unwrap()),
        JwksOptions::default(),
    )
    .unwrap();
    let p = JwtProvider::with_keys(config(), Arc::new(two)).unwrap();
    assert_eq!(
        verify(&p, &t).await.unwrap_err(),
        Error::UnknownKey { kid: None }
    );
}

#[tokio::test]
async fn claim_mapping_is_configurable() {
    let ec = TestKey::ec("ec-1");
    let cache = JwksCache::new(
        ISSUER,
        KeySource::Static(serde_json::from_value(jwks(&[&ec])).unwrap()),
        JwksOptions::default(),
    )
    .unwrap();
    let cfg = JwtConfig::from_toml(&format!(
        r#"
        issuer = "{ISSUER}"
        audiences = ["other", "{AUDIENCE}"]
        subject_claim = "email"
        allow_missing_type = false
        group_claims = [
            {{ claim = "realm_access.roles", prefix = "role:" }},
            {{ claim = "https://example.com/teams" }},
        ]
        attribute_claims = {{ tenant = "tid", level = "acr", mfa = "amr_ok" }}
        "#
    ))
    .unwrap();
    let p = JwtProvider::with_keys(cfg, Arc::new(cache)).unwrap();
    let mut c = claims("ignored");
    c["email"] = json!("ana@example.com");
    c["aud"] = json!(["x", AUDIENCE]);
    c["realm_access"] = json!({"roles": ["dba", "reader"]});
    c["https://example.com/teams"] = json!(["growth"]);
    c["tid"] = json!("t-1");
    c["acr"] = json!(2);
    c["amr_ok"] = json!(true);
    let principal = verify(&p, &ec.sign(&c)).await.unwrap();
    assert_eq!(principal.subject, "ana@example.com");
    assert_eq!(
        principal
            .groups
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["growth", "role:dba", "role:reader"]
    );
    assert_eq!(principal.attributes["tenant"], "t-1");
    assert_eq!(principal.attributes["level"], "2");
    assert_eq!(principal.attributes["mfa"], "true");

    // typ is required by this configuration.
    let mut h = jsonwebtoken::Header::new(ec.alg);
    h.kid = Some("ec-1".into());
    h.typ = None;
    let t = jsonwebtoken::encode(&h, &c, &ec.encoding).unwrap();
    assert_eq!(
        verify(&p, &t).await.unwrap_err(),
        Error::WrongType { found: None }
    );
}

#[test]
fn invalid_configurations_are_refused() {
    let cache = || {
        Arc::new(
            JwksCache::new(
                ISSUER,
                KeySource::Static(Default::default()),
                JwksOptions::default(),
            )
            .unwrap(),
        )
    };
    let mut c = config();
    c.audiences.clear();
    assert_eq!(
        JwtProvider::with_keys(c, cache()).unwrap_err().code(),
        "config"
    );
    let mut c = config();
    c.leeway_secs = 3600;
    assert!(JwtProvider::with_keys(c, cache()).is_err());
    let mut c = config();
    c.algorithms = vec!["HS256".into()];
    assert!(JwtProvider::with_keys(c, cache()).is_err());
    let mut c = config();
    c.algorithms = vec!["none".into()];
    assert!(JwtProvider::with_keys(c, cache()).is_err());
    let mut c = config();
    c.issuer = "https://other".into();
    assert!(JwtProvider::with_keys(c, cache()).is_err());
    let mut c = config();
    c.jwks_url = Some("https://idp.test/jwks".into());
    assert!(JwtProvider::new(c).is_err(), "https without TLS roots");
    let mut c = config();
    c.jwks_url = Some("ftp://idp.test/jwks".into());
    assert!(JwtProvider::new(c).is_err());
    assert!(JwtConfig::from_toml("issuer = \"x\"\naudiences = [\"a\"]\nunknown = 1").is_err());
}

#[tokio::test]
async fn errors_reach_the_audit_trail_through_the_trait() {
    let ec = TestKey::ec("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let p = provider_for(&server, JwksOptions::default());
    let mut c = claims("a");
    c["exp"] = json!(now_secs() - 3600);
    let err = p
        .authenticate(&Credential::bearer(ec.sign(&c)), &AuthContext::new())
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "expired");
    // A password credential carrying a JWT (Postgres, Redis AUTH) works the same.
    let cred = Credential::password(Some("agent"), ec.sign(&claims("agent")));
    assert!(p.authenticate(&cred, &AuthContext::new()).await.is_ok());
    let cert = Credential::client_certificate(vec![vec![1, 2, 3]]);
    assert!(!p.accepts(&cert));
    let err = p
        .authenticate(&cert, &AuthContext::new())
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "unsupported");
}
