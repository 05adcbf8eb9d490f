//! Against a real OpenID Connect provider process (npm `oidc-provider`) on loopback: access
//! tokens from its token endpoint, keys from its JWKS found by discovery.
#![cfg(feature = "jwks-fetch")]

use std::sync::Arc;

use wirewarden_identity::{
    AuthContext, AuthMethod, Credential, Error, IdentityProvider, JwksCache, JwksOptions,
    JwtConfig, JwtProvider, KeySource, Timestamp,
};
use wirewarden_testkit::conformance::identity::{Fixtures, run};
use wirewarden_testkit::oidc::OidcProvider;

const CRM: &str = "https://crm.wirewarden.test";
const CACHE: &str = "https://cache.wirewarden.test";
const EDGE: &str = "https://edge.wirewarden.test";

fn idp() -> OidcProvider {
    OidcProvider::builder()
        .client(
            "etl-agent",
            &wirewarden_testkit::random_secret(),
            &["analysts", "agents"],
        )
        .client("intruder", &wirewarden_testkit::random_secret(), &[])
        .resource(CRM, "ES256", "read write")
        .resource(CACHE, "RS256", "read")
        .resource(EDGE, "EdDSA", "read")
        .start()
        .expect("oidc-provider must start: run `npm ci` in crates/wirewarden-testkit/oidc")
}

fn provider(idp: &OidcProvider, audience: &str) -> JwtProvider {
    // No jwks_url: the keys are found through the provider's discovery document.
    JwtProvider::new(JwtConfig::new(idp.issuer(), &[audience])).unwrap()
}

#[tokio::test]
async fn real_provider_tokens_verify_for_every_algorithm() {
    let idp = idp();
    for (resource, kid) in [(CRM, "ec-1"), (CACHE, "rsa-1"), (EDGE, "ed-1")] {
        let p = provider(&idp, resource);
        let token = idp.access_token("etl-agent", resource, "read").unwrap();
        let principal = p
            .authenticate(
                &Credential::bearer(token),
                &AuthContext::new().with_target("crm"),
            )
            .await
            .unwrap();
        // RFC 9068 for the client-credentials grant: the subject is the client.
        assert_eq!(principal.subject, "etl-agent");
        assert!(principal.in_group("analysts") && principal.in_group("agents"));
        assert!(principal.in_group("scope:read"));
        assert!(!principal.in_group("scope:write"));
        assert_eq!(
            principal.auth,
            AuthMethod::Jwt {
                issuer: idp.issuer(),
                key_id: Some(kid.into()),
            }
        );
        let exp = principal.expires_at.unwrap();
        assert!(exp > Timestamp::now());
        // The provider's key set was fetched once (plus the discovery document).
        assert_eq!(p.keys().fetch_count().await, 1);
    }
}

#[tokio::test]
async fn real_provider_hostile_cases() {
    let idp = idp();
    let crm = provider(&idp, CRM);

    // A token for another resource server is not accepted here.
    let cache_token = idp.access_token("etl-agent", CACHE, "read").unwrap();
    let e = crm
        .verify(&cache_token, Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::WrongAudience {
            found: vec![CACHE.into()]
        }
    );

    // A token of another provider instance (another issuer, other keys).
    let other = self::idp();
    let foreign = other.access_token("etl-agent", CRM, "read").unwrap();
    assert!(matches!(
        crm.verify(&foreign, Timestamp::now()).await,
        Err(Error::WrongIssuer { .. })
    ));
    // The same token against a provider that trusts the other issuer but this one's keys:
    // the other instance generated its own keys under the same kids, so the signature fails.
    let keys = JwksCache::new(
        other.issuer(),
        KeySource::Url(idp.jwks_url()),
        JwksOptions::default(),
    )
    .unwrap();
    let confused =
        JwtProvider::with_keys(JwtConfig::new(other.issuer(), &[CRM]), Arc::new(keys)).unwrap();
    assert_eq!(
        confused
            .verify(&foreign, Timestamp::now())
            .await
            .unwrap_err(),
        Error::BadSignature
    );

    // Expired: the same token judged after its exp plus the leeway.
    let token = idp.access_token("etl-agent", CRM, "read").unwrap();
    let principal = crm.verify(&token, Timestamp::now()).await.unwrap();
    let later = principal
        .expires_at
        .unwrap()
        .checked_add(std::time::Duration::from_secs(31))
        .unwrap();
    assert!(matches!(
        crm.verify(&token, later).await,
        Err(Error::Expired { .. })
    ));

    // Tampered payload: claims swapped for another client's.
    let intruder = idp.access_token("intruder", CRM, "read").unwrap();
    let a: Vec<&str> = token.split('.').collect();
    let b: Vec<&str> = intruder.split('.').collect();
    let spliced = format!("{}.{}.{}", a[0], b[1], a[2]);
    assert_eq!(
        crm.verify(&spliced, Timestamp::now()).await.unwrap_err(),
        Error::BadSignature
    );
}

#[tokio::test]
async fn real_provider_tokens_pass_the_conformance_suite() {
    let idp = idp();
    let p = provider(&idp, CRM);
    let valid = idp.access_token("etl-agent", CRM, "read write").unwrap();
    let other_audience = idp.access_token("etl-agent", CACHE, "read").unwrap();
    let fixtures = Fixtures::new(Credential::bearer(valid), "etl-agent")
        .unknown(Credential::bearer(other_audience));
    run(&p, &fixtures).await;
}
