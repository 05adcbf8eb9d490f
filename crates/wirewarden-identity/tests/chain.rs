//! A chain of static tokens, JWT and client certificates: routing by shape, no leaks, no
//! default identity; and the conformance suite for static tokens and the chain.

#[path = "support/keys.rs"]
mod keys;

use std::sync::Arc;

use keys::{AUDIENCE, ISSUER, TestKey, claims, jwks};
use wirewarden_identity::{
    AuthContext, Chain, ClientCertificates, Credential, Error, IdentityProvider, JwksCache,
    JwksOptions, JwtConfig, JwtProvider, KeySource, StaticTokens, TokenHash, error_code,
};
use wirewarden_testkit::conformance::identity::{Fixtures, run};

fn static_tokens(valid: &str, expired: &str) -> StaticTokens {
    StaticTokens::from_toml(&format!(
        r#"
        [[tokens]]
        id = "ci"
        hash = "{}"
        subject = "ci-bot"
        groups = ["ci"]
        expires_at = "2200-01-01T00:00:00Z"

        [[tokens]]
        id = "old"
        hash = "{}"
        subject = "retired-bot"
        expires_at = "2020-01-01T00:00:00Z"
        "#,
        TokenHash::of(valid, None),
        TokenHash::of(expired, None),
    ))
    .unwrap()
}

fn jwt(key: &TestKey) -> JwtProvider {
    let set = serde_json::from_value(jwks(&[key])).unwrap();
    let cache = JwksCache::new(ISSUER, KeySource::Static(set), JwksOptions::default()).unwrap();
    JwtProvider::with_keys(JwtConfig::new(ISSUER, &[AUDIENCE]), Arc::new(cache)).unwrap()
}

fn chain(key: &TestKey, valid: &str, expired: &str) -> Chain {
    Chain::new()
        .with(Arc::new(static_tokens(valid, expired)))
        .with(Arc::new(jwt(key)))
        .with(Arc::new(
            ClientCertificates::from_toml(
                "[[rules]]\nfield = \"common_name\"\npattern = \"agent-*\"\n",
            )
            .unwrap(),
        ))
}

#[tokio::test]
async fn the_chain_routes_by_shape() {
    let key = TestKey::ec("ec-1");
    let (valid, expired) = (
        StaticTokens::generate_token().unwrap(),
        StaticTokens::generate_token().unwrap(),
    );
    let c = chain(&key, &valid, &expired);
    let ctx = AuthContext::new();
    assert_eq!(
        c.authenticate(&Credential::bearer(valid.clone()), &ctx)
            .await
            .unwrap()
            .subject,
        "ci-bot"
    );
    let jwt_cred = Credential::password(Some("x"), key.sign(&claims("agent-3")));
    assert_eq!(
        c.authenticate(&jwt_cred, &ctx).await.unwrap().subject,
        "agent-3"
    );

    // Refusals carry the step and reason for the audit trail, one sentence for the client.
    let e = c
        .authenticate(&Credential::bearer(expired), &ctx)
        .await
        .unwrap_err();
    let typed = e.downcast_ref::<Error>().unwrap();
    let Error::Rejected { attempts } = typed else {
        panic!("{typed:?}")
    };
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(
        attempts[0].starts_with("#0: expired (") && attempts[0].contains("expired at"),
        "{attempts:?}"
    );
    assert_eq!(typed.client_message(), "authentication failed");
    let mut c2 = claims("a");
    c2["aud"] = serde_json::json!("elsewhere");
    let e = c
        .authenticate(&Credential::bearer(key.sign(&c2)), &ctx)
        .await
        .unwrap_err();
    let Some(Error::Rejected { attempts }) = e.downcast_ref::<Error>() else {
        panic!("{e:?}")
    };
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(
        attempts[0].starts_with("#1: wrong_audience (") && attempts[0].contains("elsewhere"),
        "{attempts:?}"
    );
    let e = c
        .authenticate(
            &Credential::client_certificate(vec![vec![0x30, 0x00]]),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "rejected");

    // Nothing is a default identity: empty, and a chain with no provider for the shape.
    let e = c
        .authenticate(&Credential::bearer(""), &ctx)
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "missing");
    let tokens_only = Chain::new().with(Arc::new(static_tokens(&valid, "x")));
    let e = tokens_only
        .authenticate(&Credential::client_certificate(vec![vec![1]]), &ctx)
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "unsupported");
    let e = Chain::new()
        .authenticate(&Credential::bearer(valid), &ctx)
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "unsupported");
}

#[tokio::test]
async fn static_tokens_pass_the_conformance_suite() {
    let (valid, expired) = (
        StaticTokens::generate_token().unwrap(),
        StaticTokens::generate_token().unwrap(),
    );
    let p = static_tokens(&valid, &expired);
    let fixtures = Fixtures::new(Credential::bearer(valid), "ci-bot")
        .expired(Credential::bearer(expired))
        .unknown(Credential::bearer(StaticTokens::generate_token().unwrap()));
    run(&p, &fixtures).await;
}

#[tokio::test]
async fn in_process_jwt_passes_the_conformance_suite() {
    let key = TestKey::ed("ed-1");
    let p = jwt(&key);
    let mut old = claims("agent-9");
    old["exp"] = serde_json::json!(keys::now_secs() - 600);
    let mut wrong_aud = claims("agent-9");
    wrong_aud["aud"] = serde_json::json!("https://elsewhere.test");
    let fixtures = Fixtures::new(Credential::bearer(key.sign(&claims("agent-9"))), "agent-9")
        .expired(Credential::bearer(key.sign(&old)))
        .unknown(Credential::bearer(key.sign(&wrong_aud)))
        .unknown(Credential::bearer(
            TestKey::ed("ed-1").sign(&claims("agent-9")),
        ));
    run(&p, &fixtures).await;
}

#[tokio::test]
async fn the_chain_passes_the_conformance_suite() {
    let key = TestKey::ec("ec-1");
    let (valid, expired) = (
        StaticTokens::generate_token().unwrap(),
        StaticTokens::generate_token().unwrap(),
    );
    let c = chain(&key, &valid, &expired);
    for valid_cred in [
        (Credential::bearer(valid.clone()), "ci-bot"),
        (Credential::bearer(key.sign(&claims("agent-1"))), "agent-1"),
    ] {
        let fixtures = Fixtures::new(valid_cred.0, valid_cred.1)
            .expired(Credential::bearer(expired.clone()))
            .unknown(Credential::bearer("ww_never_issued_token_0000000000000"));
        run(&c, &fixtures).await;
    }
}
